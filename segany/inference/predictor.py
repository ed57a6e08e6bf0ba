"""The promptable Predictor: compute an image embedding once, then decode prompts against it.

Conventions: points are XY pixels of the original image, boxes XYXY, labels 1 (foreground),
0 (background) or -1 (padding: a not-a-point token, as the model adds itself when no box is
given; it lets point sets of different lengths share one batch).
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import ArrayLike

from segany.errors import InputError
from segany.images import ImageLike, to_rgb_uint8
from segany.inference.column_masks import ColumnMasks
from segany.inference.embedding_cache import EmbeddingCache, ImageEmbedding, resolve_cache
from segany.inference.precision import encode, encode_with_early, resolve_precision
from segany.inference.prediction import Prediction
from segany.inference.protocol import PredictorLike
from segany.limits import check_mask_volume, check_size_pair
from segany.modeling import Sam, Sam2
from segany.modeling.mask_decoder_sam2_shared import Sam2PointDecoder
from segany.modeling.mask_decoder_shared import PointDecoder
from segany.modeling.sam_upscale import upscale_logits
from segany.prompts import (
    PromptBatch,
    check_embedding,
    check_input_size,
    check_prompts,
    check_torch_prompts,
)
from segany.transforms import ResizeLongestSide, ResizeSquare

if TYPE_CHECKING:
    from segany.export.runtime import OnnxPredictor


@dataclass(frozen=True)
class _ImageState:
    """What set_image leaves behind: the 1×C×h×w embedding, the two sizes (H, W) and, for
    models whose decoder reads a second map (``Sam.needs_early``), that 1×h'×w'×E map: SAM-HQ's
    early feature map, SAM 2's packed high-resolution features."""

    features: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    early: torch.Tensor | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "original_size", tuple(int(v) for v in self.original_size))
        object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))


def as_model(model: Any) -> Sam:
    """``model`` when it is a SAM model; a variant name or weights path (``"vit_b"``, a
    ``.pth``) is loaded with ``segany.load_model``, as ``from_pretrained`` users expect; anything
    else is a ``TypeError`` that says what to pass."""
    if isinstance(model, Sam):
        return model
    if isinstance(model, (str, os.PathLike)):
        from segany.checkpoints import load_model

        return load_model(model)
    raise TypeError(
        "the model of a Predictor or MaskGenerator must be a SAM model (segany.load_model(...)), "
        f"or a variant name or weights path to load; got {type(model).__name__} {model!r:.80}"
    )


@dataclass
class _ImageParts:
    """The pieces of an image state assigned attribute by attribute, until it is complete."""

    features: torch.Tensor | None = None
    original_size: tuple[int, int] | None = None
    input_size: tuple[int, int] | None = None


