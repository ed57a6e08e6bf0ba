"""Segment everything: prompt SAM with a grid of points and keep the good, distinct masks.

Same options, defaults and output as the official ``SamAutomaticMaskGenerator``, and faster:
masks whose predicted IoU fails the threshold are never upscaled, the grid prompts are decoded
with ``PointDecoder`` (shared image-side work), and masks are kept as COCO RLE between stages.

Two additions: ``generate(embedding=...)`` reuses an image embedding already computed by a
``Predictor``, and ``generate_candidates`` + ``refilter`` re-select masks with new thresholds
without running the model again.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from segany import masks as M
from segany.errors import InputError
from segany.images import ImageLike, to_rgb_uint8
from segany.modeling import Sam
from segany.point_decoder import PointDecoder
from segany.predictor import Predictor

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")

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
}

_UPSCALE_BYTES = 256 * 2**20  # float logits upscaled at once (bounds peak memory)


@dataclass
class MaskRecord:
    """One mask, with the official record's fields and meaning.

    segmentation: H×W bool (``binary_mask``) or an RLE dict; bbox and crop_box: XYWH pixels
    (bbox width/height are max - min of the mask's pixel indices, as officially); point_coords:
    ``[[x, y]]``, the grid point that produced the mask, in image pixels.
    """

    segmentation: np.ndarray | dict[str, Any]
    area: int
    bbox: list[int]
    predicted_iou: float
    point_coords: list[list[float]]
    stability_score: float
    crop_box: list[int]

    def to_dict(self) -> dict[str, Any]:
        """The plain dict the official generator returns."""
        return {
            "segmentation": self.segmentation,
            "area": self.area,
            "bbox": self.bbox,
            "predicted_iou": self.predicted_iou,
            "point_coords": self.point_coords,
            "stability_score": self.stability_score,
            "crop_box": self.crop_box,
        }

    def mask(self) -> np.ndarray:
        """The mask as H×W bool, whatever the output mode."""
        if isinstance(self.segmentation, np.ndarray):
            return self.segmentation
        return M.decode_rle(self.segmentation)


@dataclass
class _CropMasks:
    """The masks one crop produced, in decode order. Boxes and masks are in the crop frame."""

    crop_box: list[int]  # XYXY in the image
    iou: torch.Tensor  # K float32
    stability: torch.Tensor  # K float32
    boxes: torch.Tensor  # K×4 int64 XYXY
    points: torch.Tensor  # K×2 float64 XY
    rles: list[dict[str, Any]]  # COCO RLE, crop-sized


@dataclass
class MaskCandidates:
    """Every mask of one decoding pass that ``MaskGenerator.refilter`` may select from.

    Holds masks with predicted IoU > ``pred_iou_floor`` and stability >= ``stability_floor``
    (a floor of 0 keeps all), each with its scores, box and RLE: a few KB per mask.
    """

    image_size: tuple[int, int]
    stability_score_offset: float
    pred_iou_floor: float
    stability_floor: float
    multi_crop: bool  # crop layers were used: cross-crop NMS applies
    crops: list[_CropMasks] = field(repr=False)

    def __len__(self) -> int:
        return sum(len(c.rles) for c in self.crops)


@dataclass(frozen=True)
class _Selection:
    """The options that act after decoding (all that ``refilter`` may change)."""

    pred_iou_thresh: float
    stability_score_thresh: float
    box_nms_thresh: float
    crop_nms_thresh: float
    min_mask_region_area: int
    max_area_fraction: float | None
    output_mode: str


def _check_range(name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and np.isfinite(value) and (value > lo if lo_open else value >= lo) and value <= hi:
        return
    left = "(" if lo_open else "["
    raise InputError(f"{name} must be a number in {left}{lo:g}, {hi:g}], got {value!r}")


def _check_int(name: str, value: Any, lo: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < lo:
        raise InputError(f"{name} must be an integer >= {lo}, got {value!r}")


def _check_selection(s: _Selection) -> None:
    _check_range("pred_iou_thresh", s.pred_iou_thresh, 0, 1)
    _check_range("stability_score_thresh", s.stability_score_thresh, 0, 1)
    _check_range("box_nms_thresh", s.box_nms_thresh, 0, 1)
    _check_range("crop_nms_thresh", s.crop_nms_thresh, 0, 1)
    _check_int("min_mask_region_area", s.min_mask_region_area, 0)
    if s.max_area_fraction is not None:
        _check_range("max_area_fraction", s.max_area_fraction, 0, 1, lo_open=True)
    if s.output_mode not in OUTPUT_MODES:
        raise InputError(f"output_mode must be one of {OUTPUT_MODES}, got {s.output_mode!r}")


class MaskGenerator:
    """Generate masks for everything in an image (official ``SamAutomaticMaskGenerator`` options).

    points_per_side / point_grids: exactly one; the grid (points per side) or explicit N×2
    grids in [0,1] (one per crop layer). points_per_batch: prompts decoded at once.
    pred_iou_thresh, stability_score_thresh (with stability_score_offset): quality filters.
    box_nms_thresh: duplicate removal inside a crop; crop_nms_thresh: across crops.
    crop_n_layers, crop_overlap_ratio, crop_n_points_downscale_factor: zoomed-in crops.
    min_mask_region_area: remove holes and islands smaller than this (0: off).
    max_area_fraction: drop masks covering at least this fraction of the image (None: off).
    output_mode: "binary_mask", "uncompressed_rle" or "coco_rle".
    """

    def __init__(
        self,
        model: Sam | Predictor,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
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
    ) -> None:
        self.predictor = model if isinstance(model, Predictor) else Predictor(model)
        self.model: Sam = self.predictor.model
        _check_int("crop_n_layers", crop_n_layers, 0)
        _check_int("crop_n_points_downscale_factor", crop_n_points_downscale_factor, 1)
        _check_int("points_per_batch", points_per_batch, 1)
        _check_range("stability_score_offset", stability_score_offset, 0, float("inf"))
        _check_range("crop_overlap_ratio", crop_overlap_ratio, 0, 1)
        if (points_per_side is None) == (point_grids is None):
            raise InputError("give exactly one of points_per_side and point_grids")
        if points_per_side is not None:
            _check_int("points_per_side", points_per_side, 1)
            grids = M.build_all_layer_point_grids(
                points_per_side, crop_n_layers, crop_n_points_downscale_factor
            )
        else:
            grids = [np.asarray(g, dtype=np.float64) for g in point_grids or []]
            if len(grids) < crop_n_layers + 1:
                raise InputError(
                    f"point_grids needs one grid per crop layer ({crop_n_layers + 1}), "
                    f"got {len(grids)}"
                )
            for g in grids:
                if g.ndim != 2 or g.shape[1] != 2 or not np.all((g >= 0) & (g <= 1)):
                    raise InputError("each point grid must be N×2 with coordinates in [0, 1]")
        if any(len(g) == 0 for g in grids[: crop_n_layers + 1]):
            raise InputError("a point grid is empty (points_per_side too small for the layers)")
        self.point_grids = grids
        self.points_per_side = points_per_side
        self.points_per_batch = int(points_per_batch)
        self.stability_score_offset = float(stability_score_offset)
        self.crop_n_layers = int(crop_n_layers)
        self.crop_overlap_ratio = float(crop_overlap_ratio)
        self.crop_n_points_downscale_factor = int(crop_n_points_downscale_factor)
        self._selection = _Selection(
            pred_iou_thresh,
            stability_score_thresh,
            box_nms_thresh,
            crop_nms_thresh,
            min_mask_region_area,
            max_area_fraction,
            output_mode,
        )
        _check_selection(self._selection)

    def __getattr__(self, name: str) -> Any:
        # pred_iou_thresh, output_mode, ...: read through to the selection options
        sel = self.__dict__.get("_selection")
        if sel is not None and name in sel.__dataclass_fields__:
            return getattr(sel, name)
        raise AttributeError(name)

    @classmethod
    def from_preset(cls, preset: str, model: Sam | Predictor, **overrides: Any) -> MaskGenerator:
        """A generator with a named preset's options (``PRESETS``), optionally overridden."""
        if preset not in PRESETS:
            raise InputError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
        return cls(model, **{**PRESETS[preset], **overrides})

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
        return self._select(cands, sel)

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
        _check_range("pred_iou_floor", pred_iou_floor, 0, 1)
        _check_range("stability_floor", stability_floor, 0, 1)
        floors = replace(
            self._selection, pred_iou_thresh=pred_iou_floor, stability_score_thresh=stability_floor
        )
        return self._decode(image, embedding, original_size, image_format, floors)

    def refilter(self, candidates: MaskCandidates, **overrides: Any) -> list[MaskRecord]:
        """Select masks from ``candidates`` with this generator's options, changed by
        ``overrides``: any of pred_iou_thresh, stability_score_thresh, box_nms_thresh,
        crop_nms_thresh, min_mask_region_area, max_area_fraction, output_mode."""
        unknown = set(overrides) - set(_Selection.__dataclass_fields__)
        if unknown:
            raise InputError(
                f"refilter cannot change {sorted(unknown)} (they need the model); it can "
                f"change {sorted(_Selection.__dataclass_fields__)}"
            )
        if candidates.stability_score_offset != self.stability_score_offset:
            raise InputError("the candidates were made with another stability_score_offset")
        sel = replace(self._selection, **overrides)
        _check_selection(sel)
        for name, thresh, floor in (
            ("pred_iou_thresh", sel.pred_iou_thresh, candidates.pred_iou_floor),
            ("stability_score_thresh", sel.stability_score_thresh, candidates.stability_floor),
        ):
            if floor > 0 and thresh < floor:
                raise InputError(
                    f"{name}={thresh:g} is below the candidates' floor {floor:g}: masks under "
                    "the floor were not kept; make candidates with a lower floor"
                )
        return self._select(candidates, sel)

    # ----- decoding -----------------------------------------------------------------------
    @torch.inference_mode()
    def _decode(
        self,
        image: ImageLike | None,
        embedding: torch.Tensor | np.ndarray | None,
        original_size: tuple[int, int] | None,
        image_format: str,
        cut: _Selection,
    ) -> MaskCandidates:
        rgb = None if image is None else to_rgb_uint8(image, image_format)
        if rgb is None and embedding is None:
            if not self.predictor.is_image_set:
                raise InputError("give an image, or an embedding, or set an image on the predictor")
            embedding = self.predictor.get_image_embedding()
            original_size = self.predictor.original_size
        if rgb is not None:
            original_size = rgb.shape[:2]
        if original_size is None:
            raise InputError("original_size (H, W) is needed with an embedding and no image")
        h, w = int(original_size[0]), int(original_size[1])
        crop_boxes, layers = M.generate_crop_boxes(
            (h, w), self.crop_n_layers, self.crop_overlap_ratio
        )
        if rgb is None and len(crop_boxes) > 1:
            raise InputError("crop layers need the image itself, not only its embedding")
        encoder = Predictor(self.model)  # a private one: the caller's predictor keeps its image
        crops = []
        for box, layer in zip(crop_boxes, layers, strict=True):
            x0, y0, x1, y1 = box
            if x1 <= x0 or y1 <= y0:
                continue  # an image smaller than the crop grid
            if embedding is not None and box == [0, 0, w, h]:
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

    def _decode_crop(
        self, enc: Predictor, box: list[int], layer: int, image_hw: tuple[int, int], cut: _Selection
    ) -> _CropMasks:
        model = self.model
        crop_h, crop_w = enc.original_size
        dev = enc.device
        points = self.point_grids[layer] * np.array([[crop_w, crop_h]])  # N×2 XY, crop pixels
        decoder = PointDecoder(model, enc.get_image_embedding())
        # Bounds the upscaled logits held at once: the 1024² intermediate or the crop itself.
        side = model.image_encoder.img_size
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
            tokens, keys = decoder.transformer(sparse)
            iou = decoder.iou_predictions(tokens)[:, 1:]  # B×3: the multimask outputs
            keep = (
                iou > cut.pred_iou_thresh
                if cut.pred_iou_thresh > 0
                else torch.ones_like(iou, dtype=torch.bool)
            )
            rows = keep.any(dim=1).nonzero()[:, 0]
            if len(rows) == 0:
                continue
            n_out = iou.shape[1]
            low = decoder.mask_logits(tokens[rows], keys[rows], range(1, 1 + n_out))
            low = low[keep[rows]]  # K×s×s, point-major like the official flattening
            kept_iou = iou[rows][keep[rows]]
            kept_pts = torch.as_tensor(pts, device=dev)[rows].repeat_interleave(
                keep[rows].sum(1), dim=0
            )
            for c in range(0, len(low), chunk):
                logits = model.postprocess_masks(
                    low[c : c + chunk, None], enc.input_size, (crop_h, crop_w)
                )[:, 0]
                stab = M.stability_score(logits, model.mask_threshold, self.stability_score_offset)
                ok = (
                    stab >= cut.stability_score_thresh
                    if cut.stability_score_thresh > 0
                    else torch.ones_like(stab, dtype=torch.bool)
                )
                binary = logits[ok] > model.mask_threshold
                del logits
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

        return _CropMasks(
            box,
            cat("iou", torch.zeros(0)),
            cat("stab", torch.zeros(0)),
            cat("boxes", torch.zeros(0, 4, dtype=torch.int64)),
            cat("points", torch.zeros(0, 2, dtype=torch.float64)),
            parts["rles"],
        )

    # ----- selection ----------------------------------------------------------------------
    def _select(self, cands: MaskCandidates, sel: _Selection) -> list[MaskRecord]:
        h, w = cands.image_size
        crop_idx, mask_idx = [], []
        for ci, crop in enumerate(cands.crops):
            keep = torch.ones(len(crop.rles), dtype=torch.bool)
            if sel.pred_iou_thresh > 0:
                keep &= crop.iou > sel.pred_iou_thresh
            if sel.stability_score_thresh > 0:
                keep &= crop.stability >= sel.stability_score_thresh
            idx = keep.nonzero()[:, 0]
            groups = torch.zeros(len(idx))
            idx = idx[
                M.batched_nms(crop.boxes[idx].float(), crop.iou[idx], groups, sel.box_nms_thresh)
            ]
            crop_idx += [ci] * len(idx)
            mask_idx += idx.tolist()
        crops = [cands.crops[c] for c in crop_idx]
        crop_boxes = torch.tensor([c.crop_box for c in crops], dtype=torch.int64).reshape(-1, 4)
        boxes = (
            torch.stack(
                [
                    M.uncrop_boxes_xyxy(c.boxes[i], c.crop_box)
                    for c, i in zip(crops, mask_idx, strict=True)
                ]
            )
            if crops
            else torch.zeros(0, 4, dtype=torch.int64)
        )
        order = list(range(len(crops)))
        if cands.multi_crop and crops:
            # Prefer masks from smaller (more zoomed-in) crops.
            scores = 1 / M.box_area(crop_boxes)
            order = M.batched_nms(
                boxes.float(), scores, torch.zeros(len(boxes)), sel.crop_nms_thresh
            ).tolist()
        # Each kept mask: (crop, index in crop, box in image, RLE, the RLE's frame XYXY)
        kept = [
            (crops[k], mask_idx[k], boxes[k], crops[k].rles[mask_idx[k]], crops[k].crop_box)
            for k in order
        ]
        if sel.min_mask_region_area > 0 and kept:
            kept = self._clean_regions(kept, (h, w), sel)
        records = []
        for crop, i, box, rle, frame in kept:
            area = M.rle_area(rle)
            if sel.max_area_fraction is not None and area >= sel.max_area_fraction * h * w:
                continue
            x0, y0 = crop.crop_box[:2]
            records.append(
                MaskRecord(
                    segmentation=_output(rle, frame, (h, w), sel.output_mode),
                    area=area,
                    bbox=M.box_xyxy_to_xywh(box).tolist(),
                    predicted_iou=crop.iou[i].item(),
                    point_coords=[(crop.points[i] + torch.tensor([x0, y0])).tolist()],
                    stability_score=crop.stability[i].item(),
                    crop_box=M.box_xyxy_to_xywh(torch.tensor(crop.crop_box)).tolist(),
                )
            )
        return records

    @staticmethod
    def _clean_regions(kept: list, image_hw: tuple[int, int], sel: _Selection) -> list:
        """Fill small holes, drop small islands, then NMS again, preferring unchanged masks."""
        new_masks, unchanged = [], []
        for _, _, _, rle, frame in kept:
            mask = _paste(M.decode_rle(rle), frame, image_hw)
            mask, changed_holes = M.remove_small_regions(mask, sel.min_mask_region_area, "holes")
            mask, changed_islands = M.remove_small_regions(
                mask, sel.min_mask_region_area, "islands"
            )
            new_masks.append(mask)
            unchanged.append(float(not (changed_holes or changed_islands)))
        boxes = torch.stack([M.batched_mask_to_box(torch.from_numpy(m)) for m in new_masks])
        thresh = max(sel.box_nms_thresh, sel.crop_nms_thresh)
        order = M.batched_nms(
            boxes.float(), torch.tensor(unchanged), torch.zeros(len(boxes)), thresh
        )
        out = []
        full = [0, 0, image_hw[1], image_hw[0]]
        for k in order.tolist():
            crop, i, box, rle, frame = kept[k]
            if not unchanged[k]:
                box, rle, frame = boxes[k], M.encode_rle(new_masks[k]), full
            out.append((crop, i, box, rle, frame))
        return out


def _paste(mask: np.ndarray, frame: list[int], image_hw: tuple[int, int]) -> np.ndarray:
    """A mask of the frame XYXY -> the H×W image mask (zero outside the frame)."""
    x0, y0, x1, y1 = frame
    if (x0, y0, x1, y1) == (0, 0, image_hw[1], image_hw[0]):
        return mask
    out = np.zeros(image_hw, dtype=bool)
    out[y0:y1, x0:x1] = mask
    return out


def _output(rle: dict[str, Any], frame: list[int], image_hw: tuple[int, int], mode: str) -> Any:
    whole = list(frame) == [0, 0, image_hw[1], image_hw[0]]
    if mode == "coco_rle" and whole:
        return dict(rle)
    mask = _paste(M.decode_rle(rle), frame, image_hw)
    if mode == "binary_mask":
        return mask
    if mode == "coco_rle":
        return M.encode_rle(mask)
    return M.mask_to_uncompressed_rle(torch.from_numpy(mask)[None])[0]
