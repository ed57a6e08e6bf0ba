"""SAM 2's mask decoder as its image predictor uses it.

Against SAM 1's ``MaskDecoder``: an object-score token before the IoU token (its MLP head says
whether the prompt hit an object; the image predictor reports the masks regardless), IoU
predictions through a sigmoid, the upscaling path adding the encoder's high-resolution features
(stride 8 after the first transposed convolution, stride 4 after the second), and, for a single
mask, the single-mask output unless its stability is low, when the multimask output with the
highest predicted IoU replaces it (``dynamic_multimask_via_stability``, on in the official
builds with post-processing, the default).

The high-resolution features come packed (``segany.modeling.hiera.pack_high_res``): one
B×2h×2w×E map that the encoder made once per image.
"""

from __future__ import annotations

import torch

from segany.modeling.common import MLP
from segany.modeling.hiera.encoder import unpack_high_res
from segany.modeling.mask_decoder import MaskDecoder
from segany.modeling.transformer import TwoWayTransformer


class MaskDecoderSAM2(MaskDecoder):
    """Image embedding + prompt embeddings + high-resolution features -> low-res mask logits,
    predicted IoUs (and, from ``predict_all``, object-score logits)."""

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: TwoWayTransformer,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        stability_delta: float = 0.05,
        stability_thresh: float = 0.98,
    ) -> None:
        """As ``MaskDecoder``; ``stability_delta``/``stability_thresh``: a single mask whose
        stability (area above +delta over area above -delta of its logits) is below the
        threshold is replaced by the best multimask mask (the official 0.05 and 0.98)."""
        super().__init__(
            transformer_dim=transformer_dim,
            transformer=transformer,
            num_multimask_outputs=num_multimask_outputs,
            iou_head_depth=iou_head_depth,
            iou_head_hidden_dim=iou_head_hidden_dim,
        )
        self.obj_score_token = torch.nn.Embedding(1, transformer_dim)
        self.iou_prediction_head = MLP(
            transformer_dim,
            iou_head_hidden_dim,
            self.num_mask_tokens,
            iou_head_depth,
            sigmoid_output=True,
        )
        self.pred_obj_score_head = MLP(transformer_dim, transformer_dim, 1, 3)
        self.stability_delta = stability_delta
        self.stability_thresh = stability_thresh

    def forward(  # type: ignore[override]
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        high_res: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image_embeddings 1×C×h×w (shared) or B×C×h×w, image_pe 1×C×h×w, sparse B×T×C,
        dense B×C×h×w, high_res 1×2h×2w×E or B×2h×2w×E (packed) -> masks B×M×4h×4w logits and
        IoU predictions B×M (M = 3 multimask outputs, or 1: the single-mask output or, where
        it is unstable, the best multimask one)."""
        masks, iou, _ = self.predict_all(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, high_res
        )
        return self.select(masks, iou, multimask_output)

    def select(
        self, masks: torch.Tensor, iou: torch.Tensor, multimask_output: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All outputs (B×(M+1)×H×W, B×(M+1)) -> the answer ``forward`` gives."""
        if multimask_output:
            return masks[:, 1:], iou[:, 1:]
        if self.training:
            return masks[:, :1], iou[:, :1]
        return self.stable_single(masks, iou)

    def stability(self, logits: torch.Tensor) -> torch.Tensor:
        """B×K×H×W logits -> B×K: area above +delta over area above -delta (1 when empty)."""
        flat = logits.flatten(-2)
        inner = (flat > self.stability_delta).sum(-1).float()
        outer = (flat > -self.stability_delta).sum(-1).float()
        return torch.where(outer > 0, inner / outer, 1.0)

    def stable_single(
        self, masks: torch.Tensor, iou: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """B×(M+1)×H×W, B×(M+1) -> the single-mask output where it is stable, else the
        multimask output with the highest predicted IoU: B×1×H×W, B×1."""
        rows = torch.arange(masks.shape[0], device=masks.device)
        best = iou[:, 1:].argmax(dim=-1)
        stable = self.stability(masks[:, :1]) >= self.stability_thresh  # B×1
        out_masks = torch.where(stable[..., None, None], masks[:, :1], masks[rows, 1 + best, None])
        out_iou = torch.where(stable, iou[:, :1], iou[rows, 1 + best, None])
        return out_masks, out_iou

    def predict_all(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        high_res: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All mask tokens: masks B×(M+1)×4h×4w, IoU predictions B×(M+1) and object-score
        logits B×1 (> 0: the prompt is on an object)."""
        b = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat(
            [self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight]
        )
        tokens = torch.cat(
            [output_tokens.unsqueeze(0).expand(b, -1, -1), sparse_prompt_embeddings], dim=1
        )
        if image_embeddings.shape[0] == b:
            src = image_embeddings + dense_prompt_embeddings
        else:  # one image shared by every prompt in the batch
            src = image_embeddings.expand(b, -1, -1, -1) + dense_prompt_embeddings
        pos_src = image_pe.expand(b, -1, -1, -1)
        _, c, h, w = src.shape
        hs, src = self.transformer(src, pos_src, tokens)
        mask_tokens_out = hs[:, 2 : 2 + self.num_mask_tokens, :]

        s0, s1 = unpack_high_res(high_res, self.transformer_dim)
        if s0.shape[0] != b:
            s0, s1 = s0.expand(b, -1, -1, -1), s1.expand(b, -1, -1, -1)
        up1, norm, act1, up2, act2 = self.output_upscaling
        x = src.transpose(1, 2).reshape(b, c, h, w)
        x = act1(norm(up1(x) + s1))
        x = act2(up2(x) + s0)
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
            dim=1,
        )  # B×(M+1)×C/8
        _, c8, uh, uw = x.shape
        masks = (hyper_in @ x.reshape(b, c8, uh * uw)).reshape(b, -1, uh, uw)
        iou = self.iou_prediction_head(hs[:, 1, :])
        return masks, iou, self.pred_obj_score_head(hs[:, 0, :])
