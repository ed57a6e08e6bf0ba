"""The variant registry: one frozen config per SAM variant and one builder.

``SamConfig`` itself is defined in ``segany.config`` and re-exported here. A variant's encoder is
a family's config (``ViTConfig`` for SAM 1); a new family registers its variants here.

The numbers of every variant live here and nowhere else. Custom variants (another input size,
depth or width, e.g. the bundled ``tiny`` model) are plain ``SamConfig`` values built the same way.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from segany.config import PIXEL_MEAN, PIXEL_STD, DecoderConfig, SamConfig
from segany.errors import InputError
from segany.modeling.efficientvit.config import EfficientViTConfig
from segany.modeling.hiera.config import HIERA_BASE_PLUS, HIERA_LARGE, HIERA_SMALL, HIERA_TINY
from segany.modeling.tinyvit.config import TinyViTConfig
from segany.modeling.vit.config import ViTConfig

__all__ = [
    "EFFICIENTVIT_SAM_L0",
    "EFFICIENTVIT_SAM_L1",
    "EFFICIENTVIT_SAM_L2",
    "EFFICIENTVIT_SAM_XL0",
    "EFFICIENTVIT_SAM_XL1",
    "PIXEL_MEAN",
    "PIXEL_STD",
    "SAM_HQ_VIT_B",
    "SAM_HQ_VIT_H",
    "SAM_HQ_VIT_L",
    "SAM2_VARIANTS",
    "SAM_HQ_VIT_TINY",
    "VARIANTS",
    "VIT_B",
    "VIT_H",
    "VIT_L",
    "VIT_T",
    "SamConfig",
    "build_sam",
    "config_of",
    "get_config",
    "name_known_variant",
]

if TYPE_CHECKING:
    from segany.modeling import Sam

VIT_B = SamConfig("vit_b", ViTConfig(768, 12, 12, (2, 5, 8, 11)))
VIT_L = SamConfig("vit_l", ViTConfig(1024, 24, 16, (5, 11, 17, 23)))
VIT_H = SamConfig("vit_h", ViTConfig(1280, 32, 16, (7, 15, 23, 31)))
# MobileSAM: TinyViT-5M distilled from vit_h's encoder, SAM 1's prompt encoder and decoder.
VIT_T = SamConfig(
    "vit_t",
    TinyViTConfig(
        embed_dims=(64, 128, 160, 320),
        depths=(2, 2, 6, 2),
        num_heads=(4, 5, 10),
        window_sizes=(7, 14, 7),
        merge_strides=(2, 2, 1),
    ),
)


# EfficientViT-SAM (MIT Han Lab): EfficientViT backbones with a SAM neck, SAM 1's prompt encoder
# and decoder. l0-l2 read 512-px images, xl0-xl1 1024-px ones; prompts and masks live in a
# 1024 frame for all five.
def _efficientvit_l(name: str, depths: tuple[int, ...], neck_depth: int) -> SamConfig:
    encoder = EfficientViTConfig(
        widths=(32, 64, 128, 256, 512),
        depths=depths,
        blocks=("res", "fmb", "fmb", "mb", "att"),
        expand_ratios=(1, 4, 4, 4, 6),
        fewer_norms=(False, False, False, True, True),
        neck_stages=(4, 3, 2),
        neck_depth=neck_depth,
        neck_expand_ratio=1,
        image_size=512,
    )
    return SamConfig(name, encoder, decoder=DecoderConfig(norm_eps=1e-6))


def _efficientvit_xl(name: str, depths: tuple[int, ...], neck_depth: int) -> SamConfig:
    encoder = EfficientViTConfig(
        widths=(32, 64, 128, 256, 512, 1024),
        depths=depths,
        blocks=("res", "fmb", "fmb", "fmb", "att@3", "att@3"),
        expand_ratios=(1, 4, 4, 4, 4, 6),
        fewer_norms=(False, False, False, False, True, True),
        neck_stages=(5, 4, 3),
        neck_depth=neck_depth,
        neck_expand_ratio=4,
        image_size=1024,
    )
    return SamConfig(name, encoder, decoder=DecoderConfig(norm_eps=1e-6))


EFFICIENTVIT_SAM_L0 = _efficientvit_l("efficientvit_sam_l0", (1, 1, 1, 4, 4), 4)
EFFICIENTVIT_SAM_L1 = _efficientvit_l("efficientvit_sam_l1", (1, 1, 1, 6, 6), 8)
EFFICIENTVIT_SAM_L2 = _efficientvit_l("efficientvit_sam_l2", (1, 2, 2, 8, 8), 12)
EFFICIENTVIT_SAM_XL0 = _efficientvit_xl("efficientvit_sam_xl0", (0, 1, 1, 2, 3, 3), 6)
EFFICIENTVIT_SAM_XL1 = _efficientvit_xl("efficientvit_sam_xl1", (1, 2, 2, 4, 6, 6), 12)

VARIANTS: dict[str, SamConfig] = {
    c.name: c
    for c in (
        VIT_B,
        VIT_L,
        VIT_H,
        VIT_T,
        EFFICIENTVIT_SAM_L0,
        EFFICIENTVIT_SAM_L1,
        EFFICIENTVIT_SAM_L2,
        EFFICIENTVIT_SAM_XL0,
        EFFICIENTVIT_SAM_XL1,
    )
}

# SAM-HQ: SAM's ViT encoders, and light HQ-SAM on MobileSAM's TinyViT, with the HQ decoder.
SAM_HQ_VIT_B = SamConfig("sam_hq_vit_b", VIT_B.encoder, decoder=DecoderConfig(hq=True))
SAM_HQ_VIT_L = SamConfig("sam_hq_vit_l", VIT_L.encoder, decoder=DecoderConfig(hq=True))
SAM_HQ_VIT_H = SamConfig("sam_hq_vit_h", VIT_H.encoder, decoder=DecoderConfig(hq=True))
SAM_HQ_VIT_TINY = SamConfig("sam_hq_vit_tiny", VIT_T.encoder, decoder=DecoderConfig(hq=True))
VARIANTS.update({c.name: c for c in (SAM_HQ_VIT_B, SAM_HQ_VIT_L, SAM_HQ_VIT_H, SAM_HQ_VIT_TINY)})

# SAM 2 and SAM 2.1 for images: Hiera encoders with SAM 2's decoder. The two releases share the
# image model; the names are the official checkpoints'.
_HIERA_SIZES = (
    ("tiny", HIERA_TINY),
    ("small", HIERA_SMALL),
    ("base_plus", HIERA_BASE_PLUS),
    ("large", HIERA_LARGE),
)
SAM2_VARIANTS = tuple(
    SamConfig(f"{prefix}_hiera_{size}", trunk, decoder=DecoderConfig(sam2=version))
    for prefix, version in (("sam2.1", "2.1"), ("sam2", "2.0"))
    for size, trunk in _HIERA_SIZES
)
VARIANTS.update({c.name: c for c in SAM2_VARIANTS})


def name_known_variant(cfg: SamConfig) -> SamConfig:
    """Return the registered variant when ``cfg`` has its numbers (whatever its name)."""
    for variant in VARIANTS.values():
        if dataclasses.replace(cfg, name=variant.name) == variant:
            return variant
    return cfg


def config_of(model: Sam) -> SamConfig:
    """The ``SamConfig`` a model was built from; ``InputError`` for a ``Sam`` assembled from
    its modules by hand (it carries none)."""
    if model.config is None:
        raise InputError(
            "this Sam carries no SamConfig; build it with segany.build_sam or load it with "
            "segany.load_model"
        )
    return model.config


def get_config(name: str) -> SamConfig:
    """Return the config of a registered variant, or raise naming the known ones."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise InputError(
            f"unknown SAM variant {name!r}; known variants: {', '.join(sorted(VARIANTS))}"
        ) from None


def build_sam(config: SamConfig | str) -> Sam:
    """Build an untrained ``Sam`` for ``config`` (a ``SamConfig`` or a registered name); its
    encoder is built by the family the encoder config names."""
    from segany.modeling import build_sam_from_parts
    from segany.modeling.families import family_of

    cfg = get_config(config) if isinstance(config, str) else config
    try:
        family_of(cfg.encoder)
    except ValueError as e:
        raise InputError(f"cannot build {cfg.name!r}: {e}") from None
    model = build_sam_from_parts(
        cfg.encoder,
        prompt=cfg.prompt,
        decoder=cfg.decoder,
        pixel_mean=cfg.pixel_mean,
        pixel_std=cfg.pixel_std,
        mask_threshold=cfg.mask_threshold,
    )
    model.config = cfg
    return model
