"""SAM-HQ's decoder for ONNX export: the web-demo interface plus SAM-HQ's extra input, named as
SAM-HQ's own export script (``scripts/export_onnx_model.py``) names it.

Inputs: those of ``segany.export.decoder`` with, after ``image_embeddings``,
  interm_embeddings  K×1×h×w×E float32: encoder feature maps, channels last, of which SAM-HQ
                     reads the first (the early map: ViT's first global-attention block, 4 maps
                     in SAM-HQ's script, one in segany's encoder export; TinyViT's stage 1)
Outputs: masks, iou_predictions, low_res_masks (and the extra metrics), with K masks:
  official (``return_single_mask=True``, SAM-HQ's layout): K = 1, SAM's single-mask output, or
    with ``multimask_output`` its multimask output with the highest IoU, plus the HQ mask (the
    HQ mask alone with ``hq_token_only``); the score is that SAM output's
  every token (``return_single_mask=False``, what ``OnnxPredictor`` reads): K = M+2 masks
    (SAM's single, its M multimask outputs, the HQ mask, not added) and M+1 IoU scores; the
    runtime adds them as the answer asks (upscaling is linear, so the sum of upscaled masks is
    the upscaled sum up to rounding).
"""

from __future__ import annotations

import torch

from segany.errors import InputError
from segany.export.decoder import (
    _STABILITY_OFFSET,
    DECODER_INPUTS,
    SamOnnxDecoder,
    _float_stability_score,
)
from segany.modeling import MaskDecoderHQ, Sam

#: Input names of SAM-HQ's exported decoder (its export script's order).
HQ_DECODER_INPUTS = (DECODER_INPUTS[0], "interm_embeddings", *DECODER_INPUTS[1:])


class SamHQOnnxDecoder(SamOnnxDecoder):
    """``SamOnnxDecoder`` for a SAM-HQ model (see the module docstring). ``multimask_output``
    and ``hq_token_only`` choose the official single answer, as in SAM-HQ's export script."""

    def __init__(
        self,
        model: Sam,
        return_single_mask: bool,
        use_stability_score: bool = False,
        return_extra_metrics: bool = False,
        *,
        multimask_output: bool = False,
        hq_token_only: bool = False,
    ) -> None:
        if not isinstance(model.mask_decoder, MaskDecoderHQ):
            raise InputError("SamHQOnnxDecoder needs a SAM-HQ model (its decoder is SAM's)")
        super().__init__(model, return_single_mask, use_stability_score, return_extra_metrics)
        self.hq_decoder = model.mask_decoder
        self.multimask_output = multimask_output
        self.hq_token_only = hq_token_only

    @property
    def input_names(self) -> tuple[str, ...]:
        return HQ_DECODER_INPUTS

    @torch.no_grad()
    def forward(  # type: ignore[override]  # SAM-HQ's extra input, in its place
        self,
        image_embeddings: torch.Tensor,
        interm_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        """See the module docstring for shapes; returns the tensors named by ``output_names``."""
        sparse = self._embed_points(point_coords, point_labels)
        dense = self._embed_mask(mask_input, has_mask_input)
        dec = self.hq_decoder
        hq = dec.hq_features(image_embeddings, interm_embeddings[0])
        low_res, scores = dec.predict_masks(
            image_embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense, hq_features=hq
        )  # 1×(M+2)×s×s, 1×(M+1)
        if self.use_stability_score:  # of SAM's tokens, as SAM-HQ's export scores them
            scores = _float_stability_score(
                low_res[:, : dec.num_mask_tokens], self.mask_threshold, _STABILITY_OFFSET
            )
        if self.return_single_mask:
            low_res, scores = dec.select_outputs(
                low_res, scores, self.multimask_output, self.hq_token_only
            )
        masks = self._upscale(low_res, orig_im_size)
        if self.return_extra_metrics:
            stability = _float_stability_score(masks, self.mask_threshold, _STABILITY_OFFSET)
            areas = (masks > self.mask_threshold).sum((-1, -2))  # int64 pixel counts
            return masks, scores, stability, areas, low_res
        return masks, scores, low_res
