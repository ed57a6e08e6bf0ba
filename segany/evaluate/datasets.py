"""Evaluation's view of a dataset: seeded subsets, iteration with progress, per-object seeds.

The readers themselves (COCO, SA-1B, label maps) and their `Sample` live in
``segany.formats.datasets``, shared with training; they are re-exported here.
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from segany.errors import InputError
from segany.formats.datasets import (
    CocoDataset,
    EvalDataset,
    EvalObject,
    LabelMapDataset,
    Sa1bDataset,
    Sample,
    load_rgb,
    open_dataset,
    segmentation_to_rle,
)

__all__ = [
    "CocoDataset",
    "EvalDataset",
    "EvalObject",
    "LabelMapDataset",
    "Sa1bDataset",
    "Sample",
    "Subset",
    "iterate",
    "load_rgb",
    "open_dataset",
    "segmentation_to_rle",
    "stable_seed",
    "subset",
]


class Subset(EvalDataset):
    """A fixed selection of another dataset's samples, in the source's order."""

    def __init__(self, base: EvalDataset, indices: Sequence[int], seed: int | None) -> None:
        self.base = base
        self.indices = list(indices)
        self.kind = base.kind
        self.source = base.source
        self.seed = seed

    def __len__(self) -> int:
        return len(self.indices)

    def _read(self, index: int) -> Sample:
        return self.base[self.indices[index]]

    def describe(self) -> dict[str, Any]:
        d = self.base.describe()
        d.update(num_images=len(self), subset_of=len(self.base), subset_seed=self.seed)
        return d


def subset(dataset: EvalDataset, limit: int | None, seed: int = 0) -> EvalDataset:
    """At most `limit` images, drawn without replacement by a seeded generator (order kept)."""
    if limit is None or limit >= len(dataset):
        return dataset
    if limit < 1:
        raise InputError(f"limit must be at least 1, got {limit}")
    chosen = np.random.default_rng(seed).choice(len(dataset), size=limit, replace=False)
    return Subset(dataset, sorted(int(i) for i in chosen), seed)


def iterate(dataset: Sequence[Sample], progress: bool = False) -> Iterator[Sample]:
    """The samples in order, with a progress bar on stderr when asked."""
    if not progress:
        return iter(dataset)
    from tqdm import tqdm

    return iter(tqdm(dataset, total=len(dataset), desc="eval", unit="img", file=sys.stderr))


def stable_seed(seed: int, *keys: Any) -> list[int]:
    """A generator seed for one image/object that does not depend on iteration order."""
    return [seed] + [zlib.crc32(str(k).encode()) for k in keys]
