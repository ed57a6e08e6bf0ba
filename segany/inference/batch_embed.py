"""Several images through the image encoder in batches (``Predictor.embed_images`` calls it
with its model, transform, precision and disk cache).

Each image is resized and padded as ``set_image`` does, up to ``batch_size`` of them are encoded
in one call, and each result equals that image's ``set_image`` embedding (to float rounding of
a batched matmul, ~1e-6). Images found in the Predictor's disk cache are not encoded; new ones
are stored there.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from segany.errors import InputError
from segany.images import ImageLike, to_rgb_uint8
from segany.inference.embedding_cache import EmbeddingCache, ImageEmbedding
from segany.inference.precision import encode, encode_with_early
from segany.modeling import Sam, Sam2
from segany.transforms import ResizeLongestSide


@torch.inference_mode()
def embed_images(
    model: Sam,
    images: Sequence[ImageLike],
    *,
    transform: ResizeLongestSide,
    precision: str,
    cache: EmbeddingCache | None,
    batch_size: int = 2,
    compiled: bool = False,
    image_format: str = "RGB",
) -> list[ImageEmbedding]:
    """One ``ImageEmbedding`` (features 1×C×h×w, original and input sizes) per image, in order."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be an int >= 1, got {batch_size!r}")
    device = model.device
    out: list[ImageEmbedding | None] = [None] * len(images)
    todo = []  # (index, rgb, cache key)
    for i, image in enumerate(images):
        rgb = to_rgb_uint8(image, image_format)
        key = None
        if cache is not None:
            key = cache.key(rgb, model, precision)
            hit = cache.get(key)
            out[i] = None if hit is None or (model.needs_early and hit.early is None) else hit
        if out[i] is None:
            todo.append((i, rgb, key))
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        tensors, sizes = [], []
        for _, rgb, _ in batch:
            if isinstance(model, Sam2):  # SAM 2 resizes the float image, as its predictor does
                x = torch.tensor(rgb, device=device).permute(2, 0, 1)
                tensors.append(model.prepare_image(x[None])[0])
                sizes.append((model.image_size, model.image_size))
                continue
            resized = transform.apply_image(rgb)
            # h×w×3 uint8 -> 3×h×w float, normalised and padded to 3×S×S
            x = torch.as_tensor(resized, device=device).permute(2, 0, 1)
            tensors.append(model.preprocess(x[None].float())[0])
            sizes.append(model.input_size_of(resized.shape[:2], rgb.shape[:2]))
        pixels = torch.stack(tensors)
        early: torch.Tensor | list[None] = [None] * len(batch)
        if model.needs_early:  # SAM-HQ's and SAM 2's decoders read a second map
            features, early = encode_with_early(model, pixels, precision, compiled)
        else:
            features = encode(model, pixels, precision, compiled)
        for (i, rgb, key), feats, size, ear in zip(batch, features, sizes, early, strict=True):
            entry = ImageEmbedding(
                feats[None].clone(memory_format=torch.contiguous_format),
                (rgb.shape[0], rgb.shape[1]),
                size,
                None if ear is None else ear[None].clone(),
            )
            if cache is not None and key is not None:
                cache.put(key, entry)
            out[i] = entry
    return [e for e in out if e is not None]
