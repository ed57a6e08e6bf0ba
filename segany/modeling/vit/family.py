"""The ViT family's registration: build, detect, Hugging Face names, layer ids, resizing, and
the chunked inference forward, each for ``ImageEncoderViT``.

What the weights tell (``embed`` = width, ``g`` = embedding grid side):
- ``image_encoder.patch_embed.proj.weight`` embed×3×p×p: the width and patch size;
- ``image_encoder.pos_embed`` 1×g×g×embed: the input size ``g·p``;
- ``image_encoder.blocks.N.attn.rel_pos_h`` (2s-1)×head_dim: the depth, the heads
  (embed / head_dim), and per block whether it attends globally (s = g) or in windows (s = the
  window size); ``mlp.lin1`` gives the MLP ratio.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar, cast

import torch
from torch import nn
from torch.nn import functional as F

from segany.modeling.families import EncoderConfig, EncoderFamily, Shapes, register
from segany.modeling.vit.chunked import encode_image, encode_image_with_early
from segany.modeling.vit.config import ViTConfig
from segany.modeling.vit.encoder import Block, ImageEncoderViT, resample_offsets

_PREFIX = "image_encoder."
_BLOCK = re.compile(r"^blocks\.(\d+)\.")
# With every block global the window size is unused; keep the official 14.
_OFFICIAL_WINDOW = 14

# transformers' SamVisionConfig defaults for fields a config.json may leave out (vit_b's).
_HF_VISION_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "image_size": 1024,
    "patch_size": 16,
    "window_size": 14,
    "global_attn_indexes": [2, 5, 8, 11],
    "mlp_ratio": 4.0,
    "mlp_dim": None,
    "output_channels": 256,
    "use_abs_pos": True,
    "use_rel_pos": True,
    "qkv_bias": True,
    "num_channels": 3,
}


def _indices(keys: list[str], prefix: str) -> list[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in keys if (m := pattern.match(k))})


def _side(value: Any) -> int:
    if isinstance(value, list | tuple):
        if len(set(value)) != 1:
            raise ValueError(f"a non-square size {value} is not supported")
        return int(value[0])
    return int(value)


def _vit(config: EncoderConfig) -> ViTConfig:
    if not isinstance(config, ViTConfig):
        raise TypeError(f"the vit family was given a {type(config).__name__}")
    return config


class ViTFamily(EncoderFamily):
    name: ClassVar[str] = "vit"
    config_type: ClassVar[type[EncoderConfig]] = ViTConfig
    module_type: ClassVar[type[nn.Module]] = ImageEncoderViT
    hf_prefix_rules: ClassVar[tuple[tuple[str, str], ...]] = (
        ("image_encoder.patch_embed.proj.", "vision_encoder.patch_embed.projection."),
        ("image_encoder.pos_embed", "vision_encoder.pos_embed"),
        ("image_encoder.blocks.{n}.norm{m}.", "vision_encoder.layers.{n}.layer_norm{m}."),
        ("image_encoder.blocks.{n}.", "vision_encoder.layers.{n}."),
        ("image_encoder.neck.0.", "vision_encoder.neck.conv1."),
        ("image_encoder.neck.1.", "vision_encoder.neck.layer_norm1."),
        ("image_encoder.neck.2.", "vision_encoder.neck.conv2."),
        ("image_encoder.neck.3.", "vision_encoder.neck.layer_norm2."),
    )
    no_weight_decay: ClassVar[tuple[str, ...]] = ("pos_embed", "rel_pos")
    # vit_h, the largest official model, is 1280 wide and 32 deep.
    limits: ClassVar[Mapping[str, float]] = {
        "embed_dim": 8192,
        "depth": 256,
        "num_heads": 256,
        "image_size": 8192,
        "patch_size": 256,
        "window_size": 512,
        "mlp_ratio": 64,
    }

    def build(self, config: EncoderConfig, *, out_chans: int) -> nn.Module:
        cfg = _vit(config)
        return ImageEncoderViT(
            img_size=cfg.image_size,
            patch_size=cfg.patch_size,
            embed_dim=cfg.embed_dim,
            depth=cfg.depth,
            num_heads=cfg.num_heads,
            mlp_ratio=cfg.mlp_ratio,
            out_chans=out_chans,
            window_size=cfg.window_size,
            global_attn_indexes=tuple(cfg.global_attn_indexes),
        )

    def detect(self, shapes: Shapes) -> ViTConfig | None:
        patch_key, pos_key = _PREFIX + "patch_embed.proj.weight", _PREFIX + "pos_embed"
        if patch_key not in shapes or pos_key not in shapes:
            return None
        keys = list(shapes)
        embed, _, patch, _ = shapes[patch_key]
        grid = shapes[pos_key][1]
        blocks = _indices(keys, _PREFIX + "blocks.")
        if not blocks or blocks != list(range(len(blocks))):
            raise ValueError(f"encoder blocks numbered {blocks}")
        rel = []
        for i in blocks:
            key = f"{_PREFIX}blocks.{i}.attn.rel_pos_h"
            if key not in shapes:
                raise ValueError(f"the weights have no {key!r}")
            rel.append(shapes[key])
        mlp_key = _PREFIX + "blocks.0.mlp.lin1.weight"
        if mlp_key not in shapes:
            raise ValueError(f"the weights have no {mlp_key!r}")
        head_dim = rel[0][1]
        sides = [(r[0] + 1) // 2 for r in rel]  # rel_pos has 2·side-1 rows
        windows = sorted({s for s in sides if s != grid})
        if len(windows) > 1:
            raise ValueError(f"several window sizes {windows}")
        return ViTConfig(
            embed_dim=embed,
            depth=len(blocks),
            num_heads=max(1, embed // head_dim),
            global_attn_indexes=tuple(i for i, s in zip(blocks, sides, strict=True) if s == grid),
            image_size=grid * patch,
            patch_size=patch,
            window_size=windows[0] if windows else _OFFICIAL_WINDOW,
            mlp_ratio=shapes[mlp_key][0] / embed,
        )

    def describe(self, config: EncoderConfig) -> str:
        cfg = _vit(config)
        return (
            f"embed {cfg.embed_dim}, depth {cfg.depth}, heads {cfg.num_heads}, "
            f"global {list(cfg.global_attn_indexes)}, input {cfg.image_size}"
        )

    def config_from_hf(self, vision: Mapping[str, Any]) -> ViTConfig:
        v = {**_HF_VISION_DEFAULTS, **vision}
        for flag in ("use_abs_pos", "use_rel_pos", "qkv_bias"):
            if not v[flag]:
                raise ValueError(f"{flag}=false is not supported")
        if v["num_channels"] != 3:
            raise ValueError(f"num_channels={v['num_channels']} is not supported")
        hidden = int(v["hidden_size"])
        mlp_dim = v["mlp_dim"]
        return ViTConfig(
            embed_dim=hidden,
            depth=int(v["num_hidden_layers"]),
            num_heads=int(v["num_attention_heads"]),
            global_attn_indexes=tuple(int(i) for i in v["global_attn_indexes"]),
            image_size=_side(v["image_size"]),
            patch_size=_side(v["patch_size"]),
            window_size=int(v["window_size"]),
            mlp_ratio=float(v["mlp_ratio"]) if mlp_dim is None else int(mlp_dim) / hidden,
        )

    def config_to_hf(self, config: EncoderConfig, out_chans: int) -> dict[str, Any]:
        cfg = _vit(config)
        return {
            "model_type": "sam_vision_model",
            "hidden_size": cfg.embed_dim,
            "num_hidden_layers": cfg.depth,
            "num_attention_heads": cfg.num_heads,
            "global_attn_indexes": list(cfg.global_attn_indexes),
            "image_size": cfg.image_size,
            "patch_size": cfg.patch_size,
            "window_size": cfg.window_size,
            "mlp_ratio": cfg.mlp_ratio,
            "mlp_dim": int(cfg.embed_dim * cfg.mlp_ratio),
            "output_channels": out_chans,
            "num_pos_feats": out_chans // 2,
            "num_channels": 3,
            "qkv_bias": True,
            "use_abs_pos": True,
            "use_rel_pos": True,
            "hidden_act": "gelu",
            "layer_norm_eps": 1e-6,
        }

    def num_layers(self, config: EncoderConfig) -> int:
        return _vit(config).depth

    def layer_id(self, name: str, config: EncoderConfig) -> int:
        # patch_embed/pos_embed are layer 0, blocks.N layer N+1, the neck the top layer.
        if name.startswith(("patch_embed", "pos_embed")):
            return 0
        hit = _BLOCK.match(name)
        if hit:
            return int(hit.group(1)) + 1
        return self.num_layers(config) + 1

    def with_input_size(self, config: EncoderConfig, image_size: int) -> ViTConfig:
        cfg = _vit(config)
        return ViTConfig(**{**cfg.__dict__, "image_size": image_size})

    def resize_state(
        self, state: Mapping[str, torch.Tensor], old: EncoderConfig, new: EncoderConfig
    ) -> dict[str, torch.Tensor]:
        # Only the absolute position embedding (one vector per patch) and the global blocks'
        # relative tables (2·grid-1 offsets) depend on the input size; windowed blocks' tables
        # depend on the window.
        grid = _vit(new).embedding_size
        global_blocks = {f"blocks.{i}." for i in _vit(new).global_attn_indexes}
        out = {}
        for key, value in state.items():
            if key == "pos_embed":
                g = value.permute(0, 3, 1, 2).float()  # 1×g×g×C -> 1×C×g×g
                g = F.interpolate(g, size=(grid, grid), mode="bicubic", align_corners=False)
                value = g.permute(0, 2, 3, 1).to(value.dtype)
            elif key.endswith((".rel_pos_h", ".rel_pos_w")) and key.startswith(
                tuple(global_blocks)
            ):
                value = resample_offsets(value.float(), 2 * grid - 1).to(value.dtype)
            out[key] = value
        return out

    def fast_forward(self, encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return encode_image(cast(ImageEncoderViT, encoder), images)

    def early_width(self, config: EncoderConfig) -> int:
        cfg = _vit(config)
        if not cfg.global_attn_indexes and cfg.window_size > 0:
            raise ValueError("a ViT with no global-attention block has no early feature map")
        return cfg.embed_dim  # the first global block's output, B×h×w×embed

    def forward_with_early(
        self, encoder: nn.Module, images: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return encode_image_with_early(cast(ImageEncoderViT, encoder), images)

    def set_drop_path(self, encoder: nn.Module, rate: float) -> None:
        # Rises linearly from 0 at the first block to ``rate`` at the last (ViT/ViTDet).
        blocks = [cast(Block, b) for b in cast(ImageEncoderViT, encoder).blocks]
        for i, block in enumerate(blocks):
            block.drop_path = rate * i / max(1, len(blocks) - 1) if rate > 0 else 0.0


VIT = register(ViTFamily())
