"""SAM 2's prompt encoder + mask decoder for ONNX export: the web-demo interface of
``segany.export.decoder`` plus the two high-resolution feature maps SAM 2's decoder reads.

Inputs (batch 1; N points; official sizes in brackets, C = 256, h = w = 64):
  image_embeddings  1×C×h×w (1×256×64×64) float32: the encoder's embedding (no-memory
                    embedding included), the encoder file's first output
  high_res_feats_0  1×C/8×4h×4w (1×32×256×256) float32: the stride-4 level after the decoder's
                    ``conv_s0``
  high_res_feats_1  1×C/4×2h×2w (1×64×128×128) float32: the stride-8 level after ``conv_s1``
  point_coords      1×N×2 float32, XY pixels in SAM 2's S×S frame: the image is stretched to
                    it, so x·S/W, y·S/H
  point_labels      1×N float32: 1 foreground, 0 background, 2/3 box corners, -1 padding. SAM 2
                    puts a box's two corners first and always ends with one padding point
                    (label -1 at (0, 0)), box or not
  mask_input        1×1×4h×4w (1×1×256×256) float32 low-res logits from an earlier call
  has_mask_input    1 float32, 1.0 to use ``mask_input``
  orig_im_size      2 float32, (H, W) of the original image
Outputs:
  masks             1×K×H×W logits at the original size (one bilinear resize of the low-res
                    logits, as SAM 2's predictor does)
  iou_predictions   1×K
  low_res_masks     1×K×4h×4w logits
K = 1 with ``return_single_mask``: SAM 2's single-mask answer (the single-mask token where its
stability, the area above +0.05 over the area above -0.05, is at least 0.98, else the multimask
candidate with the highest predicted IoU); else all mask tokens (token 0, then the 3 multimask
candidates), which ``OnnxPredictor`` reads.

The names ``high_res_feats_0/1`` are those community SAM 2 exports use for the same two maps.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from segany.errors import InputError
from segany.export.decoder import (
    _STABILITY_OFFSET,
    DECODER_INPUTS,
    SamOnnxDecoder,
    _float_stability_score,
)
from segany.modeling import Sam
from segany.modeling.hiera.encoder import pack_high_res
from segany.modeling.mask_decoder_sam2 import MaskDecoderSAM2

#: The two high-resolution maps (encoder outputs, decoder inputs).
HIGH_RES_NAMES = ("high_res_feats_0", "high_res_feats_1")
#: Input names of SAM 2's exported decoder.
SAM2_DECODER_INPUTS = (DECODER_INPUTS[0], *HIGH_RES_NAMES, *DECODER_INPUTS[1:])


class Sam2OnnxDecoder(SamOnnxDecoder):
    """``SamOnnxDecoder`` for a SAM 2 model (see the module docstring)."""

    def __init__(
        self,
        model: Sam,
        return_single_mask: bool,
        use_stability_score: bool = False,
        return_extra_metrics: bool = False,
    ) -> None:
        if not isinstance(model.mask_decoder, MaskDecoderSAM2):
            raise InputError("Sam2OnnxDecoder needs a SAM 2 model (its decoder is not SAM 2's)")
        super().__init__(model, return_single_mask, use_stability_score, return_extra_metrics)
        self.sam2_decoder = model.mask_decoder

    @property
    def input_names(self) -> tuple[str, ...]:
        return SAM2_DECODER_INPUTS

    def _stable_single(
        self, masks: torch.Tensor, scores: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """B×K×s×s, B×K -> B×1×s×s, B×1: ``MaskDecoderSAM2.stable_single`` without indexing by
        tensors (a gather picks the answer)."""
        dec = self.sam2_decoder
        flat = masks[:, :1].flatten(-2)
        inner = (flat > dec.stability_delta).float().sum(-1)
        outer = (flat > -dec.stability_delta).float().sum(-1)
        stability = torch.where(outer > 0, inner / outer.clamp(min=1), torch.ones_like(outer))
        best = 1 + torch.argmax(scores[:, 1:], dim=1, keepdim=True)  # B×1
        idx = torch.where(stability >= dec.stability_thresh, torch.zeros_like(best), best)
        h, w = masks.shape[-2:]
        masks = torch.gather(masks, 1, idx[:, :, None, None].expand(-1, -1, h, w))
        return masks, torch.gather(scores, 1, idx)

    @torch.no_grad()
    def forward(  # type: ignore[override]  # SAM 2's two extra inputs, in their place
        self,
        image_embeddings: torch.Tensor,
        high_res_feats_0: torch.Tensor,
        high_res_feats_1: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        """See the module docstring for shapes; returns the tensors named by ``output_names``."""
        sparse = self._embed_points(point_coords, point_labels)
        dense = self._embed_mask(mask_input, has_mask_input)
        packed = pack_high_res(high_res_feats_0, high_res_feats_1)  # a reshuffle, exact
        low_res, scores, _ = self.sam2_decoder.predict_all(
            image_embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense, packed
        )
        if self.use_stability_score:
            scores = _float_stability_score(low_res, self.mask_threshold, _STABILITY_OFFSET)
        if self.return_single_mask:
            low_res, scores = self._stable_single(low_res, scores)
        # SAM 2: one bilinear resize from the low-res logits to the original size
        hw = orig_im_size.to(torch.int64)
        masks = F.interpolate(low_res, size=(hw[0], hw[1]), mode="bilinear", align_corners=False)  # type: ignore[arg-type]
        if self.return_extra_metrics:
            stability = _float_stability_score(masks, self.mask_threshold, _STABILITY_OFFSET)
            areas = (masks > self.mask_threshold).sum((-1, -2))  # int64 pixel counts
            return masks, scores, stability, areas, low_res
        return masks, scores, low_res
