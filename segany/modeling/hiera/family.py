"""The Hiera family's registration (SAM 2 / SAM 2.1 image encoders): build, detect, layer ids,
drop path and the decoder's high-resolution features, each for ``ImageEncoderHiera``.

What the weights tell (keys as ``segany.checkpoints.sam2_keys`` gives them, ``image_encoder.``
prefix): ``trunk.patch_embed.proj.weight`` C×3×7×7 the first width (and that this is a Hiera);
``trunk.blocks.N.`` the depth, and a block's ``proj`` (a width change) where each stage
starts; ``trunk.pos_embed`` the background table's side, ``trunk.pos_embed_window`` the first
window. Heads, the later windows and the global blocks are not in the weights: they are looked
up among the published trunks (``config.OFFICIAL_TRUNKS``) by width and stages.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar, cast

import torch
from torch import nn

from segany.modeling.families import EncoderConfig, EncoderFamily, Shapes, register
from segany.modeling.hiera.config import OFFICIAL_TRUNKS, HieraConfig
from segany.modeling.hiera.encoder import ImageEncoderHiera, MultiScaleBlock
from segany.modeling.hiera.fast import encode_image, encode_image_with_early
from segany.modeling.hiera.hf_config import hiera_from_hf, hiera_to_hf

_PREFIX = "image_encoder.trunk."
_BLOCK = re.compile(r"^trunk\.blocks\.(\d+)\.")


def _hiera(config: EncoderConfig) -> HieraConfig:
    if not isinstance(config, HieraConfig):
        raise TypeError(f"the hiera family was given a {type(config).__name__}")
    return config


def _indices(keys: list[str], prefix: str) -> list[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in keys if (m := pattern.match(k))})


class HieraFamily(EncoderFamily):
    name: ClassVar[str] = "hiera"
    config_type: ClassVar[type[EncoderConfig]] = HieraConfig
    module_type: ClassVar[type[nn.Module]] = ImageEncoderHiera
    no_weight_decay: ClassVar[tuple[str, ...]] = ("pos_embed", "no_mem_embed")
    # transformers' Sam2Model: the trunk is vision_encoder.backbone, the neck's convs have no
    # inner .conv, and the pieces segany keeps on the image side sit where transformers keeps
    # them (conv_s0/s1 in its mask decoder, the no-memory embedding at the top).
    hf_prefix_rules: ClassVar[tuple[tuple[str, str], ...]] = (
        (
            "image_encoder.trunk.patch_embed.proj.",
            "vision_encoder.backbone.patch_embed.projection.",
        ),
        (
            "image_encoder.trunk.blocks.{n}.norm{m}.",
            "vision_encoder.backbone.blocks.{n}.layer_norm{m}.",
        ),
        (
            "image_encoder.trunk.blocks.{n}.mlp.layers.0.",
            "vision_encoder.backbone.blocks.{n}.mlp.proj_in.",
        ),
        (
            "image_encoder.trunk.blocks.{n}.mlp.layers.1.",
            "vision_encoder.backbone.blocks.{n}.mlp.proj_out.",
        ),
        ("image_encoder.trunk.", "vision_encoder.backbone."),
        ("image_encoder.neck.convs.{n}.conv.", "vision_encoder.neck.convs.{n}."),
        ("image_encoder.conv_s{n}.", "mask_decoder.conv_s{n}."),
        ("image_encoder.no_mem_embed", "no_memory_embedding"),
    )
    # Hiera-L, the largest published, is 144 wide and 48 blocks deep.
    limits: ClassVar[Mapping[str, float]] = {
        "embed_dim": 4096,
        "num_heads": 256,
        "stages": 256,
        "window_spec": 256,
        "window_pos_embed_bkg_spatial_size": 1024,
        "image_size": 8192,
        "mlp_ratio": 64,
    }

    def build(self, config: EncoderConfig, *, out_chans: int) -> nn.Module:
        return ImageEncoderHiera(_hiera(config), out_chans)

    def detect(self, shapes: Shapes) -> HieraConfig | None:
        stem = _PREFIX + "patch_embed.proj.weight"
        if stem not in shapes:
            return None
        keys = list(shapes)
        blocks = _indices(keys, _PREFIX + "blocks.")
        if not blocks or blocks != list(range(len(blocks))):
            raise ValueError(f"Hiera blocks numbered {blocks[:8]}...")
        # A stage starts at block 0 and at every block that changes the width (has a proj).
        starts = [0] + [i for i in blocks if f"{_PREFIX}blocks.{i}.proj.weight" in shapes]
        if len(starts) != 4:
            raise ValueError(
                f"a Hiera trunk has 4 stages; these weights change width at blocks {starts[1:]}"
            )
        stages = tuple(b - a for a, b in zip(starts, [*starts[1:], len(blocks)], strict=True))
        embed_dim = shapes[stem][0]
        official = OFFICIAL_TRUNKS.get((embed_dim, stages))
        if official is None:
            known = ", ".join(f"width {d} stages {list(s)}" for d, s in OFFICIAL_TRUNKS)
            raise ValueError(
                f"a Hiera trunk of width {embed_dim} and stages {list(stages)} is not a published "
                f"one ({known}); its heads, windows and global blocks are not in the weights, so "
                "load it with its config (a segany file carries it)"
            )
        bkg = shapes.get(_PREFIX + "pos_embed")
        window = shapes.get(_PREFIX + "pos_embed_window")
        if bkg is None or window is None:
            raise ValueError("the Hiera weights have no trunk.pos_embed / pos_embed_window")
        if tuple(bkg[2:]) != tuple(official.window_pos_embed_bkg_spatial_size) or (
            window[2] != official.window_spec[0]
        ):
            raise ValueError(
                f"Hiera position tables {tuple(bkg[2:])} and {tuple(window[2:])} differ from "
                f"the published trunk of width {embed_dim} and stages {list(stages)}"
            )
        return official

    def config_from_hf(self, vision: Mapping[str, Any]) -> HieraConfig:
        """The config of transformers' ``Sam2VisionConfig`` (its ``backbone_config`` is the
        Hiera trunk's); fields left out take transformers' defaults (Hiera-T at 1024 px)."""
        return hiera_from_hf(vision)

    def config_to_hf(self, config: EncoderConfig, out_chans: int) -> dict[str, Any]:
        return hiera_to_hf(_hiera(config), out_chans)

    def describe(self, config: EncoderConfig) -> str:
        cfg = _hiera(config)
        return (
            f"width {cfg.embed_dim}, stages {list(cfg.stages)}, heads {cfg.num_heads}, "
            f"global {list(cfg.global_att_blocks)}, input {cfg.image_size}"
        )

    def num_layers(self, config: EncoderConfig) -> int:
        return _hiera(config).depth

    def layer_id(self, name: str, config: EncoderConfig) -> int:
        # As SAM 2's training does: the stem and position tables are layer 0, block k is k+1,
        # the neck and the rest are the top layer.
        if name.startswith(("trunk.pos_embed", "trunk.patch_embed")):
            return 0
        hit = _BLOCK.match(name)
        if hit is None:
            return self.num_layers(config) + 1
        return int(hit.group(1)) + 1

    def early_width(self, config: EncoderConfig) -> int:
        raise ValueError(
            "the 'hiera' family's high-resolution features are SAM 2's decoder's, not the "
            "early feature map SAM-HQ's decoder reads"
        )

    def high_res_width(self, out_chans: int) -> int:
        """Channels E of the packed high-resolution map (``encoder.pack_high_res``)."""
        return out_chans // 2 + out_chans // 4

    def fast_forward(self, encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return encode_image(cast(ImageEncoderHiera, encoder), images)

    def forward_with_early(
        self, encoder: nn.Module, images: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """B×3×S×S -> (B×C×h×w embeddings, B×2h×2w×E packed high-resolution features for SAM 2's
        decoder, ``encoder.pack_high_res``), by ``hiera.fast`` (the module's forward when
        training, hooked or traced)."""
        return encode_image_with_early(cast(ImageEncoderHiera, encoder), images)

    def set_drop_path(self, encoder: nn.Module, rate: float) -> None:
        blocks = cast(ImageEncoderHiera, encoder).trunk.blocks
        n = len(blocks)
        for i, block in enumerate(blocks):
            cast(MultiScaleBlock, block).drop_path = rate * i / max(1, n - 1) if rate > 0 else 0.0


HIERA = register(HieraFamily())
