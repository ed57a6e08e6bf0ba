"""``ViTConfig``: the sizes of SAM 1's ViT image encoder (vit_b / vit_l / vit_h and custom)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from segany.modeling.families import EncoderConfig


@dataclass(frozen=True)
class ViTConfig(EncoderConfig):
    """A ViT encoder: ``depth`` blocks of width ``embed_dim``, windowed attention except in
    the ``global_attn_indexes`` blocks, over a grid of ``image_size / patch_size`` patches."""

    family: ClassVar[str] = "vit"

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    image_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    mlp_ratio: float = 4.0

    def __post_init__(self) -> None:
        if self.patch_size <= 0 or self.image_size % self.patch_size:
            raise ValueError(
                f"image_size ({self.image_size}) must be a multiple of patch_size "
                f"({self.patch_size})"
            )
        if self.num_heads <= 0 or self.embed_dim % self.num_heads:
            raise ValueError(
                f"encoder embed_dim ({self.embed_dim}) must be divisible by num_heads "
                f"({self.num_heads})"
            )
        bad = [i for i in self.global_attn_indexes if not 0 <= i < self.depth]
        if bad:
            raise ValueError(f"global attention indexes {bad} outside depth {self.depth}")

    @property
    def embedding_size(self) -> int:
        return self.image_size // self.patch_size
