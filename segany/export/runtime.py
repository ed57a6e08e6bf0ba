"""``OnnxPredictor``: the whole SAM pipeline on onnxruntime, with numpy only (torch never imported).

Same semantics and return shapes as ``segany.Predictor``: points in original-image pixels (XY),
boxes XYXY, labels 1 fg / 0 bg / -1 padding, ``mask_input`` 1×s×s or B×1×s×s low-res logits; a
``Prediction`` with masks C×H×W (bool, or logits with ``return_logits``), scores C, logits C×s×s
(C = 3 with ``multimask_output`` else 1; a leading B axis for batched prompts).

Files: an encoder from ``export_encoder`` (input: the normalised, zero-padded 1×3×S×S image) and a
decoder from ``export_decoder(return_single_mask=False)`` (all 4 mask tokens). Both carry segany
metadata (input size, pixel mean/std); files without it are read with the official values.
SAM-HQ files (the decoder takes ``interm_embeddings``, the encoder outputs it): one mask per
prompt, ``hq_token_only`` as in ``segany.Predictor``. SAM 2 files (the decoder takes
``high_res_feats_0/1``, the encoder outputs them): the image is stretched to the S×S frame (a
float, antialiased resize, as SAM 2's predictor does), prompts scaled by S/W and S/H, a box's
corners ahead of the clicks and a padding point always last, and the single-mask answer is SAM
2's (the single-mask token where stable, else the best multimask candidate).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from PIL import Image

from segany.errors import InputError, MissingExtraError
from segany.images import ImageLike, to_rgb_uint8
from segany.inference.prediction import Prediction
from segany.inference.protocol import PredictorLike
from segany.prompts import PromptBatch, check_prompts

_EARLY = "interm_embeddings"  # SAM-HQ's early feature map, as its ONNX export names it
_HIGH_RES = ("high_res_feats_0", "high_res_feats_1")  # SAM 2's (segany.export.decoder_sam2)
_OFFICIAL_MEAN = (123.675, 116.28, 103.53)
_OFFICIAL_STD = (58.395, 57.12, 57.375)
ENCODER_FILE = "encoder.onnx"  # the names segany.export.export_pair writes
DECODER_FILE = "decoder.onnx"


def preprocess_shape(h: int, w: int, longest: int) -> tuple[int, int]:
    """(H, W) after scaling the longest side to ``longest``, rounded half up: the rule of
    ``segany.transforms.ResizeLongestSide`` (tested equal), here without torch."""
    scale = longest * 1.0 / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def to_input_frame(coords: np.ndarray, original: tuple[int, int], longest: int) -> np.ndarray:
    """...×2 XY in the original image -> float32 XY in the resized image."""
    new_h, new_w = preprocess_shape(original[0], original[1], longest)
    out = np.array(coords, dtype=np.float64, copy=True)
    out[..., 0] *= new_w / original[1]
    out[..., 1] *= new_h / original[0]
    return out.astype(np.float32)


def _session(path: str | os.PathLike[str], threads: int | None, providers: Any) -> Any:
    try:
        import onnxruntime as ort
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MissingExtraError("the onnx backend", "onnx", "onnxruntime") from e
    p = Path(path)
    if not p.is_file():
        raise InputError(f"ONNX file not found: {p}")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    try:
        return ort.InferenceSession(
            str(p), options, providers=providers or ["CPUExecutionProvider"]
        )
    except Exception as e:  # onnxruntime raises its own classes for a corrupt or foreign file
        raise InputError(f"cannot load ONNX model {p}: {e}") from None


class OnnxPredictor(PredictorLike):
    """Prompted segmentation with an ONNX encoder and decoder on onnxruntime.

    ``threads``: onnxruntime's intra-op threads (default: its own choice, all cores).
    ``providers``: onnxruntime execution providers (default CPU).
    """

    def __init__(
        self,
        encoder_path: str | os.PathLike[str],
        decoder_path: str | os.PathLike[str],
        *,
        threads: int | None = None,
        providers: list[str] | None = None,
    ) -> None:
        self.encoder = _session(encoder_path, threads, providers)
        self.decoder = _session(decoder_path, threads, providers)
        meta = self.encoder.get_modelmeta().custom_metadata_map
        dmeta = self.decoder.get_modelmeta().custom_metadata_map
        if meta.get("segany.kind", "encoder") != "encoder":
            raise InputError(f"{encoder_path} is a segany {meta['segany.kind']}, not an encoder")
        if dmeta.get("segany.kind", "decoder") != "decoder":
            raise InputError(f"{decoder_path} is a segany {dmeta['segany.kind']}, not a decoder")
        if json.loads(dmeta.get("segany.return_single_mask", "false")):
            raise InputError(
                f"{decoder_path} returns a single mask; the predictor needs all mask tokens: "
                "export it with return_single_mask=False (or use export_pair)"
            )
        shape = self.encoder.get_inputs()[0].shape  # 1×3×S×S
        # The prompt frame and the side the encoder reads (equal but for models such as
        # EfficientViT-SAM l0, whose encoder reads 512 px and answers in a 1024 frame).
        self.encoder_size = int(meta.get("segany.encoder_size", shape[-1]))
        self.image_size = int(meta.get("segany.image_size", self.encoder_size))
        self.pixel_mean = np.array(
            json.loads(meta.get("segany.pixel_mean", "null")) or _OFFICIAL_MEAN, np.float32
        )
        self.pixel_std = np.array(
            json.loads(meta.get("segany.pixel_std", "null")) or _OFFICIAL_STD, np.float32
        )
        self.mask_threshold = float(meta.get("segany.mask_threshold", 0.0))
        # SAM 2 normalises pixels scaled to [0, 1] (the exporter writes those numbers exactly)
        unit = [json.loads(meta.get(f"segany.unit_pixel_{k}", "null")) for k in ("mean", "std")]
        self._unit_stats = tuple(
            np.array(u if u else [float(v) / 255 for v in full], np.float32).reshape(1, 3, 1, 1)
            for u, full in zip(unit, (self.pixel_mean, self.pixel_std), strict=True)
        )
        inputs = {i.name: i.shape for i in self.decoder.get_inputs()}
        self.mask_input_size = (int(inputs["mask_input"][2]), int(inputs["mask_input"][3]))
        # SAM-HQ: the decoder reads the encoder's early map beside the embedding
        self.is_hq = _EARLY in inputs
        encoder_outputs = [o.name for o in self.encoder.get_outputs()]
        if self.is_hq and _EARLY not in encoder_outputs:
            raise InputError(
                f"{decoder_path} is a SAM-HQ decoder, which reads {_EARLY}; {encoder_path} "
                "does not output it: export both from the same SAM-HQ model"
            )
        # SAM 2: the decoder reads the encoder's two high-res maps
        self.is_sam2 = _HIGH_RES[0] in inputs
        if self.is_sam2 and not set(_HIGH_RES) <= set(encoder_outputs):
            raise InputError(
                f"{decoder_path} is a SAM 2 decoder, which reads {' and '.join(_HIGH_RES)}; "
                f"{encoder_path} does not output them: export both from the same SAM 2 model"
            )
        delta, thresh = json.loads(dmeta.get("segany.sam2_stability", "[0.05, 0.98]"))
        self._stability = (float(delta), float(thresh))
        self._high_res: dict[str, np.ndarray] = {}
        self._early: np.ndarray | None = None
        self._features: np.ndarray | None = None
        self._original: tuple[int, int] | None = None
        self._input: tuple[int, int] | None = None

    @classmethod
    def from_dir(cls, folder: str | os.PathLike[str], **kwargs: Any) -> OnnxPredictor:
        """Load ``encoder.onnx`` and ``decoder.onnx`` from ``folder`` (``export_pair``'s)."""
        root = Path(folder)
        return cls(root / ENCODER_FILE, root / DECODER_FILE, **kwargs)

    # ----- image -------------------------------------------------------------------------
    def preprocess(self, rgb: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """H×W×3 uint8 -> the encoder's 1×3×S×S float32 input and ``input_size`` (the resized
        (h, w) in the prompt frame): bilinear resize through PIL, normalise, zero-pad bottom and
        right (as ``Sam``)."""
        s = self.encoder_size
        if self.is_sam2:
            return _stretch(rgb, s, *self._unit_stats), (s, s)
        h, w = preprocess_shape(rgb.shape[0], rgb.shape[1], s)
        resized = np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.BILINEAR))
        x = np.zeros((1, 3, s, s), np.float32)
        # h×w×3 -> 3×h×w, normalised in float32 like the torch model
        normalised = (resized.astype(np.float32) - self.pixel_mean) / self.pixel_std
        x[0, :, :h, :w] = normalised.transpose(2, 0, 1)
        if s != self.image_size:
            h, w = preprocess_shape(rgb.shape[0], rgb.shape[1], self.image_size)
        return x, (h, w)

    def set_image(self, image: ImageLike, image_format: str = "RGB") -> None:
        """Compute the embedding of ``image`` (see ``segany.images`` for accepted inputs)."""
        rgb = to_rgb_uint8(image, image_format)
        x, input_size = self.preprocess(rgb)
        self.reset_image()
        outputs = self.encoder.run(None, {self.encoder.get_inputs()[0].name: x})
        names = [o.name for o in self.encoder.get_outputs()]
        features = outputs[0]
        if self.is_hq:
            self._early = outputs[names.index(_EARLY)]
        if self.is_sam2:
            self._high_res = {k: outputs[names.index(k)] for k in _HIGH_RES}
        self._features = features
        self._original = (int(rgb.shape[0]), int(rgb.shape[1]))
        self._input = input_size

    def reset_image(self) -> None:
        self._features = self._original = self._input = self._early = None
        self._high_res = {}

    @property
    def is_image_set(self) -> bool:
        return self._features is not None

    @property
    def original_size(self) -> tuple[int, int] | None:
        return self._original

    @property
    def input_size(self) -> tuple[int, int] | None:
        return self._input

    def get_image_embedding(self) -> np.ndarray:
        """The current image embedding: 1×C×h×w float32."""
        if self._features is None:
            raise InputError("no image is set: call set_image(...) before predicting")
        return self._features

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
        """As ``segany.Predictor.predict``: prompts in original-image pixels, one decoder run
        per prompt set (the exported decoder takes batch 1). SAM-HQ files answer with one mask
        per prompt and take ``hq_token_only``, as the Predictor does."""
        features = self.get_image_embedding()
        assert self._original is not None  # set together with the features
        if hq_token_only and not self.is_hq:
            raise InputError(
                "hq_token_only=True needs a SAM-HQ model's files; this decoder is SAM's"
            )
        prompts = check_prompts(
            point_coords, point_labels, box, mask_input, low_res_size=self.mask_input_size
        )
        sel = slice(1, None) if multimask_output else slice(0, 1)
        masks, scores, logits = [], [], []
        for i in range(prompts.batch_size):
            feed = self._decoder_feed(prompts, i, features)
            m, s, low = self.decoder.run(["masks", "iou_predictions", "low_res_masks"], feed)
            if self.is_hq:
                m, s, low = _hq_answer(m[0], s[0], low[0], multimask_output, hq_token_only)
                masks.append(m)
                scores.append(s)
                logits.append(low)
                continue
            if self.is_sam2:
                take = sel if multimask_output else _sam2_single(low[0], s[0], *self._stability)
                masks.append(m[0, take])
                scores.append(s[0, take])
                logits.append(np.clip(low[0, take], -32.0, 32.0))  # as the Predictor returns
                continue
            masks.append(m[0, sel])
            scores.append(s[0, sel])
            logits.append(low[0, sel])
        out_masks = np.stack(masks)
        if not return_logits:
            out_masks = out_masks > self.mask_threshold
        out_batched = prompts.batched if batched is None else batched
        if not out_batched and len(masks) != 1:
            raise InputError("batched=False needs prompts for a single mask set")
        pick = slice(None) if out_batched else 0
        return Prediction(
            masks=out_masks[pick], scores=np.stack(scores)[pick], logits=np.stack(logits)[pick]
        )

    def _decoder_feed(self, p: PromptBatch, i: int, features: np.ndarray) -> dict[str, Any]:
        """Decoder inputs for prompt set ``i`` (a batch axis of 1 is shared): points, then a
        box as two corner points (labels 2, 3), or a padding point when there is no box, as
        the torch prompt encoder does."""
        assert self._original is not None
        row = lambda a: a[i if a.shape[0] > 1 else 0]  # noqa: E731
        if self.is_sam2:
            return self._sam2_feed(p, i, features)
        coords = [np.zeros((0, 2), np.float32)]
        labels = [np.zeros(0, np.float32)]
        if p.point_coords is not None and p.point_labels is not None:
            coords.append(to_input_frame(row(p.point_coords), self._original, self.image_size))
            labels.append(row(p.point_labels).astype(np.float32))
        if p.boxes is not None:
            corners = row(p.boxes).reshape(2, 2)
            coords.append(to_input_frame(corners, self._original, self.image_size))
            labels.append(np.array([2, 3], np.float32))
        elif p.point_coords is not None:
            coords.append(np.zeros((1, 2), np.float32))
            labels.append(np.array([-1], np.float32))
        if p.mask_input is not None:
            mask, has_mask = row(p.mask_input)[None].astype(np.float32), 1.0
        else:
            mask, has_mask = np.zeros((1, 1, *self.mask_input_size), np.float32), 0.0
        early = {} if self._early is None else {_EARLY: self._early}
        return {
            "image_embeddings": features,
            **early,
            "point_coords": np.concatenate(coords)[None],
            "point_labels": np.concatenate(labels)[None],
            "mask_input": mask,
            "has_mask_input": np.array([has_mask], np.float32),
            "orig_im_size": np.array(self._original, np.float32),
        }

    def _sam2_feed(self, p: PromptBatch, i: int, features: np.ndarray) -> dict[str, Any]:
        """SAM 2's decoder inputs for prompt set ``i``: a box's corners (labels 2, 3), then the
        points, then one padding point, in the S×S frame (x·S/W, y·S/H in float32)."""
        assert self._original is not None
        row = lambda a: a[i if a.shape[0] > 1 else 0]  # noqa: E731
        coords = [np.zeros((0, 2), np.float32)]
        labels = [np.zeros(0, np.float32)]
        if p.boxes is not None:
            coords.append(_to_square(row(p.boxes).reshape(2, 2), self._original, self.image_size))
            labels.append(np.array([2, 3], np.float32))
        if p.point_coords is not None and p.point_labels is not None:
            coords.append(_to_square(row(p.point_coords), self._original, self.image_size))
            labels.append(row(p.point_labels).astype(np.float32))
        coords.append(np.zeros((1, 2), np.float32))
        labels.append(np.array([-1], np.float32))
        if p.mask_input is not None:
            mask, has_mask = row(p.mask_input)[None].astype(np.float32), 1.0
        else:
            mask, has_mask = np.zeros((1, 1, *self.mask_input_size), np.float32), 0.0
        return {
            "image_embeddings": features,
            **self._high_res,
            "point_coords": np.concatenate(coords)[None],
            "point_labels": np.concatenate(labels)[None],
            "mask_input": mask,
            "has_mask_input": np.array([has_mask], np.float32),
            "orig_im_size": np.array(self._original, np.float32),
        }


