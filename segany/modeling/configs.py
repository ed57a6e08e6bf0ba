"""The sizes of SAM's prompt encoder and mask decoder (the encoder's are its family's config).

Defaults are the official numbers, shared by every published SAM 1 model (and SAM-HQ's, whose
decoder adds the HQ token: ``DecoderConfig.hq``).
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
    """SAM's mask decoder: a two-way transformer, mask tokens and an IoU head.

    ``hq``: SAM-HQ's decoder (``MaskDecoderHQ``): one more output token whose mask reads the
    decoder's features fused with the embedding and the encoder's early feature map (its width
    comes from the encoder's family). Written to JSON only when set, so SAM 1 configs keep
    their form and files without the field read as SAM 1.

    ``norm_eps``: the two-way transformer's LayerNorm epsilon (torch's 1e-5 in SAM 1;
    EfficientViT-SAM's package sets every norm to 1e-6). Written only when not 1e-5.

    ``sam2``: SAM 2's decoder (``MaskDecoderSAM2``: object-score token, sigmoid IoU head,
    the encoder's high-resolution features, stability-based single masks), with the release
    it came from, "2.0" or "2.1" (their image models are the same; the official files differ
    in video-only weights). Empty for SAM 1; written only when set.
    """

    depth: int = 2
    num_heads: int = 8
    mlp_dim: int = 2048
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    hq: bool = False
    norm_eps: float = 1e-5
    sam2: str = ""

    def __post_init__(self) -> None:
        if self.sam2 not in ("", "2.0", "2.1"):
            raise ValueError(f"DecoderConfig.sam2 must be '', '2.0' or '2.1', got {self.sam2!r}")
        if self.sam2 and self.hq:
            raise ValueError("a decoder is SAM-HQ's or SAM 2's, not both")
        if not isinstance(self.hq, bool):
            raise ValueError(f"DecoderConfig.hq must be true or false, got {self.hq!r}")
        eps = self.norm_eps
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
            raise ValueError(f"DecoderConfig.norm_eps must be a number in (0, 1), got {eps!r}")

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if not self.hq:
            del out["hq"]
        if self.norm_eps == 1e-5:
            del out["norm_eps"]
        if not self.sam2:
            del out["sam2"]
        return out
