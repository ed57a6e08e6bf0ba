"""What the trainer writes: weights in segany's safetensors format (config in the metadata)
and the resume state as tensors + JSON (nothing else is unpickled)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from segany.errors import CheckpointError

if TYPE_CHECKING:
    from segany.modeling import Sam


def save_weights(model: Sam, path: str | Path, half: bool = False) -> None:
    """Write ``model`` (with its ``.config``) atomically, in fp32 or (``half``) fp16."""
    from segany.checkpoints import save_model

    save_model(model, path, half=half)  # atomic: segany.atomic underneath


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
    """Copy a segany weights file to ``dst`` (optionally as fp16), checking it loads; the
    generator defaults it carries go along."""
    from segany.checkpoints import load_model

    save_weights(load_model(src), dst, half=half)
    return Path(dst)


# Training state for ``--resume``: the optimizer's tensors in ``NAME.state.pt`` (a flat
# name -> tensor dict, read back with ``weights_only=True``) and everything else (step, config,
# history, schedule, optimizer hyper-parameters) in ``NAME.state.json``. Nothing is unpickled
# beyond tensors, so a planted or corrupted state file cannot run code.
STATE_FORMAT = 1


def save_checkpoint(model: Sam, stem: Path, state: dict[str, Any]) -> None:
    """``stem.safetensors`` (weights) + the training state (``stem.state.pt``, its tensors, and
    ``stem.state.json``, the rest; ``state["optimizer"]`` a torch optimizer state dict) as one unit:
    the three files are written under temporary names and renamed into place only when all
    are complete, so a write that fails (a full disk) leaves the previous checkpoint whole."""
    from segany.atomic import atomic_paths

    names = (f"{stem}.safetensors", f"{stem}.state.pt", f"{stem}.state.json")
    with atomic_paths(*names) as (weights, tensors, doc):
        save_weights(model, weights)
        _write_train_state(state, tensors, doc)


def _write_train_state(state: dict[str, Any], tensor_path: Path, json_path: Path) -> None:
    """``state`` (JSON-able values; ``state["optimizer"]`` a torch optimizer state dict) as
    its tensors (``tensor_path``) + the rest (``json_path``), each written atomically."""
    import torch

    from segany.atomic import atomic_path, write_json_atomic
    from segany.checkpoints import save_torch

    optim = state["optimizer"]
    tensors: dict[str, torch.Tensor] = {}
    per_param: dict[str, dict[str, Any]] = {}
    for pid, slots in optim["state"].items():
        plain = {}
        for key, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                plain[key] = value
        per_param[str(pid)] = plain
    doc = {k: v for k, v in state.items() if k != "optimizer"}
    doc["format"] = STATE_FORMAT
    doc["optimizer"] = {"param_groups": optim["param_groups"], "state": per_param}
    with atomic_path(tensor_path) as tmp:
        save_torch(tensors, tmp)  # a full disk is an OSError, not torch's 'unexpected pos'
    write_json_atomic(json_path, doc, indent=1)


def load_train_state(stem: Path) -> dict[str, Any]:
    """The state ``save_checkpoint`` wrote; ``state["optimizer"]`` is ready for
    ``optimizer.load_state_dict``. Raises ``CheckpointError`` for a missing or bad file."""
    import json
    import pickle

    import torch

    tensor_path = stem.with_name(stem.name + ".state.pt")
    json_path = stem.with_name(stem.name + ".state.json")
    for p in (tensor_path, json_path):
        if not p.is_file():
            raise CheckpointError(f"cannot resume: {p} is missing")
    try:
        with tensor_path.open("rb") as f:
            tensors = torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refusing to load {tensor_path}: it holds Python objects beyond tensors (loaded "
            "with weights_only=True; nothing from it was executed)"
        ) from e
    except Exception as e:  # truncated zip, not a torch file at all, ...
        raise CheckpointError(f"{tensor_path} is not a readable training state: {e}") from e
    if not isinstance(tensors, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in tensors.items()
    ):
        raise CheckpointError(f"{tensor_path} must hold a dict of named tensors")
    try:
        doc = json.loads(json_path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{json_path} is not valid JSON: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{json_path}: expected a segany training state (format 1)")
    optim = doc["optimizer"]
    state: dict[int, dict[str, Any]] = {}
    for pid, plain in optim["state"].items():
        state[int(pid)] = dict(plain)
    for name, value in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    doc["optimizer"] = {"state": state, "param_groups": optim["param_groups"]}
    return doc
