"""``SAM2AutomaticMaskGenerator``: ``segany.MaskGenerator`` with SAM 2's options, defaults and
plain dict records."""

from __future__ import annotations

from typing import Any

import numpy as np

from segany.automatic import MaskGenerator
from segany.errors import InputError
from segany.modeling import Sam2
from segany.sam2.build_sam import build_sam2_hf
from segany.sam2.sam2_image_predictor import SAM2ImagePredictor

__all__ = ["SAM2AutomaticMaskGenerator"]


class SAM2AutomaticMaskGenerator(MaskGenerator):
    """The official generator's options in its order with its defaults (pred_iou_thresh 0.8,
    use_m2m off, multimask_output on). ``generate(image)`` returns dicts with the keys
    segmentation, area, bbox, predicted_iou, point_coords, stability_score, crop_box, in the
    official mask order. ``mask_threshold`` other than 0 is refused (the model's is used)."""

    def __init__(
        self,
        model: Sam2,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.8,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        mask_threshold: float = 0.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        use_m2m: bool = False,
        multimask_output: bool = True,
        **kwargs: Any,
    ) -> None:
        if mask_threshold != 0.0:
            raise InputError("mask_threshold other than 0.0 is not supported by segany.sam2")
        super().__init__(
            SAM2ImagePredictor(model),
            points_per_side,
            points_per_batch,
            pred_iou_thresh,
            stability_score_thresh,
            stability_score_offset,
            box_nms_thresh,
            crop_n_layers,
            crop_nms_thresh,
            crop_overlap_ratio,
            crop_n_points_downscale_factor,
            point_grids,
            min_mask_region_area,
            output_mode,
            use_m2m=use_m2m,
            multimask_output=multimask_output,
        )

    @classmethod
    def from_pretrained(cls, model_id: str, **kwargs: Any) -> SAM2AutomaticMaskGenerator:
        """A local weights file as ``model_id`` loads; a hub id raises an ``InputError`` naming
        the file to get."""
        return cls(build_sam2_hf(model_id, **kwargs), **kwargs)

    def generate(  # type: ignore[override]  # plain dicts, as officially
        self, image: np.ndarray, **kwargs: Any
    ) -> list[dict[str, Any]]:
        """Masks for everything in ``image`` (H×W×3 uint8 RGB), as official records."""
        return [record.to_dict() for record in super().generate(image, **kwargs)]
