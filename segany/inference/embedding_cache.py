"""Image embeddings cached on disk, so a second run on the same image skips the encoder.

One safetensors file per entry (never pickle), named by a key that hashes the image's pixels,
the model's identity (a hash of its weights and config, so two families or two sets of weights
never share an entry) and the encoder precision. It holds the embedding and, for SAM-HQ models,
the encoder's early feature map; its header carries the key, the two sizes and a sha256 of each
tensor's bytes; an entry whose header or checksum does not match is deleted and reported as a
miss, so a reader never gets a half-written or corrupt embedding.

Several processes may share one folder without locks: an entry is written to a temporary
sibling and renamed into place (``os.replace``, atomic), so readers see the old file, the new
one, or none; two writers of the same key both write complete files and the last rename wins.
Reads refresh the file's modification time; when the folder grows past ``max_bytes`` the least
recently used entries are deleted (a concurrent reader of a deleted file keeps its open handle
or sees a miss).

``$SEGANY_CACHE`` names a default folder for every Predictor and MaskGenerator (and the CLI's
``--cache``); ``cache=False`` turns caching off whatever the environment says.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from segany.errors import InputError

ENV_VAR = "SEGANY_CACHE"
_FORMAT = "segany-embedding-1"
_SUFFIX = ".safetensors"
_STALE_TEMP_S = 3600.0  # temporary files older than this belong to a writer that died


@dataclass(frozen=True)
class ImageEmbedding:
    """features 1×C×h×w fp32; original_size (H, W); input_size (h, w) inside the padded square;
    early 1×h×w×E fp32, the encoder's early feature map, for SAM-HQ models (else None)."""

    features: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    early: torch.Tensor | None = None


# model -> (version of its weights, identity hash); dropped with the model.
_IDENTITY: weakref.WeakKeyDictionary[nn.Module, tuple[int, str]] = weakref.WeakKeyDictionary()


