"""The TinyViT family's registration: build, detect, layer ids, input size and drop path, each
for ``ImageEncoderTinyViT``.

What the weights tell (official keys, ``image_encoder.`` prefix):
- ``patch_embed.seq.2.c.weight`` C0×(C0/2)×3×3: stage 0's width (and that this is a TinyViT);
- ``layers.N.blocks.M.``: the stages and their depths; stage 0's ``conv1`` the MBConv expansion;
- ``layers.N.blocks.0.attn.qkv.weight`` 3C×C: an attention stage's width; ``attention_biases``
  heads×window²: its heads and window; ``mlp.fc1`` the MLP ratio; ``local_conv`` its kernel;
- ``head.weight`` classes×C: the unused ImageNet head (absent: none).

Not in the weights: the input size (no position table depends on it; the official model only
runs at 1024 px, the size MobileSAM was trained at) and the merges' strides, which the official
code derives from the width they lead into (stride 1 into 320, 448 or 576 channels, the last
stage of TinyViT-5M/11M/21M, so SAM's 1024-px input gives a 64×64 grid); detection follows that
rule.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import ClassVar, cast

import torch
from torch import nn

from segany.modeling.families import EncoderConfig, EncoderFamily, Shapes, register
from segany.modeling.tinyvit import fused
from segany.modeling.tinyvit.config import TinyViTConfig
from segany.modeling.tinyvit.encoder import ImageEncoderTinyViT, MBConv, TinyViTBlock

_PREFIX = "image_encoder."
_OFFICIAL_IMAGE_SIZE = 1024
# The official code's rule for a merge's stride, from the width it leads into.
_STRIDE_ONE_WIDTHS = (320, 448, 576)
_BLOCK = re.compile(r"^layers\.(\d+)\.(blocks\.(\d+)|downsample)\.")


def _indices(keys: list[str], prefix: str) -> list[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in keys if (m := pattern.match(k))})


def _tinyvit(config: EncoderConfig) -> TinyViTConfig:
    if not isinstance(config, TinyViTConfig):
        raise TypeError(f"the tinyvit family was given a {type(config).__name__}")
    return config


class TinyViTFamily(EncoderFamily):
    name: ClassVar[str] = "tinyvit"
    config_type: ClassVar[type[EncoderConfig]] = TinyViTConfig
    module_type: ClassVar[type[nn.Module]] = ImageEncoderTinyViT
    # TinyViT's own training keeps its per-distance attention biases out of weight decay.
    no_weight_decay: ClassVar[tuple[str, ...]] = ("attention_biases",)
    # TinyViT-21M, the largest published TinyViT, is 576 wide and 12 blocks deep; every
    # element of a tuple field is held to its limit.
    limits: ClassVar[Mapping[str, float]] = {
        "embed_dims": 8192,
        "depths": 256,
        "num_heads": 256,
        "window_sizes": 256,
        "image_size": 8192,
        "mlp_ratio": 64,
        "mbconv_expand_ratio": 64,
        "local_conv_size": 31,
    }

    def build(self, config: EncoderConfig, *, out_chans: int) -> nn.Module:
        cfg = _tinyvit(config)
        return ImageEncoderTinyViT(
            img_size=cfg.image_size,
            embed_dims=cfg.embed_dims,
            depths=cfg.depths,
            num_heads=cfg.num_heads,
            window_sizes=cfg.window_sizes,
            merge_strides=cfg.merge_strides,
            out_chans=out_chans,
            mlp_ratio=cfg.mlp_ratio,
            mbconv_expand_ratio=cfg.mbconv_expand_ratio,
            local_conv_size=cfg.local_conv_size,
            num_classes=cfg.num_classes,
        )

    def detect(self, shapes: Shapes) -> TinyViTConfig | None:
        stem = _PREFIX + "patch_embed.seq.2.c.weight"
        if stem not in shapes:
            return None

        def need(key: str) -> tuple[int, ...]:
            if _PREFIX + key not in shapes:
                raise ValueError(f"the TinyViT weights have no {_PREFIX + key!r}")
            return shapes[_PREFIX + key]

        keys = list(shapes)
        stages = _indices(keys, _PREFIX + "layers.")
        if len(stages) < 2 or stages != list(range(len(stages))):
            raise ValueError(f"TinyViT stages numbered {stages}")
        depths = []
        for i in stages:
            blocks = _indices(keys, f"{_PREFIX}layers.{i}.blocks.")
            if not blocks or blocks != list(range(len(blocks))):
                raise ValueError(f"TinyViT stage {i} has blocks numbered {blocks}")
            depths.append(len(blocks))
        dims, heads, windows = [shapes[stem][0]], [], []
        for i in stages[1:]:
            qkv = need(f"layers.{i}.blocks.0.attn.qkv.weight")
            biases = need(f"layers.{i}.blocks.0.attn.attention_biases")
            window = math.isqrt(biases[1])
            if window * window != biases[1]:
                raise ValueError(f"stage {i}'s attention_biases {biases} are not per window²")
            dims.append(qkv[1])
            heads.append(biases[0])
            windows.append(window)
        head = shapes.get(_PREFIX + "head.weight")
        return TinyViTConfig(
            embed_dims=tuple(dims),
            depths=tuple(depths),
            num_heads=tuple(heads),
            window_sizes=tuple(windows),
            merge_strides=tuple(1 if d in _STRIDE_ONE_WIDTHS else 2 for d in dims[1:]),
            image_size=_OFFICIAL_IMAGE_SIZE,
            mlp_ratio=need("layers.1.blocks.0.mlp.fc1.weight")[0] / dims[1],
            mbconv_expand_ratio=need("layers.0.blocks.0.conv1.c.weight")[0] / dims[0],
            local_conv_size=need("layers.1.blocks.0.local_conv.c.weight")[-1],
            num_classes=head[0] if head is not None else 0,
        )

    def describe(self, config: EncoderConfig) -> str:
        cfg = _tinyvit(config)
        return (
            f"widths {list(cfg.embed_dims)}, depths {list(cfg.depths)}, "
            f"heads {list(cfg.num_heads)}, windows {list(cfg.window_sizes)}, "
            f"input {cfg.image_size}"
        )

    def num_layers(self, config: EncoderConfig) -> int:
        return sum(_tinyvit(config).depths)

    def layer_id(self, name: str, config: EncoderConfig) -> int:
        # The stem is layer 0, block k (counted over all stages) layer k+1, a stage's merge
        # goes with its last block (as TinyViT's own layer decay does), the neck and the
        # unused head are the top layer.
        depths = _tinyvit(config).depths
        if name.startswith("patch_embed"):
            return 0
        hit = _BLOCK.match(name)
        if hit is None:
            return self.num_layers(config) + 1
        stage = int(hit.group(1))
        before = sum(depths[:stage])
        if hit.group(3) is not None:
            return before + int(hit.group(3)) + 1
        return before + depths[stage]

    def with_input_size(self, config: EncoderConfig, image_size: int) -> TinyViTConfig:
        return dataclasses.replace(_tinyvit(config), image_size=image_size)

    def resize_state(
        self, state: Mapping[str, torch.Tensor], old: EncoderConfig, new: EncoderConfig
    ) -> dict[str, torch.Tensor]:
        # No tensor depends on the input size: attention biases are per distance inside a
        # window, and every other weight is a convolution or a linear layer.
        return dict(state)

    def early_width(self, config: EncoderConfig) -> int:
        # Stage 1's output (after its merge into stage 2's width), as light HQ-SAM reads it.
        cfg = _tinyvit(config)
        sides = cfg.stage_sides()
        stage = min(2, len(sides) - 1)
        if sides[stage] != cfg.embedding_size:
            raise ValueError(
                f"this TinyViT's stage 1 ends on a {sides[stage]}-cell grid, not the embedding's "
                f"{cfg.embedding_size}: no early feature map for SAM-HQ's decoder"
            )
        return cfg.embed_dims[stage]

    def fast_forward(self, encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
        # the inference twin (batch norms folded, GELU fused) where it applies
        return fused.forward_with_early(cast(ImageEncoderTinyViT, encoder), images)[0]

    def forward_with_early(
        self, encoder: nn.Module, images: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return fused.forward_with_early(cast(ImageEncoderTinyViT, encoder), images)

    def set_drop_path(self, encoder: nn.Module, rate: float) -> None:
        # Rises linearly from 0 at the first block to ``rate`` at the last, over the blocks of
        # every stage (TinyViT's rule).
        blocks = cast(ImageEncoderTinyViT, encoder).all_blocks()
        for i, block in enumerate(blocks):
            cast(MBConv | TinyViTBlock, block).drop_path = (
                rate * i / max(1, len(blocks) - 1) if rate > 0 else 0.0
            )


TINYVIT = register(TinyViTFamily())
