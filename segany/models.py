"""The variant registry: one frozen config per SAM variant and one builder.

The numbers of every variant live here and nowhere else. Custom variants (another input size,
depth or width, e.g. the bundled ``tiny`` model) are plain ``SamConfig`` values built the same way.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from segany.errors import InputError

if TYPE_CHECKING:
    from segany.modeling import Sam

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class SamConfig:
    """Every size of a SAM model. Defaults are the official decoder/prompt numbers."""

    name: str
    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    image_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    mlp_ratio: float = 4.0
    prompt_embed_dim: int = 256
    decoder_depth: int = 2
    decoder_num_heads: int = 8
    decoder_mlp_dim: int = 2048
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    pixel_mean: tuple[float, float, float] = PIXEL_MEAN
    pixel_std: tuple[float, float, float] = PIXEL_STD
    mask_threshold: float = 0.0
    # Free-form notes carried in saved files (the bundled weights have it); never read by code.
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise InputError(
                f"image_size ({self.image_size}) must be a multiple of patch_size "
                f"({self.patch_size})"
            )
        if self.encoder_embed_dim % self.encoder_num_heads:
            raise InputError("encoder_embed_dim must be divisible by encoder_num_heads")
        bad = [i for i in self.encoder_global_attn_indexes if not 0 <= i < self.encoder_depth]
        if bad:
            raise InputError(f"global attention indexes {bad} outside depth {self.encoder_depth}")

    @property
    def embedding_size(self) -> int:
        """Side of the square image embedding grid (64 for the official models)."""
        return self.image_size // self.patch_size

    @property
    def low_res_mask_size(self) -> int:
        """Side of the decoder's low-resolution mask logits (256 for the official models)."""
        return 4 * self.embedding_size

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["encoder_global_attn_indexes"] = list(self.encoder_global_attn_indexes)
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SamConfig:
        d = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise InputError(f"unknown SamConfig fields {sorted(unknown)}")
        for key in ("encoder_global_attn_indexes", "pixel_mean", "pixel_std"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


VIT_B = SamConfig("vit_b", 768, 12, 12, (2, 5, 8, 11))
VIT_L = SamConfig("vit_l", 1024, 24, 16, (5, 11, 17, 23))
VIT_H = SamConfig("vit_h", 1280, 32, 16, (7, 15, 23, 31))

VARIANTS: dict[str, SamConfig] = {c.name: c for c in (VIT_B, VIT_L, VIT_H)}


def name_known_variant(cfg: SamConfig) -> SamConfig:
    """Return the registered variant when ``cfg`` has its numbers (whatever its name)."""
    for variant in VARIANTS.values():
        if dataclasses.replace(cfg, name=variant.name) == variant:
            return variant
    return cfg


def get_config(name: str) -> SamConfig:
    """Return the config of a registered variant, or raise naming the known ones."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise InputError(
            f"unknown SAM variant {name!r}; known variants: {', '.join(sorted(VARIANTS))}"
        ) from None


def build_sam(config: SamConfig | str) -> Sam:
    """Build an untrained ``Sam`` for ``config`` (a ``SamConfig`` or a registered name).

    modeling is imported here, not at the top, so reading configs does not import torch."""
    from segany.modeling import build_sam_from_sizes

    cfg = get_config(config) if isinstance(config, str) else config
    model = build_sam_from_sizes(
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        window_size=cfg.window_size,
        mlp_ratio=cfg.mlp_ratio,
        encoder_embed_dim=cfg.encoder_embed_dim,
        encoder_depth=cfg.encoder_depth,
        encoder_num_heads=cfg.encoder_num_heads,
        encoder_global_attn_indexes=cfg.encoder_global_attn_indexes,
        prompt_embed_dim=cfg.prompt_embed_dim,
        decoder_depth=cfg.decoder_depth,
        decoder_num_heads=cfg.decoder_num_heads,
        decoder_mlp_dim=cfg.decoder_mlp_dim,
        num_multimask_outputs=cfg.num_multimask_outputs,
        iou_head_depth=cfg.iou_head_depth,
        iou_head_hidden_dim=cfg.iou_head_hidden_dim,
        pixel_mean=cfg.pixel_mean,
        pixel_std=cfg.pixel_std,
        mask_threshold=cfg.mask_threshold,
    )
    model.config = cfg
    return model
