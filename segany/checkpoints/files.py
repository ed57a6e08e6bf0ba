"""Weights files in the three formats segany reads and writes, recognised by their content.

- ``official``: a PyTorch pickle of the state dict with the official keys (``sam_vit_b_*.pth``).
- ``hf``: transformers' ``SamModel``, ``SamHQModel`` or ``Sam2Model`` weights
  (``model.safetensors`` / ``pytorch_model.bin``, possibly sharded, usually in a
  ``save_pretrained`` folder with ``config.json``).
- ``segany``: a safetensors file with the official keys and the ``SamConfig`` JSON in its
  metadata (``segany.config``, ``segany.format_version``), and the segment-everything
  thresholds the model recommends, if any (``segany.generator_defaults``). Format 1 kept those
  inside a flat config (``generator_defaults``); format 2 nests the config by part, the encoder
  tagged by its family. Both are read.

Pickles are only ever opened with ``weights_only=True``: a file that would import or call
anything while unpickling is refused before any of it runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import torch

from segany.atomic import atomic_path, atomic_paths, write_json_atomic
from segany.checkpoints.hf import config_from_hf, config_to_hf, looks_like_hf, preprocessor_to_hf
from segany.checkpoints.hf_hq import HF_HQ_MODEL_TYPE
from segany.checkpoints.hf_sam2 import (
    HF_SAM2_MODEL_TYPES,
    config_from_hf_sam2,
    config_to_hf_sam2,
    preprocessor_to_hf_sam2,
    segany_to_hf_sam2,
)
from segany.config import check_generator_defaults, split_config_json
from segany.errors import CheckpointError
from segany.models import SamConfig

SEGANY_CONFIG_KEY = "segany.config"
SEGANY_VERSION_KEY = "segany.format_version"
SEGANY_DEFAULTS_KEY = "segany.generator_defaults"
SEGANY_FORMAT_VERSION = 2
FORMATS = ("segany", "official", "hf")

# transformers' save_pretrained layout, in the order it prefers them.
_HF_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


@dataclass
class RawWeights:
    """A file's tensors under the keys it stores, and the config it carries, if any."""

    state: dict[str, torch.Tensor]
    kind: str  # one of FORMATS
    config: SamConfig | None
    # Segment-everything thresholds the file recommends (segany files only).
    generator_defaults: dict[str, float] = field(default_factory=dict)


def read_weights(path: Path) -> RawWeights:
    """Read ``path`` (a file, or a transformers folder) and tell its format from its content."""
    if path.is_dir():
        return _read_hf_folder(path)
    if not path.is_file():
        if path.is_symlink():
            raise CheckpointError(f"{path} is a broken symbolic link, not a weights file")
        if path.exists():
            raise CheckpointError(f"{path} is a device, pipe or socket: it {_NOT_A_CHECKPOINT}")
        raise CheckpointError(f"no weights file at {path}")
    if _is_safetensors(path):
        state, meta = _read_safetensors(path)
        if SEGANY_CONFIG_KEY in meta:
            cfg, defaults = _segany_config(meta, path)
            return RawWeights(state, "segany", cfg, defaults)
    else:
        state = _torch_load(path)
    if looks_like_hf(list(state)):
        return RawWeights(state, "hf", _sibling_hf_config(path))
    return RawWeights(state, "official", None)


def _is_safetensors(path: Path) -> bool:
    # safetensors: 8-byte little-endian header length, then a JSON object.
    with path.open("rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return 8 + int.from_bytes(head[:8], "little") <= path.stat().st_size


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for a damaged file
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from e
    return state, meta


#: What a file's first bytes must be for torch.load: a zip (torch >= 1.6) or a pickle's
#: protocol opcode (older torch.save files).
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80
_NOT_A_CHECKPOINT = (
    "is not a checkpoint (expected an official .pth, a .safetensors file or a Hugging Face "
    "model folder)"
)


def _torch_load(path: Path) -> dict[str, torch.Tensor]:
    with path.open("rb") as f:
        head = f.read(4)
    if not (head.startswith(_ZIP_MAGIC) or head[:1] == bytes([_PICKLE_PROTO])):
        kind = _what_it_is(head)
        raise CheckpointError(f"{path} {_NOT_A_CHECKPOINT}; it looks like {kind}")
    if head.startswith(_ZIP_MAGIC):
        _check_zip(path)
    try:
        # A file object, not the path: torch.load picks a reader by suffix for some names.
        with path.open("rb") as f, warnings.catch_warnings():
            # torch warns about pickle protocols it did not write; the refusal below says more.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message is long; its "Unsupported global: GLOBAL x.y" part names the culprit.
        # Any other unpickling error is a damaged or foreign file, not a refused object.
        # The file has a pickle's or torch zip's header (checked above), so it is a Python
        # pickle that the safe loader refused, whatever the exact reason.
        found = re.search(r"(?i)unsupported global:? (?:GLOBAL )?([\w.]+)", str(e))
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(e))
        culprit = (
            found.group(1)
            if found
            else f"pickle instructions the safe loader does not run ({detail.group(1).strip()})"
            if detail
            else "objects other than tensors"
        )
        raise CheckpointError(
            f"refusing to load {path}: it holds Python objects beyond tensors, and unpickling "
            "them could run code (loaded with weights_only=True; nothing from it was executed). "
            "If you trust the file, re-save its state dict with torch.save(model.state_dict()) "
            f"or convert it to safetensors. It asks for: {culprit}"
        ) from e
    except Exception as e:  # truncated zip, not a checkpoint at all, ...
        raise CheckpointError(
            f"{path} is neither a safetensors file nor a readable PyTorch checkpoint: "
            f"{_first_line(e)}"
        ) from e
    return _as_state_dict(obj, path)


