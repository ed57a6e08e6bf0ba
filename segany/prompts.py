"""Validate user prompts at the public boundary and bring them to one batched layout.

Everything here is numpy; the predictor moves the result to the model's frame and device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from segany.errors import InputError


@dataclass(frozen=True)
class PromptBatch:
    """point_coords B×N×2, point_labels B×N, boxes B×4, mask_input B×1×s×s (each may be None;
    a batch axis of 1 is shared with the others). ``batched`` says whether the caller gave
    batched prompts, so results keep or drop the leading axis accordingly."""

    point_coords: np.ndarray | None
    point_labels: np.ndarray | None
    boxes: np.ndarray | None
    mask_input: np.ndarray | None
    batched: bool

    @property
    def batch_size(self) -> int:
        sizes = [
            a.shape[0] for a in (self.point_coords, self.boxes, self.mask_input) if a is not None
        ]
        return max(sizes, default=1)


def _array(name: str, value: Any, dtype: type) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    try:
        arr: np.ndarray = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be numeric array-like: {exc}") from None
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise InputError(f"{name} contains NaN or infinite values")
    return arr


def _points(coords: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, bool]:
    if labels is None:
        raise InputError("point_labels must be given with point_coords (1 fg, 0 bg per point)")
    c = _array("point_coords", coords, np.float64)
    if c.ndim not in (2, 3) or c.shape[-1] != 2:
        raise InputError(f"point_coords must be N×2 or B×N×2 (XY), got shape {c.shape}")
    if c.shape[-2] == 0:
        raise InputError("point_coords holds no points; pass None for no points")
    raw = np.asarray(labels.detach().cpu().numpy() if hasattr(labels, "detach") else labels)
    if raw.dtype.kind == "f" and not np.array_equal(raw, np.round(raw)):
        raise InputError("point_labels must be integers (1 fg, 0 bg, -1 padding, 2/3 box corners)")
    lab = _array("point_labels", raw, np.int64)
    if lab.shape != c.shape[:-1]:
        raise InputError(
            f"point_labels shape {lab.shape} does not match point_coords shape {c.shape}: "
            f"expected {c.shape[:-1]} (one label per point)"
        )
    bad = np.setdiff1d(np.unique(lab), [-1, 0, 1, 2, 3])
    if bad.size:
        raise InputError(
            "point_labels must be 1 (fg), 0 (bg), -1 (padding) or 2/3 (a box's top-left and "
            f"bottom-right corner), got {bad}"
        )
    batched = c.ndim == 3
    if not batched:
        c, lab = c[None], lab[None]
    return c, lab, batched


def _boxes(box: Any) -> tuple[np.ndarray, bool]:
    b = _array("box", box, np.float64)
    if b.ndim == 1:
        b = b[None]
    if b.ndim != 2 or b.shape[1] != 4 or b.shape[0] == 0:
        raise InputError(f"box must be 4 or B×4 (XYXY), got shape {np.shape(box)}")
    flipped = (b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])
    if flipped.any():
        i = int(np.argmax(flipped))
        raise InputError(f"box {i} is {b[i].tolist()}: expected XYXY with x1 >= x0 and y1 >= y0")
    return b, b.shape[0] > 1


def _masks(mask_input: Any, low_res_size: tuple[int, int]) -> tuple[np.ndarray, bool]:
    m = _array("mask_input", mask_input, np.float32)
    s = tuple(low_res_size)
    if m.ndim == 3 and m.shape == (1, *s):
        return m[None], False
    if m.ndim == 4 and m.shape[1:] == (1, *s):
        return m, True
    raise InputError(
        f"mask_input must be 1×{s[0]}×{s[1]} or B×1×{s[0]}×{s[1]} low-res logits, "
        f"got shape {m.shape}"
    )


def check_prompts(
    point_coords: Any,
    point_labels: Any,
    box: Any,
    mask_input: Any,
    *,
    low_res_size: tuple[int, int],
) -> PromptBatch:
    """Check shapes, values and batch sizes; raise ``InputError`` saying what was expected."""
    coords = labels = boxes = masks = None
    batched = False
    if point_coords is not None:
        coords, labels, b = _points(point_coords, point_labels)
        batched |= b
    elif point_labels is not None:
        raise InputError("point_labels given without point_coords")
    if box is not None:
        boxes, b = _boxes(box)
        batched |= b
    if mask_input is not None:
        masks, b = _masks(mask_input, low_res_size)
        batched |= b
    sizes = {a.shape[0] for a in (coords, boxes, masks) if a is not None} - {1}
    if len(sizes) > 1:
        raise InputError(
            f"prompt batch sizes differ: {sorted(sizes)}; every batched prompt needs the same B "
            "(or B = 1 to share it)"
        )
    return PromptBatch(coords, labels, boxes, masks, batched)
