"""SAM-HQ's mask decoder: SAM's decoder with one more output token, the high-quality (HQ) token.

The HQ token goes through the two-way transformer beside SAM's IoU and mask tokens. Its mask is
read off SAM's upscaled decoder features refined by two convolutions, plus "HQ features": the
embedding and the encoder's early feature map (B×h×w×E: ViT's first global-attention block,
TinyViT's stage 1), each upscaled ×4 to the low-res mask grid. Every published SAM-HQ model
answers with one mask per prompt: SAM's single-mask output, or with ``multimask_output`` the one
of SAM's multimask outputs with the highest predicted IoU, plus the HQ mask (the HQ mask alone
with ``hq_token_only``); the IoU is that SAM output's.

Attribute names are the official checkpoint keys (``hf_token``, ``hf_mlp``,
``compress_vit_feat``, ``embedding_encoder``, ``embedding_maskfeature``), so the
``mask_decoder.*`` weights of ``sam_hq_vit_*.pth`` load strictly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from segany.modeling.common import MLP, LayerNorm2d
from segany.modeling.mask_decoder import MaskDecoder
from segany.modeling.transformer import TwoWayTransformer


def _upscale_x4(c_in: int, c_mid: int, c_out: int) -> nn.Sequential:
    """Two stride-2 transposed convolutions with a channel norm and GELU between them."""
    return nn.Sequential(
        nn.ConvTranspose2d(c_in, c_mid, kernel_size=2, stride=2),
        LayerNorm2d(c_mid),
        nn.GELU(),
        nn.ConvTranspose2d(c_mid, c_out, kernel_size=2, stride=2),
    )


class MaskDecoderHQ(MaskDecoder):
    """``MaskDecoder`` plus SAM-HQ's output token and feature fusion.

    ``num_mask_tokens`` counts SAM's mask tokens only (the official class adds the HQ token to
    it after building its layers); the HQ token is ``hf_token``.
    """

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: TwoWayTransformer,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        vit_dim: int = 1024,
    ) -> None:
        """SAM's decoder (see ``MaskDecoder``) and the HQ parts.

        Args:
            vit_dim: channels E of the encoder's early feature map (768/1024/1280 for
                SAM-HQ vit_b/l/h, 160 for the light vit_tiny).
        """
        super().__init__(
            transformer_dim=transformer_dim,
            transformer=transformer,
            num_multimask_outputs=num_multimask_outputs,
            iou_head_depth=iou_head_depth,
            iou_head_hidden_dim=iou_head_hidden_dim,
        )
        c = transformer_dim
        self.vit_dim = vit_dim
        self.hf_token = nn.Embedding(1, c)
        self.hf_mlp = MLP(c, c, c // 8, 3)
        self.compress_vit_feat = _upscale_x4(vit_dim, c, c // 8)
        self.embedding_encoder = _upscale_x4(c, c // 4, c // 8)
        self.embedding_maskfeature = nn.Sequential(
            nn.Conv2d(c // 8, c // 4, kernel_size=3, stride=1, padding=1),
            LayerNorm2d(c // 4),
            nn.GELU(),
            nn.Conv2d(c // 4, c // 8, kernel_size=3, stride=1, padding=1),
        )

    def hq_features(self, image_embeddings: torch.Tensor, early: torch.Tensor) -> torch.Tensor:
        """Embeddings B×C×h×w and the early map B×h×w×E -> HQ features B×C/8×4h×4w (prompt
        independent: once per image)."""
        vit_features = early.permute(0, 3, 1, 2)  # B×h×w×E -> B×E×h×w
        return self.embedding_encoder(image_embeddings) + self.compress_vit_feat(vit_features)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        hq_token_only: bool = False,
        interm_embeddings: Sequence[torch.Tensor] | torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As ``MaskDecoder.forward`` (embeddings 1×C×h×w shared or B×C×h×w, image_pe
        1×C×h×w, sparse B×T×C, dense B×C×h×w), with the official HQ arguments:
        ``interm_embeddings`` whose first item is the early map 1×h×w×E (or B×h×w×E): a list
        of maps, or them stacked. Returns masks B×1×4h×4w logits and IoU predictions B×1."""
        if interm_embeddings is None or len(interm_embeddings) == 0:
            raise ValueError(
                "SAM-HQ's decoder needs interm_embeddings: the encoder's early feature map "
                "(B×h×w×E) as its first item"
            )
        hq = self.hq_features(image_embeddings, interm_embeddings[0])
        masks, iou_pred = self.predict_masks(
            image_embeddings,
            image_pe,
            sparse_prompt_embeddings,
            dense_prompt_embeddings,
            hq_features=hq,
        )
        return self.select_outputs(masks, iou_pred, multimask_output, hq_token_only)

    def select_outputs(
        self,
        masks: torch.Tensor,
        iou_pred: torch.Tensor,
        multimask_output: bool,
        hq_token_only: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``predict_masks``' masks B×(M+2)×s×s and IoU B×(M+1) -> the answer: masks B×1×s×s,
        IoU B×1 (see the module's docstring)."""
        n = self.num_mask_tokens
        if multimask_output:
            iou_pred, best = iou_pred[:, 1:n].max(dim=1)
            rows = torch.arange(masks.shape[0], device=masks.device)
            sam = masks[:, 1:n][rows, best].unsqueeze(1)
            iou_pred = iou_pred.unsqueeze(1)
        else:
            sam, iou_pred = masks[:, :1], iou_pred[:, :1]
        hq = masks[:, n : n + 1]
        return (hq if hq_token_only else sam + hq), iou_pred

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        hq_features: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every token: masks B×(M+2)×4h×4w (SAM's single, its M multimask outputs, then the
        HQ mask) and IoU predictions B×(M+1); ``hq_features`` 1×C/8×4h×4w or B×C/8×4h×4w from
        ``hq_features``."""
        if hq_features is None:
            raise ValueError(
                "SAM-HQ's decoder needs hq_features (MaskDecoderHQ.hq_features of the "
                "embedding and the encoder's early feature map)"
            )
        b = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat(
            [self.iou_token.weight, self.mask_tokens.weight, self.hf_token.weight]
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
        n = self.num_mask_tokens
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + n, :]
        hq_token_out = hs[:, 1 + n, :]

        # B×HW×C -> B×C×h×w for the transposed convolutions
        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        upscaled_hq = self.embedding_maskfeature(upscaled) + hq_features
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
            dim=1,
        )  # B×(M+1)×C/8
        hyper_hq = self.hf_mlp(hq_token_out).unsqueeze(1)  # B×1×C/8
        _, c8, uh, uw = upscaled.shape
        masks_sam = (hyper_in @ upscaled.reshape(b, c8, uh * uw)).reshape(b, -1, uh, uw)
        masks_hq = (hyper_hq @ upscaled_hq.reshape(b, c8, uh * uw)).reshape(b, 1, uh, uw)
        return torch.cat([masks_sam, masks_hq], dim=1), self.iou_prediction_head(iou_token_out)