#: torch.save stores a zip's members uncompressed: members that claim to inflate to more than
#: this many times the file's size (plus a little) are a zip bomb, refused before inflating.
_MAX_INFLATION = 4
_INFLATION_SLACK = 1 << 20


def _check_zip(path: Path) -> None:
    """Refuse a zip that is not a torch.save archive, or that would inflate without bound,
    from its directory alone (nothing is decompressed here)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as e:
        raise CheckpointError(
            f"{path} is a damaged zip archive, not a readable PyTorch checkpoint: {e}"
        ) from e
    size = path.stat().st_size
    claimed = sum(m.file_size for m in members)
    if claimed > _MAX_INFLATION * size + _INFLATION_SLACK:
        raise CheckpointError(
            f"refusing to load {path}: its zip members claim {claimed} bytes once inflated, "
            f"from a {size}-byte file (a zip bomb; torch.save stores members uncompressed)"
        )
    if not any(m.filename.rpartition("/")[2] == "data.pkl" for m in members):
        raise CheckpointError(
            f"{path} is a zip archive without data.pkl, so it {_NOT_A_CHECKPOINT}"
        )


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def _what_it_is(head: bytes) -> str:
    for magic, kind in (
        (b"\x89PNG", "a PNG image"),
        (b"\xff\xd8", "a JPEG image"),
        (b"{", "a JSON file"),
        (b"[", "a JSON file"),
        (b"GIF8", "a GIF image"),
        (b"\x1f\x8b", "a gzip archive"),
    ):
        if head.startswith(magic):
            return kind
    return "something else" if head else "an empty file"


def _as_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The state dict itself, or one nested under 'model'/'state_dict' (training checkpoints)."""
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and _all_tensors(inner):
                obj = inner
                break
        if _all_tensors(obj):
            return dict(obj)
    raise CheckpointError(
        f"{path} holds a {type(obj).__name__} that is not a state dict of str -> Tensor"
    )


def _all_tensors(d: Mapping[Any, Any]) -> bool:
    return all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in d.items())


def _segany_config(meta: Mapping[str, str], path: Path) -> tuple[SamConfig, dict[str, float]]:
    """(config, generator defaults) from a segany file's metadata, format 1 or 2."""
    version = _format_version(meta.get(SEGANY_VERSION_KEY, "1"), path)
    if version > SEGANY_FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer segany (format {version}; this one reads up to "
            f"{SEGANY_FORMAT_VERSION}): upgrade segany"
        )
    try:
        cfg, defaults = split_config_json(meta[SEGANY_CONFIG_KEY])
        if SEGANY_DEFAULTS_KEY in meta:
            own = json.loads(meta[SEGANY_DEFAULTS_KEY])
            if not isinstance(own, dict):
                raise ValueError(f"{SEGANY_DEFAULTS_KEY} must be a JSON object")
            defaults = check_generator_defaults(own)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: bad {SEGANY_CONFIG_KEY} metadata: {e}") from e
    return cfg, defaults


def _format_version(text: str, path: Path) -> int:
    """The file's format version: a whole number from 1 (written as decimal digits)."""
    if not (text.isascii() and text.isdigit() and len(text) < 10) or int(text) < 1:
        raise CheckpointError(
            f"{path}: bad {SEGANY_VERSION_KEY} metadata {text[:40]!r}: expected a whole "
            f"number from 1 to {SEGANY_FORMAT_VERSION}"
        )
    return int(text)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from e


def _sibling_hf_config(path: Path) -> SamConfig | None:
    """A bare transformers weights file: use the folder's config.json when it is a SAM (or
    SAM-HQ) one."""
    config = path.parent / "config.json"
    if not config.is_file():
        return None
    data = _read_json(config)
    if data.get("model_type") not in ("sam", HF_HQ_MODEL_TYPE, *HF_SAM2_MODEL_TYPES):
        return None
    pre = path.parent / "preprocessor_config.json"
    return _config_from_hf(data, _read_json(pre) if pre.is_file() else None)


def _config_from_hf(data: dict[str, Any], pre: dict[str, Any] | None) -> SamConfig:
    """The config of a transformers config.json: SAM 2's (``hf_sam2``) or SAM 1's (``hf``)."""
    if data.get("model_type") in HF_SAM2_MODEL_TYPES:
        return config_from_hf_sam2(data, pre)
    return config_from_hf(data, pre)


