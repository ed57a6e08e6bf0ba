"""``HieraConfig``: the sizes of a Hiera image encoder with SAM 2's FPN neck.

Hiera is a four-stage pyramid of transformer blocks on a grid a quarter of the input's side;
the first block of stages 2-4 halves the grid by max-pooling its queries (and doubles the width
and the heads). Most blocks attend inside windows, a few globally. SAM 2's neck projects every
stage to the prompt width; the stride-16 level (with the stride-32 level added top-down) is the
image embedding, and the stride-4 and stride-8 levels are the decoder's high-resolution
features.

Window sizes and which blocks are global leave no trace in the weights; ``OFFICIAL_TRUNKS``
holds the published combinations (``segany.modeling.hiera.family`` reads the rest off the
weights and looks these up).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from segany.modeling.families import EncoderConfig

#: Pixels per embedding cell: the 4-pixel patches, then two of the three query poolings.
STRIDE = 16


@dataclass(frozen=True)
class HieraConfig(EncoderConfig):
    """A Hiera trunk with SAM 2's neck.

    ``stages``: blocks per stage (4 stages); ``global_att_blocks``: indices (over all blocks)
    of the blocks that attend globally; ``window_spec``: window side per stage for the others
    (a stage's first block uses the previous stage's window, halved by its pooling);
    ``window_pos_embed_bkg_spatial_size``: side of the background position table, resized
    bicubically to the patch grid; the window position table is ``window_spec[0]`` wide.
    """

    family: ClassVar[str] = "hiera"

    embed_dim: int
    num_heads: int
    stages: tuple[int, ...]
    global_att_blocks: tuple[int, ...]
    window_spec: tuple[int, ...] = (8, 4, 14, 7)
    window_pos_embed_bkg_spatial_size: tuple[int, ...] = (14, 14)
    image_size: int = 1024
    mlp_ratio: float = 4.0

    def __post_init__(self) -> None:
        if len(self.stages) != 4 or any(s <= 0 for s in self.stages):
            raise ValueError(f"a Hiera trunk has 4 stages of >= 1 block, got {self.stages}")
        if len(self.window_spec) != 4 or any(w <= 0 for w in self.window_spec):
            raise ValueError(f"window_spec needs 4 positive sides, got {self.window_spec}")
        if len(self.window_pos_embed_bkg_spatial_size) != 2:
            raise ValueError(
                "window_pos_embed_bkg_spatial_size is (h, w), got "
                f"{self.window_pos_embed_bkg_spatial_size}"
            )
        depth = sum(self.stages)
        if any(not 0 <= b < depth for b in self.global_att_blocks):
            raise ValueError(
                f"global_att_blocks {self.global_att_blocks} must index the {depth} blocks"
            )
        if self.embed_dim <= 0 or self.num_heads <= 0 or self.embed_dim % self.num_heads:
            raise ValueError(
                f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})"
            )
        if self.image_size <= 0 or self.image_size % (4 * 8):
            raise ValueError(
                f"image_size ({self.image_size}) must be a multiple of 32 (the deepest stage's "
                "stride)"
            )
        if (self.image_size // 4) % self.window_spec[0]:
            raise ValueError(
                f"the patch grid ({self.image_size // 4}) must be a multiple of the first "
                f"window ({self.window_spec[0]}): its position table is tiled over it"
            )

    @property
    def embedding_size(self) -> int:
        return self.image_size // STRIDE

    @property
    def depth(self) -> int:
        return sum(self.stages)

    def stage_dims(self) -> tuple[int, ...]:
        """Width of each stage (doubling from ``embed_dim``)."""
        return tuple(self.embed_dim * 2**i for i in range(4))

    def stage_ends(self) -> tuple[int, ...]:
        """Index of the last block of each stage."""
        ends, total = [], 0
        for s in self.stages:
            total += s
            ends.append(total - 1)
        return tuple(ends)


def _trunk(
    embed_dim: int,
    num_heads: int,
    stages: tuple[int, ...],
    global_att_blocks: tuple[int, ...],
    window_spec: tuple[int, ...] = (8, 4, 14, 7),
    bkg: tuple[int, int] = (14, 14),
) -> HieraConfig:
    return HieraConfig(embed_dim, num_heads, stages, global_att_blocks, window_spec, bkg)


HIERA_TINY = _trunk(96, 1, (1, 2, 7, 2), (5, 7, 9), bkg=(7, 7))
HIERA_SMALL = _trunk(96, 1, (1, 2, 11, 2), (7, 10, 13), bkg=(7, 7))
HIERA_BASE_PLUS = _trunk(112, 2, (2, 3, 16, 3), (12, 16, 20))
HIERA_LARGE = _trunk(144, 2, (2, 6, 36, 4), (23, 33, 43), (8, 4, 16, 8), (7, 7))

#: The published trunks (SAM 2 and SAM 2.1 share them), keyed by what the weights show:
#: (embed_dim, stages). Heads, windows and global blocks are looked up.
OFFICIAL_TRUNKS: dict[tuple[int, tuple[int, ...]], HieraConfig] = {
    (c.embed_dim, c.stages): c for c in (HIERA_TINY, HIERA_SMALL, HIERA_BASE_PLUS, HIERA_LARGE)
}
