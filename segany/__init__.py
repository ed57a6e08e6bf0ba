"""segany: Segment Anything in pure PyTorch.

The top-level names load their modules on first use, so ``import segany`` (and ``segany --help``)
stays fast and does not import torch until a model is needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "CheckpointError": "segany.errors",
    "DownloadError": "segany.errors",
    "InputError": "segany.errors",
    "SeganyError": "segany.errors",
    "VARIANTS": "segany.models",
    "SamConfig": "segany.models",
    "build_sam": "segany.models",
    "load_model": "segany.checkpoints",
    "save_model": "segany.checkpoints",
    "Prediction": "segany.inference.prediction",
    "Predictor": "segany.inference.predictor",
    "MaskGenerator": "segany.automatic",
    "MaskRecord": "segany.automatic",
    "RefinedPredictor": "segany.refine",
    "ZoomPredictor": "segany.zoom",
}

__all__ = [
    "VARIANTS",
    "CheckpointError",
    "DownloadError",
    "InputError",
    "MaskGenerator",
    "MaskRecord",
    "Prediction",
    "Predictor",
    "RefinedPredictor",
    "SamConfig",
    "SeganyError",
    "ZoomPredictor",
    "build_sam",
    "load_model",
    "save_model",
]

if TYPE_CHECKING:
    from segany.automatic import MaskGenerator, MaskRecord
    from segany.checkpoints import load_model, save_model
    from segany.errors import CheckpointError, DownloadError, InputError, SeganyError
    from segany.inference.prediction import Prediction
    from segany.inference.predictor import Predictor
    from segany.models import VARIANTS, SamConfig, build_sam
    from segany.refine import RefinedPredictor
    from segany.zoom import ZoomPredictor


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'segany' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
