"""``segment_anything.utils``: ``amg`` helpers, ``transforms`` and the ``onnx`` wrapper."""

from segany.segment_anything.utils import amg, onnx, transforms

__all__ = ["amg", "onnx", "transforms"]
