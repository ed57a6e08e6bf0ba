"""The decode endpoint's prompts, checked once, where a request brings them.

Shapes and values follow ``segany.prompts.check_prompts`` (the library's one prompt check:
finite numbers, N×2 points with one label each, XYXY boxes, mask logits of the model's low-res
size). The API's own rules narrow it: at least one prompt, 1 to ``MAX_POINTS`` clicks labelled
1 or 0 (no padding or box-corner labels), and one prompt set per request. The checks run before
any model work, so a malformed click never costs an encoder run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segany.errors import InputError
from segany.prompts import check_prompts
from segany.server.schemas import DecodeIn

MAX_POINTS = 64


@dataclass(frozen=True)
class DecodePrompts:
    """One prompt set in original-image pixels: points N×2 (XY), labels N (1 or 0), box 4
    (XYXY), mask_input 1×s×s low-res logits; any may be None, not all."""

    points: np.ndarray | None
    labels: np.ndarray | None
    box: np.ndarray | None
    mask_input: np.ndarray | None


def decode_prompts(body: DecodeIn, low_res_size: tuple[int, int]) -> DecodePrompts:
    """``body``'s prompts, checked for a model whose mask input is ``low_res_size`` (s, s)."""
    if body.points is None and body.labels is not None:
        raise InputError("labels given without points")
    if body.points is None and body.box is None and body.mask_input is None:
        raise InputError("give at least one prompt: points, a box or a mask_input")
    mask = None if body.mask_input is None else body.mask_input.array()
    batch = check_prompts(body.points, body.labels, body.box, mask, low_res_size=low_res_size)
    if batch.batch_size != 1:
        raise InputError(f"give one prompt set per request, got a batch of {batch.batch_size}")
    if batch.point_coords is not None and batch.point_labels is not None:
        count = batch.point_coords.shape[1]
        if count > MAX_POINTS:
            raise InputError(f"give 1 to {MAX_POINTS} points, got {count}")
        if not np.isin(batch.point_labels, (0, 1)).all():
            raise InputError("labels must give 1 (positive) or 0 (negative) for each point")
    # check_prompts gives every prompt a leading batch axis of 1: drop it.
    return DecodePrompts(
        points=None if batch.point_coords is None else batch.point_coords[0],
        labels=None if batch.point_labels is None else batch.point_labels[0],
        box=None if batch.boxes is None else batch.boxes[0],
        mask_input=None if batch.mask_input is None else batch.mask_input[0],
    )
