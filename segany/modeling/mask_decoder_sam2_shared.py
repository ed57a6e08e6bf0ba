"""Fast decoding of prompts (without a mask input) against one image, for SAM 2's decoder.

``Sam2PointDecoder`` is ``PointDecoder`` (``mask_decoder_shared``: the first layer's image-side
projections once per image, later layers' projections folded into the prompt side, the final
attention for the output tokens only, upscaling only for the outputs asked for) with what
``MaskDecoderSAM2`` does differently:

- its output tokens are the object-score token, the IoU token, then the mask tokens;
- its IoU head ends in a sigmoid (part of the head) and the object-score head reads token 0;
- the upscaling path adds the encoder's high-resolution features after each transposed
  convolution (unpacked from ``pack_high_res``'s map once per image, kept channels-last);
- a single-mask answer is the single-mask output where it is stable, else the multimask output
  with the highest predicted IoU (``MaskDecoderSAM2.stable_single``): the fallback's masks are
  dotted only for the rows that need it, from the same upscaled features.

Results equal ``MaskDecoderSAM2.forward`` up to float rounding (~1e-6 relative).
"""

from __future__ import annotations

import torch

from segany.modeling import Sam
from segany.modeling.mask_decoder_sam2 import MaskDecoderSAM2
from segany.modeling.mask_decoder_shared import PointDecoder, _dot


class Sam2PointDecoder(PointDecoder):
    """``MaskDecoderSAM2`` for a batch of prompts that share one image: embedding 1×C×h×w and
    the packed high-resolution features high_res 1×2h×2w×E (``Predictor.get_early_features``).
    Prompts come as the prompt encoder's sparse embeddings B×T×C, with no mask input.
    Outputs: 0 the single-mask one, 1.. the multimask ones."""

    sam2 = True
    _iou_row = 1  # after the object-score token
    _first_mask = 2

    @torch.inference_mode()
    def __init__(self, model: Sam, embedding: torch.Tensor, high_res: torch.Tensor) -> None:
        super().__init__(model, embedding)
        dec = self.decoder
        assert isinstance(dec, MaskDecoderSAM2)
        self.sam2_decoder = dec
        if high_res.dim() != 4 or high_res.shape[0] != 1:
            raise ValueError(f"one image's packed high-res map 1×2h×2w×E, got {high_res.shape}")
        # After the first transposed convolution (stride 8) and after the second (stride 4).
        s0, s1 = _unpack_channels_last(high_res.to(self.keys), dec.transformer_dim)
        self._addends = {0: s1, 3: s0}

    def _output_tokens(self) -> torch.Tensor:
        dec = self.sam2_decoder
        return torch.cat([dec.obj_score_token.weight, dec.iou_token.weight, dec.mask_tokens.weight])

    @torch.inference_mode()
    def object_scores(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens B×K'×C -> object-score logits B×1 (> 0: the prompt is on an object)."""
        return self.sam2_decoder.pred_obj_score_head(tokens[:, 0, :])

    @torch.inference_mode()
    def stable_single(
        self, tokens: torch.Tensor, keys: torch.Tensor, iou: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens B×K'×C, image tokens B×N×C, IoU predictions B×(1+M) -> the single-mask
        answer: logits B×1×4h×4w and IoU B×1 (output 0 where stable, else the multimask
        output with the highest predicted IoU)."""
        dec = self.sam2_decoder
        x = self.upscaled(keys)
        n = iou.shape[1]
        hyper = self.hypernetworks(tokens, range(n))  # B×(1+M)×C/8
        masks = _dot(x, hyper[:, :1])
        stable = dec.stability(masks) >= dec.stability_thresh  # B×1
        best = 1 + iou[:, 1:].argmax(dim=-1)  # B
        out_iou = iou[:, :1].clone()
        for r in (~stable[:, 0]).nonzero()[:, 0].tolist():
            pick = int(best[r])
            masks[r : r + 1] = _dot(x[r : r + 1], hyper[r : r + 1, pick : pick + 1])
            out_iou[r, 0] = iou[r, pick]
        return masks, out_iou

    @torch.inference_mode()
    def decode(
        self, sparse: torch.Tensor, multimask_output: bool, hq_token_only: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``MaskDecoderSAM2.forward`` for sparse B×T×C with no mask input: low-res logits
        B×M×4h×4w and IoU predictions B×M (M = 3 multimask outputs, or the single answer)."""
        if hq_token_only:
            raise ValueError("hq_token_only=True needs a SAM-HQ model")
        tokens, keys = self.transformer(sparse)
        iou = self.iou_predictions(tokens)
        if multimask_output:
            outputs = range(1, iou.shape[1])
            return self.mask_logits(tokens, keys, outputs), iou[:, 1:]
        return self.stable_single(tokens, keys, iou)


def _unpack_channels_last(packed: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``unpack_high_res`` straight into channels-last memory, one copy per map: packed
    1×2h×2w×E -> (s0 1×C/8×4h×4w, s1 1×C/4×2h×2w), C = ``width``.

    ``pack_high_res`` put s0[c, 2y+i, 2x+j] at packed[y, x, 4c+2i+j]: viewing the first C/2
    channels as (2h, 2w, C/8, 2, 2) and ordering them (2h, i, 2w, j, C/8) gives s0's pixels
    row-major with their channels innermost."""
    _, h2, w2, _ = packed.shape
    half = width // 2
    s0 = packed[0, :, :, :half].reshape(h2, w2, half // 4, 2, 2).permute(0, 3, 1, 4, 2)
    s0 = s0.reshape(1, 2 * h2, 2 * w2, half // 4).permute(0, 3, 1, 2)
    s1 = packed[:, :, :, half:].contiguous().permute(0, 3, 1, 2)
    return s0, s1
