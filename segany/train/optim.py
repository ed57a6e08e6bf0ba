"""Optimizer pieces: AdamW groups with layer-wise lr decay, the lr schedule, drop path.

Everything takes plain numbers, not a ``TrainConfig``, so ``trainer`` imports this module and
not the other way round.

Layer ids inside the image encoder are its family's (``EncoderFamily.layer_id``; for ViT
``patch_embed``/``pos_embed`` are layer 0, ``blocks.N`` layer N+1, the neck the top layer);
everything outside the encoder (prompt encoder, mask decoder) is the top layer, which keeps the
full learning rate.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from segany.errors import InputError
from segany.modeling.families import EncoderFamily, family_of

if TYPE_CHECKING:
    from segany.config import EncoderConfig
    from segany.modeling import Sam

_ENCODER = "image_encoder."


def _encoder_family(model: Sam) -> tuple[EncoderFamily, EncoderConfig]:
    if model.config is None:
        raise InputError(
            "layer-wise decay and drop path need a model built by segany.build_sam or loaded "
            "with segany.load_model (its config names the encoder family)"
        )
    return family_of(model.config.encoder), model.config.encoder


def layer_id(name: str, family: EncoderFamily, config: EncoderConfig) -> int:
    """The layer the parameter ``name`` belongs to for layer-wise lr decay
    (0 .. ``family.num_layers(config) + 1``; outside the encoder: the top)."""
    if name.startswith(_ENCODER):
        return family.layer_id(name[len(_ENCODER) :], config)
    return family.num_layers(config) + 1


def _no_decay(name: str, param: torch.Tensor, family: EncoderFamily) -> bool:
    # Norms, biases and the encoder family's position tables are not shrunk towards zero.
    if param.ndim <= 1:
        return True
    inner = name.removeprefix(_ENCODER)
    return inner != name and any(part in inner for part in family.no_weight_decay)


def build_optimizer(
    model: Sam, *, lr: float, weight_decay: float, layer_decay: float = 1.0
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, grouped by (layer, weight decay).

    Layer ``l`` of ``depth + 1`` learns at ``lr × layer_decay ** (depth + 1 - l)`` (its
    ``lr_scale``); norms, biases and the family's ``no_weight_decay`` tensors (ViT's position
    tables) get no weight decay.
    """
    family, config = _encoder_family(model)
    depth = family.num_layers(config)
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lid = layer_id(name, family, config)
        nd = _no_decay(name, p, family)
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
    """Stochastic depth on the encoder blocks, as its family applies it (ViT: each block's
    training-only ``drop_path`` rises linearly from 0 at the first block to ``rate`` at the
    last, as in ViT/ViTDet training)."""
    family, _ = _encoder_family(model)
    try:
        family.set_drop_path(model.image_encoder, rate)
    except ValueError as e:
        raise InputError(str(e)) from None
