"""The automatic generator's records and its selection stage.

Decoding (``segany.automatic``) yields, per crop, every mask that passed the quality cuts with its
scores, box and COCO RLE (``CropMasks``). Selection here needs no model: quality thresholds,
box NMS inside each crop, NMS across crops, hole/island removal, the area cap, and the records
in the requested output mode. ``MaskGenerator.refilter`` re-runs only this stage.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

from segany import masks as M
from segany.errors import InputError

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")


@dataclass(eq=False)
class MaskRecord(Mapping[str, Any]):
    """One mask, with the official record's fields and meaning.

    segmentation: H×W bool (``binary_mask``) or an RLE dict; bbox and crop_box: XYWH pixels
    (bbox width/height are max - min of the mask's pixel indices, as officially); point_coords:
    ``[[x, y]]``, the grid point that produced the mask, in image pixels.

    Also a read-only mapping with the official keys, so code written for the official dicts
    (``ann["area"]``, ``ann.keys()``, ``sorted(anns, key=lambda a: a["area"])``) runs as is;
    ``to_dict()`` gives the plain dict (e.g. for ``json.dumps`` in ``coco_rle`` mode).
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

    # Mapping: the official keys, in the official order.
    def __getitem__(self, key: str) -> Any:
        if key not in _RECORD_KEYS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(_RECORD_KEYS)

    def __len__(self) -> int:
        return len(_RECORD_KEYS)

    def mask(self) -> np.ndarray:
        """The mask as H×W bool, whatever the output mode."""
        if isinstance(self.segmentation, np.ndarray):
            return self.segmentation
        return M.decode_rle(self.segmentation)


_RECORD_KEYS = tuple(f.name for f in fields(MaskRecord))


@dataclass
class CropMasks:
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
    crops: list[CropMasks] = field(repr=False)

    def __len__(self) -> int:
        return sum(len(c.rles) for c in self.crops)


@dataclass(frozen=True)
class Selection:
    """The options that act after decoding (all that ``refilter`` may change)."""

    pred_iou_thresh: float
    stability_score_thresh: float
    box_nms_thresh: float
    crop_nms_thresh: float
    min_mask_region_area: int
    max_area_fraction: float | None
    output_mode: str


def _finite(value: Any) -> bool:
    """A finite real number (a Python int beyond float's range is not: numpy cannot test it)."""
    try:
        return math.isfinite(float(value))
    except (OverflowError, TypeError, ValueError):
        return False


def check_range(name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False) -> None:
    # numbers.Real: Python and numpy ints and floats (np.float32(0.5) included), not bool.
    ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if ok and _finite(value) and (value > lo if lo_open else value >= lo) and value <= hi:
        return
    left = "(" if lo_open else "["
    raise InputError(f"{name} must be a number in {left}{lo:g}, {hi:g}], got {value!r}")


def check_int(name: str, value: Any, lo: int, hi: int | None = None) -> None:
    """``value`` is a whole number (Python or numpy int) in [lo, hi] (no upper bound: None)."""
    is_int = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if is_int and value >= lo and (hi is None or value <= hi):
        return
    bound = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
    raise InputError(f"{name} must be an integer {bound}, got {value!r}")


def check_point_grids(point_grids: Any, crop_n_layers: int) -> list[np.ndarray]:
    """``point_grids`` (one N×2 array of [0, 1] XY per crop layer) as float64 arrays, or an
    ``InputError`` saying which grid is wrong and why."""
    if getattr(point_grids, "ndim", None) == 2:  # one bare N×2 array: the list is missing
        raise InputError(
            "point_grids must be a list with one N×2 array per crop layer, got a single "
            f"{'×'.join(map(str, point_grids.shape))} array; wrap it: point_grids=[grid]"
        )
    try:
        grids = list(point_grids)
    except TypeError:
        raise InputError(
            f"point_grids must be a list of N×2 arrays, got {type(point_grids).__name__}"
        ) from None
    if len(grids) < crop_n_layers + 1:
        raise InputError(
            f"point_grids needs one grid per crop layer ({crop_n_layers + 1}), got {len(grids)}"
        )
    out = []
    for i, g in enumerate(grids):
        if hasattr(g, "detach"):
            g = g.detach().cpu().float().numpy()
        try:
            raw = np.asarray(g)
            if raw.dtype.kind not in "iuf":
                raise TypeError(f"dtype {raw.dtype}")
            arr = raw.astype(np.float64)
        except (TypeError, ValueError) as e:
            why = f"({e})" if isinstance(e, TypeError) else "(its rows have different lengths)"
            raise InputError(f"point grid {i} must be a numeric N×2 array {why}") from None
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise InputError(f"point grid {i} must be N×2 (XY in [0, 1]), got shape {arr.shape}")
        if not np.all((arr >= 0) & (arr <= 1)):
            raise InputError(f"point grid {i} has coordinates outside [0, 1] (or NaN)")
        out.append(arr)
    return out


def check_selection(s: Selection) -> None:
    # Predicted IoUs are unbounded regressions: any finite threshold is meaningful (<= 0 keeps
    # every mask, as officially).
    t = s.pred_iou_thresh
    if isinstance(t, (bool, np.bool_)) or not isinstance(t, numbers.Real) or not _finite(t):
        raise InputError(f"pred_iou_thresh must be a finite number, got {t!r}")
    check_range("stability_score_thresh", s.stability_score_thresh, 0, 1)
    check_range("box_nms_thresh", s.box_nms_thresh, 0, 1)
    check_range("crop_nms_thresh", s.crop_nms_thresh, 0, 1)
    check_int("min_mask_region_area", s.min_mask_region_area, 0)
    if s.max_area_fraction is not None:
        check_range("max_area_fraction", s.max_area_fraction, 0, 1, lo_open=True)
    if s.output_mode not in OUTPUT_MODES:
        raise InputError(f"output_mode must be one of {OUTPUT_MODES}, got {s.output_mode!r}")


def select(cands: MaskCandidates, sel: Selection) -> list[MaskRecord]:
    """The masks ``sel`` keeps from ``cands``, as records, in the official order."""
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
        idx = idx[M.batched_nms(crop.boxes[idx].float(), crop.iou[idx], groups, sel.box_nms_thresh)]
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
        kept = _clean_regions(kept, (h, w), sel)
    records = []
    for crop, i, box, rle, frame in kept:
        area = M.rle_area(rle, trusted=True)  # encoded by the generator above
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


def _clean_regions(kept: list, image_hw: tuple[int, int], sel: Selection) -> list:
    """Fill small holes, drop small islands, then NMS again, preferring unchanged masks.

    Each mask is cleaned in its own frame (``_clean_in_frame``), so a tile's mask in a large
    image never becomes a full-size array."""
    new_masks, frames, unchanged = [], [], []
    for _, _, _, rle, frame in kept:
        mask, frame, changed = _clean_in_frame(
            M.decode_rle(rle, trusted=True), list(frame), image_hw, sel.min_mask_region_area
        )
        new_masks.append(mask)
        frames.append(frame)
        unchanged.append(float(not changed))
    boxes = torch.stack(
        [
            M.uncrop_boxes_xyxy(M.batched_mask_to_box(torch.from_numpy(m)), f)
            for m, f in zip(new_masks, frames, strict=True)
        ]
    )
    thresh = max(sel.box_nms_thresh, sel.crop_nms_thresh)
    order = M.batched_nms(boxes.float(), torch.tensor(unchanged), torch.zeros(len(boxes)), thresh)
    out = []
    for k in order.tolist():
        crop, i, box, rle, frame = kept[k]
        if not unchanged[k]:
            box, rle, frame = boxes[k], M.encode_rle(new_masks[k]), frames[k]
        out.append((crop, i, box, rle, frame))
    return out


def _clean_in_frame(
    mask: np.ndarray, frame: list[int], image_hw: tuple[int, int], area: int
) -> tuple[np.ndarray, list[int], bool]:
    """``remove_small_regions`` (holes, then islands) of a frame's mask as if it were pasted
    into the image (zero outside the frame): the mask stays in its frame, padded with a ring of
    zeros, at least ``area`` px, on each side that is not the image's edge, so that a hole
    touching such a side joins the outside and is not filled. That equals the full image's
    answer when every strip of the image beside the frame holds ``area`` px or more (then
    every part of the outside is no small hole); otherwise the mask is pasted whole."""
    h, w = image_hw
    x0, y0, x1, y1 = frame
    strips = [x0 * h, y0 * w, (w - x1) * h, (h - y1) * w]  # left, top, right, bottom
    if frame != [0, 0, w, h] and min(a for a in strips if a > 0) < area:
        mask, frame = _paste(mask, frame, image_hw), [0, 0, w, h]
        x0, y0, x1, y1 = frame
    ring = max(1, -(-area // max(1, min(mask.shape))))
    pads = [ring if a > 0 else 0 for a in (y0 * w, (h - y1) * w, x0 * h, (w - x1) * h)]
    padded = np.pad(mask, ((pads[0], pads[1]), (pads[2], pads[3])))
    padded, holes = M.remove_small_regions(padded, area, "holes")
    padded, islands = M.remove_small_regions(padded, area, "islands")
    if not (holes or islands):
        return mask, frame, False
    inner = padded[pads[0] : padded.shape[0] - pads[1], pads[2] : padded.shape[1] - pads[3]]
    return np.ascontiguousarray(inner), frame, True


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
    if mode == "coco_rle":  # pasted as RLE: no image-sized array (large tiled images)
        return M.place_rle(M.decode_rle(rle, trusted=True), image_hw, frame[:2])
    mask = _paste(M.decode_rle(rle, trusted=True), frame, image_hw)
    if mode == "binary_mask":
        return mask
    if mode == "coco_rle":
        return M.encode_rle(mask)
    return M.mask_to_uncompressed_rle(torch.from_numpy(mask)[None])[0]
