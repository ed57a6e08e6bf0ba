"""The sizes of SAM's prompt encoder and mask decoder (the encoder's are its family's config).

Defaults are the official numbers, shared by every published SAM 1 model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

_C = TypeVar("_C", bound="_Sizes")


@dataclass(frozen=True)
class _Sizes:
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[_C], data: Mapping[str, Any]) -> _C:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}")
        return cls(**data)


@dataclass(frozen=True)
class PromptConfig(_Sizes):
    """The prompt encoder: ``embed_dim`` is also the width of the image embedding (the
    encoder's output channels) and of the decoder's tokens."""

    embed_dim: int = 256


@dataclass(frozen=True)
class DecoderConfig(_Sizes):
    """SAM's mask decoder: a two-way transformer, mask tokens and an IoU head."""

    depth: int = 2
    num_heads: int = 8
    mlp_dim: int = 2048
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
