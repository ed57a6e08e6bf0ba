"""``build_sam2`` from the official config names, and ``build_sam2_hf``'s hub ids."""

from __future__ import annotations

import os
import re
from typing import Any

import torch

from segany.checkpoints import load_model
from segany.errors import InputError
from segany.modeling import Sam2
from segany.models import VARIANTS, build_sam

__all__ = ["HF_MODEL_ID_TO_VARIANT", "build_sam2", "build_sam2_hf", "variant_of_config"]

_SIZES = {"t": "tiny", "s": "small", "b+": "base_plus", "l": "large"}
#: The official hub ids and the variant each names.
HF_MODEL_ID_TO_VARIANT = {
    f"facebook/{release}-hiera-{size.replace('_', '-')}": f"{release}_hiera_{size}"
    for release in ("sam2", "sam2.1")
    for size in ("tiny", "small", "base_plus", "large")
}


def variant_of_config(config_file: str | os.PathLike[str]) -> str:
    """``configs/sam2.1/sam2.1_hiera_l.yaml`` (or its file name, with or without ``.yaml``) ->
    ``sam2.1_hiera_large``."""
    stem = os.path.basename(os.fspath(config_file))
    stem = stem[: -len(".yaml")] if stem.endswith(".yaml") else stem
    hit = re.fullmatch(r"(sam2(?:\.1)?)_hiera_(t|s|b\+|l)", stem)
    if hit is None:
        known = ", ".join(f"configs/sam2.1/sam2.1_hiera_{k}.yaml" for k in _SIZES)
        raise InputError(
            f"unknown SAM 2 config {os.fspath(config_file)!r}; the image configs are "
            f"{known} and their configs/sam2/sam2_hiera_*.yaml twins"
        )
    return f"{hit.group(1)}_hiera_{_SIZES[hit.group(2)]}"


def build_sam2(
    config_file: str,
    ckpt_path: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cuda",
    mode: str = "eval",
    hydra_overrides_extra: list[str] | None = None,
    apply_postprocessing: bool = True,
    **kwargs: Any,
) -> Sam2:
    """The SAM 2 image model of ``config_file`` with the weights of ``ckpt_path`` (an official
    ``.pt``; untrained without one, as officially). ``device`` "cuda" falls back to the CPU
    when no GPU is there (the official default would fail). ``apply_postprocessing=False``
    turns off the stable single-mask fallback, as officially; hydra overrides are refused."""
    variant = variant_of_config(config_file)
    if hydra_overrides_extra:
        raise InputError(
            "hydra_overrides_extra is not supported: segany builds its variants from their "
            "configs, not hydra"
        )
    if mode not in ("eval", "train"):
        raise InputError(f"mode must be 'eval' or 'train', got {mode!r}")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        device = "cpu"
    if ckpt_path is None:
        model = build_sam(VARIANTS[variant])
    else:
        model = load_model(ckpt_path)
        held = model.config.name if model.config is not None else "custom"
        if VARIANTS[variant].encoder != getattr(model.config, "encoder", None):
            raise InputError(
                f"{os.fspath(ckpt_path)!r} holds {held}, not the {variant} of {config_file!r}"
            )
    if not isinstance(model, Sam2):
        raise InputError(f"{variant} did not build a SAM 2 model")
    model.to(device)
    if not apply_postprocessing:
        model.mask_decoder.stability_thresh = float("-inf")  # always the single-mask output
    model.train(mode == "train")
    return model


def build_sam2_hf(model_id: str, **kwargs: Any) -> Sam2:
    """The official call downloads from the Hugging Face hub, which segany does not reach.
    Raises an ``InputError`` that names the file to use instead (or builds from a local path
    given as ``model_id``)."""
    if os.path.exists(model_id):
        model = load_model(model_id)
        if not isinstance(model, Sam2):
            raise InputError(f"{model_id!r} holds no SAM 2 model")
        return model
    variant = HF_MODEL_ID_TO_VARIANT.get(model_id)
    if variant is None:
        raise InputError(
            f"unknown SAM 2 model id {model_id!r}; known: {', '.join(HF_MODEL_ID_TO_VARIANT)}"
        )
    raise InputError(
        f"{model_id!r} is on the Hugging Face hub, which segany.sam2 does not download from: "
        f"get the official file with `segany download {variant}` (or from the SAM 2 "
        f"release) and call build_sam2('{_config_of(variant)}', '<path to {variant}.pt>')"
    )


def _config_of(variant: str) -> str:
    release, _, size = variant.partition("_hiera_")
    short = {v: k for k, v in _SIZES.items()}[size]
    return f"configs/{release}/{release}_hiera_{short}.yaml"
