"""Simulated user prompts: the "center" click, corrective clicks, tight and jittered boxes.

These are the protocol's definitions, and training's validation uses them too: one center
click (`center_point`), one tight box (`mask_box`, i.e. `segany.masks.batched_mask_to_box`),
one mask IoU (`segany.masks.mask_iou`). Points are XY pixel coordinates (column, row) of the
image; boxes are XYXY pixel coordinates of the first and last covered pixel (both inclusive).
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
import torch

from segany.errors import InputError
from segany.masks import batched_mask_to_box, mask_iou

__all__ = ["center_point", "interior_distance", "jitter_box", "mask_box", "mask_iou", "next_click"]

ClickRegion = Literal["area", "distance"]


def interior_distance(mask: np.ndarray) -> np.ndarray:
    """H×W float32: each mask pixel's Euclidean distance to the nearest pixel outside it.

    The mask is padded with one background pixel so the image border counts as a boundary:
    a mask touching the border is not "deepest" at the border.
    """
    padded = np.pad(mask.astype(np.uint8), 1)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return dist[1:-1, 1:-1]


def center_point(mask: np.ndarray) -> tuple[int, int]:
    """The mask pixel farthest from the mask's boundary, as (x, y); the paper's "center" click.

    Among equally deep pixels (the ridge of an elongated shape) the one nearest their mean
    position is taken, so a rectangle's click is its middle; remaining ties go to the first
    pixel in row-major order.
    """
    if mask.ndim != 2 or not mask.any():
        raise InputError(f"center_point needs a non-empty H×W mask, got shape {mask.shape}")
    dist = interior_distance(mask)
    rows, cols = np.nonzero(dist >= dist.max() - 1e-4)
    d2 = (rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2
    k = int(np.argmin(d2))
    return int(cols[k]), int(rows[k])


def next_click(
    gt: np.ndarray, pred: np.ndarray, region: ClickRegion = "area"
) -> tuple[int, int, int] | None:
    """The corrective click for prediction `pred` of object `gt` (both H×W bool): (x, y, label).

    Error regions are the connected components (8-connected) of the missed pixels
    (gt and not pred, which get a positive click, label 1) and of the false pixels
    (pred and not gt, a negative click, label 0). With region="area" the click goes to the
    center of the largest region by pixel count; region="distance" follows RITM and picks the
    region whose center lies farthest from its boundary. Returns None when pred equals gt.
    """
    missed = gt & ~pred
    false = pred & ~gt
    if region == "distance":
        d_missed, d_false = interior_distance(missed), interior_distance(false)
        if d_missed.max() <= 0 and d_false.max() <= 0:
            return None
        positive = d_missed.max() >= d_false.max()
        dist = d_missed if positive else d_false
        row, col = np.unravel_index(int(np.argmax(dist)), dist.shape)
        return int(col), int(row), int(positive)
    if region != "area":
        raise InputError(f"click region must be 'area' or 'distance', got {region!r}")
    best: tuple[int, int, np.ndarray] | None = None  # (area, label, component labels == k)
    for label, err in ((1, missed), (0, false)):
        if not err.any():
            continue
        n, comps, stats, _ = cv2.connectedComponentsWithStats(err.astype(np.uint8), connectivity=8)
        k = 1 + int(np.argmax(stats[1:n, cv2.CC_STAT_AREA]))  # component 0 is the background
        area = int(stats[k, cv2.CC_STAT_AREA])
        if best is None or area > best[0]:  # a tie keeps the missed region (positive click)
            best = (area, label, comps == k)
    if best is None:
        return None
    x, y = center_point(best[2])
    return x, y, best[1]


def mask_box(mask: np.ndarray) -> np.ndarray:
    """The tight box of a non-empty H×W mask: float64 [x0, y0, x1, y1] (inclusive pixels)."""
    if mask.ndim != 2 or not mask.any():
        raise InputError(f"mask_box needs a non-empty H×W mask, got shape {mask.shape}")
    return batched_mask_to_box(torch.as_tensor(mask, dtype=torch.bool)).numpy().astype(np.float64)


def jitter_box(
    box: np.ndarray,
    noise: float,
    max_px: float,
    image_size: tuple[int, int],
    rng: np.random.Generator,
) -> np.ndarray:
    """Move each box side by Gaussian noise of std `noise` × that side's length, clipped to
    ±`max_px` pixels (the paper's training noise is 0.1 and 20 px), then keep it in the image."""
    if noise <= 0:
        return box.copy()
    w, h = box[2] - box[0], box[3] - box[1]
    std = noise * np.array([w, h, w, h])
    out = box + np.clip(rng.normal(size=4) * std, -max_px, max_px)
    height, width = image_size
    out[[0, 2]] = np.clip(out[[0, 2]], 0, width - 1)
    out[[1, 3]] = np.clip(out[[1, 3]], 0, height - 1)
    # Keep a proper box even when a large jitter crosses the sides.
    x0, x1 = sorted(out[[0, 2]])
    y0, y1 = sorted(out[[1, 3]])
    return np.array([x0, y0, x1, y1], dtype=np.float64)
