"""``ResizeLongestSide``: segany's transform (same sizes, rounding and interpolation)."""

from segany.transforms import ResizeLongestSide

__all__ = ["ResizeLongestSide"]
