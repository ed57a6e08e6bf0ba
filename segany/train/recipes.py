"""Named model configs for training from scratch, beside the official variants.

``tiny`` is the bundled default model: the official modules with only their sizes changed
(so its weights also load into the reference implementation), sized to train in about an hour
on two CPU cores: 192 px input, patch 8 (a 24×24 embedding, 96×96 low-res masks), a 6-block
160-wide encoder and a 128-wide decoder.
"""

from __future__ import annotations

from segany.models import SamConfig

TINY = SamConfig(
    "tiny",
    encoder_embed_dim=160,
    encoder_depth=6,
    encoder_num_heads=4,
    encoder_global_attn_indexes=(2, 5),
    image_size=192,
    patch_size=8,
    window_size=8,
    prompt_embed_dim=128,
    decoder_mlp_dim=512,
)

NAMED_CONFIGS: dict[str, SamConfig] = {TINY.name: TINY}
