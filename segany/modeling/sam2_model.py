"""``Sam2``: SAM 2's image model (a Hiera encoder, SAM's prompt encoder, SAM 2's decoder) with
the official image predictor's pre- and post-processing.

What differs from SAM 1's ``Sam``: the image is resized to the square S×S frame without keeping
its aspect ratio (bilinear with antialiasing, on pixels scaled to [0, 1], then normalised), so
prompts are scaled by S/W and S/H; masks are resized from the low-res logits straight to the
original size; a box is given to the prompt encoder as two corner points ahead of the clicks
(followed by the padding point), as ``SAM2ImagePredictor`` does.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from segany.modeling.families import family_of_module
from segany.modeling.mask_decoder_sam2 import MaskDecoderSAM2
from segany.modeling.sam import Sam


class Sam2(Sam):
    """SAM 2 for still images. ``mask_decoder`` is a ``MaskDecoderSAM2``; the encoder's
    ``forward_with_early`` gives the embedding and the decoder's packed high-res features."""

    mask_decoder: MaskDecoderSAM2

    @property
    def is_sam2(self) -> bool:
        return True

    def input_size_of(
        self, resized: tuple[int, ...], original_size: tuple[int, ...]
    ) -> tuple[int, int]:
        """The whole S×S frame: the image fills it (stretched)."""
        return self.image_size, self.image_size

    def __init__(self, **kwargs: Any) -> None:
        """As ``Sam``'s; the pixel statistics are also kept as Python floats scaled to [0, 1]
        (123.675 / 255 is exactly the official 0.485 in float32; the float32 buffer / 255 is
        not)."""
        super().__init__(**kwargs)
        self._unit_mean = tuple(float(v) / 255 for v in kwargs["pixel_mean"])
        self._unit_std = tuple(float(v) / 255 for v in kwargs["pixel_std"])

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean and std for pixels in [0, 1] (the official 0.485 ..., 0.229 ...), 3×1×1."""
        mean = torch.tensor(self._unit_mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        std = torch.tensor(self._unit_std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return mean, std

    def prepare_image(self, image: torch.Tensor) -> torch.Tensor:
        """B×3×H×W pixels (uint8 or float 0-255) at their original size -> B×3×S×S normalised
        encoder input, as the official transforms compute it: /255, bilinear antialiased
        resize to S×S, then (x - mean) / std."""
        x = image.float() / 255 if image.dtype == torch.uint8 else image.float().div(255)
        size = (self.encoder_size, self.encoder_size)
        x = F.interpolate(x, size, mode="bilinear", align_corners=False, antialias=True)
        mean, std = self._stats(x)
        return (x - mean) / std

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """B×3×S×S float pixels (0-255) already resized to the frame -> normalised (no
        padding: the image fills the frame)."""
        if x.shape[-2:] != (self.encoder_size, self.encoder_size):
            raise ValueError(
                f"SAM 2 reads {self.encoder_size}×{self.encoder_size} images (resized without "
                f"keeping the aspect ratio), got {tuple(x.shape[-2:])}"
            )
        mean, std = self._stats(x)
        return (x / 255 - mean) / std

    def postprocess_masks(
        self,
        masks: torch.Tensor,
        input_size: tuple[int, ...],
        original_size: tuple[int, ...],
    ) -> torch.Tensor:
        """B×M×s×s low-res logits -> B×M×H×W logits, one bilinear resize (the official
        ``SAM2Transforms.postprocess_masks`` without hole filling)."""
        size = (int(original_size[0]), int(original_size[1]))
        return F.interpolate(masks.float(), size, mode="bilinear", align_corners=False)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """B×3×S×S normalised -> (B×C×h×w embeddings, B×2h×2w×E packed high-res features)."""
        family = family_of_module(self.image_encoder)
        if family is None:
            raise ValueError("a SAM 2 model needs an encoder of a registered family")
        return family.forward_with_early(self.image_encoder, images)

    @staticmethod
    def merge_boxes(
        coords: torch.Tensor | None, labels: torch.Tensor | None, boxes: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Points B×N×2 / labels B×N and boxes B×4 as SAM 2 hands them to the prompt encoder:
        each box as two corner points labelled 2 and 3 ahead of the clicks."""
        if boxes is None:
            return None if coords is None or labels is None else (coords, labels)
        corners = boxes.reshape(-1, 2, 2)
        corner_labels = torch.tensor([[2, 3]], dtype=torch.int, device=boxes.device)
        corner_labels = corner_labels.expand(corners.shape[0], -1)
        if coords is None or labels is None:
            return corners, corner_labels
        return torch.cat([corners, coords], dim=1), torch.cat(
            [corner_labels, labels.to(corner_labels.dtype)], dim=1
        )

    def decode(
        self,
        features: torch.Tensor,
        high_res: torch.Tensor,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        mask_input: torch.Tensor | None,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One image's 1×C×h×w embedding and 1×2h×2w×E high-res map with prompts in the frame
        (points from ``merge_boxes``, mask_input B×1×4h×4w) -> low-res logits B×M×4h×4w and
        IoU predictions B×M."""
        sparse, dense = self.prompt_encoder(points=points, boxes=None, masks=mask_input)
        return self.mask_decoder(
            features,
            self.prompt_encoder.get_dense_pe(),
            sparse,
            dense,
            multimask_output,
            high_res,
        )

    @torch.no_grad()
    def forward(
        self,
        batched_input: list[dict[str, Any]],
        multimask_output: bool,
        hq_token_only: bool = False,
    ) -> list[dict[str, torch.Tensor]]:
        """``Sam.forward``'s batched call for SAM 2: each ``image`` 3×S×S already resized to
        the frame (0-255), prompts in that frame."""
        if hq_token_only:
            raise ValueError("hq_token_only=True needs a SAM-HQ model; this one is SAM 2")
        images = torch.stack([self.preprocess(x["image"][None].float())[0] for x in batched_input])
        embeddings, high_res = self.encode(images)
        outputs = []
        for i, record in enumerate(batched_input):
            points = self.merge_boxes(
                record.get("point_coords"), record.get("point_labels"), record.get("boxes")
            )
            low_res, iou = self.decode(
                embeddings[i : i + 1],
                high_res[i : i + 1],
                points,
                record.get("mask_inputs"),
                multimask_output,
            )
            masks = self.postprocess_masks(low_res, (0, 0), record["original_size"])
            outputs.append(
                {
                    "masks": masks > self.mask_threshold,
                    "iou_predictions": iou,
                    "low_res_logits": low_res,
                }
            )
        return outputs
