"""Run a model's weights at another input size.

What depends on the input size is the encoder's family's business
(``EncoderFamily.resize_state``): for a ViT, its absolute position embedding (one vector per
patch of the input grid) and the relative-position tables of its global-attention blocks
(2·grid - 1 offsets); windowed blocks' tables depend on the window, not the input. The official
code already resamples a relative-position table of another length linearly at run time; here
the tables are resampled once, so that the result is an ordinary model of the new size, stored
with its own config, loading strictly into the official modules.

Used for segany-tiny v4: v3's weights, trained at 192 px, at 384 px (MODEL_CARD.md).
"""

from __future__ import annotations

import dataclasses

import torch

from segany.errors import InputError
from segany.modeling import Sam
from segany.modeling.families import family_of
from segany.models import build_sam

_ENCODER = "image_encoder."


def resize_input(model: Sam, image_size: int) -> Sam:
    """A new model (eval mode) reading ``image_size``-px inputs with ``model``'s weights: the
    encoder's position tables resampled by its family (ViT: the absolute embedding
    bicubically, the global blocks' relative tables linearly); every other weight copied."""
    cfg = model.config
    if cfg is None:
        raise InputError("resize_input needs a model built by segany.models.build_sam")
    family = family_of(cfg.encoder)
    step = cfg.image_size // cfg.embedding_size  # input pixels per embedding cell
    if image_size <= 0 or image_size % step:
        raise InputError(
            f"image_size must be a positive multiple of the patch size {step}; got {image_size}"
        )
    try:
        encoder = family.with_input_size(cfg.encoder, image_size)
    except ValueError as e:
        raise InputError(str(e)) from None
    resized = build_sam(dataclasses.replace(cfg, encoder=encoder))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    inner = {k[len(_ENCODER) :]: v for k, v in state.items() if k.startswith(_ENCODER)}
    for key, value in family.resize_state(inner, cfg.encoder, encoder).items():
        state[_ENCODER + key] = value
    with torch.no_grad():
        resized.load_state_dict(state, strict=True)
    resized.generator_defaults = dict(model.generator_defaults)
    return resized.eval()
