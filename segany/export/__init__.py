"""ONNX export and the onnxruntime backend (the ``onnx`` extra: onnx, onnxruntime).

- ``export_decoder`` / ``export_encoder``: write .onnx files from a segany ``Sam`` (need torch).
- ``SamOnnxDecoder``: the traceable decoder module with the official web-demo interface
  (``Sam2OnnxDecoder``: SAM 2's, with its two high-resolution feature inputs).
- ``OnnxPredictor``: the whole pipeline with numpy and onnxruntime only (no torch import).

Names load on first use, so importing ``segany.export`` for the runtime never imports torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "SamOnnxDecoder": "segany.export.decoder",
    "Sam2OnnxDecoder": "segany.export.decoder_sam2",
    "DECODER_INPUTS": "segany.export.decoder",
    "DECODER_OUTPUTS": "segany.export.decoder",
    "export_decoder": "segany.export.exporters",
    "export_encoder": "segany.export.exporters",
    "export_pair": "segany.export.exporters",
    "OnnxPredictor": "segany.export.runtime",
}

__all__ = [
    "DECODER_INPUTS",
    "DECODER_OUTPUTS",
    "OnnxPredictor",
    "Sam2OnnxDecoder",
    "SamOnnxDecoder",
    "export_decoder",
    "export_encoder",
    "export_pair",
]

if TYPE_CHECKING:
    from segany.export.decoder import DECODER_INPUTS, DECODER_OUTPUTS, SamOnnxDecoder
    from segany.export.decoder_sam2 import Sam2OnnxDecoder
    from segany.export.exporters import export_decoder, export_encoder, export_pair
    from segany.export.runtime import OnnxPredictor


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'segany.export' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
