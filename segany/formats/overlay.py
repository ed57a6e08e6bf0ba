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
    masks: np.ndarray | None = None,
    *,
    points: Any = None,
    labels: Any = None,
    boxes: Any = None,
    alpha: float = 0.45,
    outlines: bool = True,
    seed: int = 0,
) -> np.ndarray:
    """Draw on a copy of ``image`` (H×W×3 uint8 RGB) and return it.

    masks: N×H×W bool; points: N×2 XY pixels with labels N (1 fg, 0 bg; default all 1);
    boxes: B×4 XYXY pixels.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"overlay needs an H×W×3 uint8 image, got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    out = image.astype(np.float32)
    thickness = max(1, round(min(height, width) / 400))
    outline_layer: list[tuple[Any, tuple[int, ...]]] = []
    if masks is not None and len(masks):
        masks = np.asarray(masks, dtype=bool)
        if masks.ndim != 3 or masks.shape[1:] != (height, width):
            raise InputError(f"masks must be N×{height}×{width}, got shape {masks.shape}")
        colors = mask_colors(len(masks), seed)
        areas = masks.reshape(len(masks), -1).sum(axis=1)
        for i in np.argsort(-areas, kind="stable"):
            m = masks[i]
            out[m] = out[m] * (1 - alpha) + colors[i].astype(np.float32) * alpha
            if outlines:
                contours, _ = cv2.findContours(
                    m.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE
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


def write_overlay(
    path: str | os.PathLike[str], image: np.ndarray, masks: np.ndarray | None = None, **kwargs: Any
) -> None:
    """Render an overlay (see ``render_overlay``) and write it as a PNG, atomically."""
    write_png(path, render_overlay(image, masks, **kwargs))
