"""Prompt simulation as in the SAM paper's training.

The first prompt of a mask is either one point drawn uniformly inside the mask or its bounding
box with noise (standard deviation a fraction of the box side, capped in pixels). Each later round
adds one point drawn uniformly from the error region of the previous prediction: positive where
the object was missed, negative where the prediction spilled over; the previous low-resolution
logits are fed back as the mask prompt. Some rounds add no point at all, so the model learns to
refine from its own mask alone.

All coordinates are XY pixels of the model's input frame (resized + padded), as the prompt
encoder expects. Masks are ``M×H×W`` bool; every function is batched over the M masks. The
tight box is ``segany.masks.batched_mask_to_box``; the center click used to validate is the
protocol's (``segany.evaluate.prompts.center_point``).
"""

from __future__ import annotations

import torch

from segany.errors import InputError
from segany.masks import batched_mask_to_box


def _uniform_pixel(region: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One pixel drawn uniformly from each ``M×H×W`` region -> ``M×2`` XY (float).

    Rows whose region is empty get a pixel drawn from the whole frame; callers mark them.
    """
    m, h, w = region.shape
    weights = region.reshape(m, h * w).float()
    empty = weights.sum(1) == 0
    weights[empty] = 1.0
    idx = torch.multinomial(weights, 1, generator=generator).squeeze(1)
    return torch.stack([idx % w, idx // w], dim=1).float()


def points_in_masks(masks: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One point drawn uniformly inside each mask: ``M×H×W`` bool -> ``M×2`` XY."""
    if masks.dim() != 3:
        raise InputError(f"masks must be M×H×W, got shape {tuple(masks.shape)}")
    return _uniform_pixel(masks, generator)


def noisy_boxes(
    masks: torch.Tensor,
    noise: float = 0.1,
    max_noise: float = 20.0,
    bounds: tuple[int, int] | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Tight boxes of ``M×H×W`` masks with each coordinate jittered -> ``M×4`` XYXY float.

    The tight box is ``segany.masks.batched_mask_to_box`` (inclusive pixels, the protocol's).
    The jitter of a coordinate has standard deviation ``noise`` × the box side along its axis and
    is clipped to ``max_noise`` pixels; boxes stay inside ``bounds`` (h, w) and keep x0≤x1, y0≤y1.
    """
    boxes = batched_mask_to_box(masks).float()
    side = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1).repeat(1, 2)
    jitter = torch.randn(boxes.shape, generator=generator).to(boxes.device) * side * noise
    boxes = boxes + jitter.clamp(-max_noise, max_noise)
    h, w = bounds if bounds is not None else masks.shape[-2:]
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w - 1)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h - 1)
    # A jitter larger than the box may cross its sides: keep a proper box.
    x0, x1 = torch.minimum(boxes[:, 0], boxes[:, 2]), torch.maximum(boxes[:, 0], boxes[:, 2])
    y0, y1 = torch.minimum(boxes[:, 1], boxes[:, 3]), torch.maximum(boxes[:, 1], boxes[:, 3])
    return torch.stack([x0, y0, x1, y1], 1)


def error_points(
    pred: torch.Tensor, gt: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A corrective click per mask from the error region of ``pred`` vs ``gt`` (both M×H×W bool).

    Returns points ``M×2`` XY and labels ``M``: 1 where the point lies in a missed part of the
    object, 0 where it lies in a false-positive part, -1 (a padding point the prompt encoder
    ignores) where the prediction has no error at all.
    """
    if pred.shape != gt.shape:
        raise InputError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} differ in shape")
    error = pred ^ gt
    pts = _uniform_pixel(error, generator)
    xi, yi = pts[:, 0].long(), pts[:, 1].long()
    inside = gt[torch.arange(gt.shape[0], device=gt.device), yi, xi]
    labels = inside.float()
    labels[~error.flatten(1).any(1)] = -1.0
    return pts, labels


def center_error_points(pred: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The evaluation's corrective click per mask (``segany.evaluate.prompts.next_click``: the
    center of the largest error region), for ``pred`` vs ``gt`` (both M×H×W bool).

    Returns points ``M×2`` XY and labels ``M`` as ``error_points`` does (-1: no error, a padding
    point at the origin).
    """
    from segany.evaluate.prompts import next_click

    if pred.shape != gt.shape:
        raise InputError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} differ in shape")
    pts = torch.zeros(gt.shape[0], 2)
    labels = torch.full((gt.shape[0],), -1.0)
    p_np, g_np = pred.cpu().numpy(), gt.cpu().numpy()
    for i in range(gt.shape[0]):
        click = next_click(g_np[i], p_np[i], "area")
        if click is not None:
            pts[i, 0], pts[i, 1], labels[i] = float(click[0]), float(click[1]), float(click[2])
    return pts, labels


def mask_only_rounds(num_rounds: int, generator: torch.Generator | None = None) -> set[int]:
    """Rounds (0-based) that add no new point: the last one and one random middle round.

    With the paper's 11 rounds: round 0 is the first prompt, 8 rounds add error points and two
    (one inserted at random among them, one at the end) add nothing but the previous mask.
    """
    if num_rounds < 1:
        raise InputError(f"num_rounds must be at least 1, got {num_rounds}")
    if num_rounds < 3:
        return set()
    if num_rounds == 3:
        return {2}
    middle = 1 + int(torch.randint(num_rounds - 2, (1,), generator=generator))
    return {middle, num_rounds - 1}
