"""``EfficientViTConfig``: the sizes of an EfficientViT-SAM image encoder (l0-l2, xl0-xl1, custom).

The backbone is a pyramid of stages, each at half the previous one's side: stage 0 is a
stride-2 stem convolution and a few residual convolution blocks; each later stage starts with
a stride-2 block ("downsampling") and continues with convolution blocks or, in the last
stages, EfficientViT blocks (multi-scale ReLU linear attention followed by an inverted
residual convolution). The neck ("SamNeck") takes two or three stages' outputs, projects each
to one width, resizes each to the embedding grid (bicubic), adds them, refines the sum with
residual convolution blocks and projects it to the prompt width; a channel LayerNorm ends it.

Field names against the official code (``efficientvit.models.efficientvit.sam``):
``widths``/``depths``/``blocks``/``expand_ratios``/``fewer_norms`` are the backbone's
``width_list``/``depth_list``/``block_list``/``expand_list``/``fewer_norm_list``;
``neck_stages`` its neck's ``fid_list`` as stage numbers (``"stage4"`` -> 4; the neck's
``in_channel_list`` is those stages' widths); ``neck_width``, ``neck_depth``,
``neck_expand_ratio``, ``neck_block`` are ``head_width``, ``head_depth``, ``expand_ratio``,
``middle_op``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from segany.modeling.families import EncoderConfig

#: Convolution blocks: a residual block of two 3×3 convolutions ("res"), a fused inverted
#: residual (3×3 expanding, 1×1 projecting: "fmb"), an inverted residual (1×1, depthwise 3×3,
#: 1×1: "mb").
LOCAL_BLOCKS = ("res", "fmb", "mb")
#: Attention stages: EfficientViT blocks whose attention aggregates its queries, keys and
#: values over 5×5 ("att") or 3×3 ("att@3") neighbourhoods besides the 1×1 one.
ATTENTION_BLOCKS = ("att", "att@3")


@dataclass(frozen=True)
class EfficientViTConfig(EncoderConfig):
    """An EfficientViT-SAM image encoder.

    ``widths``, ``depths``, ``blocks``, ``expand_ratios`` and ``fewer_norms`` have one entry per
    backbone stage (stage 0: the stem and its blocks). ``depths[i]`` counts a stage's blocks
    after its downsampling block; ``expand_ratios[i]`` is the hidden width of those blocks as a
    multiple of the stage width (the downsampling block expands four times as much);
    ``fewer_norms[i]``: the stage's convolution blocks have a norm after their last convolution
    only (biases on the others). ``image_size`` is the side the encoder reads (512 for l0-l2,
    1024 for xl0-xl1); prompts and masks live in a ``frame_size`` frame (1024 for all the
    official models), and the neck resizes every input to an ``embedding_size`` grid.
    """

    family: ClassVar[str] = "efficientvit"

    widths: tuple[int, ...]
    depths: tuple[int, ...]
    blocks: tuple[str, ...]
    expand_ratios: tuple[float, ...]
    fewer_norms: tuple[bool, ...]
    neck_stages: tuple[int, ...]
    neck_depth: int
    neck_expand_ratio: float
    neck_width: int = 256
    neck_block: str = "fmb"
    #: Width of one attention head's queries, keys and values (heads = stage width // it).
    qkv_dim: int = 32
    image_size: int = 512
    frame_size: int = 1024
    embedding_size: int = 64
    #: The official model zoo sets every BatchNorm's and LayerNorm's eps to 1e-6.
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        stages = len(self.widths)
        lists = {
            "depths": self.depths,
            "blocks": self.blocks,
            "expand_ratios": self.expand_ratios,
            "fewer_norms": self.fewer_norms,
        }
        if stages < 2 or any(len(v) != stages for v in lists.values()):
            raise ValueError(
                "an EfficientViT backbone needs a stem stage and at least one more, with one "
                f"entry per stage in widths {self.widths} and in each of "
                + ", ".join(f"{k} {v}" for k, v in lists.items())
            )
        if any(w <= 0 for w in self.widths) or any(d < 0 for d in self.depths):
            raise ValueError(
                f"widths {self.widths} must be positive and depths {self.depths} at least 0"
            )
        if any(r <= 0 for r in self.expand_ratios) or self.neck_expand_ratio <= 0:
            raise ValueError(
                f"expand ratios must be positive: got {self.expand_ratios} and neck "
                f"{self.neck_expand_ratio}"
            )
        if self.blocks[0] not in LOCAL_BLOCKS:
            raise ValueError(
                f"stage 0's blocks must be one of {LOCAL_BLOCKS}, got {self.blocks[0]!r}"
            )
        for i, block in enumerate(self.blocks[1:], 1):
            if block not in LOCAL_BLOCKS + ATTENTION_BLOCKS:
                raise ValueError(
                    f"stage {i}'s blocks must be one of {LOCAL_BLOCKS + ATTENTION_BLOCKS}, "
                    f"got {block!r}"
                )
            if block in ATTENTION_BLOCKS and self.widths[i] < self.qkv_dim:
                raise ValueError(
                    f"stage {i} ({self.widths[i]} wide) is narrower than one attention head "
                    f"(qkv_dim {self.qkv_dim})"
                )
        picked = self.neck_stages
        if (
            not picked
            or len(set(picked)) != len(picked)
            or not all(0 <= s < stages for s in picked)
        ):
            raise ValueError(
                f"neck_stages must name distinct backbone stages 0..{stages - 1}, got {picked}"
            )
        if self.neck_block not in LOCAL_BLOCKS:
            raise ValueError(f"neck_block must be one of {LOCAL_BLOCKS}, got {self.neck_block!r}")
        if self.neck_width <= 0 or self.neck_depth < 0 or self.qkv_dim <= 0:
            raise ValueError(
                f"neck_width ({self.neck_width}) and qkv_dim ({self.qkv_dim}) must be positive, "
                f"neck_depth ({self.neck_depth}) at least 0"
            )
        if self.image_size <= 0 or self.image_size % self.stride:
            raise ValueError(
                f"image_size ({self.image_size}) must be a positive multiple of the backbone's "
                f"stride ({self.stride}: each of its {stages} stages halves the side)"
            )
        if self.frame_size <= 0 or self.embedding_size <= 0 or self.norm_eps <= 0:
            raise ValueError(
                f"frame_size ({self.frame_size}), embedding_size ({self.embedding_size}) and "
                f"norm_eps ({self.norm_eps}) must be positive"
            )

    @property
    def stride(self) -> int:
        """Input pixels per cell of the last stage's grid."""
        return 2 ** len(self.widths)

    def stage_sides(self) -> tuple[int, ...]:
        """Side of each stage's grid (stage 0 at half the input's side)."""
        return tuple(self.image_size // 2 ** (i + 1) for i in range(len(self.widths)))
