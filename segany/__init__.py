"""segany: Segment Anything in pure PyTorch."""

from segany.checkpoints import load_model, save_model
from segany.errors import CheckpointError, DownloadError, InputError, SeganyError
from segany.models import VARIANTS, SamConfig, build_sam
from segany.predictor import Prediction, Predictor

__all__ = [
    "VARIANTS",
    "CheckpointError",
    "DownloadError",
    "InputError",
    "Prediction",
    "Predictor",
    "SamConfig",
    "SeganyError",
    "build_sam",
    "load_model",
    "save_model",
]
__version__ = "0.1.0"
