"""YOLO segmentation labels (the layout Ultralytics documents for its ``-seg`` models).

A dataset folder holds ``data.yaml`` (``path``, ``train``, ``val`` and ``names``: class index
to name), ``images/<split>/NAME.ext`` and one ``labels/<split>/NAME.txt`` per image. Each line
of a label file is one object: ``<class index> x1 y1 x2 y2 ... xn yn``, the polygon's points
normalised to [0, 1] by the image's width and height; class indices count from 0.

Writing: a mask's polygon runs through the centres of its boundary pixels
(``segany.masks.mask_to_polygons``), at (x + 0.5) / W, (y + 0.5) / H, so that filling the
polygon scaled back to pixels (what Ultralytics does with OpenCV) gives back the mask.
A line holds one polygon, so a mask in several parts becomes one polygon that visits each
part and returns along the same zero-width bridge (as Ultralytics' own COCO converter joins
segments); holes cannot be written and are filled (``LabelLine.holes`` counts them).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from segany.atomic import write_text_atomic
from segany.errors import InputError
from segany.formats.polygons import mask_polygons


@dataclass(frozen=True)
class LabelLine:
    """One object: class index, the polygon's points N×2 (normalised XY), holes filled."""

    class_index: int
    points: np.ndarray
    holes: int = 0


def mask_line(mask: np.ndarray, class_index: int) -> LabelLine | None:
    """The label line of an H×W bool mask (None for an empty mask)."""
    h, w = mask.shape
    polygons = mask_polygons(mask)
    if not polygons:
        return None
    outers = [np.asarray(p[0], dtype=np.float64) for p in polygons]
    holes = sum(len(p) - 1 for p in polygons)
    path = _bridge(outers)
    points = (path + 0.5) / np.array([w, h], dtype=np.float64)
    return LabelLine(int(class_index), np.clip(points, 0.0, 1.0), holes)


def _bridge(rings: list[np.ndarray]) -> np.ndarray:
    """One closed path through every ring: each ring is walked from the point where the path
    enters it to the point nearest the next ring, out to that ring (and everything after it)
    and back along the same zero-width bridge, then round to where it entered."""
    path: list[np.ndarray] = []
    entry = 0
    exits: list[tuple[np.ndarray, int]] = []  # (ring rolled to its entry, exit index)
    for k, ring in enumerate(rings):
        ring = np.roll(ring, -entry, axis=0)
        if k + 1 == len(rings):
            path.append(ring)  # the last ring: all the way round
            path.append(ring[:1])
            break
        d = ((ring[:, None, :] - rings[k + 1][None, :, :]) ** 2).sum(-1)
        out, entry = (int(v) for v in np.unravel_index(int(np.argmin(d)), d.shape))
        path.append(ring[: out + 1])
        exits.append((ring, out))
    for ring, out in reversed(exits):  # back over each bridge, finishing each ring
        path.append(ring[out:])
        path.append(ring[:1])
    return np.concatenate(path, axis=0)


def format_line(line: LabelLine) -> str:
    coords = " ".join(f"{v:.6f}" for v in line.points.reshape(-1))
    return f"{line.class_index} {coords}"


def write_labels(path: str | os.PathLike[str], lines: Sequence[LabelLine]) -> None:
    """One label file (an image without objects gets an empty one, as Ultralytics expects)."""
    write_text_atomic(path, "".join(format_line(x) + "\n" for x in lines))


def write_data_yaml(path: str | os.PathLike[str], names: Sequence[str], split: str) -> None:
    """``data.yaml``: the dataset root is the file's folder; train and val are ``split``."""
    # JSON strings are YAML strings: names with colons, quotes or '#' stay intact.
    lines = [
        "path: .",
        f"train: images/{split}",
        f"val: images/{split}",
        "names:",
        *(f"  {i}: {json.dumps(n, ensure_ascii=False)}" for i, n in enumerate(names)),
    ]
    write_text_atomic(path, "\n".join(lines) + "\n")


def read_labels(path: str | os.PathLike[str]) -> list[LabelLine]:
    """Read a label file by the documented layout, or an ``InputError`` naming the line."""
    path = Path(path)
    out = []
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = raw.split()
        if not parts:
            continue
        try:
            index, values = int(parts[0]), np.array([float(v) for v in parts[1:]])
        except ValueError:
            raise InputError(f"{path}, line {n}: not a class index and numbers") from None
        if index < 0 or values.size < 6 or values.size % 2:
            raise InputError(f"{path}, line {n}: needs a class index ≥ 0 and at least 3 x y pairs")
        if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
            raise InputError(f"{path}, line {n}: coordinates must be normalised to [0, 1]")
        out.append(LabelLine(index, values.reshape(-1, 2)))
    return out


def line_mask(line: LabelLine, size: tuple[int, int]) -> np.ndarray:
    """The H×W bool mask of a label line for an image of ``size`` (H, W): the polygon scaled
    to pixels and filled with OpenCV, as Ultralytics rasterises its segmentation labels."""
    h, w = size
    pts = (line.points * np.array([w, h])).astype(np.int32).reshape(-1, 1, 2)
    out = np.zeros((h, w), dtype=np.uint8)
    cv2.fillPoly(out, [pts], 1)
    return out.astype(bool)