def _read_hf_folder(folder: Path) -> RawWeights:
    config = folder / "config.json"
    if not config.is_file():
        raise CheckpointError(
            f"{folder} is a folder without config.json; expected a transformers SamModel "
            "folder (what save_pretrained writes) or a weights file"
        )
    pre = folder / "preprocessor_config.json"
    cfg = _config_from_hf(_read_json(config), _read_json(pre) if pre.is_file() else None)
    for name in _HF_WEIGHTS:
        if (folder / name).is_file():
            break
    else:
        raise CheckpointError(f"{folder} has no weights ({', '.join(_HF_WEIGHTS)})")
    files = [folder / name]
    if name.endswith(".index.json"):  # sharded: the index maps each key to its shard file
        shards = dict.fromkeys(_read_json(files[0]).get("weight_map", {}).values())
        files = [folder / shard for shard in shards]
    state: dict[str, torch.Tensor] = {}
    for file in files:
        part = _read_safetensors(file)[0] if _is_safetensors(file) else _torch_load(file)
        state.update(part)
    return RawWeights(state, "hf", cfg)


# --- writing -------------------------------------------------------------------------------------


def save_safetensors(
    tensors: Mapping[str, torch.Tensor], path: str | os.PathLike[str], metadata: dict[str, str]
) -> None:
    """``safetensors.torch.save_file``, with a failed write (a full disk) raised as the
    ``OSError`` it is (safetensors raises its own error type, naming the errno in its text)."""
    from safetensors.torch import save_file

    try:
        save_file(dict(tensors), os.fspath(path), metadata=metadata)
    except Exception as e:
        found = re.search(r"os error (\d+)\)", str(e))
        if found is None or isinstance(e, OSError):
            raise
        code = int(found.group(1))
        raise OSError(code, os.strerror(code)) from e


def save_torch(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save``, with a failed write (a full disk) raised as the ``OSError`` it is
    (torch's zip writer replaces it with 'unexpected pos N vs M')."""
    with open(path, "wb") as f:
        out = _KeepsWriteError(f)
        try:
            torch.save(obj, cast("IO[bytes]", out))
        except RuntimeError as e:
            if out.error is None:
                raise
            raise out.error from e


class _KeepsWriteError:
    """A binary file for torch.save that keeps the first error its writes raised."""

    def __init__(self, f: Any) -> None:
        self.f = f
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return int(self.f.write(data))
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        self.f.flush()


def _plain(state: Mapping[str, torch.Tensor], half: bool) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU copies (safetensors needs them); fp16 floats when ``half``."""
    out = {}
    for k, v in state.items():
        v = v.detach().to("cpu")
        if half and v.is_floating_point():
            v = v.half()
        out[k] = v.contiguous()
    return out


def write_segany(
    state: Mapping[str, torch.Tensor],
    cfg: SamConfig,
    path: Path,
    *,
    half: bool = False,
    generator_defaults: Mapping[str, float] | None = None,
) -> None:
    meta = {
        "format": "pt",
        SEGANY_CONFIG_KEY: cfg.to_json(),
        SEGANY_VERSION_KEY: str(SEGANY_FORMAT_VERSION),
    }
    if generator_defaults:
        own = check_generator_defaults(generator_defaults)
        meta[SEGANY_DEFAULTS_KEY] = json.dumps(own, sort_keys=True)
    tensors = _plain(state, half)
    with atomic_path(path) as tmp:
        save_safetensors(tensors, tmp, meta)


def write_official(state: Mapping[str, torch.Tensor], path: Path, *, half: bool = False) -> None:
    tensors = _plain(state, half)
    with atomic_path(path) as tmp:
        save_torch(tensors, tmp)


def write_hf(
    state: Mapping[str, torch.Tensor], cfg: SamConfig, folder: Path, *, half: bool = False
) -> None:
    """A folder ``transformers.SamModel.from_pretrained`` loads: model.safetensors,
    config.json and preprocessor_config.json."""
    from segany.checkpoints.hf import official_to_hf

    if folder.exists() and not folder.is_dir():
        raise CheckpointError(f"{folder} exists and is not a folder")
    if cfg.decoder.sam2:  # transformers' Sam2Model
        config, preprocessor = config_to_hf_sam2(cfg), preprocessor_to_hf_sam2(cfg)
        tensors = _plain(segany_to_hf_sam2(state), half)
    else:
        config, preprocessor = config_to_hf(cfg), preprocessor_to_hf(cfg)
        tensors = _plain(official_to_hf(state), half)
    config["dtype"] = "float16" if half else "float32"
    names = ("config.json", "preprocessor_config.json", "model.safetensors")
    new = not folder.exists()
    try:
        # The three files appear together or not at all (a full disk leaves no config.json
        # without its weights).
        with atomic_paths(*(folder / name for name in names)) as (conf, pre, weights):
            write_json_atomic(conf, config, indent=2)
            write_json_atomic(pre, preprocessor, indent=2)
            save_safetensors(tensors, weights, {"format": "pt"})
    except BaseException:
        if new:
            with contextlib.suppress(OSError):
                folder.rmdir()  # the folder made for them, if nothing else went in
        raise
