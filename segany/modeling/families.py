"""Image-encoder families: the contract every encoder keeps, and the one registry of them.

SAM's prompt encoder and mask decoder read the image only through the encoder's output, so an
encoder family (ViT and TinyViT today; EfficientViT, Hiera next) is a unit. Everything above
``modeling/`` (the Predictor, checkpoints, training, export) reaches an encoder only through
this contract:

- the module: ``img_size`` (side S of its square padded input) and ``forward``:
  B×3×S×S normalised images -> B×C×h×w embeddings (C = the prompt width, h = w =
  ``config.embedding_size``);
- its family (an ``EncoderFamily`` registered here) says, in one place: how to build the module
  from its config, which config a state dict's shapes describe, its Hugging Face key names, the
  layer of each parameter for layer-wise lr decay, how its position tables follow a new input
  size, its fast inference forward, and (for SAM-HQ's decoder) an early feature map beside
  the embedding (``forward_with_early``, ``early_width``).

A family registers itself when its package is imported; ``segany.modeling`` imports the
built-in ones. Pure python and torch, like the rest of ``modeling/``.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

Shapes = Mapping[str, tuple[int, ...]]


@dataclass(frozen=True)
class EncoderConfig(ABC):
    """Base of every family's encoder config: a frozen value with ``image_size`` (input side)
    and ``embedding_size`` (side of the output grid). Subclasses set ``family``."""

    family: ClassVar[str] = ""

    @property
    @abstractmethod
    def image_size(self) -> int:
        """Side S of the square padded input (a field of the subclass)."""

    @property
    @abstractmethod
    def embedding_size(self) -> int:
        """Side of the square output grid."""

    @property
    def frame_size(self) -> int:
        """Side of the square frame that prompts, ``input_size`` and the upscaled masks live in
        (the prompt encoder's input size). The encoder's own input side by default; a family
        whose encoder reads a smaller image than the frame (EfficientViT-SAM's 512-px models
        answer prompts in a 1024 frame) overrides it."""
        return self.image_size

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: the family's tag, then its fields (tuples as lists)."""
        body = {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }
        return {"family": self.family, **body}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EncoderConfig:
        """Inverse of ``to_dict`` without the tag; unknown fields are refused by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown {cls.family!r} encoder config fields {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


class EncoderFamily(ABC):
    """What a family provides. Subclass, set the class attributes, override the methods that
    apply (the defaults say plainly that the family lacks that feature) and ``register`` one
    instance."""

    name: ClassVar[str]
    config_type: ClassVar[type[EncoderConfig]]
    module_type: ClassVar[type[nn.Module]]
    #: (official key prefix, Hugging Face key prefix) rules for the encoder's weights, both
    #: with their model prefix (``image_encoder.`` / ``vision_encoder.``); ``{n}``/``{m}`` stand
    #: for layer numbers. Empty: the family has no transformers layout.
    hf_prefix_rules: ClassVar[tuple[tuple[str, str], ...]] = ()
    #: Largest value of each numeric config field a weights file may claim (checked before a
    #: model of that size is built).
    limits: ClassVar[Mapping[str, float]] = {}
    #: Parts of encoder parameter names (without ``image_encoder.``) that training keeps out of
    #: weight decay besides norms and biases: position tables and biases stored as matrices.
    no_weight_decay: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def build(self, config: EncoderConfig, *, out_chans: int) -> nn.Module:
        """An untrained encoder module for ``config`` whose embeddings have ``out_chans``
        channels."""

    def detect(self, shapes: Shapes) -> EncoderConfig | None:
        """The config the encoder's weights describe (``shapes``: key -> shape of a whole
        model's state dict, official keys), or None when they are not this family's. Raise
        ``ValueError`` when they are this family's but inconsistent."""
        return None

    def describe(self, config: EncoderConfig) -> str:
        """A short line of the numbers that tell variants apart."""
        return ", ".join(f"{k} {v}" for k, v in config.to_dict().items() if k != "family")

    def config_from_hf(self, vision: Mapping[str, Any]) -> EncoderConfig:
        """The config of a transformers ``vision_config``."""
        raise ValueError(f"the {self.name!r} encoder family has no Hugging Face layout")

    def config_to_hf(self, config: EncoderConfig, out_chans: int) -> dict[str, Any]:
        """transformers' ``vision_config`` for ``config``."""
        raise ValueError(f"the {self.name!r} encoder family has no Hugging Face layout")

    def num_layers(self, config: EncoderConfig) -> int:
        """Layers for layer-wise lr decay: ids 0 .. ``num_layers`` inside the encoder; the
        rest of the model is layer ``num_layers + 1``."""
        return 0

    def layer_id(self, name: str, config: EncoderConfig) -> int:
        """The layer of the encoder parameter ``name`` (without ``image_encoder.``)."""
        return 0

    def with_input_size(self, config: EncoderConfig, image_size: int) -> EncoderConfig:
        """The config of the same encoder reading ``image_size``-px inputs."""
        raise ValueError(f"the {self.name!r} encoder family cannot change its input size")

    def resize_state(
        self, state: Mapping[str, torch.Tensor], old: EncoderConfig, new: EncoderConfig
    ) -> dict[str, torch.Tensor]:
        """The encoder's weights (keys without ``image_encoder.``) for ``new``'s input size:
        position tables resampled, every other tensor as it is."""
        raise ValueError(f"the {self.name!r} encoder family cannot change its input size")

    def decoder_overrides(self, config: EncoderConfig) -> dict[str, Any]:
        """``DecoderConfig`` fields this family's official models set differently from SAM 1
        and that the weights do not show (EfficientViT-SAM: the LayerNorms' eps); used when a
        config is read from a checkpoint's shapes."""
        return {}

    def fast_forward(self, encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """``encoder(images)``'s values by the family's fastest inference path (the default is
        the module's forward). B×3×S×S -> B×C×h×w."""
        return encoder(images)

    def early_width(self, config: EncoderConfig) -> int:
        """Channels E of the early feature map ``forward_with_early`` returns (SAM-HQ's decoder
        fuses it with the embedding). A family without one raises ``ValueError``."""
        raise ValueError(
            f"the {self.name!r} encoder family has no early feature map (SAM-HQ's decoder "
            "needs one)"
        )

    def forward_with_early(
        self, encoder: nn.Module, images: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """B×3×S×S -> (``fast_forward``'s B×C×h×w embeddings, B×h×w×E early feature map on the
        embedding's grid): what SAM-HQ's decoder reads besides the embedding (ViT: the output of
        the first global-attention block; TinyViT: of its second stage)."""
        raise ValueError(
            f"the {self.name!r} encoder family has no early feature map (SAM-HQ's decoder "
            "needs one)"
        )

    def set_drop_path(self, encoder: nn.Module, rate: float) -> None:
        """Stochastic depth for training, rising to ``rate`` at the last block (a family
        without it ignores the rate only when it is 0)."""
        if rate > 0:
            raise ValueError(f"the {self.name!r} encoder family has no drop path")


_FAMILIES: dict[str, EncoderFamily] = {}


def register(family: EncoderFamily) -> EncoderFamily:
    """Add ``family`` to the registry (a second registration under the same name replaces the
    first, so a test or a notebook can re-run its registration)."""
    if not family.name or family.config_type.family != family.name:
        raise ValueError(
            f"family {family.name!r}: its config_type.family must be its name "
            f"(got {family.config_type.family!r})"
        )
    _FAMILIES[family.name] = family
    return family


def unregister(name: str) -> None:
    _FAMILIES.pop(name, None)


def families() -> tuple[EncoderFamily, ...]:
    return tuple(_FAMILIES.values())


def get_family(name: str) -> EncoderFamily:
    try:
        return _FAMILIES[name]
    except KeyError:
        known = ", ".join(sorted(_FAMILIES)) or "none"
        raise ValueError(f"unknown encoder family {name!r}; known families: {known}") from None


def family_of(config: EncoderConfig) -> EncoderFamily:
    return get_family(config.family)


def family_of_module(encoder: nn.Module) -> EncoderFamily | None:
    """The family whose module ``encoder`` is (also a copy of one: bf16, int8), else None."""
    for family in _FAMILIES.values():
        if isinstance(encoder, family.module_type):
            return family
    return None


def encoder_config_from_dict(data: Mapping[str, Any]) -> EncoderConfig:
    """An encoder config from its JSON form (``EncoderConfig.to_dict``)."""
    body = dict(data)
    tag = body.pop("family", None)
    if not isinstance(tag, str):
        raise ValueError(f"an encoder config needs a 'family' tag, got {tag!r}")
    return get_family(tag).config_type.from_dict(body)


def detect_encoder(shapes: Shapes) -> EncoderConfig | None:
    """The first registered family's config that the weights' shapes describe, or None."""
    for family in _FAMILIES.values():
        found = family.detect(shapes)
        if found is not None:
            return found
    return None
