"""``sam_model_registry`` and ``build_sam_vit_h/l/b(checkpoint=...)``, as officially, and
MobileSAM's ``build_sam_vit_t`` / ``sam_model_registry["vit_t"]`` (its ``mobile_sam`` package
extends the same registry). SAM-HQ's registry, whose ``vit_b/l/h`` name HQ models, lives in
``segany.segment_anything_hq`` (built here by ``hq_builder``).

Differences that only make loading safer: the checkpoint is read without running code
(``weights_only``, or safetensors / transformers folders, whatever segany reads), and a file
holding another variant, of this family or another, fails with a ``CheckpointError`` naming
both and where the held one loads.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from segany.checkpoints import load_model
from segany.errors import CheckpointError
from segany.modeling import Sam
from segany.models import VARIANTS, config_of, name_known_variant
from segany.models import build_sam as _build_variant

__all__ = [
    "HQ_REGISTRY",
    "SAM_REGISTRY",
    "build_sam",
    "build_sam_vit_b",
    "build_sam_vit_h",
    "build_sam_vit_l",
    "build_sam_vit_t",
    "hq_builder",
    "sam_model_registry",
]

# Registry key -> segany variant, per official package (mobile_sam's registry is
# segment_anything's plus vit_t; segment_anything_hq's vit_b/l/h are the HQ models).
SAM_REGISTRY = {"vit_h": "vit_h", "vit_l": "vit_l", "vit_b": "vit_b", "vit_t": "vit_t"}
HQ_REGISTRY = {
    "vit_h": "sam_hq_vit_h",
    "vit_l": "sam_hq_vit_l",
    "vit_b": "sam_hq_vit_b",
    "vit_tiny": "sam_hq_vit_tiny",
}
_MODULES = (
    ("segany.segment_anything", SAM_REGISTRY),
    ("segany.segment_anything_hq", HQ_REGISTRY),
)
# Parameters SAM-HQ's builders leave trainable (its recipe trains only the HQ parts); official
# checkpoint key names.
_HQ_TRAINABLE: tuple[str, ...] = ("hf_token", "hf_mlp", "compress_vit_feat")
_HQ_TRAINABLE += ("embedding_encoder", "embedding_maskfeature")


def family_name(variant: str) -> str:
    """The model family a registered variant belongs to, as its official release names it."""
    if variant.startswith("sam_hq_"):
        return "SAM-HQ"
    if variant.startswith("efficientvit_sam_"):
        return "EfficientViT-SAM"
    if variant == "vit_t":
        return "MobileSAM"
    return "SAM"


def _loaded_by(variant: str) -> str:
    """Where ``variant``'s weights load through a compatibility registry, or load_model."""
    for module, registry in _MODULES:
        for key, held in registry.items():
            if held == variant:
                return f"{module}.sam_model_registry[{key!r}]"
    return f"segany.load_model (variant {variant!r})"


def _build(variant: str, checkpoint: str | os.PathLike[str] | None) -> Sam:
    """An eval-mode ``Sam`` of ``variant`` on the CPU: random weights, or the checkpoint's."""
    if checkpoint is None:
        return _build_variant(VARIANTS[variant]).eval()
    # Built from the file's own config, so a vit_h is not allocated only to be overwritten.
    model = load_model(checkpoint, progress=False)
    check_variant(model, variant, os.fspath(checkpoint))
    return model


def held_variant(model: Sam) -> str:
    """The registered variant name of ``model`` ("vit_b", ...), or its custom config's name."""
    return str(name_known_variant(config_of(model)).name)


def check_variant(model: Sam, variant: str, source: str) -> None:
    """Raise ``CheckpointError`` unless the weights from ``source`` are ``variant``'s; the
    message names both models with their families and where the held one loads."""
    held = held_variant(model)
    if held == variant:
        return
    wanted = f"{family_name(variant)} {variant!r}"
    if held in VARIANTS:
        raise CheckpointError(
            f"{source} holds {family_name(held)} {held!r} weights, not {wanted}: load it with "
            f"{_loaded_by(held)}"
        )
    raise CheckpointError(
        f"{source} holds the custom variant {held!r}, not {wanted}: load it with segany.load_model"
    )


def hq_builder(key: str) -> Callable[..., Sam]:
    """SAM-HQ's ``build_sam_*`` for its registry ``key``: the HQ model, with only its HQ parts
    trainable, as SAM-HQ's builders leave it for its training recipe."""
    variant = HQ_REGISTRY[key]

    def build(checkpoint: str | os.PathLike[str] | None = None) -> Sam:
        model = _build(variant, checkpoint)
        for name, param in model.named_parameters():
            param.requires_grad_(any(part in name for part in _HQ_TRAINABLE))
        return model

    build.__name__ = build.__qualname__ = f"build_sam_{key}"
    build.__doc__ = f"SAM-HQ's {key} ({variant}): random weights, or the checkpoint's."
    return build


def build_sam_vit_h(checkpoint: str | os.PathLike[str] | None = None) -> Sam:
    return _build("vit_h", checkpoint)


def build_sam_vit_l(checkpoint: str | os.PathLike[str] | None = None) -> Sam:
    return _build("vit_l", checkpoint)


def build_sam_vit_b(checkpoint: str | os.PathLike[str] | None = None) -> Sam:
    return _build("vit_b", checkpoint)


def build_sam_vit_t(checkpoint: str | os.PathLike[str] | None = None) -> Sam:
    return _build("vit_t", checkpoint)


build_sam = build_sam_vit_h  # the official default

sam_model_registry: dict[str, Callable[..., Sam]] = {
    "default": build_sam_vit_h,
    "vit_h": build_sam_vit_h,
    "vit_l": build_sam_vit_l,
    "vit_b": build_sam_vit_b,
    "vit_t": build_sam_vit_t,
}
