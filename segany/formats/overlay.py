"""Overlay rendering: the image with translucent coloured masks, outlines, points and boxes.

Colours come from a seeded generator, so the same masks get the same colours on every run.
Masks are drawn largest first (small masks stay visible on top, like the label map); points are
green for foreground (label 1) and red for background (label 0), boxes blue.
"""

from __future__ import annotations

import os
from typing import Any

import cv2
import numpy as np

from segany.errors import InputError
from segany.formats.png import write_png

FOREGROUND = (40, 220, 40)
BACKGROUND = (230, 30, 30)
BOX = (30, 140, 255)


def mask_colors(n: int, seed: int = 0) -> np.ndarray:
    """n×3 uint8 bright, distinct-ish RGB colours, the same for the same (n, seed)."""
    rng = np.random.default_rng(seed)
    hsv = np.stack(
        [
            (np.arange(n) * 0.618034 + rng.random()) % 1.0 * 180,  # golden-ratio hue steps
            rng.uniform(150, 255, n),
            rng.uniform(180, 255, n),
        ],
        axis=1,
    ).astype(np.uint8)
    return cv2.cvtColor(hsv[None], cv2.COLOR_HSV2RGB)[0]


def render_overlay(
    image: np.ndarray,
    masks: np.ndarray | list[dict[str, Any]] | None = None,
    *,
    points: Any = None,
    labels: Any = None,
    boxes: Any = None,
    alpha: float = 0.45,
    outlines: bool = True,
    seed: int = 0,
) -> np.ndarray:
    """Draw on a copy of ``image`` (H×W×3 uint8 RGB) and return it.

    masks: N×H×W bool, or a list of N COCO RLEs of H×W masks (decoded one at a time: the
    hundreds of masks of a detector's boxes on a large photo are never all held at once);
    points: N×2 XY pixels with labels N (1 fg, 0 bg; default all 1); boxes: B×4 XYXY pixels.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"overlay needs an H×W×3 uint8 image, got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    out = image.astype(np.float32)
    thickness = max(1, round(min(height, width) / 400))
    outline_layer: list[tuple[Any, tuple[int, ...]]] = []
    if masks is not None and len(masks):
        mask_of, areas = _mask_source(masks, height, width)
        colors = mask_colors(len(areas), seed)
        for i in np.argsort(-areas, kind="stable"):
            m = mask_of(int(i))
            rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
            if not len(rows):
                continue
            # Only the mask's box (and a pixel around it) is touched: a detector's small boxes
            # on a large photo cost their own size, not the image's, each. Same pixels, same
            # contours (findContours pads with zeros itself; offset gives image coordinates).
            y0, y1 = max(0, rows[0] - 1), min(height, rows[-1] + 2)
            x0, x1 = max(0, cols[0] - 1), min(width, cols[-1] + 2)
            sub, inside = out[y0:y1, x0:x1], m[y0:y1, x0:x1]
            sub[inside] = sub[inside] * (1 - alpha) + colors[i].astype(np.float32) * alpha
            if outlines:
                contours, _ = cv2.findContours(
                    inside.astype(np.uint8),
                    cv2.RETR_LIST,
                    cv2.CHAIN_APPROX_NONE,
                    offset=(int(x0), int(y0)),
                )
                outline_layer.append((contours, tuple(int(c) for c in colors[i])))
    canvas = np.ascontiguousarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))
    for contours, color in outline_layer:
        cv2.drawContours(canvas, contours, -1, color, thickness)  # type: ignore[call-overload]
    if boxes is not None:
        for x0, y0, x1, y1 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
            p0, p1 = (round(x0), round(y0)), (round(x1), round(y1))
            cv2.rectangle(canvas, p0, p1, BOX, thickness + 1, cv2.LINE_AA)
    if points is not None:
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        lab = np.ones(len(pts)) if labels is None else np.asarray(labels).reshape(-1)
        radius = max(3, round(min(height, width) / 80))
        for (x, y), label in zip(pts, lab, strict=True):
            center = (round(x), round(y))
            color = FOREGROUND if label > 0 else BACKGROUND
            cv2.circle(canvas, center, radius + 1, (255, 255, 255), -1, cv2.LINE_AA)
            cv2.circle(canvas, center, radius, color, -1, cv2.LINE_AA)
    return canvas


def _mask_source(masks: Any, height: int, width: int) -> tuple[Any, np.ndarray]:
    """(mask i -> H×W bool, the N areas) of N×H×W masks or a list of N COCO RLEs."""
    if isinstance(masks, (list, tuple)) and all(isinstance(m, dict) for m in masks):
        from segany.masks import decode_rle, rle_area

        for r in masks:
            size = [int(v) for v in r.get("size", ())]
            if size != [height, width]:
                raise InputError(f"mask RLEs must be of {height}×{width} masks, got size {size}")
        areas = np.array([rle_area(r) for r in masks], dtype=np.int64)
        return (lambda i: decode_rle(masks[i])), areas
    array = np.asarray(masks, dtype=bool)
    if array.ndim != 3 or array.shape[1:] != (height, width):
        raise InputError(f"masks must be N×{height}×{width}, got shape {array.shape}")
    return (lambda i: array[i]), array.reshape(len(array), -1).sum(axis=1)


def write_overlay(
    path: str | os.PathLike[str],
    image: np.ndarray,
    masks: np.ndarray | list[dict[str, Any]] | None = None,
    **kwargs: Any,
) -> None:
    """Render an overlay (see ``render_overlay``) and write it as a PNG, atomically."""
    write_png(path, render_overlay(image, masks, **kwargs))
