"""``SamConfig``: a SAM model's sizes as one frozen value, composed of its parts' configs.

``SamConfig(name, encoder=<a family's config>, prompt=PromptConfig(), decoder=DecoderConfig())``.
The encoder config is tagged by its family (``segany.modeling.families``), so a config names
which encoder to build. JSON: ``{"name", "encoder": {"family": ..., ...}, "prompt", "decoder",
"pixel_mean", "pixel_std", "mask_threshold"}``; the flat JSON written before encoder families
(``encoder_embed_dim`` ... at the top level, always a ViT) reads unchanged.

Segment-everything thresholds are generator policy, not a model's size: they travel beside the
config in a file (``split_config_json`` hands them back from old files that kept them inside).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from segany.errors import InputError
from segany.modeling.configs import DecoderConfig, PromptConfig
from segany.modeling.families import EncoderConfig, encoder_config_from_dict

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
# The MaskGenerator options a model file may carry its own defaults for (its quality filters).
GENERATOR_DEFAULT_KEYS = ("pred_iou_thresh", "stability_score_thresh", "stability_score_offset")

__all__ = [
    "GENERATOR_DEFAULT_KEYS",
    "PIXEL_MEAN",
    "PIXEL_STD",
    "DecoderConfig",
    "EncoderConfig",
    "PromptConfig",
    "SamConfig",
    "check_generator_defaults",
    "replace_encoder",
    "split_config_json",
]


@dataclass(frozen=True)
class SamConfig:
    """Every size of a SAM model: its encoder (a family's config), prompt encoder and decoder,
    and the pixel normalisation. Defaults are the official numbers."""

    name: str
    encoder: EncoderConfig
    prompt: PromptConfig = PromptConfig()
    decoder: DecoderConfig = DecoderConfig()
    pixel_mean: tuple[float, float, float] = PIXEL_MEAN
    pixel_std: tuple[float, float, float] = PIXEL_STD
    mask_threshold: float = 0.0
    # Free-form notes carried in saved files (the bundled weights have it); never read by code.
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.encoder, EncoderConfig):
            raise InputError(
                f"SamConfig.encoder must be an encoder family's config (e.g. ViTConfig), got "
                f"{type(self.encoder).__name__}"
            )
        dim, heads = self.prompt.embed_dim, self.decoder.num_heads
        # The decoder's cross-attention works at half the prompt width (downsample rate 2).
        if heads <= 0 or dim % 2 or (dim // 2) % heads:
            raise InputError(
                f"the decoder's num_heads ({heads}) must divide half the prompt width "
                f"({dim} / 2); the official models use 8 heads and width 256"
            )

    @property
    def image_size(self) -> int:
        """Side of the square padded input (1024 for the official models)."""
        return self.encoder.image_size

    @property
    def frame_size(self) -> int:
        """Side of the frame prompts and upscaled masks live in (``image_size`` except for
        encoders that read a smaller image, such as EfficientViT-SAM l0-l2)."""
        return self.encoder.frame_size

    @property
    def embedding_size(self) -> int:
        """Side of the square image embedding grid (64 for the official models)."""
        return self.encoder.embedding_size

    @property
    def low_res_mask_size(self) -> int:
        """Side of the decoder's low-resolution mask logits (256 for the official models)."""
        return 4 * self.embedding_size

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "encoder": self.encoder.to_dict(),
            "prompt": self.prompt.to_dict(),
            "decoder": self.decoder.to_dict(),
            "pixel_mean": list(self.pixel_mean),
            "pixel_std": list(self.pixel_std),
            "mask_threshold": self.mask_threshold,
            "extra": self.extra,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SamConfig:
        """From ``to_dict``'s form or the old flat form; generator defaults an old form holds
        are dropped (``split_config_json`` returns them)."""
        return _from_dict(data)[0]

    @classmethod
    def from_json(cls, text: str) -> SamConfig:
        return split_config_json(text)[0]


def split_config_json(text: str) -> tuple[SamConfig, dict[str, float]]:
    """(config, generator defaults) from a config's JSON, new or old (flat) form."""
    try:
        data = json.loads(text)
    except ValueError as e:
        raise InputError(f"a SAM config must be JSON: {e}") from None
    if not isinstance(data, dict):
        raise InputError(f"a SAM config must be a JSON object, got {type(data).__name__}")
    return _from_dict(data)


def check_generator_defaults(values: Mapping[str, Any]) -> dict[str, float]:
    """``values`` as generator defaults, or an ``InputError`` naming what is not allowed."""
    odd = set(values) - set(GENERATOR_DEFAULT_KEYS)
    if odd:
        raise InputError(
            f"generator_defaults may set {', '.join(GENERATOR_DEFAULT_KEYS)}; got {sorted(odd)}"
        )
    for key, value in values.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise InputError(f"generator_defaults[{key!r}] must be a number, got {value!r}")
    return {k: float(v) for k, v in values.items()}


# The flat form's encoder fields and their names in a ViT config.
_FLAT_VIT = {
    "encoder_embed_dim": "embed_dim",
    "encoder_depth": "depth",
    "encoder_num_heads": "num_heads",
    "encoder_global_attn_indexes": "global_attn_indexes",
    "image_size": "image_size",
    "patch_size": "patch_size",
    "window_size": "window_size",
    "mlp_ratio": "mlp_ratio",
}
_FLAT_DECODER = {
    "decoder_depth": "depth",
    "decoder_num_heads": "num_heads",
    "decoder_mlp_dim": "mlp_dim",
    "num_multimask_outputs": "num_multimask_outputs",
    "iou_head_depth": "iou_head_depth",
    "iou_head_hidden_dim": "iou_head_hidden_dim",
}
_TOP = ("name", "pixel_mean", "pixel_std", "mask_threshold", "extra")


def _nested_from_flat(d: dict[str, Any]) -> dict[str, Any]:
    """The flat form (before encoder families; every such file is a ViT) as the nested one."""
    known = {*_FLAT_VIT, *_FLAT_DECODER, *_TOP, "prompt_embed_dim", "generator_defaults"}
    unknown = set(d) - known
    if unknown:
        raise InputError(f"unknown SamConfig fields {sorted(unknown)}")
    out = {k: d[k] for k in (*_TOP, "generator_defaults") if k in d}
    out["encoder"] = {"family": "vit", **{v: d[k] for k, v in _FLAT_VIT.items() if k in d}}
    out["decoder"] = {v: d[k] for k, v in _FLAT_DECODER.items() if k in d}
    if "prompt_embed_dim" in d:
        out["prompt"] = {"embed_dim": d["prompt_embed_dim"]}
    return out


def _from_dict(data: Mapping[str, Any]) -> tuple[SamConfig, dict[str, float]]:
    d = dict(data)
    if not isinstance(d.get("encoder"), dict):
        d = _nested_from_flat(d)
    unknown = set(d) - {*_TOP, "encoder", "prompt", "decoder", "generator_defaults"}
    if unknown:
        raise InputError(f"unknown SamConfig fields {sorted(unknown)}")
    defaults = check_generator_defaults(d.pop("generator_defaults", None) or {})
    try:
        cfg = SamConfig(
            name=d.get("name", "custom"),
            encoder=encoder_config_from_dict(d["encoder"]),
            prompt=PromptConfig.from_dict(d.get("prompt") or {}),
            decoder=DecoderConfig.from_dict(d.get("decoder") or {}),
            pixel_mean=_triple(d.get("pixel_mean", PIXEL_MEAN), "pixel_mean"),
            pixel_std=_triple(d.get("pixel_std", PIXEL_STD), "pixel_std"),
            mask_threshold=float(d.get("mask_threshold", 0.0)),
            extra=dict(d.get("extra") or {}),
        )
    except InputError:
        raise
    except (TypeError, ValueError) as e:
        raise InputError(f"not a valid SAM config: {e}") from None
    return cfg, defaults


def _triple(value: Any, what: str) -> tuple[float, float, float]:
    values = tuple(float(v) for v in value)
    if len(values) != 3:
        raise InputError(f"{what} needs 3 values (R, G, B), got {len(values)}")
    return values[0], values[1], values[2]


def replace_encoder(cfg: SamConfig, **changes: Any) -> SamConfig:
    """``cfg`` with fields of its encoder config changed (``image_size=512``, ``depth=4``)."""
    return dataclasses.replace(cfg, encoder=dataclasses.replace(cfg.encoder, **changes))
