"""``PredictorLike``: the predictor contract the front ends are written against, defined once.

``segany.Predictor``, ``ZoomPredictor``, ``RefinedPredictor``, the onnxruntime
``OnnxPredictor`` and the evaluation baselines all provide it, so evaluation, refinement and
the command line take any of them (a fine-tune, an exported model or a hand-made fake alike).
numpy and typing only: ``segany.export.runtime`` imports this without importing torch.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike

from segany.inference.prediction import Prediction

__all__ = ["PredictorLike"]


class PredictorLike(Protocol):
    """``set_image`` once per image, then ``predict`` any number of prompt sets.

    Prompts are in original-image pixels: ``point_coords`` N×2 XY (B×N×2 batched),
    ``point_labels`` N (1 foreground, 0 background), ``box`` 4 XYXY (B×4), ``mask_input``
    1×s×s low-res logits of an earlier answer. The ``Prediction`` holds masks C×H×W (bool, or
    logits with ``return_logits``), scores C and low-res logits C×s×s; C = 3 with
    ``multimask_output``, else 1 (a leading B axis for batched prompts)."""

    def set_image(self, image: np.ndarray) -> None: ...

    def predict(
        self,
        point_coords: ArrayLike | None = None,
        point_labels: ArrayLike | None = None,
        box: ArrayLike | None = None,
        mask_input: ArrayLike | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> Prediction: ...
