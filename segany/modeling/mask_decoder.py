"""Mask decoder: two-way transformer over prompt tokens and the image embedding, then
upscaling and per-token hypernetworks to mask logits, and an IoU head."""

from __future__ import annotations

import torch
from torch import nn

from segany.modeling.common import MLP, LayerNorm2d
from segany.modeling.transformer import TwoWayTransformer


class MaskDecoder(nn.Module):
    """Image embedding + prompt embeddings -> low-res mask logits and predicted IoUs."""

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: TwoWayTransformer,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        """Predicts masks and their IoU from an image embedding and prompt embeddings.

        Args:
            transformer_dim: channel width C of the image and prompt embeddings (256).
            transformer: the two-way transformer that mixes prompt tokens and image.
            num_multimask_outputs: masks returned for an ambiguous prompt (3); one more
                output token serves the single-mask answer.
            iou_head_depth: layers of the MLP that predicts each mask's IoU (3).
            iou_head_hidden_dim: hidden width of that MLP (256).
        """
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.num_mask_tokens = num_multimask_outputs + 1  # token 0 is the single-mask output
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3)
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth
        )

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image_embeddings 1×C×h×w (shared) or B×C×h×w, image_pe 1×C×h×w, sparse B×T×C,
        dense B×C×h×w -> masks B×M×4h×4w logits and IoU predictions B×M
        (M = num_multimask_outputs, or 1 when ``multimask_output`` is False)."""
        masks, iou_pred = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
        sel = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, sel], iou_pred[:, sel]

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All mask tokens: masks B×(M+1)×4h×4w and IoU predictions B×(M+1)."""
        b = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight])
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
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]

        # B×HW×C -> B×C×h×w for the transposed convolutions
        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
            dim=1,
        )  # B×(M+1)×C/8
        _, c8, uh, uw = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(b, c8, uh * uw)).reshape(b, -1, uh, uw)
        return masks, self.iou_prediction_head(iou_token_out)
