"""The EfficientViT-SAM image encoder family: the module (``encoder``, its blocks in ``ops``),
its config (``config``), its inference twin with batch norm folded (``fused``) and its
registration (``family``)."""

from segany.modeling.efficientvit.config import EfficientViTConfig
from segany.modeling.efficientvit.encoder import ImageEncoderEfficientViT
from segany.modeling.efficientvit.family import EFFICIENTVIT, EfficientViTFamily

__all__ = ["EFFICIENTVIT", "EfficientViTConfig", "EfficientViTFamily", "ImageEncoderEfficientViT"]
