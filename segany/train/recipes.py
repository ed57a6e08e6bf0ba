"""Named model configs for training from scratch, beside the official variants.

``tiny`` is the bundled default model: the official modules with only their sizes changed
(so its weights also load into the reference implementation), sized to train in about an hour
on two CPU cores: 192 px input, patch 8 (a 24×24 embedding, 96×96 low-res masks), a 6-block
160-wide encoder and a 128-wide decoder.
"""

from __future__ import annotations

from segany.config import DecoderConfig, PromptConfig
from segany.modeling.vit import ViTConfig
from segany.models import SamConfig

TINY = SamConfig(
    "tiny",
    encoder=ViTConfig(
        embed_dim=160,
        depth=6,
        num_heads=4,
        global_attn_indexes=(2, 5),
        image_size=192,
        patch_size=8,
        window_size=8,
    ),
    prompt=PromptConfig(embed_dim=128),
    decoder=DecoderConfig(mlp_dim=512),
)

NAMED_CONFIGS: dict[str, SamConfig] = {TINY.name: TINY}
