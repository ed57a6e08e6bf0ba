"""``SamOnnxModel``: segany's ONNX decoder wrapper (``segany.export``) under the official name.

Constructor ``(model, return_single_mask, use_stability_score=False,
return_extra_metrics=False)``; forward ``(image_embeddings, point_coords, point_labels,
mask_input, has_mask_input, orig_im_size) -> (masks, iou_predictions, low_res_masks)``, as in
the official ``scripts/export_onnx_model.py`` and notebook. Imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["SamOnnxModel"]  # noqa: F822 (provided by __getattr__)


def __getattr__(name: str) -> Any:
    if name != "SamOnnxModel":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = importlib.import_module("segany.export.decoder")
    except ModuleNotFoundError as e:
        if not (e.name or "").startswith("segany"):
            raise
        raise ImportError(
            "SamOnnxModel needs segany.export (the ONNX decoder wrapper), which this version "
            "of segany does not include"
        ) from e
    return module.SamOnnxDecoder
