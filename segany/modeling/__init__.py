"""Pure PyTorch SAM modules. Depends on torch only, so the folder can be copied elsewhere."""

from __future__ import annotations

from segany.modeling.common import MLP, LayerNorm2d, MLPBlock
from segany.modeling.mask_decoder import MaskDecoder
from segany.modeling.prompt_encoder import PromptEncoder
from segany.modeling.sam import Sam
from segany.modeling.transformer import TwoWayTransformer
from segany.modeling.vit import ImageEncoderViT


def build_sam_from_sizes(
    *,
    image_size: int,
    patch_size: int,
    window_size: int,
    mlp_ratio: float,
    encoder_embed_dim: int,
    encoder_depth: int,
    encoder_num_heads: int,
    encoder_global_attn_indexes: tuple[int, ...],
    prompt_embed_dim: int,
    decoder_depth: int,
    decoder_num_heads: int,
    decoder_mlp_dim: int,
    num_multimask_outputs: int,
    iou_head_depth: int,
    iou_head_hidden_dim: int,
    pixel_mean: tuple[float, float, float],
    pixel_std: tuple[float, float, float],
    mask_threshold: float = 0.0,
) -> Sam:
    """Assemble a ``Sam`` from its sizes (``segany.models.build_sam`` passes a config's)."""
    grid = image_size // patch_size
    model = Sam(
        image_encoder=ImageEncoderViT(
            img_size=image_size,
            patch_size=patch_size,
            embed_dim=encoder_embed_dim,
            depth=encoder_depth,
            num_heads=encoder_num_heads,
            mlp_ratio=mlp_ratio,
            out_chans=prompt_embed_dim,
            window_size=window_size,
            global_attn_indexes=tuple(encoder_global_attn_indexes),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(image_size, image_size),
        ),
        mask_decoder=MaskDecoder(
            transformer_dim=prompt_embed_dim,
            transformer=TwoWayTransformer(
                depth=decoder_depth,
                embedding_dim=prompt_embed_dim,
                num_heads=decoder_num_heads,
                mlp_dim=decoder_mlp_dim,
            ),
            num_multimask_outputs=num_multimask_outputs,
            iou_head_depth=iou_head_depth,
            iou_head_hidden_dim=iou_head_hidden_dim,
        ),
        pixel_mean=pixel_mean,
        pixel_std=pixel_std,
        mask_threshold=mask_threshold,
    )
    return model.eval()


__all__ = [
    "MLP",
    "ImageEncoderViT",
    "LayerNorm2d",
    "MLPBlock",
    "MaskDecoder",
    "PromptEncoder",
    "Sam",
    "TwoWayTransformer",
    "build_sam_from_sizes",
]
