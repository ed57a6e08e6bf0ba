"""Weights in segany's safetensors format (config in the metadata), for the trainer."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from segany.errors import CheckpointError

if TYPE_CHECKING:
    from segany.modeling import Sam


def save_weights(model: Sam, path: str | Path, half: bool = False) -> None:
    """Write ``model`` (with its ``.config``) atomically, in fp32 or (``half``) fp16."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    _save_model(model, tmp, half=half)
    tmp.replace(path)


def _save_model(model: Sam, path: str | Path, half: bool = False) -> None:
    from segany.checkpoints import save_model

    save_model(model, path, half=half)


def load_state_dict(path: str | Path):
    from segany.checkpoints import load_state_dict as _load

    return _load(path)


def load_weights(model: Sam, path: str | Path) -> None:
    """Load a segany safetensors file into ``model`` strictly (any dtype, cast to the model's)."""
    _config, state = load_state_dict(path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: {err}") from err


def export(src: str | Path, dst: str | Path, half: bool = False) -> Path:
    """Copy a segany weights file to ``dst`` (optionally as fp16), checking it loads."""
    from segany.models import build_sam

    config, state = load_state_dict(src)
    model = build_sam(config)
    model.load_state_dict(state, strict=True)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    _save_model(model, tmp, half=half)
    tmp.replace(dst)
    return dst