def _to_square(coords: np.ndarray, original: tuple[int, int], side: int) -> np.ndarray:
    """...×2 XY in the original image -> float32 XY in SAM 2's S×S frame, in the order
    ``segany.transforms.ResizeSquare`` computes it (divide by the side, then times S)."""
    out = np.array(coords, dtype=np.float32, copy=True)
    out[..., 0] = out[..., 0] / np.float32(original[1])
    out[..., 1] = out[..., 1] / np.float32(original[0])
    return out * np.float32(side)


def _stretch(rgb: np.ndarray, side: int, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """H×W×3 uint8 -> SAM 2's 1×3×S×S float32 encoder input: pixels scaled to [0, 1], each
    channel resized to S×S bilinearly in float (PIL's bilinear filter widens with the
    reduction, the antialiasing torch's ``antialias=True`` reproduces), normalised with
    ``mean`` and ``std`` (1×3×1×1, for [0, 1] pixels)."""
    x = rgb.astype(np.float32) / np.float32(255)
    out = np.empty((1, 3, side, side), np.float32)
    for c in range(3):
        plane = Image.fromarray(np.ascontiguousarray(x[:, :, c]), mode="F")
        out[0, c] = np.asarray(plane.resize((side, side), Image.Resampling.BILINEAR))
    return (out - mean) / std


def _sam2_single(low: np.ndarray, scores: np.ndarray, delta: float, thresh: float) -> slice:
    """Every token's low-res logits K×s×s and IoU K -> SAM 2's single answer: token 0 where its
    stability (area above +delta over area above -delta, 1 when empty) reaches ``thresh``, else
    the multimask token with the highest IoU (``MaskDecoderSAM2.stable_single``)."""
    outer = int((low[0] > -delta).sum())
    stability = int((low[0] > delta).sum()) / outer if outer > 0 else 1.0
    k = 0 if stability >= thresh else 1 + int(np.argmax(scores[1:]))
    return slice(k, k + 1)


def _hq_answer(
    masks: np.ndarray, scores: np.ndarray, low: np.ndarray, multimask: bool, hq_only: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A SAM-HQ decoder's every-token outputs for one prompt set (masks (M+2)×H×W, IoU M+1,
    low-res (M+2)×s×s: SAM's single, its M multimask outputs, the HQ mask) -> its answer:
    1×H×W, 1, 1×s×s (``MaskDecoderHQ.select_outputs``, after upscaling: the upscaling is
    linear, so the sum of upscaled masks is the upscaled sum up to rounding)."""
    n = scores.shape[0]  # SAM's tokens; the HQ mask is the last
    pick = 1 + int(np.argmax(scores[1:])) if multimask else 0
    if hq_only:
        return masks[n:], scores[pick : pick + 1], low[n:]
    pair = [pick, n]
    return (
        masks[pair].sum(0, keepdims=True),
        scores[pick : pick + 1],
        low[pair].sum(0, keepdims=True),
    )
