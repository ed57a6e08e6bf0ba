"""The EfficientViT family's registration: build, detect, layer ids, input size and the fast
forward, each for ``ImageEncoderEfficientViT``.

What the weights tell (official keys, ``image_encoder.`` prefix, ``S.i`` for
``backbone.stages.i.op_list``):
- ``S.0.0.conv.weight`` w0×3×3×3 (the stem) with ``neck.output_ops.0.op_list.0.conv.weight``:
  an EfficientViT-SAM; the stem gives stage 0's width;
- ``backbone.stages.i``: the stages; ``S.i.j``: a stage's depth (entries after the first);
- ``S.i.0.main``: stage i's stride-2 entry block: its last convolution's output is the stage's
  width, its first convolution's width 4 × the stage's expand ratio (× the previous width),
  whether that convolution has a norm (``fewer_norms``), and its kind (``inverted_conv``: an
  inverted residual, ``spatial_conv``: a fused one);
- ``S.i.1``: the kind of the stage's blocks (``context_module``: attention, its aggregation
  kernel telling 5×5 "att" from 3×3 "att@3", its grouped 1×1 the qkv_dim; ``conv1``: "res")
  and their expand ratio;
- ``neck.input_ops.k``: the neck's inputs, matched to stages by width (the deepest unused stage
  of that width, so the official order, deepest first, comes back); ``neck.middle.op_list``:
  its depth, block kind and expand ratio.

Not in the weights, taken from the official models: the input side (512 for the 5-stage
backbones of l0-l2, 1024 for the 6-stage ones of xl0-xl1), the 1024 prompt frame, the 64×64
embedding grid and the norms' eps 1e-6. A stage with no blocks after its entry block keeps the
entry block's kind (stage 0 without blocks: "res" with ratio 1, as in xl0).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any, ClassVar, cast

import torch
from torch import nn

from segany.modeling.efficientvit.config import EfficientViTConfig
from segany.modeling.efficientvit.encoder import ImageEncoderEfficientViT
from segany.modeling.efficientvit.fused import fused_forward
from segany.modeling.families import EncoderConfig, EncoderFamily, Shapes, register

_PREFIX = "image_encoder."
_STEM = "backbone.stages.0.op_list.0.conv.weight"
_NECK_OUT = "neck.output_ops.0.op_list.0.conv.weight"
_STAGE = re.compile(r"^backbone\.stages\.(\d+)\.")
# The first convolution of each block kind, and its last.
_FIRST = {"mb": "inverted_conv", "fmb": "spatial_conv", "res": "conv1"}
_LAST = {"mb": "point_conv", "fmb": "point_conv", "res": "conv2"}
# The official input side by the number of backbone stages.
_OFFICIAL_IMAGE_SIZE = {5: 512, 6: 1024}


def _evit(config: EncoderConfig) -> EfficientViTConfig:
    if not isinstance(config, EfficientViTConfig):
        raise TypeError(f"the efficientvit family was given a {type(config).__name__}")
    return config


def _indices(keys: list[str], prefix: str) -> list[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in keys if (m := pattern.match(k))})


def _number(value: float) -> float:
    """A ratio read off two widths: an int when whole (4, not 4.0), as the official lists."""
    return int(value) if float(value).is_integer() else value


class _Reader:
    """The encoder's part of a state dict's shapes, keys without ``image_encoder.``."""

    def __init__(self, shapes: Shapes) -> None:
        n = len(_PREFIX)
        self.shapes = {k[n:]: v for k, v in shapes.items() if k.startswith(_PREFIX)}
        self.keys = list(self.shapes)

    def has(self, key: str) -> bool:
        return key in self.shapes

    def need(self, key: str) -> tuple[int, ...]:
        if key not in self.shapes:
            raise ValueError(f"the EfficientViT-SAM weights have no {_PREFIX + key!r}")
        return self.shapes[key]

    def numbered(self, prefix: str, what: str) -> int:
        """How many ``prefix``N entries there are, checked to run 0..N-1."""
        found = _indices(self.keys, prefix)
        if found != list(range(len(found))):
            raise ValueError(f"EfficientViT-SAM {what} numbered {found}")
        return len(found)

    def block_kind(self, prefix: str) -> str | None:
        """The kind of the convolution block under ``prefix`` (…``main.``), by its keys."""
        for kind, first in _FIRST.items():
            if self.has(f"{prefix}{first}.conv.weight"):
                return kind
        return None


class EfficientViTFamily(EncoderFamily):
    name: ClassVar[str] = "efficientvit"
    config_type: ClassVar[type[EncoderConfig]] = EfficientViTConfig
    module_type: ClassVar[type[nn.Module]] = ImageEncoderEfficientViT
    # xl1, the largest published, is 1024 wide with 12 neck blocks and a 24× expansion in its
    # entry blocks; every element of a tuple field is held to its limit. Limits also require
    # 1 or more, so fields that may be 0 (depths, neck_depth, neck_stages) are not listed.
    limits: ClassVar[Mapping[str, float]] = {
        "widths": 8192,
        "expand_ratios": 64,
        "neck_width": 8192,
        "neck_expand_ratio": 64,
        "qkv_dim": 1024,
        "image_size": 8192,
        "frame_size": 8192,
        "embedding_size": 1024,
    }

    def build(self, config: EncoderConfig, *, out_chans: int) -> nn.Module:
        return ImageEncoderEfficientViT(_evit(config), out_chans=out_chans)

    def detect(self, shapes: Shapes) -> EfficientViTConfig | None:
        if _PREFIX + _STEM not in shapes or _PREFIX + _NECK_OUT not in shapes:
            return None
        r = _Reader(shapes)
        count = r.numbered("backbone.stages.", "backbone stages")
        if count < 2:
            raise ValueError(f"EfficientViT-SAM weights with {count} backbone stage(s)")
        widths = [r.need(_STEM)[0]]
        depths, blocks, expands, fewer = [], [], [], []
        qkv_dim = 32
        for i in range(count):
            ops = f"backbone.stages.{i}.op_list."
            entries = r.numbered(ops, f"stage {i} blocks")
            depths.append(entries - 1)
            if i > 0:  # the stride-2 entry block
                kind = r.block_kind(f"{ops}0.main.")
                if kind not in ("mb", "fmb"):
                    raise ValueError(
                        f"stage {i}'s entry block ({ops}0) is not an inverted residual"
                    )
                widths.append(r.need(f"{ops}0.main.point_conv.conv.weight")[0])
                entry_expand = r.need(f"{ops}0.main.{_FIRST[kind]}.conv.weight")[0] / widths[i - 1]
                fewer.append(not r.has(f"{ops}0.main.{_FIRST[kind]}.norm.weight"))
            else:
                kind, entry_expand = "res", 4.0
                fewer.append(False)
            expand = entry_expand / 4
            if entries > 1:
                if r.has(f"{ops}1.context_module.main.qkv.conv.weight"):
                    kernel = r.need(f"{ops}1.context_module.main.aggreg.0.0.weight")[-1]
                    kind = "att@3" if kernel == 3 else "att"
                    qkv_dim = r.need(f"{ops}1.context_module.main.aggreg.0.1.weight")[1]
                    mid = r.need(f"{ops}1.local_module.main.inverted_conv.conv.weight")[0]
                else:
                    found = r.block_kind(f"{ops}1.main.")
                    if found is None:
                        raise ValueError(f"stage {i}'s blocks ({ops}1) are of no known kind")
                    kind = found
                    mid = r.need(f"{ops}1.main.{_FIRST[kind]}.conv.weight")[0]
                    if i == 0:
                        fewer[0] = not r.has(f"{ops}1.main.{_FIRST[kind]}.norm.weight")
                expand = mid / widths[i]
            blocks.append(kind)
            expands.append(_number(expand))
        neck_stages = self._neck_stages(r, widths)
        neck_depth = r.numbered("neck.middle.op_list.", "neck blocks")
        neck_width = r.need("neck.input_ops.0.op_list.0.conv.weight")[0]
        neck_block, neck_expand = "fmb", 1.0
        if neck_depth:
            found = r.block_kind("neck.middle.op_list.0.main.")
            if found is None:
                raise ValueError("the neck's blocks (neck.middle.op_list.0) are of no known kind")
            neck_block = found
            mid = r.need(f"neck.middle.op_list.0.main.{_FIRST[found]}.conv.weight")[0]
            neck_expand = mid / neck_width
        return EfficientViTConfig(
            widths=tuple(widths),
            depths=tuple(depths),
            blocks=tuple(blocks),
            expand_ratios=tuple(expands),
            fewer_norms=tuple(fewer),
            neck_stages=neck_stages,
            neck_depth=neck_depth,
            neck_expand_ratio=_number(neck_expand),
            neck_width=neck_width,
            neck_block=neck_block,
            qkv_dim=qkv_dim,
            image_size=_OFFICIAL_IMAGE_SIZE.get(count, 1024),
        )

    @staticmethod
    def _neck_stages(r: _Reader, widths: list[int]) -> tuple[int, ...]:
        picked: list[int] = []
        for k in range(r.numbered("neck.input_ops.", "neck inputs")):
            width = r.need(f"neck.input_ops.{k}.op_list.0.conv.weight")[1]
            free = [i for i, w in enumerate(widths) if w == width and i not in picked]
            if not free:
                raise ValueError(
                    f"the neck's input {k} reads {width} channels; no backbone stage left has "
                    f"that width (stage widths {widths})"
                )
            picked.append(free[-1])
        if not picked:
            raise ValueError("the EfficientViT-SAM neck has no inputs (neck.input_ops)")
        return tuple(picked)

    def describe(self, config: EncoderConfig) -> str:
        cfg = _evit(config)
        return (
            f"widths {list(cfg.widths)}, depths {list(cfg.depths)}, blocks {list(cfg.blocks)}, "
            f"neck {cfg.neck_block} x{cfg.neck_depth} on stages {list(cfg.neck_stages)}, "
            f"input {cfg.image_size}, frame {cfg.frame_size}"
        )

    def num_layers(self, config: EncoderConfig) -> int:
        return len(_evit(config).widths) - 1

    def layer_id(self, name: str, config: EncoderConfig) -> int:
        # Stage-wise: backbone stage i (the stem is stage 0) is layer i; the neck and the final
        # norm, trained for SAM rather than pretrained, are the top layer with the decoder.
        hit = _STAGE.match(name)
        if hit is None:
            return self.num_layers(config) + 1
        return int(hit.group(1))

    def with_input_size(self, config: EncoderConfig, image_size: int) -> EfficientViTConfig:
        # The neck resizes every input to the embedding grid and the frame stays that of the
        # prompts, so only the side the encoder reads changes (the config checks it).
        return dataclasses.replace(_evit(config), image_size=image_size)

    def resize_state(
        self, state: Mapping[str, torch.Tensor], old: EncoderConfig, new: EncoderConfig
    ) -> dict[str, torch.Tensor]:
        # Convolutions and linear attention only: no tensor depends on the input size.
        return dict(state)

    def decoder_overrides(self, config: EncoderConfig) -> dict[str, Any]:
        # The package's model zoo sets every norm's eps to 1e-6, the decoder's LayerNorms too.
        return {"norm_eps": 1e-6}

    def fast_forward(self, encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return fused_forward(cast(ImageEncoderEfficientViT, encoder), images)


EFFICIENTVIT = register(EfficientViTFamily())
