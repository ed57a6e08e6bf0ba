"""``SAM2ImagePredictor``: segany's ``Predictor`` with the official SAM 2 image interface."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from segany.errors import InputError
from segany.inference.predictor import Predictor
from segany.modeling import Sam2
from segany.sam2.build_sam import build_sam2_hf

__all__ = ["SAM2ImagePredictor"]


class SAM2ImagePredictor(Predictor):
    """The official ``SAM2ImagePredictor``: ``set_image``, ``set_image_batch``, ``predict``
    (a tuple of float32 numpy arrays: masks C×H×W, scores C, low-res logits C×256×256, with a
    leading batch axis for batched prompts), ``predict_batch``, ``get_image_embedding``,
    ``reset_predictor``, ``model``, ``mask_threshold``, ``device``. A segany ``Predictor``
    too. Hole filling and sprinkle removal (``max_hole_area``/``max_sprinkle_area`` > 0) are
    not implemented and are refused."""

    def __init__(
        self,
        sam_model: Sam2,
        mask_threshold: float = 0.0,
        max_hole_area: float = 0.0,
        max_sprinkle_area: float = 0.0,
        **kwargs: Any,
    ) -> None:
        if not isinstance(sam_model, Sam2):
            raise InputError(
                f"SAM2ImagePredictor needs a SAM 2 model (segany.sam2.build_sam2), got "
                f"{type(sam_model).__name__}"
            )
        if max_hole_area > 0 or max_sprinkle_area > 0:
            raise InputError(
                "max_hole_area / max_sprinkle_area > 0 (filling holes and removing sprinkles "
                "in the low-res masks) is not implemented in segany.sam2; leave them at 0"
            )
        super().__init__(sam_model)
        self.mask_threshold = float(mask_threshold)
        self._batch: list[Any] = []  # set_image_batch's embeddings

    @classmethod
    def from_pretrained(cls, model_id: str, **kwargs: Any) -> SAM2ImagePredictor:
        """A local weights file as ``model_id`` loads; a hub id raises an ``InputError`` naming
        the file to get (segany does not download from the Hugging Face hub)."""
        return cls(build_sam2_hf(model_id, **kwargs), **kwargs)

    def set_image(self, image: Any, image_format: str = "RGB") -> None:  # type: ignore[override]
        """``image``: H×W×3 uint8 RGB array or a PIL image."""
        self._batch = []
        super().set_image(image, image_format)

    def set_image_batch(self, image_list: list[np.ndarray]) -> None:
        """Embed several images for ``predict_batch``."""
        if not isinstance(image_list, list):
            raise InputError("set_image_batch takes a list of H×W×3 images")
        self.reset_image()
        self._batch = self.embed_images(image_list, batch_size=1)

    def reset_predictor(self) -> None:
        self.reset_image()
        self._batch = []

    def predict(  # type: ignore[override]  # the official tuple, not segany's Prediction
        self,
        point_coords: Any = None,
        point_labels: Any = None,
        box: Any = None,
        mask_input: Any = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Prompts in image pixels (``normalize_coords=False``: in [0, 1] of the image):
        point_coords N×2 or B×N×2, point_labels N or B×N, box 4 or B×4 (XYXY), mask_input
        1×256×256 or B×1×256×256 logits."""
        if not normalize_coords:
            h, w = self._require_image().original_size
            scale = np.array([w, h], dtype=np.float64)
            if point_coords is not None:
                point_coords = np.asarray(point_coords, dtype=np.float64) * scale
            if box is not None:
                box = (np.asarray(box, dtype=np.float64).reshape(-1, 2, 2) * scale).reshape(
                    np.shape(box)
                )
        out = super().predict(
            point_coords, point_labels, box, mask_input, multimask_output, return_logits=True
        )
        masks = out.masks if return_logits else out.masks > self.mask_threshold
        return masks.astype(np.float32), out.scores, out.logits

    def predict_batch(
        self,
        point_coords_batch: list[Any] | None = None,
        point_labels_batch: list[Any] | None = None,
        box_batch: list[Any] | None = None,
        mask_input_batch: list[Any] | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """``predict`` for each image of ``set_image_batch``, with its prompts."""
        if not self._batch:
            raise InputError("call set_image_batch(...) before predict_batch")
        masks, scores, logits = [], [], []
        for i, embedding in enumerate(self._batch):
            self.set_embedding(embedding)

            def pick(batch: list[Any] | None, i: int = i) -> Any:
                return None if batch is None else batch[i]

            m, s, lo = self.predict(
                pick(point_coords_batch),
                pick(point_labels_batch),
                pick(box_batch),
                pick(mask_input_batch),
                multimask_output,
                return_logits,
                normalize_coords,
            )
            masks.append(m)
            scores.append(s)
            logits.append(lo)
        batch = self._batch
        self.reset_image()
        self._batch = batch
        return masks, scores, logits

    def get_image_embedding(self) -> torch.Tensor:
        """The current image's 1×256×64×64 embedding (no_mem_embed added, as officially)."""
        return super().get_image_embedding()
