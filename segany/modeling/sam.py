"""``Sam``: encoder, prompt encoder and decoder tied together with pre- and post-processing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn import functional as F

from segany.modeling.families import family_of_module
from segany.modeling.mask_decoder import MaskDecoder
from segany.modeling.mask_decoder_hq import MaskDecoderHQ
from segany.modeling.prompt_encoder import PromptEncoder

if TYPE_CHECKING:
    from segany.config import SamConfig


class Sam(nn.Module):
    """Segment Anything: ``forward`` takes a batch of images with their prompts;
    ``image_encoder``, ``prompt_encoder`` and ``mask_decoder`` can be called one by one (as the
    Predictor does). Attribute names follow the official checkpoint keys."""

    mask_threshold: float = 0.0
    image_format: str = "RGB"

    def __init__(
        self,
        *,
        image_encoder: nn.Module,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        pixel_mean: tuple[float, float, float],
        pixel_std: tuple[float, float, float],
        mask_threshold: float = 0.0,
    ) -> None:
        """The whole model: image encoder, prompt encoder and mask decoder.

        Args:
            image_encoder: B×3×S×S normalised padded images -> B×C×h×w embeddings; any
                module of a registered encoder family (``segany.modeling.families``), with
                ``img_size`` = S.
            prompt_encoder: points / boxes / mask logits -> sparse B×T×C and dense B×C×h×w.
            mask_decoder: embeddings + prompts -> low-res mask logits B×M×4h×4w and IoU B×M.
            pixel_mean: per-channel RGB mean subtracted from 0-255 pixels.
            pixel_std: per-channel RGB standard deviation the pixels are divided by.
            mask_threshold: logit above which a pixel belongs to the mask (0.0).
        """
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.mask_threshold = mask_threshold
        # Not saved in checkpoints (the official files do not carry them).
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.pixel_mean: torch.Tensor
        self.pixel_std: torch.Tensor
        # The config it was built from, set by segany.models.build_sam (the import of SamConfig
        # is for type checkers only: modeling/ still runs without the rest of segany).
        self.config: SamConfig | None = None
        # Segment-everything thresholds recommended by the file the weights came from (a small
        # model's scores are less certain than the official ones); generator policy, kept out
        # of the config. Read by ``MaskGenerator.for_model``; empty when none.
        self.generator_defaults: dict[str, float] = {}

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def image_size(self) -> int:
        """Side of the square frame that prompts, ``input_size`` and upscaled masks live in (the
        prompt encoder's input size; 1024 for every published model)."""
        return int(self.prompt_encoder.input_image_size[0])

    @property
    def is_hq(self) -> bool:
        """Whether the decoder is SAM-HQ's (``MaskDecoderHQ``): it reads the encoder's early
        feature map beside the embedding, and answers with one mask per prompt."""
        return isinstance(self.mask_decoder, MaskDecoderHQ)

    @property
    def is_sam2(self) -> bool:
        """Whether this is SAM 2's image model (``segany.modeling.sam2_model.Sam2``)."""
        return False

    @property
    def needs_early(self) -> bool:
        """Whether the decoder reads a second image map made by the encoder beside the
        embedding (the family's ``forward_with_early``): SAM-HQ's early feature map, SAM 2's
        packed high-resolution features."""
        return self.is_hq or self.is_sam2

    @property
    def early_shape(self) -> tuple[int, int, int]:
        """(h', w', E) of that second map for one image (SAM-HQ: the embedding's grid and the
        encoder's early width; SAM 2: twice the grid, 3/4 of the prompt width)."""
        h, w = self.prompt_encoder.image_embedding_size
        decoder = self.mask_decoder
        if isinstance(decoder, MaskDecoderHQ):
            return h, w, decoder.vit_dim
        if self.is_sam2:
            c = self.prompt_encoder.embed_dim
            return 2 * h, 2 * w, c // 2 + c // 4
        raise ValueError("this model's decoder reads the embedding alone")

    @property
    def encoder_size(self) -> int:
        """Side S of the square padded image the encoder reads: ``image_size`` for most models,
        smaller for some (EfficientViT-SAM l0-l2 read 512 px and answer in a 1024 frame)."""
        return int(self.image_encoder.img_size)  # type: ignore[arg-type]

    def input_size_of(
        self, resized: tuple[int, ...], original_size: tuple[int, ...]
    ) -> tuple[int, int]:
        """``input_size`` in the prompt frame of an image resized to ``resized`` (h, w; longest
        side ``encoder_size``) from ``original_size``: ``resized`` itself when the encoder reads
        the frame, else the original resized so its longest side is ``image_size``."""
        if self.encoder_size == self.image_size:
            return int(resized[0]), int(resized[1])
        h, w = int(original_size[0]), int(original_size[1])
        scale = self.image_size / max(h, w)
        return int(h * scale + 0.5), int(w * scale + 0.5)

    def encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        """B×3×F×F normalised images padded to the frame (F = ``image_size``; how training
        prepares them) -> B×3×S×S for the encoder (S = ``encoder_size``): ``x`` itself when
        S == F, else downscaled (bilinear, antialiased). Inference resizes the uint8 image
        instead, as the official predictors do."""
        if self.encoder_size == x.shape[-1]:
            return x
        size = (self.encoder_size, self.encoder_size)
        return F.interpolate(x, size, mode="bilinear", align_corners=False, antialias=True)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """B×3×h×w float pixels (0-255) -> normalised and zero-padded to B×3×S×S
        (S = ``encoder_size``)."""
        x = (x - self.pixel_mean) / self.pixel_std
        size = self.encoder_size
        return F.pad(x, (0, size - x.shape[-1], 0, size - x.shape[-2]))

    def postprocess_masks(
        self,
        masks: torch.Tensor,
        input_size: tuple[int, ...],
        original_size: tuple[int, ...],
    ) -> torch.Tensor:
        """B×M×s×s low-res logits -> B×M×H×W logits at the original image size.

        Upscale to the padded input square, crop the padding, then resize to the original size.
        """
        size = self.image_size
        masks = F.interpolate(masks, (size, size), mode="bilinear", align_corners=False)
        masks = masks[..., : input_size[0], : input_size[1]]
        return F.interpolate(
            masks,
            (int(original_size[0]), int(original_size[1])),
            mode="bilinear",
            align_corners=False,
        )

    @torch.no_grad()
    def forward(
        self,
        batched_input: list[dict[str, Any]],
        multimask_output: bool,
        hq_token_only: bool = False,
    ) -> list[dict[str, torch.Tensor]]:
        """The official batched call: one dict per image with ``image`` (3×h×w, already resized
        so its longest side is ``encoder_size``),
        ``original_size`` and optional ``point_coords`` (B×N×2), ``point_labels`` (B×N),
        ``boxes`` (B×4), ``mask_inputs`` (B×1×256×256), all in the input frame.
        Returns per image ``masks`` (B×M×H×W bool), ``iou_predictions`` (B×M),
        ``low_res_logits`` (B×M×256×256). Runs without autograd, as the official one does
        (training code calls the submodules). A SAM-HQ model answers with M = 1 and takes
        ``hq_token_only`` as SAM-HQ's ``Sam.forward`` does."""
        if hq_token_only and not self.is_hq:
            raise ValueError("hq_token_only=True needs a SAM-HQ model; this decoder is SAM's")
        images = torch.stack([self.preprocess(x["image"][None])[0] for x in batched_input])
        early = None
        if self.is_hq:  # SAM-HQ's decoder also reads the encoder's early feature map
            family = family_of_module(self.image_encoder)
            if family is None:
                raise ValueError("a SAM-HQ model needs an encoder of a registered family")
            embeddings, early = family.forward_with_early(self.image_encoder, images)
        else:
            embeddings = self.image_encoder(images)
        outputs = []
        for i, (record, embedding) in enumerate(zip(batched_input, embeddings, strict=True)):
            hq_args: dict[str, Any] = {}
            if early is not None:
                hq_args = {"hq_token_only": hq_token_only, "interm_embeddings": [early[i : i + 1]]}
            points = None
            if "point_coords" in record:
                points = (record["point_coords"], record["point_labels"])
            sparse, dense = self.prompt_encoder(
                points=points, boxes=record.get("boxes"), masks=record.get("mask_inputs")
            )
            low_res, iou = self.mask_decoder(
                embedding.unsqueeze(0),
                self.prompt_encoder.get_dense_pe(),
                sparse,
                dense,
                multimask_output,
                **hq_args,
            )
            input_size = self.input_size_of(record["image"].shape[-2:], record["original_size"])
            masks = self.postprocess_masks(low_res, input_size, record["original_size"])
            outputs.append(
                {
                    "masks": masks > self.mask_threshold,
                    "iou_predictions": iou,
                    "low_res_logits": low_res,
                }
            )
        return outputs
