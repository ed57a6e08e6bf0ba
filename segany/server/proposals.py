"""When a model's proposal is a mask the image already has.

The rule: a proposal whose mask IoU (``segany.masks.mask_iou``) with a mask already stored for
the image is above ``DUPLICATE_IOU`` is a duplicate and is not proposed again. Every stored
mask counts, whatever its review state: a pending proposal, a person's mask, an accepted one
and a rejected one (a person said no to it; proposing it again would undo that). 0.7 is the
threshold the automatic generator uses between its own masks (box NMS), applied to the masks
themselves: two answers to "the same object" from one run are as far apart as two runs'.
A run of pre-fill on an unchanged image therefore adds nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from segany.masks import mask_iou

DUPLICATE_IOU = 0.7


def novel(candidates: Sequence[np.ndarray], existing: Sequence[np.ndarray]) -> list[bool]:
    """For each candidate H×W bool mask, whether it is not a duplicate (the module's rule) of
    an ``existing`` H×W mask, nor of a candidate kept before it."""
    kept: list[np.ndarray] = list(existing)
    boxes = [_box(m) for m in kept]
    out = []
    for mask in candidates:
        box = _box(mask)
        # Masks whose boxes do not overlap have IoU 0: only the others are compared.
        near = [m for m, b in zip(kept, boxes, strict=True) if _overlap(box, b)]
        duplicate = bool(near) and float(mask_iou(mask[None], np.stack(near)).max()) > DUPLICATE_IOU
        out.append(not duplicate)
        if not duplicate:
            kept.append(mask)
            boxes.append(box)
    return out


def _box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def _overlap(a: tuple[int, int, int, int] | None, b: tuple[int, int, int, int] | None) -> bool:
    if a is None or b is None:
        return False
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]
