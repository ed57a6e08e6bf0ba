"""Validate user prompts at the public boundary and bring them to one batched layout.

Everything here is numpy, except the checks of an embedding and of ``predict_torch``'s tensors;
the predictor moves the result to the model's frame and device. torch is imported only by
those two checks, so the onnxruntime backend validates prompts without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from segany.errors import InputError
from segany.images import tensor_to_numpy
from segany.limits import MAX_COORDINATE, MAX_POINTS_PER_PROMPT, check_size_pair

if TYPE_CHECKING:
    import torch


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


def _rectangular(name: str, value: Any) -> np.ndarray:
    """``value`` as a numpy array, or an ``InputError`` when its rows differ in length (a
    ragged list such as ``[[1, 2], [3]]``)."""
    if hasattr(value, "detach"):
        return tensor_to_numpy(value)
    try:
        return np.asarray(value)
    except ValueError:
        raise InputError(
            f"{name} has rows of different lengths; give a rectangular array "
            "(points N×2, labels N, boxes 4 or B×4)"
        ) from None


def _array(name: str, value: Any, dtype: type) -> np.ndarray:
    """``value`` as a ``dtype`` array; complex, non-numeric and non-finite values are refused
    (a complex value would lose its imaginary part silently)."""
    raw = _rectangular(name, value)
    try:
        if raw.dtype.kind not in "biuf":
            raise TypeError(f"got dtype {raw.dtype}")
        arr: np.ndarray = raw.astype(dtype)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be a real numeric array-like: {exc}") from None
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise InputError(f"{name} contains NaN or infinite values; expected finite numbers")
    return arr


def _coords(name: str, value: Any) -> np.ndarray:
    """Pixel coordinates as float64, each within ±MAX_COORDINATE (far beyond any image; larger
    values overflow float32 in the model and give NaN scores)."""
    arr = _array(name, value, np.float64)
    if arr.size and np.abs(arr).max() > MAX_COORDINATE:
        raise InputError(
            f"{name} holds {np.abs(arr).max():g}: coordinates must lie within "
            f"±{MAX_COORDINATE:.0f} pixels"
        )
    return arr


def _labels(raw: Any) -> np.ndarray:
    """Integer labels as int64 with a range check: a uint64 2**64-1 or a float 1e30 must not
    wrap around to a valid label."""
    arr = _rectangular("point_labels", raw)
    if arr.dtype.kind not in "biuf":
        raise InputError(
            "point_labels must be integers (1 fg, 0 bg, -1 padding, 2/3 box corners), "
            f"got {arr.dtype}"
        )
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or not np.array_equal(arr, np.round(arr)):
            raise InputError(
                "point_labels must be integers (1 fg, 0 bg, -1 padding, 2/3 box corners)"
            )
    if arr.size and (arr.min() < -(2**31) or arr.max() > 2**31 - 1):
        raise InputError(
            "point_labels must be small integers (1 fg, 0 bg, -1 padding, 2/3 box corners), "
            f"got values from {arr.min()} to {arr.max()}"
        )
    return arr.astype(np.int64)


def _points(coords: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, bool]:
    if labels is None:
        raise InputError("point_labels must be given with point_coords (1 fg, 0 bg per point)")
    c = _coords("point_coords", coords)
    if c.ndim not in (2, 3) or c.shape[-1] != 2:
        raise InputError(f"point_coords must be N×2 or B×N×2 (XY), got shape {c.shape}")
    if c.shape[-2] == 0:
        raise InputError("point_coords holds no points; pass None for no points")
    if c.shape[-2] > MAX_POINTS_PER_PROMPT:
        raise InputError(
            f"point_coords has {c.shape[-2]} points per prompt, more than the "
            f"{MAX_POINTS_PER_PROMPT} allowed"
        )
    lab = _labels(labels)
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
    b = _coords("box", box)
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


def check_embedding(embedding: Any, expected: tuple[int, ...]) -> torch.Tensor:
    """An image embedding (1×C×h×w, or C×h×w) as a finite float32 tensor of shape ``expected``;
    any other value gets an ``InputError`` naming the shape wanted."""
    import torch

    want = "×".join(map(str, expected))
    kind = getattr(getattr(embedding, "dtype", None), "kind", "f")
    if isinstance(kind, str) and kind not in "biufc":  # numpy objects, strings: no tensor
        raise InputError(
            f"embedding must be a {want} float tensor or array, got dtype {embedding.dtype}"
        )
    try:
        emb = torch.as_tensor(embedding)
    except (TypeError, ValueError, RuntimeError) as e:
        raise InputError(f"embedding must be a {want} tensor or array: {e}") from None
    if not emb.is_floating_point():
        raise InputError(f"embedding must be a real {want} float tensor, got {emb.dtype}")
    if emb.ndim == 3:
        emb = emb[None]
    if tuple(emb.shape) != tuple(expected):
        raise InputError(f"embedding must have shape {want} for this model, got {tuple(emb.shape)}")
    emb = emb.float()
    if not torch.isfinite(emb).all():
        raise InputError("embedding contains NaN or infinite values; expected finite numbers")
    return emb


def check_input_size(input_size: Any, longest: int) -> tuple[int, int]:
    """``input_size`` (h, w) of the resized image: whole numbers in [1, longest]."""
    h, w = check_size_pair(input_size, what="input_size")
    if max(h, w) > longest:
        raise InputError(
            f"input_size {h}×{w} exceeds the model's input size {longest}: it is the size "
            "after resizing the longest side to the model's input"
        )
    return h, w


def check_torch_prompts(
    point_coords: Any,
    point_labels: Any,
    boxes: Any,
    mask_input: Any,
    *,
    low_res_size: tuple[int, int],
) -> None:
    """``Predictor.predict_torch``'s inputs (model-frame tensors): point_coords B×N×2 float,
    point_labels B×N int, boxes B×4, mask_input B×1×s×s, batch sizes equal or 1."""
    import torch

    if (point_coords is None) != (point_labels is None):
        raise InputError("point_coords and point_labels must be given together")
    s = tuple(low_res_size)
    rules = (
        ("point_coords", point_coords, 3, "B×N×2", lambda t: t.shape[-1] == 2),
        ("point_labels", point_labels, 2, "B×N", lambda t: True),
        ("boxes", boxes, 2, "B×4", lambda t: t.shape[-1] == 4),
        (
            "mask_input",
            mask_input,
            4,
            f"B×1×{s[0]}×{s[1]}",
            lambda t: tuple(t.shape[1:]) == (1, *s),
        ),
    )
    for name, t, ndim, shape, ok in rules:
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise InputError(f"{name} must be a torch tensor ({shape}), got {type(t).__name__}")
        if t.is_complex() or t.dtype == torch.bool:
            raise InputError(f"{name} must be a real numeric tensor, got {t.dtype}")
        if t.ndim != ndim or not ok(t) or t.shape[0] == 0:
            raise InputError(f"{name} must be {shape}, got shape {tuple(t.shape)}")
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise InputError(f"{name} contains NaN or infinite values; expected finite numbers")
    if point_coords is not None and point_coords.shape[1] > MAX_POINTS_PER_PROMPT:
        raise InputError(f"point_coords has more than {MAX_POINTS_PER_PROMPT} points per prompt")
    if point_coords is not None and point_labels.shape != point_coords.shape[:2]:
        raise InputError(
            f"point_labels shape {tuple(point_labels.shape)} does not match point_coords "
            f"{tuple(point_coords.shape)}: expected B×N, one label per point"
        )
    if point_coords is not None and point_coords.abs().max() > MAX_COORDINATE:
        raise InputError(f"point_coords must lie within ±{MAX_COORDINATE:.0f} pixels")
    if boxes is not None and boxes.abs().max() > MAX_COORDINATE:
        raise InputError(f"boxes must lie within ±{MAX_COORDINATE:.0f} pixels")
    sizes = {t.shape[0] for t in (point_coords, boxes, mask_input) if t is not None} - {1}
    if len(sizes) > 1:
        raise InputError(
            f"prompt batch sizes differ: {sorted(sizes)}; every prompt needs the same B (or 1)"
        )