def model_identity(model: nn.Module) -> str:
    """sha256 of the model's config and every tensor of its state (names, shapes, bytes).

    Computed once per model object (~1 s for vit_b) and again only if a weight changes in place.
    """
    version = sum(p._version for p in model.parameters())
    cached = _IDENTITY.get(model)
    if cached is not None and cached[0] == version:
        return cached[1]
    digest = hashlib.sha256(repr(getattr(model, "config", None)).encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        # flattened first: a 0-dim tensor (BatchNorm's num_batches_tracked, in TinyViT and
        # EfficientViT) cannot be viewed as bytes; the bytes of the others are unchanged
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    identity = digest.hexdigest()
    _IDENTITY[model] = (version, identity)
    return identity


def image_digest(rgb: np.ndarray) -> str:
    """sha256 of an H×W×3 uint8 image's shape and pixels."""
    digest = hashlib.sha256(f"{rgb.shape}:{rgb.dtype};".encode())
    digest.update(np.ascontiguousarray(rgb).data)
    return digest.hexdigest()


class EmbeddingCache:
    """A folder of cached embeddings, bounded to ``max_bytes`` (least recently used go first)."""

    def __init__(self, directory: str | os.PathLike[str], *, max_bytes: int = 2 << 30) -> None:
        if max_bytes <= 0:
            raise InputError(f"max_bytes must be > 0, got {max_bytes}")
        self.directory = Path(directory)
        self.max_bytes = int(max_bytes)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"cannot use {self.directory} as an embedding cache: {e}") from e

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.directory)!r}, max_bytes={self.max_bytes})"

    @staticmethod
    def key(rgb: np.ndarray, model: nn.Module, precision: str) -> str:
        """The entry name for this image, model and (resolved) precision."""
        parts = f"{_FORMAT}|{image_digest(rgb)}|{model_identity(model)}|{precision}"
        return hashlib.sha256(parts.encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.directory / f"{key}{_SUFFIX}"

    def get(self, key: str) -> ImageEmbedding | None:
        """The entry, or None when absent, unreadable or corrupt (a corrupt file is deleted)."""
        path = self.path(key)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        entry = _decode(data, key)
        if entry is None:
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # most recently used
        return entry

    def put(self, key: str, entry: ImageEmbedding) -> None:
        """Store ``entry`` atomically, then trim the folder to ``max_bytes``. A write that fails
        (a full disk, a read-only folder) is a warning: the caller has its embedding, and
        nothing half-written is left."""
        from segany.atomic import write_bytes_atomic

        try:
            write_bytes_atomic(self.path(key), _encode(key, entry))
        except OSError as e:
            warnings.warn(
                f"embedding cache {self.directory}: cannot store an entry "
                f"({e.strerror or e}); the run goes on without it",
                RuntimeWarning,
                stacklevel=2,
            )
            return
        self.trim()

    def trim(self) -> None:
        """Delete least recently used entries (and dead writers' temporary files) until the
        folder holds at most ``max_bytes``."""
        entries, total, now = [], 0, time.time()
        for item in self.directory.iterdir():
            try:
                st = item.stat()
            except OSError:
                continue  # deleted meanwhile by another process
            if item.name.endswith(".tmp") and now - st.st_mtime > _STALE_TEMP_S:
                with contextlib.suppress(OSError):
                    item.unlink()
            elif item.name.endswith(_SUFFIX):
                entries.append((st.st_mtime, st.st_size, item))
                total += st.st_size
        for _, size, item in sorted(entries, key=lambda e: e[0]):
            if total <= self.max_bytes:
                break
            with contextlib.suppress(OSError):
                item.unlink()
            total -= size

    def clear(self) -> None:
        for item in self.directory.glob(f"*{_SUFFIX}"):
            with contextlib.suppress(OSError):
                item.unlink()


def _encode(key: str, entry: ImageEmbedding) -> bytes:
    from safetensors.torch import save

    features = entry.features.detach().to("cpu", torch.float32).contiguous()
    meta = {
        "format": _FORMAT,
        "key": key,
        "original_size": json.dumps(list(entry.original_size)),
        "input_size": json.dumps(list(entry.input_size)),
        "sha256": hashlib.sha256(features.numpy().tobytes()).hexdigest(),
    }
    tensors = {"features": features}
    if entry.early is not None:  # SAM-HQ's early feature map, checked by its own sha256
        early = entry.early.detach().to("cpu", torch.float32).contiguous()
        tensors["early"] = early
        meta["early_sha256"] = hashlib.sha256(early.numpy().tobytes()).hexdigest()
    return save(tensors, metadata=meta)


def _decode(data: bytes, key: str) -> ImageEmbedding | None:
    from safetensors.torch import load

    try:
        tensors = load(data)
        features = tensors["features"]
        meta = _metadata(data)
        if meta.get("format") != _FORMAT or meta.get("key") != key:
            return None
        if hashlib.sha256(features.numpy().tobytes()).hexdigest() != meta.get("sha256"):
            return None
        original = tuple(int(v) for v in json.loads(meta["original_size"]))
        inp = tuple(int(v) for v in json.loads(meta["input_size"]))
        early = tensors.get("early")
        if (early is None) != ("early_sha256" not in meta):
            return None
        if early is not None:
            if hashlib.sha256(early.numpy().tobytes()).hexdigest() != meta["early_sha256"]:
                return None
            early = early.float()
    except Exception:  # any unreadable entry is a miss, never an error
        return None
    if features.ndim != 4 or len(original) != 2 or len(inp) != 2:
        return None
    if early is not None and early.ndim != 4:
        return None
    return ImageEmbedding(features.float(), (original[0], original[1]), (inp[0], inp[1]), early)


def _metadata(data: bytes) -> dict[str, str]:
    """The safetensors header's ``__metadata__`` (8-byte little-endian length, then JSON)."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    meta = header.get("__metadata__", {})
    return {str(k): str(v) for k, v in meta.items()}


def resolve_cache(
    cache: EmbeddingCache | str | os.PathLike[str] | bool | None,
) -> EmbeddingCache | None:
    """None: ``$SEGANY_CACHE`` if set, else no cache; False: off; a folder or a cache: that."""
    if cache is False:
        return None
    if cache is None or cache is True:
        folder = os.environ.get(ENV_VAR)
        if not folder:
            if cache is True:
                raise InputError(f"cache=True needs ${ENV_VAR} to name a folder")
            return None
        return EmbeddingCache(folder)
    if isinstance(cache, EmbeddingCache):
        return cache
    return EmbeddingCache(cache)
