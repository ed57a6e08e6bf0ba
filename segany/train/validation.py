"""A quick in-training validation: single-point and box mIoU in the model's input frame.

Each mask gets one click at the point farthest from its boundary (multimask output, the
top-scored mask kept) and, separately, its tight box (single output). IoU is measured inside
the resized image (padding excluded). The full protocols at original resolution live in
``segany.evaluate``; this one is cheap enough to run every few hundred steps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from segany.train import prompts
from segany.train.datasets import MaskDataset, collate
from segany.train.losses import mask_iou

if TYPE_CHECKING:
    from segany.modeling import Sam


@torch.no_grad()
def prompt_miou(
    model: Sam,
    dataset: MaskDataset,
    max_images: int = 100,
    autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
) -> dict[str, float]:
    """``{"point_miou", "box_miou", "masks"}`` over the first ``max_images`` images."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    s = int(model.image_encoder.img_size)
    ctx = autocast or contextlib.nullcontext
    point_ious: list[torch.Tensor] = []
    box_ious: list[torch.Tensor] = []
    for i in range(min(max_images, len(dataset))):
        images, masks, sizes = collate([dataset.get(i)])
        gt = masks[0].to(device)
        if gt.shape[0] == 0:
            continue
        h, w = sizes[0]
        with ctx():
            emb = model.image_encoder(images.to(device))
        pe = model.prompt_encoder.get_dense_pe()
        pts = prompts.center_points(gt)[:, None].to(device)
        lbl = torch.ones(gt.shape[0], 1, device=device)
        boxes = prompts.mask_boxes(gt).to(device)
        for kind, ious in (("point", point_ious), ("box", box_ious)):
            with ctx():
                sparse, dense = model.prompt_encoder(
                    points=(pts, lbl) if kind == "point" else None,
                    boxes=boxes if kind == "box" else None,
                    masks=None,
                )
                low, score = model.mask_decoder(
                    image_embeddings=emb,
                    image_pe=pe,
                    sparse_prompt_embeddings=sparse,
                    dense_prompt_embeddings=dense,
                    multimask_output=kind == "point",
                )
            best = score.float().argmax(1)
            low = low.float()[torch.arange(low.shape[0]), best][:, None]
            up = F.interpolate(low, (s, s), mode="bilinear", align_corners=False)[:, 0]
            pred = up[:, :h, :w] > 0
            ious.append(mask_iou(pred, gt[:, :h, :w]).cpu())
    model.train(was_training)
    if not point_ious:
        return {"point_miou": 0.0, "box_miou": 0.0, "masks": 0}
    p, b = torch.cat(point_ious), torch.cat(box_ious)
    return {"point_miou": float(p.mean()), "box_miou": float(b.mean()), "masks": int(p.numel())}
