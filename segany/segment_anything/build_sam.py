"""``sam_model_registry`` and ``build_sam_vit_h/l/b(checkpoint=...)``, as officially, and
MobileSAM's ``build_sam_vit_t`` / ``sam_model_registry["vit_t"]`` (its ``mobile_sam`` package
extends the same registry).

Differences that only make loading safer: the checkpoint is read without running code
(``weights_only``, or safetensors / transformers folders, whatever segany reads), and a file
holding another variant fails with a ``CheckpointError`` naming both.
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
    "build_sam",
    "build_sam_vit_b",
    "build_sam_vit_h",
    "build_sam_vit_l",
    "build_sam_vit_t",
    "sam_model_registry",
]


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
    """Raise ``CheckpointError`` unless the weights from ``source`` are ``variant``'s."""
    held = held_variant(model)
    if held == variant:
        return
    if held in VARIANTS:
        raise CheckpointError(
            f"{source} holds {held!r} weights, not {variant!r}: use sam_model_registry[{held!r}]"
        )
    raise CheckpointError(
        f"{source} holds the custom variant {held!r}, not {variant!r}: load it with "
        "segany.load_model"
    )


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
