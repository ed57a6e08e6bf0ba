"""Cached image embeddings for training with a frozen image encoder.

When the image encoder is frozen (``--freeze encoder`` or ``decoder-only``) its output for an
image never changes during a run, so it is computed once per image (and per cached flip) and
kept in one safetensors file with the image's masks in the model's padded input frame. A
training step then costs only the prompt encoder and mask decoder, which makes many more steps
and all of the paper's prompt rounds affordable on a CPU.

The cache holds every mask of every image; ``EmbeddingCache.get`` draws the masks and the flip
with the same random calls as ``MaskDataset.get``, so a run on the cache sees exactly the
batches it would see on the images (tested: the same loss). Augmentations other than the cached
flips cannot be applied after encoding.

File layout (safetensors; no pickle): ``embeddings`` N×C×h×w (fp16 by default), ``masks``
T×⌈S·S/8⌉ uint8 (bit-packed S×S masks, all images' masks in order), ``offsets`` N+1 int64 (image
i's masks are rows offsets[i]..offsets[i+1]), ``sizes`` N×2 int64 (h, w of the resized image in
the padded S×S frame); entries are ordered image-major, flip-minor. The metadata records the
encoder's fingerprint, the input size, the flips and the number of source images, so a cache
built by other weights is refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from segany.errors import InputError
from segany.train.datasets import MaskDataset, prepare

if TYPE_CHECKING:
    from segany.modeling import Sam

CACHE_FORMAT = "segany-embedding-cache/1"


def encoder_fingerprint(model: Sam) -> str:
    """sha256 (first 16 hex digits) of the image encoder's weights and the pixel statistics."""
    h = hashlib.sha256()
    for name, t in sorted(model.image_encoder.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    h.update(model.pixel_mean.float().cpu().numpy().tobytes())
    h.update(model.pixel_std.float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass
class CachedSample:
    """One cached training image: ``embedding`` C×h×w (float32), ``masks`` M×S×S bool,
    ``input_size`` (h, w) of the resized image inside the padded S×S frame."""

    embedding: torch.Tensor
    masks: torch.Tensor
    input_size: tuple[int, int]


class EmbeddingCache:
    """The embeddings and masks of a dataset, read from a cache file (``build_cache`` writes it).

    ``masks_per_image`` and ``min_mask_area`` play the same part as in ``MaskDataset``.
    """

    def __init__(self, path: str | Path, masks_per_image: int = 8, min_mask_area: int = 16) -> None:
        from safetensors import safe_open

        self.path = Path(path)
        try:
            with safe_open(str(self.path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                tensors = {k: f.get_tensor(k) for k in ("embeddings", "masks", "offsets", "sizes")}
        except Exception as err:  # safetensors raises its own error type for bad headers
            raise InputError(f"{path} is not a readable embedding cache: {err}") from err
        if meta.get("format") != CACHE_FORMAT:
            raise InputError(f"{path}: expected metadata format {CACHE_FORMAT!r}")
        self.meta = meta
        self.fingerprint = meta["encoder"]
        self.image_size = int(meta["image_size"])
        self.flips = tuple(json.loads(meta["flips"]))
        self.source_images = int(meta["images"])
        self.embeddings = tensors["embeddings"]
        self.packed = tensors["masks"].numpy()
        self.offsets = tensors["offsets"].tolist()
        self.sizes = [(int(h), int(w)) for h, w in tensors["sizes"].tolist()]
        if len(self.offsets) != len(self.embeddings) + 1 or len(self.embeddings) != (
            self.source_images * len(self.flips)
        ):
            raise InputError(f"{path}: the cache's tensors do not agree in length")
        self.masks_per_image = masks_per_image
        self.min_mask_area = min_mask_area

    def __len__(self) -> int:
        """Source images (each possibly cached with several flips)."""
        return self.source_images

    def check(self, model: Sam) -> None:
        """Raise ``InputError`` unless the cache was built with ``model``'s image encoder."""
        if encoder_fingerprint(model) != self.fingerprint:
            raise InputError(
                f"{self.path} was built with another image encoder (fingerprint "
                f"{self.fingerprint}); delete it or give another cache path"
            )
        if int(model.image_size) != self.image_size:
            raise InputError(f"{self.path} holds {self.image_size}-px embeddings")

    def _masks(self, entry: int) -> torch.Tensor:
        s = self.image_size
        rows = self.packed[self.offsets[entry] : self.offsets[entry + 1]]
        bits = np.unpackbits(rows, axis=1, count=s * s).astype(bool)
        return torch.from_numpy(bits.reshape(-1, s, s))

    def get(self, index: int, rng: np.random.Generator | None = None) -> CachedSample:
        """Image ``index``: the same mask choice and flip draw as ``MaskDataset.get``."""
        if not 0 <= index < self.source_images:
            raise InputError(f"index {index} out of range for {self.source_images} images")
        count = self.offsets[index * len(self.flips) + 1] - self.offsets[index * len(self.flips)]
        keep: np.ndarray | None = None
        if rng is not None and count > self.masks_per_image:
            keep = np.sort(rng.choice(count, self.masks_per_image, replace=False))
        flip = bool(len(self.flips) > 1 and rng is not None and rng.random() < 0.5)
        entry = index * len(self.flips) + (self.flips.index(True) if flip else 0)
        masks = self._masks(entry)
        masks = masks[torch.from_numpy(keep)] if keep is not None else masks[: self.masks_per_image]
        masks = masks[masks.flatten(1).sum(1) >= self.min_mask_area]
        return CachedSample(self.embeddings[entry].float(), masks, self.sizes[entry])


@torch.no_grad()
def build_cache(
    model: Sam,
    dataset: MaskDataset,
    path: str | Path,
    flips: tuple[bool, ...] = (False, True),
    batch_size: int = 16,
    dtype: torch.dtype = torch.float16,
    progress: bool = False,
) -> Path:
    """Encode every image of ``dataset`` (once per entry of ``flips``) with ``model``'s image
    encoder and write the cache file atomically; returns its path."""
    from segany.atomic import atomic_path
    from segany.checkpoints import save_safetensors

    if not flips or flips[0] is not False or len(set(flips)) != len(flips):
        raise InputError(f"flips must start with False and not repeat, got {flips}")
    s = int(model.image_size)
    device = next(model.parameters()).device
    embeddings: list[torch.Tensor] = []
    packed: list[np.ndarray] = []
    offsets, sizes = [0], []
    pending: list[torch.Tensor] = []

    def flush() -> None:
        if pending:
            x = model.image_encoder(model.encoder_input(torch.stack(pending).to(device)))
            embeddings.extend(e.to("cpu", dtype) for e in x)
            pending.clear()

    was_training = model.training
    model.eval()
    indices = range(len(dataset))
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="encode", unit="img")
    try:
        for i in indices:
            image, masks = dataset.load(i)
            for flip in flips:
                sample = prepare(image, masks, s, flip, dataset.pixel_mean, dataset.pixel_std)
                pending.append(sample.image)
                bits = sample.masks.reshape(len(masks), s * s).numpy()
                packed.append(np.packbits(bits, axis=1))
                offsets.append(offsets[-1] + len(masks))
                sizes.append(sample.input_size)
                if len(pending) >= batch_size:
                    flush()
        flush()
    finally:
        model.train(was_training)
    tensors = {
        "embeddings": torch.stack(embeddings).contiguous(),
        "masks": torch.from_numpy(np.concatenate(packed) if packed else np.zeros((0, 0), np.uint8)),
        "offsets": torch.tensor(offsets, dtype=torch.int64),
        "sizes": torch.tensor(sizes, dtype=torch.int64).reshape(-1, 2),
    }
    meta = {
        "format": CACHE_FORMAT,
        "encoder": encoder_fingerprint(model),
        "image_size": str(s),
        "flips": json.dumps(list(flips)),
        "images": str(len(dataset)),
    }
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        save_safetensors(tensors, tmp, meta)  # a full disk is an OSError
    return out


def open_cache(
    model: Sam,
    dataset: MaskDataset,
    path: str | Path,
    flips: tuple[bool, ...] = (False, True),
    progress: bool = False,
) -> EmbeddingCache:
    """The cache at ``path`` for ``dataset`` under ``model``'s encoder, built first if missing.

    An existing file built by another encoder, input size, flips or image count is refused
    (``InputError``) rather than silently overwritten.
    """
    p = Path(path)
    if not p.exists():
        build_cache(model, dataset, p, flips, progress=progress)
    cache = EmbeddingCache(p, dataset.masks_per_image, dataset.min_mask_area)
    cache.check(model)
    if cache.source_images != len(dataset) or cache.flips != tuple(flips):
        raise InputError(
            f"{p} holds {cache.source_images} images with flips {list(cache.flips)}; the data "
            f"has {len(dataset)} images and flips {list(flips)} were asked for"
        )
    return cache
