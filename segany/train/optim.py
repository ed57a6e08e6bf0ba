"""Optimizer pieces: AdamW groups with layer-wise lr decay, the lr schedule, drop path.

Everything takes plain numbers, not a ``TrainConfig``, so ``trainer`` imports this module and
not the other way round.

Layer ids follow the official parameter names: ``image_encoder.patch_embed``/``pos_embed`` are
layer 0, ``image_encoder.blocks.N`` layer N+1, everything after the blocks (neck, prompt encoder,
mask decoder) the top layer, which keeps the full learning rate.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, cast

import torch

from segany.modeling.vit.encoder import Block

if TYPE_CHECKING:
    from segany.modeling import Sam

_BLOCK = re.compile(r"^image_encoder\.blocks\.(\d+)\.")


def layer_id(name: str, depth: int) -> int:
    """The layer a parameter belongs to for layer-wise lr decay (0 .. depth + 1)."""
    if name.startswith(("image_encoder.patch_embed", "image_encoder.pos_embed")):
        return 0
    hit = _BLOCK.match(name)
    if hit:
        return int(hit.group(1)) + 1
    return depth + 1


def _no_decay(name: str, param: torch.Tensor) -> bool:
    # Norms, biases and positional tables are not shrunk towards zero.
    return param.ndim <= 1 or "pos_embed" in name or "rel_pos" in name


def build_optimizer(
    model: Sam, *, lr: float, weight_decay: float, layer_decay: float = 1.0
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, grouped by (layer, weight decay).

    Layer ``l`` of ``depth + 1`` learns at ``lr × layer_decay ** (depth + 1 - l)`` (its
    ``lr_scale``); norms, biases and positional tables get no weight decay.
    """
    depth = len(model.image_encoder.blocks)
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lid = layer_id(name, depth)
        nd = _no_decay(name, p)
        key = (lid, nd)
        if key not in groups:
            scale = layer_decay ** (depth + 1 - lid)
            groups[key] = {
                "params": [],
                "lr": lr * scale,
                "lr_scale": scale,
                "weight_decay": 0.0 if nd else weight_decay,
            }
        groups[key]["params"].append(p)
    ordered = [groups[k] for k in sorted(groups, key=lambda k: (-k[0], k[1]))]
    return torch.optim.AdamW(ordered, lr=lr, betas=(0.9, 0.999))


def warmup_cosine(
    step: int, *, total_steps: int, warmup_steps: int, min_ratio: float = 0.0
) -> float:
    """The lr factor at ``step`` (0-based): linear warm-up to 1 over ``warmup_steps``, then
    cosine decay to ``min_ratio`` at ``total_steps`` (and ``min_ratio`` after it).

    The one schedule of training and distillation (``LambdaLR(opt, lambda s: ...)``).
    """
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def set_drop_path(model: Sam, rate: float) -> None:
    """Stochastic depth on the encoder blocks: each block's ``drop_path`` (a training-only rate
    the modeling code applies to both residual branches) rises linearly from 0 at the first
    block to ``rate`` at the last, as in ViT/ViTDet training."""
    blocks = [cast(Block, b) for b in model.image_encoder.blocks]
    for i, block in enumerate(blocks):
        block.drop_path = rate * i / max(1, len(blocks) - 1) if rate > 0 else 0.0
