"""The Hiera image encoder family (SAM 2 and SAM 2.1): the module (``encoder``), its config
(``config``) and its registration (``family``)."""

from segany.modeling.hiera.config import HieraConfig
from segany.modeling.hiera.encoder import ImageEncoderHiera, pack_high_res, unpack_high_res
from segany.modeling.hiera.family import HIERA, HieraFamily

__all__ = [
    "HIERA",
    "HieraConfig",
    "HieraFamily",
    "ImageEncoderHiera",
    "pack_high_res",
    "unpack_high_res",
]
