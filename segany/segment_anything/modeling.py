"""The official ``segment_anything.modeling`` names: segany's modules, which keep the official
checkpoint keys (an official state dict loads into them strictly).

``Sam``, ``PromptEncoder``, ``MaskDecoder`` and ``TwoWayTransformer`` are segany's classes
(keyword arguments with the official names). ``ImageEncoderViT`` here also takes the official
constructor's extra options, for the values the released models use; other values raise
``InputError`` instead of building a different model silently.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from segany.errors import InputError
from segany.modeling import ImageEncoderViT as _ImageEncoderViT
from segany.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

__all__ = ["ImageEncoderViT", "MaskDecoder", "PromptEncoder", "Sam", "TwoWayTransformer"]


class ImageEncoderViT(_ImageEncoderViT):
    """segany's ViT encoder with the official constructor (same argument names, order and
    defaults). Supported: ``qkv_bias=True``, ``use_abs_pos=True``, ``use_rel_pos=True``,
    GELU activation and LayerNorm with eps 1e-6 (what every released SAM model uses)."""

    def __init__(
        self,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        qkv_bias: bool = True,
        norm_layer: Any = nn.LayerNorm,
        act_layer: Any = nn.GELU,
        use_abs_pos: bool = True,
        use_rel_pos: bool = False,
        rel_pos_zero_init: bool = True,
        window_size: int = 0,
        global_attn_indexes: tuple[int, ...] = (),
    ) -> None:
        norm = norm_layer(8)
        unsupported = {
            "qkv_bias": not qkv_bias,
            "use_abs_pos": not use_abs_pos,
            "use_rel_pos": not use_rel_pos,
            "act_layer": act_layer is not nn.GELU,
            "norm_layer": not (isinstance(norm, nn.LayerNorm) and norm.eps == 1e-6),
        }
        bad = [k for k, v in unsupported.items() if v]
        if bad:
            raise InputError(
                f"segany's ImageEncoderViT does not implement {', '.join(bad)} as given; it "
                "supports qkv_bias=True, use_abs_pos=True, use_rel_pos=True, act_layer=nn.GELU "
                "and norm_layer=partial(nn.LayerNorm, eps=1e-6), the released models' settings"
            )
        del rel_pos_zero_init  # only the initial values of trained parameters
        super().__init__(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=in_chans,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            out_chans=out_chans,
            window_size=window_size,
            global_attn_indexes=tuple(global_attn_indexes),
        )
