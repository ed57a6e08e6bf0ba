"""The TinyViT image encoder family (MobileSAM's encoder): the module (``encoder``), its config
(``config``) and its registration (``family``)."""

from segany.modeling.tinyvit.config import TinyViTConfig
from segany.modeling.tinyvit.encoder import ImageEncoderTinyViT
from segany.modeling.tinyvit.family import TINYVIT, TinyViTFamily

__all__ = ["TINYVIT", "ImageEncoderTinyViT", "TinyViTConfig", "TinyViTFamily"]
