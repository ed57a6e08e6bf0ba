"""SAM weights: load, save and convert them; get the official checkpoints by name.

The package's modules, each with one job:

- ``loading``: the public entry points (``load_model``, ``save_model``, ``convert``, ...);
- ``files``: reading and writing the three formats (official ``.pth``, transformers, segany
  safetensors) without running code from a file;
- ``shapes``: the variant read from tensor shapes, strict key and shape checks;
- ``hf``: the key mapping between transformers' ``SamModel`` and the official names;
- ``hf_sam2``: the same for transformers' ``Sam2Model`` (and its config.json);
- ``download``: the official checkpoint table and a streamed, resumable, sha256-checked download.

Code outside this package imports from ``segany.checkpoints`` only.
"""

from segany.checkpoints.download import (
    CHECKPOINT_BASE_URL,
    CHECKPOINTS,
    CheckpointInfo,
    cache_dir,
    checkpoint_info,
    download_base,
    ensure_checkpoint,
)
from segany.checkpoints.files import read_weights, save_safetensors, save_torch
from segany.checkpoints.loading import (
    DEFAULT_MODEL,
    CachedModel,
    cached_models,
    convert,
    destination_format,
    load_into,
    load_model,
    load_state_dict,
    resolve,
    save_model,
    save_state_dict,
)
from segany.checkpoints.shapes import check_state_dict, describe, infer_config

__all__ = [
    "save_safetensors",
    "save_torch",
    "CHECKPOINTS",
    "CHECKPOINT_BASE_URL",
    "DEFAULT_MODEL",
    "CachedModel",
    "CheckpointInfo",
    "cache_dir",
    "cached_models",
    "check_state_dict",
    "checkpoint_info",
    "convert",
    "describe",
    "destination_format",
    "download_base",
    "ensure_checkpoint",
    "infer_config",
    "load_into",
    "load_model",
    "load_state_dict",
    "read_weights",
    "resolve",
    "save_model",
    "save_state_dict",
]
