"""The ViT image encoder family (SAM 1's encoder): the module (``encoder``), its config
(``config``), its chunked inference forward (``chunked``) and its registration (``family``)."""

from segany.modeling.vit.config import ViTConfig
from segany.modeling.vit.encoder import ImageEncoderViT
from segany.modeling.vit.family import VIT, ViTFamily

__all__ = ["VIT", "ImageEncoderViT", "ViTConfig", "ViTFamily"]
