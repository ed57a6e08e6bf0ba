"""``SamPredictor``: ``segany.Predictor`` returning the official ``(masks, scores, logits)``."""

from __future__ import annotations

from typing import Any

import numpy as np

from segany.inference.predictor import Predictor
from segany.modeling import Sam

__all__ = ["SamPredictor"]


class SamPredictor(Predictor):
    """The official predictor's interface: ``set_image``, ``set_torch_image``, ``predict``
    (a tuple of numpy arrays: masks C×H×W bool, scores C, low-res logits C×256×256),
    ``predict_torch`` (tensors with a batch axis), ``get_image_embedding``, ``reset_image`` and
    the attributes ``features``, ``original_size``, ``input_size``, ``is_image_set``,
    ``model``, ``transform``, ``device``.

    SAM-HQ's predictor is the same class: ``predict`` and ``predict_torch`` take its
    ``hq_token_only`` (in the same place), and an HQ model answers with one mask per prompt.

    Point labels 2 and 3 (a box's corners given as points) get the box-corner embeddings, as in
    the official ONNX decoder; the official PyTorch predictor encodes them as bare positions.
    """

    def __init__(self, sam_model: Sam) -> None:
        super().__init__(sam_model)

    def predict(  # type: ignore[override]  # the official tuple, not segany's Prediction
        self,
        point_coords: Any = None,
        point_labels: Any = None,
        box: Any = None,
        mask_input: Any = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        hq_token_only: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Prompts for one mask set: point_coords N×2 (XY pixels), point_labels N, box 4
        (XYXY), mask_input 1×256×256 logits. ``hq_token_only`` as SAM-HQ's predictor takes it
        (SAM-HQ models only)."""
        out = super().predict(
            point_coords,
            point_labels,
            box,
            mask_input,
            multimask_output,
            return_logits,
            batched=False,
            hq_token_only=hq_token_only,
        )
        return out.masks, out.scores, out.logits
