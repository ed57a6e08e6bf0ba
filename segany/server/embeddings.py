"""The project's image embeddings: the library's ``EmbeddingCache`` in ``embeddings/``, and the
last few in memory.

Entries are named by what decides an embedding in a project: the image file's sha256, the
encoder version (a version retrained with its encoder frozen shares its parent's entries) and
the encoder precision (fp32's names carry none, as before precision modes existed). The
library's own key hashes the whole model instead, so every retrained version would re-encode
every image. Writes go through ``segany.atomic`` (inside ``EmbeddingCache.put``).

Projects made before this kept ``NAME.npz`` files under the same names: each is converted to
the new form the first time it is asked for, then removed, so an old project keeps its
embeddings without running the encoder again; an unreadable one is removed and recomputed.

Not thread-safe by itself: ``ModelHub`` calls it under its lock.
"""

from __future__ import annotations

import contextlib
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from segany.inference.embedding_cache import EmbeddingCache, ImageEmbedding

#: The folder's bound. Projects kept every embedding before; this only stops a runaway folder
#: (about 16 000 official-size embeddings of 4 MiB).
DISK_BYTES = 64 << 30


class ProjectEmbeddings:
    def __init__(
        self, folder: Path, *, memory: int, precision: str, max_bytes: int = DISK_BYTES
    ) -> None:
        """``memory``: embeddings kept in memory (least recently used go first); ``precision``:
        the encoder's resolved mode."""
        self.store = EmbeddingCache(folder, max_bytes=max_bytes)
        self.memory = memory
        self.precision = precision
        self._recent: OrderedDict[str, ImageEmbedding] = OrderedDict()

    def name(self, sha256: str, encoder_version: int) -> str:
        mode = "" if self.precision == "fp32" else f"-{self.precision}"
        return f"{sha256}-e{encoder_version}{mode}"

    @property
    def in_memory(self) -> int:
        return len(self._recent)

    def get(self, sha256: str, encoder_version: int) -> ImageEmbedding | None:
        """The stored embedding, or None (then compute it and ``put`` it)."""
        key = self.name(sha256, encoder_version)
        emb = self._recent.get(key)
        if emb is not None:
            self._recent.move_to_end(key)
            return emb
        emb = self.store.get(key)
        if emb is None:
            emb = self._migrate(key)
        if emb is not None:
            self._remember(key, emb)
        return emb

    def put(self, sha256: str, encoder_version: int, emb: ImageEmbedding) -> None:
        key = self.name(sha256, encoder_version)
        self.store.put(key, emb)
        self._remember(key, emb)

    def _remember(self, key: str, emb: ImageEmbedding) -> None:
        self._recent[key] = emb
        while len(self._recent) > self.memory:
            self._recent.popitem(last=False)

    def _migrate(self, key: str) -> ImageEmbedding | None:
        """An old project's ``KEY.npz`` in the new form (stored, the old file removed)."""
        old = self.store.directory / f"{key}.npz"
        if not old.is_file():
            return None
        emb = read_npz(old)
        if emb is not None:
            self.store.put(key, emb)
        with contextlib.suppress(OSError):
            old.unlink()
        return emb


def read_npz(path: Path) -> ImageEmbedding | None:
    """An embedding in the old project form (``features`` 1×C×h×w, ``original`` and ``input``
    sizes), or None when the file is damaged."""
    try:
        with np.load(path, allow_pickle=False) as z:
            features = torch.from_numpy(np.asarray(z["features"], dtype=np.float32))
            original = (int(z["original"][0]), int(z["original"][1]))
            resized = (int(z["input"][0]), int(z["input"][1]))
    except (OSError, KeyError, ValueError, IndexError, EOFError, zipfile.BadZipFile):
        return None
    if features.ndim != 4 or not torch.isfinite(features).all():
        return None
    return ImageEmbedding(features, original, resized)
