"""``Prediction``: what a predictor returns, shared by the torch and onnxruntime backends.

numpy only (no torch import), so ``segany.export.runtime`` can return the same type.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from segany.errors import InputError


@dataclass(frozen=True)
class Prediction:
    """Masks at the original image size, IoU scores and low-resolution logits.

    Unbatched: masks C×H×W, scores C, logits C×s×s. Batched: a leading B axis on each.
    Unpacks, indexes and has ``len`` like the official tuple:
    ``masks, scores, logits = predictor.predict(...)``, ``predictor.predict(...)[0]``.
    """

    masks: np.ndarray
    scores: np.ndarray
    logits: np.ndarray

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.masks, self.scores, self.logits))

    def __getitem__(self, index: Any) -> Any:
        return (self.masks, self.scores, self.logits)[index]

    def __len__(self) -> int:
        return 3

    @property
    def iou_predictions(self) -> np.ndarray:
        return self.scores

    @property
    def low_res_logits(self) -> np.ndarray:
        return self.logits

    def best(self) -> tuple[np.ndarray, float]:
        """The highest-scoring mask (unbatched results only) and its score."""
        if self.scores.ndim != 1:
            raise InputError("best() is for unbatched predictions; index the batch first")
        i = int(np.argmax(self.scores))
        return self.masks[i], float(self.scores[i])
