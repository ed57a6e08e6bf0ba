"""Pure mask helpers: RLE, boxes, NMS, stability score, small regions, polygons, crops.

Conventions: masks are ``H×W`` (or ``B×H×W``) bool; boxes are XYXY pixel coordinates unless a
name says XYWH; points are XY. Nothing here holds state or touches a model.

Two RLE forms are used, both column-major (Fortran order) like COCO:
- COCO RLE, ``{"size": [H, W], "counts": str}``: compressed by pycocotools, JSON-ready.
- uncompressed RLE, ``{"size": [H, W], "counts": list[int]}``: run lengths starting with the
  run of zeros (0 when the first pixel is set), the form the official generator emits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import product
from typing import Any

import numpy as np
import torch
from pycocotools import mask as _coco

from segany.errors import InputError
from segany.limits import check_image_size

RLE = dict[str, Any]

__all__ = [
    "RLE",
    "batched_mask_to_box",
    "batched_nms",
    "box_area",
    "box_iou",
    "box_xyxy_to_xywh",
    "build_all_layer_point_grids",
    "build_point_grid",
    "compressed_runs",
    "decode_rle",
    "encode_rle",
    "encode_rles",
    "generate_crop_boxes",
    "is_box_near_crop_edge",
    "mask_to_polygons",
    "mask_to_uncompressed_rle",
    "nms",
    "place_rle",
    "remove_small_regions",
    "rle_area",
    "rle_from_runs",
    "stability_score",
    "uncompressed_rle_to_mask",
    "uncrop_boxes_xyxy",
    "uncrop_masks",
    "uncrop_points",
]


# --------------------------------------------------------------------------------------------
# RLE


def _rle_size(rle: RLE) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in rle["size"])
    except (KeyError, TypeError, ValueError):
        raise InputError(f"an RLE needs 'size': [H, W] and 'counts'; got {rle!r:.200}") from None
    if "counts" not in rle:
        raise InputError("an RLE needs 'counts' (str, bytes or a list of run lengths)")
    # A file's claim, checked before a mask of that size is allocated.
    return check_image_size(h, w, what="RLE size", allow_empty=True)


def _as_coco(rle: RLE, trusted: bool = False) -> dict[str, Any]:
    """Return the pycocotools object (bytes counts) for any RLE form; compressed counts are
    checked first (pycocotools decodes runs that do not cover H×W from whatever memory follows,
    a different junk mask on every call) unless ``trusted``: encoded by segany itself."""
    h, w = _rle_size(rle)
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        if isinstance(counts, str) and not counts.isascii():
            raise InputError("RLE counts must be ASCII (COCO compressed counts '0'-'o')")
        raw = counts.encode("ascii") if isinstance(counts, str) else counts
        if not trusted:
            check_compressed_counts(raw, h * w)
        return {"size": [h, w], "counts": raw}
    return _coco.frPyObjects({"size": [h, w], "counts": [int(c) for c in counts]}, h, w)


def check_compressed_counts(counts: bytes, pixels: int) -> None:
    """``InputError`` unless COCO's compressed ``counts`` are run lengths >= 0 that add up to
    ``pixels`` (``compressed_runs``)."""
    runs = compressed_runs(counts)
    if sum(runs) != pixels:
        raise InputError(f"RLE counts sum to {sum(runs)}, expected H*W = {pixels}")


def compressed_runs(counts: bytes | str) -> list[int]:
    """The run lengths of COCO's compressed ``counts`` (zeros first), or an ``InputError``.
    The format: each run is written in 5-bit groups as characters from '0' (48), bit 0x20
    meaning "more groups follow" and bit 0x10 of the last group the sign; from the third run
    on, the value is the difference to the run two places before."""
    raw = counts.encode("ascii") if isinstance(counts, str) else counts
    runs: list[int] = []
    value = shift = 0
    for byte in raw:
        c = byte - 48
        if not 0 <= c < 64:
            raise InputError(
                f"RLE counts hold {chr(byte)!r}, not a COCO compressed RLE character ('0'-'o')"
            )
        value |= (c & 0x1F) << shift
        shift += 5
        if c & 0x20:
            continue
        if c & 0x10:  # negative: extend the sign
            value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            raise InputError(f"RLE counts decode to a negative run ({value})")
        runs.append(value)
        value = shift = 0
    if shift:
        raise InputError("RLE counts end in the middle of a run")
    return runs


def rle_from_runs(start: np.ndarray, end: np.ndarray, image_hw: Sequence[int]) -> RLE:
    """The COCO RLE of an (H, W) mask set on the flat column-major index ranges
    ``start[i]:end[i]``, which are sorted, non-empty and do not overlap (they may touch)."""
    h_img, w_img = (int(v) for v in image_hw)
    if h_img * w_img >= 2**32:
        raise InputError(
            f"a {h_img}×{w_img} mask has too many pixels for COCO RLE (32-bit run lengths)"
        )
    start, end = np.asarray(start, np.int64), np.asarray(end, np.int64)
    # A run that ends where the next begins (the foot of one column, the top of the next) is
    # one run.
    joined = np.nonzero(end[:-1] == start[1:])[0]
    start, end = np.delete(start, joined + 1), np.delete(end, joined)
    bounds = np.empty(2 * len(start) + 2, np.int64)
    bounds[0], bounds[-1] = 0, h_img * w_img
    bounds[1:-1:2], bounds[2:-1:2] = start, end
    counts = np.diff(bounds)
    if len(counts) > 1 and counts[-1] == 0:
        counts = counts[:-1]  # (a mask set up to the last pixel: no empty run after it)
    rle = _coco.frPyObjects({"size": [h_img, w_img], "counts": counts.tolist()}, h_img, w_img)
    return {"size": [h_img, w_img], "counts": rle["counts"].decode("ascii")}


def encode_rles(masks: np.ndarray | torch.Tensor) -> list[RLE]:
    """COCO-encode ``B×H×W`` bool masks in one pycocotools call; counts as str."""
    if isinstance(masks, torch.Tensor):
        # B×W×H in C order is H×W×B in Fortran order: one copy, no extra transpose.
        arr = masks.detach().to("cpu", torch.uint8).transpose(1, 2).contiguous().numpy()
        arr = arr.transpose(2, 1, 0)
    else:
        masks = np.asarray(masks)
        if masks.ndim != 3:
            raise InputError(f"masks must be B×H×W, got shape {masks.shape}")
        arr = np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8, copy=False))
    if arr.shape[2] == 0:
        return []
    out = _coco.encode(arr)
    for r in out:
        r["counts"] = r["counts"].decode("ascii")
        r["size"] = [int(v) for v in r["size"]]
    return out


def encode_rle(mask: np.ndarray | torch.Tensor) -> RLE:
    """COCO-encode one ``H×W`` bool mask: ``{"size": [H, W], "counts": str}``."""
    if mask.ndim != 2:
        raise InputError(f"mask must be H×W, got shape {tuple(mask.shape)}")
    return encode_rles(mask[None])[0]


def decode_rle(rle: RLE, *, trusted: bool = False) -> np.ndarray:
    """Decode any RLE (COCO str/bytes counts, or uncompressed list counts) to ``H×W`` bool.
    ``trusted``: made by ``encode_rle``/``encode_rles`` in this process, so the check of the
    compressed runs (pure Python) is skipped; never for RLEs read from a file or a request."""
    h, w = _rle_size(rle)
    if not isinstance(rle["counts"], (str, bytes)):
        return uncompressed_rle_to_mask(rle)
    return _coco.decode(_as_coco(rle, trusted)).astype(bool)


def rle_area(rle: RLE, *, trusted: bool = False) -> int:
    """Number of set pixels of an RLE in either form (``trusted`` as for ``decode_rle``)."""
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        return int(_coco.area(_as_coco(rle, trusted)))
    h, w = _rle_size(rle)
    return int(_checked_runs(counts, h * w)[1::2].sum())


def place_rle(
    mask: np.ndarray, image_hw: tuple[int, int], offset: Sequence[int] = (0, 0), scale: int = 1
) -> RLE:
    """The COCO RLE, at the image's size ``image_hw`` (H, W), of an ``h×w`` bool ``mask`` whose
    pixel (y, x) covers the image's pixels ``offset + (x, y) * scale`` to ``+ scale`` (XY offset;
    cut to the image), zero elsewhere, without allocating the H×W mask: a tile's mask pasted
    into a large image (scale 1), or a mask of a downscaled overview blown up by nearest
    neighbour. Equals ``encode_rle`` of the pasted (and ``np.repeat``-ed) mask. ``mask`` may
    also be a mask made when read (``segany.inference.column_masks.ColumnMasks``: ``shape``
    and column slices): it is read a block of columns at a time, never whole."""
    if not hasattr(mask, "columns"):
        mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise InputError(f"mask must be h×w, got shape {mask.shape}")
    h_img, w_img = (int(v) for v in image_hw)
    x0, y0 = (int(v) for v in offset)
    s = int(scale)
    if s < 1 or x0 < 0 or y0 < 0 or x0 >= w_img or y0 >= h_img:
        raise InputError(f"cannot place a mask at {offset} × {scale} in an image {image_hw}")
    col, top, bottom = mask.column_runs() if hasattr(mask, "column_runs") else column_runs(mask)
    # Each mask column covers image columns x0 + col*s ... + s (within the image).
    first = x0 + col.astype(np.int64) * s
    reps = np.clip(w_img - first, 0, s)
    x = np.repeat(first, reps) + _ramp(reps)
    keep = np.repeat(np.arange(len(col)), reps)
    start = x * h_img + np.minimum(y0 + top[keep].astype(np.int64) * s, h_img)
    end = x * h_img + np.minimum(y0 + bottom[keep].astype(np.int64) * s, h_img)
    # (a run repeated over s image columns: put them back in column-major order)
    order = np.argsort(start[start < end], kind="stable")
    start, end = start[start < end][order], end[start < end][order]
    return rle_from_runs(start, end, (h_img, w_img))


_RUN_BLOCK_BYTES = 16 << 20  # bytes of mask columns scanned for runs at once


def column_runs(mask: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The runs of set pixels of an h×w bool mask, column by column, top to bottom:
    (column, first row, row after the last), each 1-D. A block of columns at a time, so the
    temporaries stay at ``_RUN_BLOCK_BYTES`` however large the mask (fresh memory is slow to
    map: for a 20 000² mask the whole-mask temporaries were most of the time)."""
    h, w = mask.shape
    step = max(1, _RUN_BLOCK_BYTES // (h + 2))
    cols, tops, bottoms = [], [], []
    for c0 in range(0, w, step):
        block = mask[:, c0 : c0 + step]
        c, top, bottom = _block_runs(
            torch.as_tensor(block) if not isinstance(block, torch.Tensor) else block
        )
        cols.append(c + c0)
        tops.append(top)
        bottoms.append(bottom)
    if not cols:
        return (np.zeros(0, np.int64),) * 3  # type: ignore[return-value]
    return np.concatenate(cols), np.concatenate(tops), np.concatenate(bottoms)


def _block_runs(block: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``column_runs`` of one h×w bool block: its columns laid out one after another, each
    between two zeros, so the changes of one flat array are the runs' ends in column-major
    order (twice as fast as changes down the rows of the row-major block)."""
    h, w = block.shape
    flat = torch.zeros(w, h + 2, dtype=torch.int8)
    flat[:, 1:-1] = block.t()
    changes = torch.nonzero(torch.diff(flat.view(-1))).flatten().numpy()
    col, row = np.divmod(changes, h + 2)
    return col[0::2], row[0::2], row[1::2]


def _ramp(lengths: np.ndarray) -> np.ndarray:
    """0, 1, ..., n-1 for each n of ``lengths``, concatenated."""
    total = int(lengths.sum())
    return np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)


def mask_to_uncompressed_rle(masks: torch.Tensor) -> list[RLE]:
    """Uncompressed RLE of ``B×H×W`` bool masks (the official generator's format), vectorised."""
    if masks.ndim != 3:
        raise InputError(f"masks must be B×H×W, got shape {tuple(masks.shape)}")
    b, h, w = masks.shape
    if b == 0:
        return []
    if h * w == 0:
        return [{"size": [h, w], "counts": [0]} for _ in range(b)]
    # Column-major flatten, then every index where the value changes ends a run.
    flat = masks.detach().to("cpu", torch.bool).transpose(1, 2).reshape(b, h * w).numpy()
    rows, cols = np.nonzero(flat[:, 1:] != flat[:, :-1])
    per_row = np.bincount(rows, minlength=b)
    ends = np.split(cols + 1, np.cumsum(per_row)[:-1])
    out = []
    for i in range(b):
        bounds = np.concatenate(([0], ends[i], [h * w]))
        runs = np.diff(bounds).tolist()
        out.append({"size": [h, w], "counts": runs if not flat[i, 0] else [0, *runs]})
    return out


def _checked_runs(counts: Any, pixels: int) -> np.ndarray:
    """Uncompressed counts as int64 run lengths, or an ``InputError`` unless they are >= 0
    and add up to ``pixels``."""
    try:
        runs = np.asarray(counts, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError, OverflowError):
        raise InputError("RLE counts must be a list of whole run lengths") from None
    if (runs < 0).any():
        raise InputError(f"RLE counts must be run lengths >= 0, got {int(runs.min())}")
    if runs.sum() != pixels:
        raise InputError(f"RLE counts sum to {int(runs.sum())}, expected H*W = {pixels}")
    return runs


def uncompressed_rle_to_mask(rle: RLE) -> np.ndarray:
    """Decode an uncompressed RLE to an ``H×W`` bool mask (C order)."""
    h, w = _rle_size(rle)
    counts = _checked_runs(rle["counts"], h * w)
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape(w, h).T.copy()


# --------------------------------------------------------------------------------------------
# boxes and NMS


def box_xyxy_to_xywh(box: torch.Tensor) -> torch.Tensor:
    """``...×4`` XYXY -> XYWH (a new tensor)."""
    out = box.clone()
    out[..., 2:] = box[..., 2:] - box[..., :2]
    return out


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """``N×4`` XYXY -> ``N`` areas."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of ``N×4`` and ``M×4`` XYXY boxes -> ``N×M`` (same formula as torchvision)."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (box_area(a)[:, None] + box_area(b)[None, :] - inter)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS: indices kept, by descending score (ties: lower index first).

    A box is dropped when its IoU with an already kept, higher-scored box is > ``iou_threshold``,
    the torchvision rule. ``boxes`` N×4 XYXY, ``scores`` N -> int64 indices.
    """
    return _greedy_nms(boxes, scores, None, iou_threshold)


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """NMS within each group id only; kept indices by descending score (ties: lower index)."""
    return _greedy_nms(boxes, scores, groups, iou_threshold)


_NMS_CHUNK = 1024  # rows of the pairwise IoU matrix built at once (bounds memory)


def _greedy_nms(
    boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor | None, thr: float
) -> torch.Tensor:
    n = boxes.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.int64)
    order = torch.argsort(scores.detach().cpu(), descending=True, stable=True)
    b = boxes.detach().cpu()[order].float()
    g = None if groups is None else groups.detach().cpu()[order]
    # All pairwise suppressions at once (upper triangle: only higher scores suppress); the
    # greedy walk over kept boxes is the only sequential part.
    over = np.empty((n, n), dtype=bool)
    for s in range(0, n, _NMS_CHUNK):
        block = box_iou(b[s : s + _NMS_CHUNK], b) > thr
        if g is not None:
            block &= g[s : s + _NMS_CHUNK, None] == g[None, :]
        over[s : s + _NMS_CHUNK] = block.numpy()
    over = np.triu(over, k=1)
    removed = np.zeros(n, dtype=bool)
    keep = []
    for i in range(n):
        if not removed[i]:
            keep.append(i)
            removed |= over[i]
    return order[torch.as_tensor(keep, dtype=torch.int64)].to(boxes.device)


def batched_mask_to_box(masks: torch.Tensor) -> torch.Tensor:
    """The tight box of each mask: ``...×H×W`` bool -> ``...×4`` XYXY int64 (0,0,0,0 if empty).

    The one definition of a tight box in segany (automatic masks, evaluation and training
    prompts all use it): ``x0, y0`` are the first and ``x1, y1`` the last covered column and
    row, both inclusive, as the official ``batched_mask_to_box`` writes them.
    """
    *lead, h, w = masks.shape
    if masks.numel() == 0:
        return torch.zeros(*lead, 4, dtype=torch.int64, device=masks.device)
    m = masks.reshape(-1, h, w)
    rows = m.any(dim=2)  # N×H
    cols = m.any(dim=1)  # N×W
    ys = torch.arange(h, device=m.device)
    xs = torch.arange(w, device=m.device)
    top = torch.where(rows, ys, h).amin(dim=1)
    bottom = torch.where(rows, ys, -1).amax(dim=1)
    left = torch.where(cols, xs, w).amin(dim=1)
    right = torch.where(cols, xs, -1).amax(dim=1)
    out = torch.stack([left, top, right, bottom], dim=1)
    out[~rows.any(dim=1)] = 0
    return out.reshape(*lead, 4)


def mask_iou(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> torch.Tensor:
    """IoU of bool masks over the last two dims: ``...×H×W`` (torch or numpy) -> ``...`` float32.

    The one mask IoU in segany (training targets, validation, evaluation). Two empty masks
    count as a perfect match (1.0).
    """
    a, b = torch.as_tensor(a, dtype=torch.bool), torch.as_tensor(b, dtype=torch.bool)
    inter = (a & b).flatten(-2).sum(-1).float()
    union = (a | b).flatten(-2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


# --------------------------------------------------------------------------------------------
# stability score


def stability_score(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """IoU of ``logits > threshold ± offset`` masks: ``...×H×W`` logits -> ``...`` scores.

    The high mask lies inside the low one, so IoU is a ratio of pixel counts (NaN when both are
    empty). Counts are summed row-wise in int32, never materialising an int64 copy.
    """
    high = (logits > threshold + offset).sum(-1, dtype=torch.int32).sum(-1, dtype=torch.int32)
    low = (logits > threshold - offset).sum(-1, dtype=torch.int32).sum(-1, dtype=torch.int32)
    return high / low


# --------------------------------------------------------------------------------------------
# small regions and polygons


def remove_small_regions(
    mask: np.ndarray, area_thresh: float, mode: str
) -> tuple[np.ndarray, bool]:
    """Fill holes (``mode="holes"``) or drop islands (``"islands"``) smaller than ``area_thresh``.

    Connectivity is 8-way. When every island is small, the largest one is kept. Returns the new
    ``H×W`` bool mask and whether anything changed (the input is returned as is when not).
    """
    import cv2

    if mode not in ("holes", "islands"):
        raise InputError(f"mode must be 'holes' or 'islands', got {mode!r}")
    holes = mode == "holes"
    work = (np.asarray(mask, dtype=bool) ^ holes).astype(np.uint8)
    n_labels, labels, stats, _ = cv2.connectedComponentsWithStats(work, connectivity=8)
    sizes = stats[1:, cv2.CC_STAT_AREA]  # label 0 is the background
    small = sizes < area_thresh
    if not small.any():
        return mask, False
    if holes:
        # Pixels that are not part of a small hole keep the original mask's value.
        fill = np.concatenate(([True], small))  # background (= mask) and small holes
    else:
        fill = np.concatenate(([False], ~small))
        if not fill.any():
            fill[int(np.argmax(sizes)) + 1] = True
    return fill[labels], True


def mask_to_polygons(mask: np.ndarray, min_points: int = 3) -> list[list[list[float]]]:
    """Polygon rings of an ``H×W`` bool mask: outer boundaries and holes, via cv2.

    Each ring is ``[[x, y], ...]`` in pixel-centre coordinates (OpenCV's contour pixels), not
    closed (the first point is not repeated). Outer rings come first in each group, followed by
    that region's holes; outer rings run counter-clockwise in image coordinates (y down) as
    OpenCV traces them, holes clockwise. Rings with fewer than ``min_points`` points are dropped.
    """
    import cv2

    m = np.ascontiguousarray(np.asarray(mask, dtype=np.uint8))
    if m.ndim != 2:
        raise InputError(f"mask must be H×W, got shape {m.shape}")
    contours, hierarchy = cv2.findContours(m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    hier = hierarchy[0]
    rings: list[list[list[float]]] = []
    for i in range(len(contours)):
        if hier[i][3] != -1:
            continue  # a hole: emitted right after its outer ring
        group = [i]
        child = hier[i][2]
        while child != -1:
            group.append(child)
            child = hier[child][0]
        for j in group:
            pts = contours[j].reshape(-1, 2)
            if len(pts) >= min_points:
                rings.append(pts.astype(float).tolist())
    return rings


# --------------------------------------------------------------------------------------------
# point grids and crops


def build_point_grid(n_per_side: int) -> np.ndarray:
    """``n²×2`` XY points at cell centres of an ``n×n`` grid on [0,1]² (row by row)."""
    if n_per_side <= 0:
        return np.zeros((0, 2))
    offset = 1 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    xs = np.tile(side[None, :], (n_per_side, 1))
    ys = np.tile(side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(
    n_per_side: int, n_layers: int, scale_per_layer: int
) -> list[np.ndarray]:
    """One grid per crop layer 0..n_layers; layer i has ``int(n / scale**i)`` points per side."""
    return [build_point_grid(int(n_per_side / (scale_per_layer**i))) for i in range(n_layers + 1)]


def generate_crop_boxes(
    im_size: Sequence[int], n_layers: int, overlap_ratio: float
) -> tuple[list[list[int]], list[int]]:
    """XYXY crop boxes and their layer index: the whole image, then ``(2**i)²`` per layer i>0.

    Crops of one layer overlap by ``overlap_ratio`` of the short side (scaled down per layer) and
    are listed column by column (x outer, y inner), like the official generator.
    """
    im_h, im_w = int(im_size[0]), int(im_size[1])
    short_side = min(im_h, im_w)
    boxes, layers = [[0, 0, im_w, im_h]], [0]
    for i in range(n_layers):
        n = 2 ** (i + 1)
        overlap = int(overlap_ratio * short_side * (2 / n))
        crop_w = int(math.ceil((overlap * (n - 1) + im_w) / n))
        crop_h = int(math.ceil((overlap * (n - 1) + im_h) / n))
        x0s = [int((crop_w - overlap) * k) for k in range(n)]
        y0s = [int((crop_h - overlap) * k) for k in range(n)]
        for x0, y0 in product(x0s, y0s):
            boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
            layers.append(i + 1)
    return boxes, layers


def uncrop_boxes_xyxy(boxes: torch.Tensor, crop_box: Sequence[int]) -> torch.Tensor:
    """``...×4`` XYXY boxes in crop coordinates -> image coordinates."""
    x0, y0 = int(crop_box[0]), int(crop_box[1])
    return boxes + torch.tensor([x0, y0, x0, y0], device=boxes.device)


def uncrop_points(points: torch.Tensor, crop_box: Sequence[int]) -> torch.Tensor:
    """``...×2`` XY points in crop coordinates -> image coordinates."""
    x0, y0 = int(crop_box[0]), int(crop_box[1])
    return points + torch.tensor([x0, y0], device=points.device)


def uncrop_masks(
    masks: torch.Tensor, crop_box: Sequence[int], orig_h: int, orig_w: int
) -> torch.Tensor:
    """``...×h×w`` crop masks -> ``...×orig_h×orig_w``, zero outside the crop."""
    x0, y0, x1, y1 = (int(v) for v in crop_box)
    if (x0, y0, x1, y1) == (0, 0, orig_w, orig_h):
        return masks
    pad = (x0, orig_w - x1, y0, orig_h - y1)
    return torch.nn.functional.pad(masks, pad, value=0)


def is_box_near_crop_edge(
    boxes: torch.Tensor, crop_box: Sequence[int], orig_box: Sequence[int], atol: float = 20.0
) -> torch.Tensor:
    """``N×4`` crop-frame XYXY -> ``N`` bool: touches a crop edge that is not an image edge."""
    crop = torch.as_tensor(crop_box, dtype=torch.float, device=boxes.device)
    orig = torch.as_tensor(orig_box, dtype=torch.float, device=boxes.device)
    b = uncrop_boxes_xyxy(boxes, crop_box).float()
    near_crop = torch.isclose(b, crop[None], atol=atol, rtol=0)
    near_image = torch.isclose(b, orig[None], atol=atol, rtol=0)
    return (near_crop & ~near_image).any(dim=1)
