"""``SamConfig``: every size of a SAM model, as one frozen value.

Kept apart from the registry (``segany.models``) so the modeling code can name the type of
``Sam.config`` without depending on anything above it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from segany.errors import InputError

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
# The MaskGenerator options a model may carry its own defaults for (its quality filters).
GENERATOR_DEFAULT_KEYS = ("pred_iou_thresh", "stability_score_thresh", "stability_score_offset")


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
    # The automatic mask generator's options for this model where they differ from the official
    # defaults (``MaskGenerator.for_model``): a small model's masks and scores are less certain
    # than the official models', and the official thresholds drop nearly all of them.
    generator_defaults: dict[str, float] = field(default_factory=dict, compare=False, hash=False)
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
        odd = set(self.generator_defaults) - set(GENERATOR_DEFAULT_KEYS)
        if odd:
            raise InputError(
                f"generator_defaults may set {', '.join(GENERATOR_DEFAULT_KEYS)}; got {sorted(odd)}"
            )
        for key, value in self.generator_defaults.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise InputError(f"generator_defaults[{key!r}] must be a number, got {value!r}")

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
