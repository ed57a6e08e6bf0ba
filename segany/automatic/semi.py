"""Semi-automatic selection: segment only what the existing annotations leave out.

The paper's second data-engine stage pre-fills confident masks where people have not annotated
yet. The data engine (``segany engine --mode semi``) and the app's pre-fill both run it here:

- grid points of the whole-image layer that fall on annotated pixels are not prompted (crop
  layers keep their grids: one grid serves every crop of a layer);
- a new mask whose prompt point lies on annotated pixels, that is empty, or that has more than
  ``max_overlap`` of its area on annotated pixels is dropped (this also covers the crop grids).

Conventions: ``annotated`` is the H×W bool union of the existing masks; grid points are XY in
[0, 1] of the image, as ``MaskGenerator.point_grids``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from segany.automatic.generator import MaskGenerator
from segany.automatic.select import MaskRecord, check_point_grids, check_range
from segany.errors import InputError
from segany.images import ImageLike


@dataclass(frozen=True)
class SemiOptions:
    """max_overlap: the share of a new mask's area that may lie on annotated pixels."""

    max_overlap: float = 0.5

    def __post_init__(self) -> None:
        check_range("max_overlap", self.max_overlap, 0, 1)


@dataclass(frozen=True)
class SemiResult:
    """records: the new masks kept, in the generator's order; prompted: whole-image grid points
    left to prompt (0: the image was annotated everywhere the grid looks); dropped: new masks
    left out because they lie on annotated pixels (or are empty)."""

    records: tuple[MaskRecord, ...]
    prompted: int
    dropped: int


def annotated_pixels(
    masks: Iterable[np.ndarray], size: tuple[int, int], *, source: str | None = None
) -> np.ndarray:
    """The union (H×W bool) of H×W masks for an image of ``size`` (H, W); a mask of another
    size is an ``InputError`` naming it (and ``source``, the image, when given)."""
    h, w = size
    union = np.zeros((h, w), dtype=bool)
    for i, mask in enumerate(masks):
        m = np.asarray(mask, dtype=bool)
        if m.shape != (h, w):
            where = f"{source}: " if source else ""
            shape = "×".join(map(str, m.shape))
            raise InputError(f"{where}existing annotation {i} is {shape} but the image is {h}×{w}")
        union |= m
    return union


def generate_semi(
    generator: MaskGenerator,
    annotated: np.ndarray,
    *,
    image: ImageLike | None = None,
    embedding: torch.Tensor | np.ndarray | None = None,
    original_size: tuple[int, int] | None = None,
    options: SemiOptions | None = None,
) -> SemiResult:
    """``generator.generate`` (same image, embedding and original_size arguments) restricted to
    what ``annotated`` (H×W bool, the image's size) leaves free; see the module's rules."""
    annotated = np.asarray(annotated, dtype=bool)
    if annotated.ndim != 2:
        raise InputError(f"annotated must be an H×W mask, got shape {annotated.shape}")
    size = _image_size(image, original_size)
    if size is not None and size != annotated.shape:
        raise InputError(f"annotated is {annotated.shape} but the image is {size}")
    h, w = annotated.shape
    grids = [np.asarray(g, dtype=np.float64) for g in generator.point_grids]
    # Layer 0 covers the whole image: its points map straight to image pixels.
    xy = np.minimum((grids[0] * [w, h]).astype(int), [w - 1, h - 1])
    free = ~annotated[xy[:, 1], xy[:, 0]]
    if not free.any() and generator.crop_n_layers == 0:
        return SemiResult((), 0, 0)
    # The generator needs a non-empty grid per layer; a kept annotated point's masks are
    # dropped below like any other mask prompted from annotated pixels.
    grids[0] = grids[0][free] if free.any() else grids[0][:1]
    records = _with_grids(generator, grids).generate(
        image, embedding=embedding, original_size=original_size
    )
    kept = keep_new(records, annotated, options)
    return SemiResult(kept, int(free.sum()), len(records) - len(kept))


def keep_new(
    records: Iterable[MaskRecord], annotated: np.ndarray, options: SemiOptions | None = None
) -> tuple[MaskRecord, ...]:
    """The records that are new on an image whose H×W bool ``annotated`` pixels are taken (the
    module's rule: prompted off them, at most ``max_overlap`` of the mask on them), in order.
    For records made another way than ``generate_semi`` (a tiled run)."""
    max_overlap = (options or SemiOptions()).max_overlap
    annotated = np.asarray(annotated, dtype=bool)
    return tuple(r for r in records if _is_new(r, annotated, max_overlap))


def _with_grids(generator: MaskGenerator, grids: list[np.ndarray]) -> MaskGenerator:
    """``generator`` with other point grids and every other option unchanged (a copy: the
    caller's generator is left alone, and no option can be forgotten in a rebuild)."""
    clone = copy.copy(generator)
    clone.point_grids = check_point_grids(grids, generator.crop_n_layers)
    clone.points_per_side = None
    return clone


def _is_new(record: MaskRecord, annotated: np.ndarray, max_overlap: float) -> bool:
    h, w = annotated.shape
    x, y = (int(v) for v in np.asarray(record.point_coords).reshape(-1, 2)[0])
    if annotated[min(max(y, 0), h - 1), min(max(x, 0), w - 1)]:
        return False
    mask = record.mask()
    if mask.shape != annotated.shape:  # an image given as a file or PIL image, of another size
        raise InputError(f"annotated is {annotated.shape} but the image is {mask.shape}")
    area = int(mask.sum())
    return area > 0 and int((mask & annotated).sum()) <= max_overlap * area


def _image_size(
    image: ImageLike | None, original_size: tuple[int, int] | None
) -> tuple[int, ...] | None:
    """(H, W) when the arguments tell it without decoding the image (an array or a size)."""
    if image is not None and hasattr(image, "shape"):
        return tuple(int(v) for v in image.shape[:2])
    if original_size is not None:
        return tuple(int(v) for v in original_size)
    return None