class Predictor(PredictorLike):
    """Official ``SamPredictor`` semantics, plus batched prompts and an embedding cache.

    ``cache_size`` > 0 keeps that many image embeddings in memory keyed by the image's content,
    so setting an image seen before skips the encoder. ``cache``: an on-disk embedding cache
    shared across processes and runs (``segany.inference.embedding_cache``): a folder or an
    ``EmbeddingCache``; None (default) uses ``$SEGANY_CACHE`` when set; False turns it off.
    ``precision``: "fp32" (default; matches the official model to ~1e-6), "bf16" (a bf16 copy
    of the encoder) or "fp16" (encoder under autocast): several times faster on CPUs with the
    matrix units and on GPUs, warning once where only emulated; "int8" (encoder Linear layers
    dynamically quantised; CPU), or "auto" (bf16 where it runs natively, else int8 where it is
    faster than fp32, else fp32; see ``segany.inference.precision``).
    ``self.precision`` is the resolved mode. Measured deviations from fp32 are in the README;
    see ``segany.inference.precision``. The decoder always runs in fp32. ``compile``: run the
    encoder through ``torch.compile`` (off by default: on the CPUs measured it was no faster
    than the eager path and took ~1 minute to compile the bundled model; it may help on a GPU).
    """

    decode_chunk = 4  # prompts per decoder call on CPU (see predict_torch)

    def __init__(
        self,
        model: Sam | str | os.PathLike[str],
        *,
        cache_size: int = 0,
        precision: str = "fp32",
        cache: EmbeddingCache | str | os.PathLike[str] | bool | None = None,
        compile: bool = False,
    ) -> None:
        model = as_model(model)
        if isinstance(cache_size, bool) or not isinstance(cache_size, (int, np.integer)):
            raise InputError(f"cache_size must be a whole number >= 0, got {cache_size!r}")
        if cache_size < 0:
            raise InputError(f"cache_size must be >= 0 (0 keeps no embeddings), got {cache_size}")
        self.model = model
        self.compile = bool(compile)
        self.disk_cache = resolve_cache(cache)
        self.precision = resolve_precision(precision, model.device)
        # Prompts live in the model's frame; the image is resized for its encoder (the same
        # size except for models whose encoder reads a smaller image, e.g. EfficientViT-SAM l0).
        # SAM 2 stretches the image to its square frame instead.
        resize = ResizeSquare if model.is_sam2 else ResizeLongestSide
        self.transform = resize(model.image_size)
        self._image_transform = resize(model.encoder_size)
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[str, _ImageState]
        self._cache = OrderedDict()
        self._image: _ImageState | None = None
        self._parts = _ImageParts()  # official-style attributes assigned one at a time
        self._decoder: tuple[_ImageState, PointDecoder] | None = None

    @classmethod
    def from_onnx(
        cls,
        encoder: str | os.PathLike[str],
        decoder: str | os.PathLike[str] | None = None,
        **kw: Any,
    ) -> OnnxPredictor:
        """The onnxruntime backend (``segany.export.OnnxPredictor``, the ``onnx`` extra): the same
        ``set_image``/``predict`` semantics with numpy and onnxruntime only. ``encoder``: a folder
        written by ``segany.export.export_pair``, or the encoder file with ``decoder``'s."""
        from segany.export.runtime import OnnxPredictor

        if decoder is None:
            return OnnxPredictor.from_dir(encoder, **kw)
        return OnnxPredictor(encoder, decoder, **kw)

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ----- image -------------------------------------------------------------------------
    def set_image(self, image: ImageLike, image_format: str = "RGB") -> None:
        """Compute the embedding of ``image`` (see ``segany.images`` for accepted inputs)."""
        rgb = to_rgb_uint8(image, image_format)
        key = None
        if self.cache_size > 0:
            key = hashlib.sha1(rgb.tobytes() + str(rgb.shape).encode()).hexdigest()
            if key in self._cache:
                self._cache.move_to_end(key)
                self._image = self._cache[key]
                return
        disk_key = None if self.disk_cache is None else self._from_disk(rgb)
        if disk_key != "hit" and isinstance(self.model, Sam2):
            # SAM 2 resizes the float image (antialiased), as its official predictor does.
            pixels = torch.tensor(rgb, device=self.device).permute(2, 0, 1)[None]
            size = (self.model.image_size, self.model.image_size)
            self._encode(self.model.prepare_image(pixels), rgb.shape[:2], size)
            self._store(disk_key)
        elif disk_key != "hit":
            resized = self._image_transform.apply_image(rgb)
            # h×w×3 uint8 -> 1×3×h×w
            tensor = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()
            self.set_torch_image(tensor[None], rgb.shape[:2])
            self._store(disk_key)
        if key is not None:
            self._cache[key] = self._require_image()
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def _store(self, disk_key: str | None) -> None:
        """Put the current image's state in the disk cache under ``disk_key`` (if any)."""
        if disk_key is not None and self.disk_cache is not None:
            state = self._require_image()
            entry = ImageEmbedding(
                state.features, state.original_size, state.input_size, state.early
            )
            self.disk_cache.put(disk_key, entry)

    def _from_disk(self, rgb: np.ndarray) -> str:
        """Set the image from the disk cache and return "hit", or return the key to store."""
        assert self.disk_cache is not None
        key = self.disk_cache.key(rgb, self.model, self.precision)
        hit = self.disk_cache.get(key)
        pe = self.model.prompt_encoder
        if hit is None or tuple(hit.features.shape) != (1, pe.embed_dim, *pe.image_embedding_size):
            return key
        if self.model.needs_early and (
            hit.early is None or tuple(hit.early.shape) != (1, *self.model.early_shape)
        ):
            return key  # SAM-HQ's and SAM 2's decoders need their second map too
        early = (
            None if hit.early is None or not self.model.needs_early else hit.early.to(self.device)
        )
        self.reset_image()
        self._image = _ImageState(
            hit.features.to(self.device), hit.original_size, hit.input_size, early
        )
        return "hit"

    @torch.inference_mode()
    def set_torch_image(
        self, transformed_image: torch.Tensor, original_image_size: tuple[int, ...]
    ) -> None:
        """1×3×h×w image already resized so its longest side is the size the model's encoder
        reads (``model.encoder_size``: the frame size ``model.image_size`` for most models)."""
        if transformed_image.ndim != 4 or transformed_image.shape[:2] != (1, 3):
            raise InputError(
                f"expected a 1×3×h×w tensor, got shape {tuple(transformed_image.shape)}"
            )
        side = self.model.encoder_size
        if self.model.is_sam2 and tuple(transformed_image.shape[2:]) != (side, side):
            raise InputError(
                f"SAM 2 reads {side}×{side} images (stretched, the aspect ratio not kept), got "
                f"{tuple(transformed_image.shape[2:])}; resize with predictor.transform first"
            )
        if max(transformed_image.shape[2:]) != side:
            how = (
                "predictor.transform"
                if side == self.model.image_size
                else (f"ResizeLongestSide({side}) (this model's encoder reads {side}-px images)")
            )
            raise InputError(
                f"the longest side must be {side}, got "
                f"{tuple(transformed_image.shape[2:])}; resize with {how} first"
            )
        if transformed_image.is_complex() or not torch.isfinite(transformed_image).all():
            raise InputError("the image tensor must hold finite real values (no NaN/inf)")
        original = (int(original_image_size[0]), int(original_image_size[1]))
        input_size = self.model.input_size_of(transformed_image.shape[2:], original)
        x = self.model.preprocess(transformed_image.to(self.device, torch.float32))
        self._encode(x, original, input_size)

    @torch.inference_mode()
    def _encode(
        self, x: torch.Tensor, original: tuple[int, ...], input_size: tuple[int, ...]
    ) -> None:
        """Encode the normalised 1×3×S×S image ``x`` and make it the current image."""
        self.reset_image()
        original = (int(original[0]), int(original[1]))
        size = (int(input_size[0]), int(input_size[1]))
        if self.model.needs_early:  # SAM-HQ's and SAM 2's decoders read a second map
            features, early = encode_with_early(self.model, x, self.precision, self.compile)
            # Contiguous, as a cached embedding reads back: the decoder's kernels (and so its
            # last bits) depend on the layout (Hiera's neck leaves channels-last memory).
            self._image = _ImageState(features.contiguous(), original, size, early)
            return
        features = encode(self.model, x, self.precision, self.compile)
        self._image = _ImageState(features.float(), original, size)

    # The official predictor's public attributes. Tools that cache embeddings assign them one by
    # one (``features``, ``original_size``, ``input_size``, then ``is_image_set = True``); the
    # image counts as set once ``features`` and ``original_size`` are there (``input_size``
    # defaults to the resized original) and every assignment is checked like
    # ``set_image_embedding``.
    @property
    def is_image_set(self) -> bool:
        return self._image is not None

    @is_image_set.setter
    def is_image_set(self, value: bool) -> None:
        if not value:
            self.reset_image()
        elif self._image is None:
            missing = [k for k in ("features", "original_size") if getattr(self._parts, k) is None]
            raise InputError(
                f"is_image_set = True needs {' and '.join(missing)} set first "
                "(or call set_image / set_image_embedding)"
            )

    @property
    def features(self) -> torch.Tensor | None:
        return self._state_part("features")

    @features.setter
    def features(self, value: torch.Tensor | None) -> None:
        self._set_state_part("features", value)

    @property
    def original_size(self) -> tuple[int, int] | None:
        return self._state_part("original_size")

    @original_size.setter
    def original_size(self, value: tuple[int, int] | None) -> None:
        self._set_state_part("original_size", value)

    @property
    def input_size(self) -> tuple[int, int] | None:
        return self._state_part("input_size")

    @input_size.setter
    def input_size(self, value: tuple[int, int] | None) -> None:
        self._set_state_part("input_size", value)

    @property
    def orig_h(self) -> int | None:
        return None if self.original_size is None else self.original_size[0]

    @property
    def orig_w(self) -> int | None:
        return None if self.original_size is None else self.original_size[1]

    @property
    def input_h(self) -> int | None:
        return None if self.input_size is None else self.input_size[0]

    @property
    def input_w(self) -> int | None:
        return None if self.input_size is None else self.input_size[1]

    def _state_part(self, name: str) -> Any:
        return getattr(self._image if self._image is not None else self._parts, name)

    def _set_state_part(self, name: str, value: Any) -> None:
        if self._image is not None:
            img = self._image
            self._parts = _ImageParts(img.features, img.original_size, img.input_size)
            self._image = None
        if value is not None and name != "features":
            value = tuple(int(v) for v in value)  # a torch.Size or list is fine
        setattr(self._parts, name, value)
        parts = self._parts
        if parts.features is not None and parts.original_size is not None:
            self.set_image_embedding(parts.features, parts.original_size, parts.input_size)

    def get_image_embedding(self) -> torch.Tensor:
        """The current image embedding: 1×C×h×w (1×256×64×64 for the official models)."""
        return self._require_image().features

    def get_early_features(self) -> torch.Tensor:
        """SAM-HQ models: the encoder's early feature map of the current image, 1×h×w×E
        (1×64×64×768 for sam_hq_vit_b), which its decoder reads beside the embedding. SAM 2
        models: the decoder's high-resolution features packed in one map, 1×128×128×192
        (``segany.modeling.hiera.pack_high_res``)."""
        state = self._require_image()
        if not self.model.needs_early:
            raise InputError(
                "only SAM-HQ models (and SAM 2's, whose high-resolution features take its "
                "place) have an early feature map; this one is SAM's"
            )
        if state.early is None:
            raise InputError(_NO_EARLY)
        return state.early

    def shared_decoder(self) -> PointDecoder:
        """The mask decoder for the current image with its prompt-independent work done once
        (``PointDecoder``; SAM 2 models: ``Sam2PointDecoder``), made on the first prompt and
        kept until the image changes; the automatic generator decodes its grid with it."""
        return self._shared_decoder(self._require_image())

    def set_image_embedding(
        self,
        embedding: torch.Tensor | np.ndarray,
        original_size: tuple[int, int],
        input_size: tuple[int, int] | None = None,
        *,
        early: torch.Tensor | np.ndarray | None = None,
    ) -> None:
        """Reuse a stored embedding (1×C×h×w or C×h×w) for an image of ``original_size``;
        SAM-HQ and SAM 2 models predict only with ``early`` too (``get_early_features``:
        1×h'×w'×E or h'×w'×E)."""
        pe = self.model.prompt_encoder
        emb = check_embedding(embedding, (1, pe.embed_dim, *pe.image_embedding_size))
        early_map = None
        if early is not None:
            if not self.model.needs_early:
                raise InputError(
                    "early= is for SAM-HQ models and SAM 2 models; this model's decoder is SAM's"
                )
            shape = (1, *self.model.early_shape)
            try:
                early_map = check_embedding(early, shape).to(self.device, torch.float32)
            except InputError as e:  # its message names "embedding"; say which one
                raise InputError(f"early (the encoder's early feature map): {e}") from None
        original_size = check_size_pair(original_size, what="original_size")
        if input_size is None:
            input_size = self.transform.get_preprocess_shape(
                original_size[0], original_size[1], self.transform.target_length
            )
        input_size = check_input_size(input_size, self.transform.target_length)
        self.reset_image()
        self._image = _ImageState(
            emb.to(self.device, torch.float32), original_size, input_size, early_map
        )

    def embed_images(
        self, images: Sequence[ImageLike], *, batch_size: int = 2, image_format: str = "RGB"
    ) -> list[ImageEmbedding]:
        """Embeddings of several images, encoded ``batch_size`` at a time (the disk cache is
        used and filled); the current image is left alone. Each result can be made current
        with ``set_embedding``."""
        from segany.inference.batch_embed import embed_images

        return embed_images(
            self.model,
            images,
            transform=self._image_transform,
            precision=self.precision,
            cache=self.disk_cache,
            batch_size=batch_size,
            image_format=image_format,
            compiled=self.compile,
        )

    def set_images(
        self, images: Sequence[ImageLike], *, batch_size: int = 2, image_format: str = "RGB"
    ) -> list[ImageEmbedding]:
        """``embed_images``, then make the first image current; returns all the embeddings."""
        embeddings = self.embed_images(images, batch_size=batch_size, image_format=image_format)
        if embeddings:
            self.set_embedding(embeddings[0])
        return embeddings

    def set_embedding(self, embedding: ImageEmbedding) -> None:
        """Make an ``ImageEmbedding`` (from ``embed_images``) the current image."""
        self.set_image_embedding(
            embedding.features, embedding.original_size, embedding.input_size, early=embedding.early
        )

    def reset_image(self) -> None:
        self._image = None
        self._parts = _ImageParts()
        self._decoder = None

    def _require_image(self) -> _ImageState:
        if self._image is None:
            raise InputError("no image is set: call set_image(...) before predicting")
        return self._image

    # ----- prompts -----------------------------------------------------------------------
    def predict(
        self,
        point_coords: ArrayLike | None = None,
        point_labels: ArrayLike | None = None,
        box: ArrayLike | None = None,
        mask_input: ArrayLike | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        *,
        batched: bool | None = None,
        hq_token_only: bool = False,
    ) -> Prediction:
        """Decode prompts given in original-image pixels.

        point_coords N×2 or B×N×2, point_labels N or B×N, box 4 or B×4 (XYXY),
        mask_input 1×s×s or B×1×s×s logits from an earlier call (s = 256 officially).
        Output is batched (leading B axis) when a prompt carries a batch axis of size > 1,
        point_coords is B×N×2, or ``batched=True``; a single 1×4 box stays unbatched, as in the
        official predictor. SAM-HQ models answer with one mask per prompt (see
        ``predict_torch``) and take ``hq_token_only`` as SAM-HQ's predictor does.
        """
        state = self._require_image()
        prompts = check_prompts(
            point_coords,
            point_labels,
            box,
            mask_input,
            low_res_size=self.model.prompt_encoder.mask_input_size,
        )
        masks, scores, logits = self.predict_torch(
            *self._to_model_frame(prompts, state.original_size),
            multimask_output=multimask_output,
            return_logits=return_logits,
            hq_token_only=hq_token_only,
        )
        out_batched = prompts.batched if batched is None else batched
        if not out_batched and masks.shape[0] != 1:
            raise InputError("batched=False needs prompts for a single mask set")
        sel = slice(None) if out_batched else 0
        return Prediction(
            masks=masks[sel].cpu().numpy(),
            scores=scores[sel].float().cpu().numpy(),
            logits=logits[sel].float().cpu().numpy(),
        )

    def _to_model_frame(self, p: PromptBatch, size: tuple[int, int]) -> tuple[Any, Any, Any, Any]:
        coords = labels = boxes = masks = None
        dev = self.device
        if p.point_coords is not None:
            coords = torch.as_tensor(
                self.transform.apply_coords(p.point_coords, size),
                dtype=torch.float,
                device=dev,
            )
            labels = torch.as_tensor(p.point_labels, dtype=torch.int, device=dev)
        if p.boxes is not None:
            boxes = torch.as_tensor(
                self.transform.apply_boxes(p.boxes, size),
                dtype=torch.float,
                device=dev,
            )
        if p.mask_input is not None:
            masks = torch.as_tensor(p.mask_input, dtype=torch.float, device=dev)
        return coords, labels, boxes, masks

    @torch.inference_mode()
    def predict_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        hq_token_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Prompts already in the model's input frame (see ``predictor.transform``):
        point_coords B×N×2, point_labels B×N, boxes B×4, mask_input B×1×s×s.
        Inputs with batch 1 are shared across the batch of the others.
        Returns masks B×C×H×W (bool, or logits with ``return_logits``), IoU predictions B×C
        and low-res logits B×C×s×s, with C = 3 when ``multimask_output`` else 1.
        SAM-HQ models: C = 1, SAM's single mask or (``multimask_output``) its multimask mask
        with the highest predicted IoU, plus the HQ token's mask; ``hq_token_only``: the HQ
        mask alone (an error for other models)."""
        state = self._require_image()
        early = self._early_check(state, hq_token_only)
        check_torch_prompts(
            point_coords,
            point_labels,
            boxes,
            mask_input,
            low_res_size=self.model.prompt_encoder.mask_input_size,
        )
        batch = max((len(t) for t in (point_coords, boxes, mask_input) if t is not None), default=1)
        check_mask_volume(batch, 3 if multimask_output else 1, *state.original_size)
        b, coords, labels, boxes, mask_input = _grown(point_coords, point_labels, boxes, mask_input)
        model = self.model
        if isinstance(model, Sam2):
            assert early is not None
            return self._predict_sam2(
                model,
                state,
                early,
                coords,
                labels,
                boxes,
                mask_input,
                multimask_output,
                return_logits,
            )
        low_res, iou = self._decode(
            state, early, b, coords, labels, boxes, mask_input, multimask_output, hq_token_only
        )
        # One banded operator per axis, the official two resizes' values
        # (segany.modeling.sam_upscale); binary masks are thresholded block by block, without
        # full-size float logits.
        masks = upscale_logits(
            low_res,
            state.input_size,
            state.original_size,
            model.image_size,
            threshold=None if return_logits else model.mask_threshold,
        )
        return masks, iou, low_res

    @torch.inference_mode()
    def predict_lazy(
        self,
        point_coords: ArrayLike | None = None,
        point_labels: ArrayLike | None = None,
        box: ArrayLike | None = None,
        mask_input: ArrayLike | None = None,
        multimask_output: bool = True,
        *,
        hq_token_only: bool = False,
    ) -> Prediction:
        """``predict`` (one prompt set; SAM and SAM-HQ models) with masks made only when read,
        a block of columns at a time (``segany.inference.column_masks.ColumnMasks``, C×H×W):
        for an image so large that its full-size masks would not fit in memory, whose masks
        are wanted as RLE or boxes (``segany.masks.place_rle`` and ``ColumnMasks.stats`` read
        them by columns). The same scores, logits and mask values as ``predict``."""
        state = self._require_image()
        if isinstance(self.model, Sam2):
            raise InputError("predict_lazy answers SAM and SAM-HQ models; use predict for SAM 2")
        early = self._early_check(state, hq_token_only)
        prompts = check_prompts(
            point_coords,
            point_labels,
            box,
            mask_input,
            low_res_size=self.model.prompt_encoder.mask_input_size,
        )
        if prompts.batched:
            raise InputError("predict_lazy answers one prompt set, not a batch")
        b, coords, labels, boxes, masks = _grown(
            *self._to_model_frame(prompts, state.original_size)
        )
        low_res, iou = self._decode(
            state, early, b, coords, labels, boxes, masks, multimask_output, hq_token_only
        )
        lazy = ColumnMasks(
            low_res[0],
            state.input_size,
            state.original_size,
            self.model.image_size,
            float(self.model.mask_threshold),
        )
        return Prediction(
            masks=lazy,  # type: ignore[arg-type]
            scores=iou[0].float().cpu().numpy(),
            logits=low_res[0].float().cpu().numpy(),
        )

    def _decode(
        self,
        state: _ImageState,
        early: torch.Tensor | None,
        b: int,
        coords: torch.Tensor | None,
        labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        multimask_output: bool,
        hq_token_only: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM's and SAM-HQ's decoder on B prompts (each given with B rows): low-res logits
        B×C×s×s and IoU predictions B×C."""
        model = self.model
        # Without a mask input, decode with the image-side work shared by every prompt and
        # call on this image, and only the requested mask outputs upscaled (same values).
        shared = None if mask_input is not None else self._shared_decoder(state)
        low_parts, iou_parts = [], []
        # Decode a few prompts at a time: each prompt's B×4096×C working set then stays in the
        # CPU cache, which makes 16 prompts ~1.5x faster than one 16-wide batch (same results).
        # On GPUs one wide batch is what is fast.
        chunk = self.decode_chunk if self.device.type == "cpu" else b
        for start in range(0, b, chunk):
            rows = slice(start, start + chunk)
            points = None
            if coords is not None and labels is not None:
                points = (coords[rows], labels[rows])
            sparse, dense = model.prompt_encoder(
                points=points,
                boxes=None if boxes is None else boxes[rows],
                masks=None if mask_input is None else mask_input[rows],
            )
            if shared is not None:
                low, iou = shared.decode(sparse, multimask_output, hq_token_only)
            else:
                hq_args: dict[str, Any] = {}
                if early is not None:
                    hq_args = {"hq_token_only": hq_token_only, "interm_embeddings": [early]}
                low, iou = model.mask_decoder(
                    image_embeddings=state.features,
                    image_pe=model.prompt_encoder.get_dense_pe(),
                    sparse_prompt_embeddings=sparse,
                    dense_prompt_embeddings=dense,
                    multimask_output=multimask_output,
                    **hq_args,
                )
            low_parts.append(low)
            iou_parts.append(iou)
        return torch.cat(low_parts), torch.cat(iou_parts)

    def _predict_sam2(
        self,
        model: Sam2,
        state: _ImageState,
        high_res: torch.Tensor,
        coords: torch.Tensor | None,
        labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        multimask_output: bool,
        return_logits: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``predict_torch`` for SAM 2, as ``SAM2ImagePredictor._predict``: boxes become corner
        points ahead of the clicks, masks are the low-res logits resized straight to the
        original size, the low-res logits returned are clamped to [-32, 32]. Without a mask
        input the prompts decode with the image-side work shared by every prompt and call on
        this image (``Sam2PointDecoder``, the same values)."""
        b = max((len(t) for t in (coords, boxes, mask_input) if t is not None), default=1)
        shared = None if mask_input is not None else self._shared_decoder(state)
        low_parts, iou_parts = [], []
        chunk = self.decode_chunk if self.device.type == "cpu" else b
        for start in range(0, b, chunk):
            rows = slice(start, start + chunk)
            points = model.merge_boxes(
                None if coords is None else coords[rows],
                None if labels is None else labels[rows],
                None if boxes is None else boxes[rows],
            )
            if shared is not None:
                sparse, _ = model.prompt_encoder(points=points, boxes=None, masks=None)
                low, iou = shared.decode(sparse, multimask_output)
            else:
                low, iou = model.decode(
                    state.features,
                    high_res,
                    points,
                    None if mask_input is None else mask_input[rows],
                    multimask_output,
                )
            low_parts.append(low)
            iou_parts.append(iou)
        low_res, iou = torch.cat(low_parts), torch.cat(iou_parts)
        masks = model.postprocess_masks(low_res, state.input_size, state.original_size)
        if not return_logits:
            masks = masks > model.mask_threshold
        return masks, iou, low_res.clamp(-32.0, 32.0)

    def _shared_decoder(self, state: _ImageState) -> PointDecoder:
        """The decoder with this image's prompt-independent work done (made once per image)."""
        if self._decoder is None or self._decoder[0] is not state:
            early = self._early_check(state, False)
            if self.model.is_sam2:
                assert early is not None  # _early_check refuses a SAM 2 state without it
                decoder: PointDecoder = Sam2PointDecoder(self.model, state.features, early)
            else:
                decoder = PointDecoder(self.model, state.features, early)
            self._decoder = (state, decoder)
        return self._decoder[1]

    def _early_check(self, state: _ImageState, hq_token_only: bool) -> torch.Tensor | None:
        """The second map a SAM-HQ or SAM 2 model decodes with (None for other models), or an
        ``InputError`` saying what is missing."""
        if hq_token_only and not self.model.is_hq:
            raise InputError(
                "hq_token_only=True needs a SAM-HQ model (e.g. sam_hq_vit_b); this model's "
                f"decoder is {'SAM 2' if self.model.is_sam2 else 'SAM'}'s"
            )
        if not self.model.needs_early:
            return None
        if state.early is None:
            raise InputError(_NO_EARLY)
        return state.early


_NO_EARLY = (
    "this model needs the encoder's early feature map (SAM-HQ; SAM 2: its packed "
    "high-resolution features) with the embedding: set the image with set_image, or pass "
    "early= (Predictor.get_early_features) to set_image_embedding"
)


def _grown(
    coords: torch.Tensor | None,
    labels: torch.Tensor | None,
    boxes: torch.Tensor | None,
    mask_input: torch.Tensor | None,
) -> tuple[int, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """(B, the prompts with B rows each): inputs with batch 1 are shared by the others."""
    given = [t for t in (coords, boxes, mask_input) if t is not None]
    b = max(t.shape[0] for t in given) if given else 1

    def grow(t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None or t.shape[0] == b:
            return t
        if t.shape[0] != 1:
            raise InputError(f"prompt batch sizes differ: {t.shape[0]} and {b}")
        return t.expand(b, *t.shape[1:])

    return b, grow(coords), grow(labels), grow(boxes), grow(mask_input)
