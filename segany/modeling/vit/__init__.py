"""The ViT image encoder family (SAM 1's encoder)."""

from segany.modeling.vit.encoder import ImageEncoderViT

__all__ = ["ImageEncoderViT"]
