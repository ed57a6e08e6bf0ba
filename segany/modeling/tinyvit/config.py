"""``TinyViTConfig``: the sizes of a TinyViT image encoder (MobileSAM's ``vit_t`` and custom).

TinyViT is a pyramid: stage 0 is convolutional (inverted-residual blocks) on a grid a quarter
of the input's side; each later stage is windowed attention with a depthwise convolution
between attention and MLP, entered through a downsampling ("patch merging") step. MobileSAM
keeps the last stage at the third stage's resolution (its merge has stride 1), so a 1024-px
input gives SAM's 64×64 embedding grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import ClassVar

from segany.modeling.families import EncoderConfig


@dataclass(frozen=True)
class TinyViTConfig(EncoderConfig):
    """A TinyViT encoder.

    ``embed_dims`` and ``depths`` have one entry per stage (stage 0 convolutional);
    ``num_heads`` and ``window_sizes`` one per attention stage (stages 1..); ``merge_strides``
    one per downsampling between stages (stride of the step into stage i+1).
    """

    family: ClassVar[str] = "tinyvit"

    embed_dims: tuple[int, ...]
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window_sizes: tuple[int, ...]
    merge_strides: tuple[int, ...]
    image_size: int = 1024
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    local_conv_size: int = 3
    #: Classes of the ImageNet head TinyViT was pretrained with. SAM never uses the head, but
    #: the official checkpoint stores its weights, so the module keeps them to load strictly.
    num_classes: int = 1000

    def __post_init__(self) -> None:
        stages = len(self.embed_dims)
        if stages < 2 or len(self.depths) != stages:
            raise ValueError(
                f"a TinyViT needs a convolutional stage and at least one attention stage, with "
                f"one depth per stage: got embed_dims {self.embed_dims}, depths {self.depths}"
            )
        for name, values in (("num_heads", self.num_heads), ("window_sizes", self.window_sizes)):
            if len(values) != stages - 1:
                raise ValueError(
                    f"{name} needs one entry per attention stage ({stages - 1}), got {values}"
                )
        strides = self.merge_strides
        if len(strides) != stages - 1 or any(s not in (1, 2) for s in strides):
            raise ValueError(
                f"merge_strides needs {stages - 1} entries of 1 or 2, got {self.merge_strides}"
            )
        for dim, heads in zip(self.embed_dims[1:], self.num_heads, strict=True):
            if heads <= 0 or dim % heads:
                raise ValueError(f"stage width {dim} must be divisible by its heads ({heads})")
        if any(w <= 0 for w in self.window_sizes) or any(d <= 0 for d in self.depths):
            raise ValueError(
                f"window sizes {self.window_sizes} and depths {self.depths} must be positive"
            )
        if self.local_conv_size % 2 == 0:
            raise ValueError(f"local_conv_size must be odd, got {self.local_conv_size}")
        if self.image_size <= 0 or self.image_size % self.stride:
            raise ValueError(
                f"image_size ({self.image_size}) must be a multiple of the encoder's stride "
                f"({self.stride})"
            )

    @property
    def stride(self) -> int:
        """Input pixels per embedding cell: the stem's 4 times every merge's stride."""
        return 4 * prod(self.merge_strides)

    @property
    def embedding_size(self) -> int:
        return self.image_size // self.stride

    def stage_sides(self) -> tuple[int, ...]:
        """Side of each stage's grid (stage 0 at a quarter of the input)."""
        sides = [self.image_size // 4]
        for s in self.merge_strides:
            sides.append(sides[-1] // s)
        return tuple(sides)
