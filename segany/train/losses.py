"""SAM's training losses: focal + dice on masks (20 : 1), MSE on the predicted IoU.

With an ambiguous prompt (a single point) the decoder returns three masks and only the one with
the lowest mask loss is trained on (min-over-outputs), so each output can specialise on one
reading of the click; the IoU head is trained on every output. Shapes: logits ``M×K×H×W``
(K outputs per mask, 1 or 3), targets ``M×H×W`` bool, predicted IoUs ``M×K``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from segany.errors import InputError
from segany.masks import mask_iou


def sigmoid_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Focal loss averaged over the last two (pixel) dims: ``...×H×W`` -> ``...``.

    ``alpha`` weighs positive pixels (1 - alpha the negative ones); a negative alpha disables the
    weighting.
    """
    t = targets.to(logits.dtype)
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return loss.mean(dim=(-2, -1))


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft dice loss per mask: ``...×H×W`` -> ``...``; ``1 - (2|P∩T| + s) / (|P| + |T| + s)``."""
    p = torch.sigmoid(logits).flatten(-2)
    t = targets.to(p.dtype).flatten(-2)
    return 1 - (2 * (p * t).sum(-1) + smooth) / (p.sum(-1) + t.sum(-1) + smooth)


@dataclass(frozen=True)
class LossWeights:
    focal: float = 20.0
    dice: float = 1.0
    iou: float = 1.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0


@dataclass
class LossOutput:
    """``total`` (scalar, differentiable), its parts (floats), ``best`` M (chosen output per
    mask) and ``iou`` M×K (actual IoU of every output, detached)."""

    total: torch.Tensor
    focal: float
    dice: float
    iou_mse: float
    best: torch.Tensor
    iou: torch.Tensor


def sam_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    iou_pred: torch.Tensor,
    weights: LossWeights | None = None,
    threshold: float = 0.0,
) -> LossOutput:
    """SAM loss for one prompt round, averaged over the M masks."""
    w = weights or LossWeights()
    if logits.dim() != 4 or targets.dim() != 3:
        raise InputError(
            f"logits must be M×K×H×W and targets M×H×W, got {tuple(logits.shape)} and "
            f"{tuple(targets.shape)}"
        )
    if logits.shape[0] != targets.shape[0] or logits.shape[-2:] != targets.shape[-2:]:
        raise InputError(
            f"logits {tuple(logits.shape)} do not match targets {tuple(targets.shape)}"
        )
    logits = logits.float()
    t = targets[:, None].expand_as(logits)
    focal = sigmoid_focal_loss(logits, t, w.focal_alpha, w.focal_gamma)  # M×K
    dice = dice_loss(logits, t)  # M×K
    per_output = w.focal * focal + w.dice * dice
    best = per_output.argmin(dim=1)  # min-over-outputs: only the best output is trained
    rows = torch.arange(logits.shape[0], device=logits.device)
    with torch.no_grad():
        actual = mask_iou(logits > threshold, t)
    iou_mse = F.mse_loss(iou_pred.float(), actual)
    total = per_output[rows, best].mean() + w.iou * iou_mse
    return LossOutput(
        total=total,
        focal=float(focal.detach()[rows, best].mean()),
        dice=float(dice.detach()[rows, best].mean()),
        iou_mse=float(iou_mse.detach()),
        best=best,
        iou=actual,
    )
