"""Prompt encoder: points and box corners to sparse tokens, mask logits to a dense map.

Coordinates are XY pixels in the model's input frame (after resize-longest-side), B×N×2.
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import nn

from segany.modeling.common import LayerNorm2d


class PositionEmbeddingRandom(nn.Module):
    """Random-Fourier features of normalised XY coordinates (a fixed Gaussian projection)."""

    def __init__(self, num_pos_feats: int = 64, scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer(
            "positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats))
        )
        self.positional_encoding_gaussian_matrix: torch.Tensor

    def _encode(self, coords: torch.Tensor) -> torch.Tensor:
        """...×2 coordinates in [0, 1] -> ...×(2·num_pos_feats) features."""
        proj = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix
        proj = 2 * math.pi * proj
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Encoding of every cell centre of an H×W grid: C×H×W."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        grid = torch.stack(
            [xs[None, :].expand(h, w), ys[:, None].expand(h, w)], dim=-1
        )  # H×W×2 in XY order
        return self._encode(grid).permute(2, 0, 1)

    def forward_with_coords(
        self, coords_input: torch.Tensor, image_size: tuple[int, int]
    ) -> torch.Tensor:
        """B×N×2 pixel XY in an image of ``image_size`` (H, W) -> B×N×C."""
        scale = coords_input.new_tensor([image_size[1], image_size[0]])
        return self._encode((coords_input / scale).float())


class PromptEncoder(nn.Module):
    """Points (label 1 foreground, 0 background, -1 padding, 2/3 box corners), boxes and masks
    to embeddings."""

    def __init__(
        self,
        *,
        embed_dim: int,
        image_embedding_size: tuple[int, int],
        input_image_size: tuple[int, int],
        mask_in_chans: int = 16,
    ) -> None:
        """Embeds points, boxes (sparse, B×T×C) and a mask (dense, B×C×h×w).

        Args:
            embed_dim: width C of every prompt embedding (256 official).
            image_embedding_size: (h, w) of the image embedding grid (64×64 official).
            input_image_size: (H, W) of the padded model input the coordinates refer to
                (1024×1024 official); points and boxes are XY pixels of that frame.
            mask_in_chans: hidden channels of the mask-downscaling convolutions; a mask prompt
                is B×1×4h×4w low-resolution logits.
        """
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = input_image_size
        self.image_embedding_size = image_embedding_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        # 0: background point, 1: foreground point, 2: box top-left, 3: box bottom-right
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def _token(self, i: int) -> torch.Tensor:
        """The learned 1×C embedding ``i`` (0 bg point, 1 fg point, 2/3 box corners)."""
        return cast(nn.Embedding, self.point_embeddings[i]).weight

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of the image embedding grid: 1×C×h×w."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        points = points + 0.5  # pixel centres
        if pad:
            # A padding point keeps the token count as if a box were given.
            points = torch.cat([points, points.new_zeros(points.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, -labels.new_ones(labels.shape[0], 1)], dim=1)
        emb = self.pe_layer.forward_with_coords(points, self.input_image_size)
        labels = labels[..., None]
        emb = torch.where(labels == -1, self.not_a_point_embed.weight, emb)
        emb = emb + torch.where(labels == 0, self._token(0), 0.0)
        emb = emb + torch.where(labels == 1, self._token(1), 0.0)
        # 2/3: a box's corners given as points (the official ONNX decoder's encoding).
        emb = emb + torch.where(labels == 2, self._token(2), 0.0)
        emb = emb + torch.where(labels == 3, self._token(3), 0.0)
        return emb

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        corners = (boxes + 0.5).reshape(-1, 2, 2)  # B×4 -> B×2 corners×XY
        emb = self.pe_layer.forward_with_coords(corners, self.input_image_size)
        corner_tokens = torch.cat([self._token(2), self._token(3)])  # 2×C
        return emb + corner_tokens

    def _batch_size(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> int:
        if points is not None:
            return points[0].shape[0]
        if boxes is not None:
            return boxes.shape[0]
        if masks is not None:
            return masks.shape[0]
        return 1

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """points (B×N×2 coords, B×N labels), boxes B×4, masks B×1×4h×4w ->
        sparse B×T×C tokens and dense B×C×h×w embeddings."""
        bs = self._batch_size(points, boxes, masks)
        device = self._token(0).device
        parts = [torch.empty((bs, 0, self.embed_dim), device=device)]
        if points is not None:
            parts.append(self._embed_points(points[0], points[1], pad=boxes is None))
        if boxes is not None:
            parts.append(self._embed_boxes(boxes))
        sparse = torch.cat(parts, dim=1)
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            h, w = self.image_embedding_size
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(bs, -1, h, w)
        return sparse, dense
