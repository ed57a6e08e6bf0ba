"""transformers' ``Sam2VisionConfig`` (with its Hiera ``backbone_config``) <-> ``HieraConfig``.

transformers spells out per stage what ``HieraConfig`` derives (each stage's width and heads
double, the first block of stages 2-4 pools its queries by 2, the 7×7 stride-4 stem, the neck's
1×1 lateral convs with the top-down path into the stride-16 level only); a config.json whose
numbers leave that pattern is refused by name rather than built differently. ``save_pretrained``
writes only the fields that differ from transformers' defaults, so absent fields take those
defaults (Hiera-T at 1024 px).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from segany.modeling.hiera.config import HieraConfig

#: transformers' defaults for ``Sam2HieraDetConfig`` (``backbone_config``).
_BACKBONE_DEFAULTS: dict[str, Any] = {
    "hidden_size": 96,
    "num_attention_heads": 1,
    "num_channels": 3,
    "image_size": [1024, 1024],
    "patch_kernel_size": [7, 7],
    "patch_stride": [4, 4],
    "patch_padding": [3, 3],
    "query_stride": [2, 2],
    "window_positional_embedding_background_size": [7, 7],
    "num_query_pool_stages": 3,
    "blocks_per_stage": [1, 2, 7, 2],
    "embed_dim_per_stage": [96, 192, 384, 768],
    "num_attention_heads_per_stage": [1, 2, 4, 8],
    "window_size_per_stage": [8, 4, 14, 7],
    "global_attention_blocks": [5, 7, 9],
    "mlp_ratio": 4.0,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-6,
}
#: transformers' defaults for ``Sam2VisionConfig`` (the neck).
_VISION_DEFAULTS: dict[str, Any] = {
    "backbone_channel_list": [768, 384, 192, 96],
    "backbone_feature_sizes": [[256, 256], [128, 128], [64, 64]],
    "fpn_hidden_size": 256,
    "fpn_kernel_size": 1,
    "fpn_stride": 1,
    "fpn_padding": 0,
    "fpn_top_down_levels": [2, 3],
    "num_feature_levels": 3,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-6,
}


def _pair(value: Any, name: str) -> int:
    """A square side from an int or an [h, w] pair."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, (list, tuple)) and len(value) == 2 and value[0] == value[1]:
        return int(value[0])
    raise ValueError(f"{name} {value!r} is not a square side")


def _ints(value: Any, name: str) -> list[int]:
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise ValueError(f"{name} must be a list of whole numbers, got {value!r}")
    return [int(v) for v in value]


def _expect(value: Any, wanted: Any, name: str) -> None:
    if value != wanted:
        raise ValueError(f"{name} {value!r} is not supported (segany's Hiera has {wanted!r})")


def vision_out_chans(vision: Mapping[str, Any]) -> int:
    """The neck's width C (``fpn_hidden_size``) of a ``vision_config``."""
    return int({**_VISION_DEFAULTS, **vision}["fpn_hidden_size"])


