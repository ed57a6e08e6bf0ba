"""Pure PyTorch SAM modules. Depends on torch only, so the folder can be copied elsewhere.

Image encoders come in families (``families``: the contract and the registry; one package per
family, e.g. ``vit``); the prompt encoder and mask decoder are shared. Fast inference twins sit
beside what they mirror: ``vit/chunked.py`` (the encoder's forward), ``mask_decoder_shared.py``
(the decoder over many prompts of one image; ``mask_decoder_sam2_shared.py`` for SAM 2's),
``sam_upscale.py`` (``Sam.postprocess_masks``).
"""

from __future__ import annotations

from typing import Any

from segany.modeling import (  # register the built-in encoder families
    efficientvit,
    hiera,
    tinyvit,
    vit,
)
from segany.modeling.common import MLP, LayerNorm2d, MLPBlock
from segany.modeling.configs import DecoderConfig, PromptConfig
from segany.modeling.families import EncoderConfig, EncoderFamily, family_of
from segany.modeling.mask_decoder import MaskDecoder
from segany.modeling.mask_decoder_hq import MaskDecoderHQ
from segany.modeling.mask_decoder_sam2 import MaskDecoderSAM2
from segany.modeling.prompt_encoder import PromptEncoder
from segany.modeling.sam import Sam
from segany.modeling.sam2_model import Sam2
from segany.modeling.transformer import TwoWayTransformer
from segany.modeling.vit import ImageEncoderViT, ViTConfig


def build_sam_from_parts(
    encoder: EncoderConfig,
    *,
    prompt: PromptConfig,
    decoder: DecoderConfig,
    pixel_mean: tuple[float, float, float],
    pixel_std: tuple[float, float, float],
    mask_threshold: float = 0.0,
) -> Sam:
    """Assemble an untrained ``Sam`` (eval mode) from its parts' configs
    (``segany.models.build_sam`` passes a ``SamConfig``'s)."""
    grid, size = encoder.embedding_size, encoder.frame_size
    family = family_of(encoder)
    # Built in SAM's order (encoder, prompt encoder, decoder): seeded initialisations draw from
    # the random generator in that order, so the same seed gives the same weights as before.
    image_encoder = family.build(encoder, out_chans=prompt.embed_dim)
    prompt_encoder = PromptEncoder(
        embed_dim=prompt.embed_dim,
        image_embedding_size=(grid, grid),
        input_image_size=(size, size),
    )
    decoder_args: dict[str, Any] = dict(
        transformer_dim=prompt.embed_dim,
        transformer=TwoWayTransformer(
            depth=decoder.depth,
            embedding_dim=prompt.embed_dim,
            num_heads=decoder.num_heads,
            mlp_dim=decoder.mlp_dim,
            norm_eps=decoder.norm_eps,
        ),
        num_multimask_outputs=decoder.num_multimask_outputs,
        iou_head_depth=decoder.iou_head_depth,
        iou_head_hidden_dim=decoder.iou_head_hidden_dim,
    )
    if decoder.hq:  # SAM-HQ: its early features' width comes from the encoder's family
        mask_decoder: MaskDecoder = MaskDecoderHQ(
            **decoder_args, vit_dim=family.early_width(encoder)
        )
    elif decoder.sam2:
        mask_decoder = MaskDecoderSAM2(**decoder_args)
    else:
        mask_decoder = MaskDecoder(**decoder_args)
    model = (Sam2 if decoder.sam2 else Sam)(
        image_encoder=image_encoder,
        prompt_encoder=prompt_encoder,
        mask_decoder=mask_decoder,
        pixel_mean=pixel_mean,
        pixel_std=pixel_std,
        mask_threshold=mask_threshold,
    )
    return model.eval()


__all__ = [
    "MLP",
    "DecoderConfig",
    "EncoderConfig",
    "EncoderFamily",
    "ImageEncoderViT",
    "LayerNorm2d",
    "MLPBlock",
    "MaskDecoder",
    "MaskDecoderHQ",
    "MaskDecoderSAM2",
    "PromptConfig",
    "PromptEncoder",
    "Sam",
    "Sam2",
    "TwoWayTransformer",
    "ViTConfig",
    "build_sam_from_parts",
    "efficientvit",
    "hiera",
    "tinyvit",
    "vit",
]
