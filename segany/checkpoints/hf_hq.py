"""transformers' ``SamHQModel`` (SAM-HQ): the names and config fields it adds to ``SamModel``.

A ``SamHQModel`` state dict is a ``SamModel`` one (same encoder, prompt encoder and SAM decoder
names, mapped in ``segany.checkpoints.hf``) plus the HQ decoder's parts, which transformers
renames from the official ``sam_hq_vit_*.pth`` keys as follows (each checked against
``transformers/models/sam_hq/modeling_sam_hq.py``, ``SamHQMaskDecoder``, and its conversion
script's key table, ``convert_samhq_to_hf.py``):

- the HQ output token ``mask_decoder.hf_token`` is ``mask_decoder.hq_token``;
- its hypernetwork ``mask_decoder.hf_mlp.layers.0..2`` is ``mask_decoder.hq_mask_mlp.proj_in,
  layers.0, proj_out`` (the same MLP renaming as the other heads);
- the three ``nn.Sequential`` stacks lose their indices (0: first conv, 1: channel norm, 2: GELU
  with no weights, 3: second conv): ``compress_vit_feat`` -> ``compress_vit_conv1/_norm/_conv2``,
  ``embedding_encoder`` -> ``encoder_conv1/_norm/_conv2``, ``embedding_maskfeature`` ->
  ``mask_conv1/_norm/_conv2``.

No tensor changes shape. The config adds ``mask_decoder_config.vit_dim``, the early feature map's
width, which segany takes from the encoder (for ViT its embedding width) and checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from segany.errors import CheckpointError

#: config.json ``model_type`` of transformers' SamHQModel (SamModel's is "sam").
HF_HQ_MODEL_TYPE = "sam_hq"

#: (official prefix, transformers prefix) of the HQ decoder's own parts.
HQ_KEY_RULES: tuple[tuple[str, str], ...] = (
    ("mask_decoder.hf_token.", "mask_decoder.hq_token."),
    ("mask_decoder.compress_vit_feat.0.", "mask_decoder.compress_vit_conv1."),
    ("mask_decoder.compress_vit_feat.1.", "mask_decoder.compress_vit_norm."),
    ("mask_decoder.compress_vit_feat.3.", "mask_decoder.compress_vit_conv2."),
    ("mask_decoder.embedding_encoder.0.", "mask_decoder.encoder_conv1."),
    ("mask_decoder.embedding_encoder.1.", "mask_decoder.encoder_norm."),
    ("mask_decoder.embedding_encoder.3.", "mask_decoder.encoder_conv2."),
    ("mask_decoder.embedding_maskfeature.0.", "mask_decoder.mask_conv1."),
    ("mask_decoder.embedding_maskfeature.1.", "mask_decoder.mask_norm."),
    ("mask_decoder.embedding_maskfeature.3.", "mask_decoder.mask_conv2."),
)

#: The HQ token's hypernetwork head: official prefix, transformers prefix (an MLP head whose
#: layers are renamed like ``output_hypernetworks_mlps.N``).
HQ_MLP_HEAD = ("mask_decoder.hf_mlp.", "mask_decoder.hq_mask_mlp.")


def hq_head_to_hf(key: str) -> str:
    """``mask_decoder.hf_mlp.<rest>`` -> ``mask_decoder.hq_mask_mlp.<rest>``; others unchanged."""
    official, hf = HQ_MLP_HEAD
    return hf + key[len(official) :] if key.startswith(official) else key


def hq_head_to_official(key: str) -> str:
    """``mask_decoder.hq_mask_mlp.<rest>`` -> ``mask_decoder.hf_mlp.<rest>``; others unchanged."""
    official, hf = HQ_MLP_HEAD
    return official + key[len(hf) :] if key.startswith(hf) else key


def check_hq_decoder(decoder: Mapping[str, Any], vision: Mapping[str, Any]) -> None:
    """A SamHQModel config's decoder must read the early map at the encoder's width (segany
    derives that width from the encoder; transformers stores it as ``vit_dim``)."""
    width = int(vision.get("hidden_size", 768))
    vit_dim = int(decoder.get("vit_dim", 768))
    if vit_dim != width:
        raise CheckpointError(
            f"Hugging Face config.json: mask_decoder_config.vit_dim is {vit_dim} but the vision "
            f"encoder is {width} wide; SAM-HQ's decoder reads the encoder's first global block, "
            "so the two must be equal"
        )


def to_hq_config(config: dict[str, Any], vit_dim: int) -> dict[str, Any]:
    """transformers' SamModel ``config.json`` -> the SamHQModel one for the same sizes."""
    out = dict(config)
    out["architectures"] = ["SamHQModel"]
    out["model_type"] = HF_HQ_MODEL_TYPE
    for part, model_type in (
        ("vision_config", "sam_hq_vision_model"),
        ("prompt_encoder_config", "sam_hq_prompt_encoder"),
        ("mask_decoder_config", "sam_hq_mask_decoder"),
    ):
        out[part] = {**out[part], "model_type": model_type}
    out["mask_decoder_config"]["vit_dim"] = vit_dim
    return out