def hiera_from_hf(vision: Mapping[str, Any]) -> HieraConfig:
    """``HieraConfig`` of a transformers ``Sam2VisionConfig`` dict; ``ValueError`` naming the
    field when it describes a network segany's Hiera does not build."""
    v = {**_VISION_DEFAULTS, **vision}
    b = {**_BACKBONE_DEFAULTS, **(vision.get("backbone_config") or {})}
    dim, heads = int(b["hidden_size"]), int(b["num_attention_heads"])
    stages = _ints(b["blocks_per_stage"], "blocks_per_stage")
    if len(stages) != 4:
        raise ValueError(f"blocks_per_stage {stages} is not 4 stages")
    _expect(
        _ints(b["embed_dim_per_stage"], "embed_dim_per_stage"),
        [dim << i for i in range(4)],
        "embed_dim_per_stage",
    )
    _expect(
        _ints(b["num_attention_heads_per_stage"], "num_attention_heads_per_stage"),
        [heads << i for i in range(4)],
        "num_attention_heads_per_stage",
    )
    _expect(_pair(b["patch_kernel_size"], "patch_kernel_size"), 7, "patch_kernel_size")
    _expect(_pair(b["patch_stride"], "patch_stride"), 4, "patch_stride")
    _expect(_pair(b["patch_padding"], "patch_padding"), 3, "patch_padding")
    _expect(_pair(b["query_stride"], "query_stride"), 2, "query_stride")
    _expect(int(b["num_query_pool_stages"]), 3, "num_query_pool_stages")
    _expect(int(b["num_channels"]), 3, "num_channels")
    _expect(b["hidden_act"], "gelu", "hidden_act")
    _expect(float(b["layer_norm_eps"]), 1e-6, "layer_norm_eps")
    size = _pair(b["image_size"], "image_size")
    bkg = _ints(
        b["window_positional_embedding_background_size"],
        "window_positional_embedding_background_size",
    )
    # The neck.
    _expect(
        _ints(v["backbone_channel_list"], "backbone_channel_list"),
        [dim << i for i in range(3, -1, -1)],
        "backbone_channel_list",
    )
    _expect(
        [_pair(s, "backbone_feature_sizes") for s in v["backbone_feature_sizes"]],
        [size // 4, size // 8, size // 16],
        "backbone_feature_sizes",
    )
    _expect(int(v["fpn_kernel_size"]), 1, "fpn_kernel_size")
    _expect(int(v["fpn_stride"]), 1, "fpn_stride")
    _expect(int(v["fpn_padding"]), 0, "fpn_padding")
    _expect(_ints(v["fpn_top_down_levels"], "fpn_top_down_levels"), [2, 3], "fpn_top_down_levels")
    _expect(int(v["num_feature_levels"]), 3, "num_feature_levels")
    return HieraConfig(
        embed_dim=dim,
        num_heads=heads,
        stages=tuple(stages),
        global_att_blocks=tuple(_ints(b["global_attention_blocks"], "global_attention_blocks")),
        window_spec=tuple(_ints(b["window_size_per_stage"], "window_size_per_stage")),
        window_pos_embed_bkg_spatial_size=tuple(bkg),
        image_size=size,
        mlp_ratio=float(b["mlp_ratio"]),
    )


def hiera_to_hf(cfg: HieraConfig, out_chans: int) -> dict[str, Any]:
    """transformers' ``vision_config`` (``Sam2VisionConfig`` with its backbone) for ``cfg``."""
    size = cfg.image_size
    dims = list(cfg.stage_dims())
    return {
        "model_type": "sam2_vision_model",
        "backbone_config": {
            "model_type": "sam2_hiera_det_model",
            "hidden_size": cfg.embed_dim,
            "num_attention_heads": cfg.num_heads,
            "num_channels": 3,
            "image_size": [size, size],
            "patch_kernel_size": [7, 7],
            "patch_stride": [4, 4],
            "patch_padding": [3, 3],
            "query_stride": [2, 2],
            "window_positional_embedding_background_size": list(
                cfg.window_pos_embed_bkg_spatial_size
            ),
            "num_query_pool_stages": 3,
            "blocks_per_stage": list(cfg.stages),
            "embed_dim_per_stage": dims,
            "num_attention_heads_per_stage": [cfg.num_heads << i for i in range(4)],
            "window_size_per_stage": list(cfg.window_spec),
            "global_attention_blocks": list(cfg.global_att_blocks),
            "mlp_ratio": cfg.mlp_ratio,
            "hidden_act": "gelu",
            "layer_norm_eps": 1e-6,
        },
        "backbone_channel_list": dims[::-1],
        "backbone_feature_sizes": [[size // s, size // s] for s in (4, 8, 16)],
        "fpn_hidden_size": out_chans,
        "fpn_kernel_size": 1,
        "fpn_stride": 1,
        "fpn_padding": 0,
        "fpn_top_down_levels": [2, 3],
        "num_feature_levels": 3,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-6,
    }
