"""Segment everything: prompt SAM with a grid of points and keep the good, distinct masks.

Same options, defaults and output as the official ``SamAutomaticMaskGenerator``, and faster:
masks whose predicted IoU fails the threshold are never upscaled, the grid prompts are decoded
with ``PointDecoder`` (shared image-side work), and masks are kept as COCO RLE between stages.

Two additions: ``generate(embedding=...)`` reuses an image embedding already computed by a
``Predictor``, and ``generate_candidates`` + ``refilter`` re-select masks with new thresholds
without running the model again.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch

from segany import masks as M
from segany.automatic.sam2_decode import decode_crop_sam2
from segany.automatic.select import (
    CropMasks,
    MaskCandidates,
    MaskRecord,
    Selection,
    check_int,
    check_point_grids,
    check_range,
    check_selection,
    select,
)
from segany.errors import InputError
from segany.images import ImageLike, to_rgb_uint8
from segany.inference.predictor import Predictor, as_model
from segany.inference.thread_pool import map_ordered
from segany.limits import (
    MAX_CROP_LAYERS,
    MAX_POINTS_PER_BATCH,
    MAX_POINTS_PER_SIDE,
    MAX_PROMPTS_PER_IMAGE,
    check_size_pair,
)
from segany.modeling import Sam
from segany.modeling.mask_decoder_shared import PointDecoder
from segany.modeling.sam_upscale import upscale_with_stability

__all__ = ["MaskGenerator", "PRESETS"]

# What the paper used to build SA-1B: a 32×32 grid on the image plus 2×2 and 4×4 crops with
# 16×16 and 8×8 grids, holes and islands under 100 px removed, near-full-image masks dropped.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "sa1b": {
        "crop_n_layers": 2,
        "crop_n_points_downscale_factor": 2,
        "min_mask_region_area": 100,
        "max_area_fraction": 0.95,
    },
    # Object proposals (the paper's §7.3, scored by AR@1000): recall over precision, so looser
    # quality cuts and an NMS that keeps overlapping candidates. Chosen with the bundled model
    # on 12 synthetic 384-px scenes (AR@1000 0.399 with its own thresholds; 0.517 with IoU 0.5,
    # stability 0.8, NMS 0.8; 0.526 with NMS 0.9; a 64×64 grid: 0.521 at 2.7× the time) and
    # checked on 12 held-out ones (docs/tasks.md). The paper's own modifications (its appendix)
    # are not reproduced here.
    "proposals": {
        "pred_iou_thresh": 0.5,
        "stability_score_thresh": 0.8,
        "box_nms_thresh": 0.9,
    },
}

_UPSCALE_BYTES = 256 * 2**20  # masks upscaled at once, sized as float logits (bounds peak memory)


class MaskGenerator:
    """Generate masks for everything in an image (official ``SamAutomaticMaskGenerator`` options).

    model: a ``Sam``, or a ``Predictor`` (its precision is used and its image left alone).

    points_per_side / point_grids: exactly one; the grid (points per side) or explicit N×2
    grids in [0,1] (one per crop layer). points_per_batch: prompts decoded at once.
    pred_iou_thresh, stability_score_thresh (with stability_score_offset): quality filters.
    box_nms_thresh: duplicate removal inside a crop; crop_nms_thresh: across crops.
    crop_n_layers, crop_overlap_ratio, crop_n_points_downscale_factor: zoomed-in crops.
    min_mask_region_area: remove holes and islands smaller than this (0: off).
    max_area_fraction: drop masks covering at least this fraction of the image (None: off).
    output_mode: "binary_mask", "uncompressed_rle" or "coco_rle".
    precision: the image encoder's mode (``Predictor``'s: fp32 default, bf16, fp16, int8, auto).
    cache: the on-disk embedding cache (``Predictor``'s: a folder, None for ``$SEGANY_CACHE``,
    False for none); with a Predictor given, its own settings apply.
    compile: run the image encoder through ``torch.compile`` (``Predictor``'s; off by default).

    SAM 2 models decode as ``SAM2AutomaticMaskGenerator`` does (``segany.automatic.sam2_decode``)
    with its defaults (pred_iou_thresh 0.8 where SAM 1's is 0.88) and its two options:
    use_m2m (refine each mask once from its own low-res logits) and multimask_output (False:
    one mask per point, the stable single one or its fallback).
    """

    decode_chunk = 2  # prompts per decoder pass on the CPU (see _decode_points)

    def __init__(
        self,
        model: Sam | Predictor,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float | None = None,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        *,
        max_area_fraction: float | None = None,
        precision: str | None = None,
        cache: Any = None,
        compile: bool = False,
        use_m2m: bool = False,
        multimask_output: bool = True,
    ) -> None:
        if isinstance(model, Predictor):
            if precision is not None and precision not in ("auto", model.precision):
                raise InputError(
                    f"precision={precision!r} differs from the given Predictor's "
                    f"{model.precision!r}; set it on the Predictor"
                )
            if compile and not model.compile:
                raise InputError("compile=True differs from the given Predictor's; set it there")
            self.predictor = model
        else:
            self.predictor = Predictor(
                model, precision=precision or "fp32", cache=cache, compile=compile
            )
        self.model: Sam = self.predictor.model
        if pred_iou_thresh is None:  # each official generator's default
            pred_iou_thresh = 0.8 if self.model.is_sam2 else 0.88
        if not self.model.is_sam2 and (use_m2m or not multimask_output):
            raise InputError(
                "use_m2m and multimask_output=False are SAM 2's generator options; this model "
                "is not a SAM 2 model"
            )
        self.use_m2m = bool(use_m2m)
        self.multimask_output = bool(multimask_output)
        # Bounds first: the grids and crops below are sized by these numbers.
        check_int("crop_n_layers", crop_n_layers, 0, MAX_CROP_LAYERS)
        check_int(
            "crop_n_points_downscale_factor", crop_n_points_downscale_factor, 1, MAX_POINTS_PER_SIDE
        )
        check_int("points_per_batch", points_per_batch, 1, MAX_POINTS_PER_BATCH)
        check_range("stability_score_offset", stability_score_offset, 0, float("inf"))
        check_range("crop_overlap_ratio", crop_overlap_ratio, 0, 1)
        if (points_per_side is None) == (point_grids is None):
            raise InputError("give exactly one of points_per_side and point_grids")
        if points_per_side is not None:
            check_int("points_per_side", points_per_side, 1, MAX_POINTS_PER_SIDE)
            grids = M.build_all_layer_point_grids(
                int(points_per_side), int(crop_n_layers), int(crop_n_points_downscale_factor)
            )
        else:
            grids = check_point_grids(point_grids, int(crop_n_layers))
        if any(len(g) == 0 for g in grids[: crop_n_layers + 1]):
            raise InputError("a point grid is empty (points_per_side too small for the layers)")
        # Layer i has (2**i)² crops, each prompted with that layer's grid.
        prompts = sum(len(g) * 4**i for i, g in enumerate(grids[: crop_n_layers + 1]))
        if prompts > MAX_PROMPTS_PER_IMAGE:
            raise InputError(
                f"these options prompt the model {prompts} times per image (grid points × "
                f"crops over {crop_n_layers} crop layers), more than the {MAX_PROMPTS_PER_IMAGE} "
                "allowed: lower points_per_side or crop_n_layers, or raise "
                "crop_n_points_downscale_factor"
            )
        self.point_grids = grids
        self.points_per_side = points_per_side
        self.points_per_batch = int(points_per_batch)
        self.stability_score_offset = float(stability_score_offset)
        self.crop_n_layers = int(crop_n_layers)
        self.crop_overlap_ratio = float(crop_overlap_ratio)
        self.crop_n_points_downscale_factor = int(crop_n_points_downscale_factor)
        self._selection = Selection(
            pred_iou_thresh,
            stability_score_thresh,
            box_nms_thresh,
            crop_nms_thresh,
            min_mask_region_area,
            max_area_fraction,
            output_mode,
        )
        check_selection(self._selection)

    # pred_iou_thresh, output_mode, ...: the selection options read and write through to one
    # validated, frozen Selection (the part refilter may change).
    def __getattr__(self, name: str) -> Any:
        sel = self.__dict__.get("_selection")
        if sel is not None and name in Selection.__dataclass_fields__:
            return getattr(sel, name)
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in Selection.__dataclass_fields__ and "_selection" in self.__dict__:
            sel = replace(self._selection, **{name: value})
            check_selection(sel)
            name, value = "_selection", sel
        super().__setattr__(name, value)

    @classmethod
    def from_preset(cls, preset: str, model: Sam | Predictor, **overrides: Any) -> MaskGenerator:
        """A generator with a named preset's options (``PRESETS``), optionally overridden."""
        if preset not in PRESETS:
            raise InputError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
        return cls(model, **{**PRESETS[preset], **overrides})

    @classmethod
    def for_model(
        cls, model: Sam | Predictor, preset: str | None = None, **overrides: Any
    ) -> MaskGenerator:
        """A generator with the model's own defaults (``Sam.generator_defaults``, from its file: the
        bundled segany-tiny has its own quality thresholds; the official weights have none, so
        this is the official generator), then ``preset``'s options, then ``overrides``.

        What the CLI, the server and the engine build; ``MaskGenerator(model)`` always starts
        from the official defaults.
        """
        if not isinstance(model, Predictor):
            model = as_model(model)  # a name or path is loaded once, with its file's defaults
        sam = model.model if isinstance(model, Predictor) else model
        own = dict(getattr(sam, "generator_defaults", None) or {})
        if preset is None:
            return cls(model, **{**own, **overrides})
        # from_preset lets its keywords win over the preset: pass only what the preset leaves
        # unset, so the preset still beats the model's own defaults.
        own = {k: v for k, v in own.items() if k not in PRESETS.get(preset, {})}
        return cls.from_preset(preset, model, **{**own, **overrides})

    # ----- public calls -------------------------------------------------------------------
    def generate(
        self,
        image: ImageLike | None = None,
        *,
        embedding: torch.Tensor | np.ndarray | None = None,
        original_size: tuple[int, int] | None = None,
        image_format: str = "RGB",
    ) -> list[MaskRecord]:
        """Masks for everything in ``image`` (H×W×3 uint8 RGB or anything ``Predictor`` takes).

        With ``embedding`` (1×C×h×w, from ``Predictor.get_image_embedding``) the encoder is not
        run for the whole image; ``original_size`` (H, W) is then needed unless ``image`` is
        given, and crop layers still need ``image``. With neither, the embedding of the image
        currently set on the generator's Predictor is used.
        """
        sel = self._selection
        cands = self._decode(image, embedding, original_size, image_format, sel)
        return select(cands, sel)

    def generate_candidates(
        self,
        image: ImageLike | None = None,
        *,
        embedding: torch.Tensor | np.ndarray | None = None,
        original_size: tuple[int, int] | None = None,
        image_format: str = "RGB",
        pred_iou_floor: float = 0.0,
        stability_floor: float = 0.0,
    ) -> MaskCandidates:
        """Decode once and keep every mask above the floors, for ``refilter``.

        ``refilter(generate_candidates(image))`` equals ``generate(image)``. Floors of 0 keep
        every mask (slowest: all are upscaled); raise them to the lowest thresholds you plan
        to try.
        """
        check_range("pred_iou_floor", pred_iou_floor, 0, 1)
        check_range("stability_floor", stability_floor, 0, 1)
        floors = replace(
            self._selection, pred_iou_thresh=pred_iou_floor, stability_score_thresh=stability_floor
        )
        return self._decode(image, embedding, original_size, image_format, floors)

    def refilter(self, candidates: MaskCandidates, **overrides: Any) -> list[MaskRecord]:
        """Select masks from ``candidates`` with this generator's options, changed by
        ``overrides``: any of pred_iou_thresh, stability_score_thresh, box_nms_thresh,
        crop_nms_thresh, min_mask_region_area, max_area_fraction, output_mode."""
        unknown = set(overrides) - set(Selection.__dataclass_fields__)
        if unknown:
            raise InputError(
                f"refilter cannot change {sorted(unknown)} (they need the model); it can "
                f"change {sorted(Selection.__dataclass_fields__)}"
            )
        if candidates.stability_score_offset != self.stability_score_offset:
            raise InputError("the candidates were made with another stability_score_offset")
        sel = replace(self._selection, **overrides)
        check_selection(sel)
        for name, thresh, floor in (
            ("pred_iou_thresh", sel.pred_iou_thresh, candidates.pred_iou_floor),
            ("stability_score_thresh", sel.stability_score_thresh, candidates.stability_floor),
        ):
            if floor > 0 and thresh < floor:
                raise InputError(
                    f"{name}={thresh:g} is below the candidates' floor {floor:g}: masks under "
                    "the floor were not kept; make candidates with a lower floor"
                )
        return select(candidates, sel)

    @torch.inference_mode()
    def candidates_in_crops(
        self,
        image: ImageLike,
        crop_boxes: list[list[int]],
        *,
        image_format: str = "RGB",
    ) -> MaskCandidates:
        """Decode this generator's first grid over the given crops instead of its crop layers'
        (e.g. the tiles of a large image, beside the whole image).

        crop_boxes: XYXY end-exclusive pixels of ``image``. As in the crop layers, a mask cut by
        a crop edge that is not an image edge is dropped; ``refilter`` then selects across the
        crops (NMS preferring masks from smaller crops).
        """
        rgb = to_rgb_uint8(image, image_format)
        h, w = rgb.shape[:2]
        crops = []
        for box in crop_boxes:
            x0, y0, x1, y1 = (int(v) for v in box)
            if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
                raise InputError(f"crop box {list(box)} is not inside the {w}×{h} image")
            crops.append(self.candidates_of_crop(rgb[y0:y1, x0:x1], [x0, y0, x1, y1], (h, w)))
        sel = self._selection
        return MaskCandidates(
            (h, w),
            self.stability_score_offset,
            sel.pred_iou_thresh,
            sel.stability_score_thresh,
            multi_crop=len(crops) > 1,
            crops=crops,
        )

    @torch.inference_mode()
    def candidates_of_crop(
        self, pixels: np.ndarray, crop_box: list[int], image_size: tuple[int, int]
    ) -> CropMasks:
        """Decode this generator's first grid on one crop of an image: ``pixels`` h×w×3 uint8 RGB
        are the crop ``crop_box`` (XYXY) of an image of ``image_size`` (H, W) that need not be in
        memory (a tile read by region). Masks cut by an inner crop edge are dropped; they stay in
        the crop's frame, as COCO RLE (``MaskCandidates`` gathers crops for ``refilter``)."""
        if "_crop_encoder" not in self.__dict__:
            self._crop_encoder = self._private_predictor()
        self._crop_encoder.set_image(pixels)
        box = [int(v) for v in crop_box]
        return self._decode_crop(self._crop_encoder, box, 0, image_size, self._selection)

    # ----- decoding -----------------------------------------------------------------------
    @torch.inference_mode()
    def _decode(
        self,
        image: ImageLike | None,
        embedding: torch.Tensor | np.ndarray | None,
        original_size: tuple[int, int] | None,
        image_format: str,
        cut: Selection,
    ) -> MaskCandidates:
        rgb = None if image is None else to_rgb_uint8(image, image_format)
        # The image set on the caller's predictor: decode with it (its decoder state is built
        # once per image and serves its clicks too); one crop only, since the pixels are gone.
        own_image = rgb is None and embedding is None
        if own_image:
            if not self.predictor.is_image_set:
                raise InputError("give an image, or an embedding, or set an image on the predictor")
            embedding = self.predictor.get_image_embedding()
            original_size = self.predictor.original_size
        if rgb is not None:
            original_size = rgb.shape[:2]
        if original_size is None:
            raise InputError("original_size (H, W) is needed with an embedding and no image")
        h, w = check_size_pair(original_size, what="original_size")
        crop_boxes, layers = M.generate_crop_boxes(
            (h, w), self.crop_n_layers, self.crop_overlap_ratio
        )
        if rgb is None and len(crop_boxes) > 1:
            raise InputError("crop layers need the image itself, not only its embedding")
        # Otherwise a private predictor (same precision and disk cache): the caller's keeps its
        # image.
        encoder = self.predictor if own_image else self._private_predictor()
        crops = []
        for box, layer in zip(crop_boxes, layers, strict=True):
            x0, y0, x1, y1 = box
            if x1 <= x0 or y1 <= y0:
                continue  # an image smaller than the crop grid
            if embedding is not None and box == [0, 0, w, h]:
                if not own_image:  # (the caller's predictor has it set, with its decoder state)
                    encoder.set_image_embedding(torch.as_tensor(embedding), (h, w))
            else:
                assert rgb is not None
                encoder.set_image(rgb[y0:y1, x0:x1])
            crops.append(self._decode_crop(encoder, box, layer, (h, w), cut))
        return MaskCandidates(
            (h, w),
            self.stability_score_offset,
            cut.pred_iou_thresh,
            cut.stability_score_thresh,
            multi_crop=len(crop_boxes) > 1,
            crops=crops,
        )

    def _private_predictor(self) -> Predictor:
        return Predictor(
            self.model,
            precision=getattr(self.predictor, "precision", "fp32"),
            cache=getattr(self.predictor, "disk_cache", None) or False,
            compile=getattr(self.predictor, "compile", False),
        )

    def _decode_points(
        self, decoder: PointDecoder, sparse: torch.Tensor, pred_iou_thresh: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sparse prompts B×T×C -> (IoU predictions B×3 of the multimask outputs, the kept ones
        B×3 bool, their low-res logits K×s×s in point-major order like the official flattening).

        On the CPU a few prompts go through the decoder at a time: each prompt's image tokens
        (4096×256 floats at 1024 px) then stay in the cache instead of a 64-prompt batch's
        256 MB (the same values). With several torch threads the chunks run side by side, one
        thread each (``map_ordered``: their skinny products gain little from split threads).
        """
        step = self.decode_chunk if sparse.device.type == "cpu" else len(sparse)

        def chunk(s: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
            tokens, keys = decoder.transformer(sparse[s : s + step])
            iou = decoder.iou_predictions(tokens)[:, 1:]  # b×3: the multimask outputs
            keep = iou > pred_iou_thresh if pred_iou_thresh > 0 else torch.ones_like(iou).bool()
            rows = keep.any(dim=1).nonzero()[:, 0]
            if len(rows) == 0:
                return iou, keep, None
            outputs = range(1, 1 + iou.shape[1])
            return iou, keep, decoder.mask_logits(tokens[rows], keys[rows], outputs)[keep[rows]]

        parts = map_ordered(chunk, range(0, len(sparse), step))
        ious = [iou for iou, _, _ in parts]
        keeps = [keep for _, keep, _ in parts]
        lows = [low for _, _, low in parts if low is not None]
        low = torch.cat(lows) if lows else sparse.new_zeros(0, 1, 1)
        return torch.cat(ious), torch.cat(keeps), low

    def _decode_crop(
        self, enc: Predictor, box: list[int], layer: int, image_hw: tuple[int, int], cut: Selection
    ) -> CropMasks:
        model = self.model
        assert enc.original_size is not None and enc.input_size is not None  # an image is set
        crop_h, crop_w = enc.original_size
        if model.is_sam2:
            return decode_crop_sam2(
                enc,
                self.point_grids[layer] * np.array([[crop_w, crop_h]]),
                box,
                image_hw,
                points_per_batch=self.points_per_batch,
                pred_iou_thresh=cut.pred_iou_thresh,
                stability_score_thresh=cut.stability_score_thresh,
                stability_score_offset=self.stability_score_offset,
                use_m2m=self.use_m2m,
                multimask_output=self.multimask_output,
                decode_chunk=self.decode_chunk,
            )
        input_size = enc.input_size
        dev = enc.device
        points = self.point_grids[layer] * np.array([[crop_w, crop_h]])  # N×2 XY, crop pixels
        decoder = enc.shared_decoder()  # the Predictor's own: built once per image
        # Masks per upscaling chunk, as if each held the 1024² intermediate or the crop in floats:
        # more than its boolean mask and its share of the column pass need.
        side = model.image_size
        chunk = max(1, _UPSCALE_BYTES // (4 * max(side * side, crop_h * crop_w)))
        parts: dict[str, list] = {k: [] for k in ("iou", "stab", "boxes", "points", "rles")}
        image_box = [0, 0, image_hw[1], image_hw[0]]
        for start in range(0, len(points), self.points_per_batch):
            pts = points[start : start + self.points_per_batch]
            coords = torch.as_tensor(enc.transform.apply_coords(pts, (crop_h, crop_w)), device=dev)
            labels = torch.ones(len(pts), 1, dtype=torch.int, device=dev)
            sparse, _ = model.prompt_encoder(
                points=(coords[:, None], labels), boxes=None, masks=None
            )
            iou, keep, low = self._decode_points(decoder, sparse, cut.pred_iou_thresh)
            rows = keep.any(dim=1).nonzero()[:, 0]
            if len(rows) == 0:
                continue
            kept_iou = iou[rows][keep[rows]]
            kept_pts = torch.as_tensor(pts, device=dev)[rows].repeat_interleave(
                keep[rows].sum(1), dim=0
            )
            for c in range(0, len(low), chunk):
                # The official two resizes' values in one step, thresholded and scored block by
                # block (no full-size float logits).
                binary, stab = upscale_with_stability(
                    low[c : c + chunk],
                    input_size,
                    (crop_h, crop_w),
                    side,
                    model.mask_threshold,
                    self.stability_score_offset,
                )
                if cut.stability_score_thresh > 0:
                    ok = stab >= cut.stability_score_thresh
                    binary = binary[ok]
                else:  # every mask kept: no copy of the chunk's masks
                    ok = torch.ones_like(stab, dtype=torch.bool)
                boxes = M.batched_mask_to_box(binary)
                # Masks cut by a crop edge that is not an image edge are never kept.
                inner = ~M.is_box_near_crop_edge(boxes, box, image_box)
                parts["iou"].append(kept_iou[c : c + chunk][ok][inner].cpu())
                parts["stab"].append(stab[ok][inner].cpu())
                parts["boxes"].append(boxes[inner].cpu())
                parts["points"].append(kept_pts[c : c + chunk][ok][inner].cpu())
                parts["rles"].extend(M.encode_rles(binary[inner]))

        def cat(key: str, empty: torch.Tensor) -> torch.Tensor:
            return torch.cat(parts[key]) if parts[key] else empty

        return CropMasks(
            box,
            cat("iou", torch.zeros(0)),
            cat("stab", torch.zeros(0)),
            cat("boxes", torch.zeros(0, 4, dtype=torch.int64)),
            cat("points", torch.zeros(0, 2, dtype=torch.float64)),
            parts["rles"],
        )
