"""The prompt encoder + mask decoder as one traceable module with the official web-demo interface.

Inputs (batch 1; N points, official sizes in brackets):
  image_embeddings 1×C×h×w (1×256×64×64) float32, from the image encoder
  point_coords     1×N×2 float32, XY pixels in the model's input frame (after resize-longest-side)
  point_labels     1×N float32: 1 foreground, 0 background, 2/3 box top-left/bottom-right,
                   -1 padding (a not-a-point token; callers add one when no box is given)
  mask_input       1×1×4h×4w (1×1×256×256) float32 logits from an earlier call
  has_mask_input   1 float32, 1.0 to use ``mask_input``, 0.0 to ignore it
  orig_im_size     2 float32, (H, W) of the original image
Outputs:
  masks            1×K×H×W logits at the original size (threshold at 0 for a binary mask)
  iou_predictions  1×K
  low_res_masks    1×K×4h×4w logits (feed one back as ``mask_input``)
K = 1 with ``return_single_mask``, else all 4 mask tokens (token 0 is the single-mask output,
1–3 the multimask candidates), as in the official export.

The graph avoids data-dependent Python control flow so one trace serves any N and any image size;
it uses only standard ONNX ops (opset 17), which onnxruntime-web runs too.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from segany.modeling import Sam

#: Input and output names of the exported decoder (the official web demo's names).
DECODER_INPUTS = (
    "image_embeddings",
    "point_coords",
    "point_labels",
    "mask_input",
    "has_mask_input",
    "orig_im_size",
)
DECODER_OUTPUTS = ("masks", "iou_predictions", "low_res_masks")
DECODER_OUTPUTS_EXTRA = ("masks", "iou_predictions", "stability_scores", "areas", "low_res_masks")

_STABILITY_OFFSET = 1.0


def _float_stability_score(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """``segany.masks.stability_score`` with float pixel counts (exact up to 2**24 pixels):
    ...×H×W -> ...; float reductions keep the graph to ops every ONNX runtime supports."""
    high = (logits > threshold + offset).float().sum((-1, -2))
    low = (logits > threshold - offset).float().sum((-1, -2))
    return high / low


class SamOnnxDecoder(nn.Module):
    """Prompt encoding, mask decoding and upscaling to the original size, for ONNX export.

    ``return_single_mask``: pick one mask as the official demo does: the single-mask token when
    there are more than 2 points (padding included), else the best multimask candidate by score.
    ``use_stability_score``: score masks by stability instead of the IoU head.
    ``return_extra_metrics``: also output stability scores and areas of the upscaled masks.
    """

    def __init__(
        self,
        model: Sam,
        return_single_mask: bool,
        use_stability_score: bool = False,
        return_extra_metrics: bool = False,
    ) -> None:
        super().__init__()
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder
        self.img_size = int(model.image_size)
        self.mask_threshold = float(model.mask_threshold)
        self.return_single_mask = return_single_mask
        self.use_stability_score = use_stability_score
        self.return_extra_metrics = return_extra_metrics

    @property
    def input_names(self) -> tuple[str, ...]:
        return DECODER_INPUTS

    @property
    def output_names(self) -> tuple[str, ...]:
        return DECODER_OUTPUTS_EXTRA if self.return_extra_metrics else DECODER_OUTPUTS

    def _embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """1×N×2 input-frame XY, 1×N labels -> 1×N×C sparse tokens, without branches: each
        label selects its learned token by a 0/1 weight."""
        pe = self.prompt_encoder
        emb = pe.pe_layer.forward_with_coords(coords + 0.5, (self.img_size, self.img_size))
        labels = labels.unsqueeze(-1)  # 1×N×1, broadcast over channels
        emb = emb * (labels != -1).to(emb.dtype)
        emb = emb + pe.not_a_point_embed.weight * (labels == -1).to(emb.dtype)
        for i in range(len(pe.point_embeddings)):
            emb = emb + pe._token(i) * (labels == i).to(emb.dtype)
        return emb

    def _embed_mask(self, mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> torch.Tensor:
        """1×1×4h×4w logits and a 1-element 0/1 flag -> 1×C×h×w dense embedding."""
        pe = self.prompt_encoder
        no_mask = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return has_mask_input * pe.mask_downscaling(mask_input) + (1 - has_mask_input) * no_mask

    def _select_single(
        self, masks: torch.Tensor, scores: torch.Tensor, num_points: int | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """B×4×s×s, B×4 -> B×1×s×s, B×1. A ±1000 bias on token 0 (sign from the point count)
        chooses between the single-mask token and the best multimask one without control flow."""
        bias = torch.zeros(1, self.mask_decoder.num_mask_tokens)
        bias[0, 0] = 1000.0  # built eagerly: a constant in the graph
        idx = torch.argmax(scores + (num_points - 2.5) * bias, dim=1, keepdim=True)  # B×1
        scores = torch.gather(scores, 1, idx)
        h, w = masks.shape[-2:]
        masks = torch.gather(masks, 1, idx[:, :, None, None].expand(-1, -1, h, w))
        return masks, scores

    def _upscale(self, masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        """B×K×s×s low-res logits -> B×K×H×W: to the padded input square, crop the padding
        (the resize-longest-side size, rounded half up), then to the original size."""
        size = self.img_size
        masks = F.interpolate(masks, (size, size), mode="bilinear", align_corners=False)
        orig = orig_im_size.to(torch.float32)
        input_hw = torch.floor(orig * (size / orig.max()) + 0.5).to(torch.int64)
        masks = masks[..., : input_hw[0], : input_hw[1]]
        orig_hw = orig_im_size.to(torch.int64)
        # Tensor sizes (not ints) keep the output size an input of the traced graph.
        out_hw = (orig_hw[0], orig_hw[1])
        return F.interpolate(masks, size=out_hw, mode="bilinear", align_corners=False)  # type: ignore[arg-type]

    @torch.no_grad()
    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        """See the module docstring for shapes; returns the tensors named by ``output_names``."""
        sparse = self._embed_points(point_coords, point_labels)
        dense = self._embed_mask(mask_input, has_mask_input)
        low_res, scores = self.mask_decoder.predict_masks(
            image_embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense
        )
        if self.use_stability_score:
            scores = _float_stability_score(low_res, self.mask_threshold, _STABILITY_OFFSET)
        if self.return_single_mask:
            low_res, scores = self._select_single(low_res, scores, point_coords.shape[1])
        masks = self._upscale(low_res, orig_im_size)
        if self.return_extra_metrics:
            stability = _float_stability_score(masks, self.mask_threshold, _STABILITY_OFFSET)
            areas = (masks > self.mask_threshold).sum((-1, -2))  # int64 pixel counts
            return masks, scores, stability, areas, low_res
        return masks, scores, low_res
