"""A quick in-training validation: single-point, 3-click and box mIoU in the model's input frame.

Each mask gets one click at the point farthest from its boundary (multimask output, the
top-scored mask kept) and, separately, its tight box (single output). The 3-click figure
continues from the point's mask: two corrective clicks, each at the error pixel farthest from
the error's boundary (positive if it lies in the object), with the previous low-res logits fed
back and one output, as the evaluation's clicks protocol does. IoU is measured inside
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
    """``{"point_miou", "clicks3_miou", "box_miou", "masks"}`` over the first ``max_images``
    images."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    s = int(model.image_encoder.img_size)
    ctx = autocast or contextlib.nullcontext
    point_ious: list[torch.Tensor] = []
    box_ious: list[torch.Tensor] = []
    click_ious: list[torch.Tensor] = []
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
        rows = torch.arange(gt.shape[0], device=device)
        mask_input = None
        pred = torch.zeros_like(gt[:, :h, :w])  # replaced by the point's mask before any use
        for kind, ious in (
            ("point", point_ious),
            ("click", None),
            ("click", click_ious),
            ("box", box_ious),
        ):
            if kind == "click":  # a corrective click at the deepest error pixel
                new = prompts.center_points(pred ^ gt[:, :h, :w]).to(device)
                inside = gt[rows, new[:, 1].long(), new[:, 0].long()]
                err = (pred ^ gt[:, :h, :w]).flatten(1).any(1)
                pts = torch.cat([pts, new[:, None]], 1)
                lbl = torch.cat([lbl, torch.where(err, inside.float(), -1.0)[:, None]], 1)
            with ctx():
                sparse, dense = model.prompt_encoder(
                    points=(pts, lbl) if kind != "box" else None,
                    boxes=boxes if kind == "box" else None,
                    masks=mask_input if kind == "click" else None,
                )
                low, score = model.mask_decoder(
                    image_embeddings=emb,
                    image_pe=pe,
                    sparse_prompt_embeddings=sparse,
                    dense_prompt_embeddings=dense,
                    multimask_output=kind == "point",
                )
            best = score.float().argmax(1)
            low = low.float()[rows, best][:, None]  # M×1×h×w
            mask_input = low
            up = F.interpolate(low, (s, s), mode="bilinear", align_corners=False)[:, 0]
            pred = up[:, :h, :w] > 0
            if ious is not None:
                ious.append(mask_iou(pred, gt[:, :h, :w]).cpu())
    model.train(was_training)
    if not point_ious:
        return {"point_miou": 0.0, "clicks3_miou": 0.0, "box_miou": 0.0, "masks": 0}
    p, c, b = torch.cat(point_ious), torch.cat(click_ious), torch.cat(box_ious)
    return {
        "point_miou": float(p.mean()),
        "clicks3_miou": float(c.mean()),
        "box_miou": float(b.mean()),
        "masks": int(p.numel()),
    }
