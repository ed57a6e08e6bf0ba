"""``SamAutomaticMaskGenerator``: ``segany.MaskGenerator`` returning the official plain dicts."""

from __future__ import annotations

from typing import Any

import numpy as np

from segany.automatic import MaskGenerator
from segany.inference.predictor import Predictor
from segany.modeling import Sam
from segany.segment_anything.predictor import SamPredictor

__all__ = ["SamAutomaticMaskGenerator"]


class SamAutomaticMaskGenerator(MaskGenerator):
    """Same options, order of arguments and defaults as the official generator (and segany's
    ``max_area_fraction``). ``generate(image)`` returns a list of dicts with the keys
    segmentation, area, bbox, predicted_iou, point_coords, stability_score, crop_box, in the
    official order and mask order. ``predictor`` is a ``SamPredictor``."""

    def __init__(self, model: Sam | Predictor, *args: Any, **kwargs: Any) -> None:
        if not isinstance(model, Predictor):
            model = SamPredictor(model)
        super().__init__(model, *args, **kwargs)

    def generate(  # type: ignore[override]  # plain dicts, as officially
        self, image: np.ndarray, **kwargs: Any
    ) -> list[dict[str, Any]]:
        """Masks for everything in ``image`` (H×W×3 uint8 RGB), as official records."""
        return [record.to_dict() for record in super().generate(image, **kwargs)]
