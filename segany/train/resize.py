"""Run a model's weights at another input size.

A ViT encoder's only size-bound weights are its absolute position embedding (one vector per
patch of the input grid) and the relative-position tables of its global-attention blocks
(2·grid - 1 offsets); windowed blocks' tables depend on the window, not the input. The official
code already resamples a relative-position table of another length linearly at run time
(``resample_offsets``); here both are resampled once, so that the result is an ordinary model
of the new size, stored with its own config, loading strictly into the official modules.

Used for segany-tiny v4: v3's weights, trained at 192 px, at 384 px (MODEL_CARD.md).
"""

from __future__ import annotations

import dataclasses

import torch
from torch.nn import functional as F

from segany.errors import InputError
from segany.modeling import Sam
from segany.modeling.vit.encoder import resample_offsets
from segany.models import build_sam


def resize_input(model: Sam, image_size: int) -> Sam:
    """A new model (eval mode) reading ``image_size``-px inputs with ``model``'s weights: the
    absolute position embedding (1×g×g×C) resampled bicubically to the new grid, the global
    blocks' relative-position tables ((2g-1)×D) linearly; every other weight copied."""
    cfg = model.config
    if cfg is None:
        raise InputError("resize_input needs a model built by segany.models.build_sam")
    if image_size <= 0 or image_size % cfg.patch_size:
        raise InputError(
            f"image_size must be a positive multiple of the patch size {cfg.patch_size}; "
            f"got {image_size}"
        )
    new_cfg = dataclasses.replace(cfg, image_size=image_size)
    resized = build_sam(new_cfg)
    want = resized.state_dict()
    state = {}
    for key, value in model.state_dict().items():
        shape = want[key].shape
        if value.shape == shape:
            state[key] = value.detach().clone()
        elif key == "image_encoder.pos_embed":
            grid = value.permute(0, 3, 1, 2).float()  # 1×g×g×C -> 1×C×g×g
            grid = F.interpolate(grid, size=tuple(shape[1:3]), mode="bicubic", align_corners=False)
            state[key] = grid.permute(0, 2, 3, 1).to(value.dtype)
        elif key.endswith((".rel_pos_h", ".rel_pos_w")):
            state[key] = resample_offsets(value.float(), shape[0]).to(value.dtype)
        else:  # pragma: no cover - build_sam changes no other shape with the input size
            raise AssertionError(f"{key}: {tuple(value.shape)} -> {tuple(shape)}")
    with torch.no_grad():
        resized.load_state_dict(state, strict=True)
    return resized.eval()
