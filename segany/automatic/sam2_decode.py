"""Segment-everything decoding for SAM 2 models, as ``SAM2AutomaticMaskGenerator`` does it.

What differs from SAM 1's path (``MaskGenerator._decode_crop``): the grid points are scaled to
SAM 2's square frame; each point is decoded by ``Sam2.decode`` (three masks, or with
``multimask_output=False`` the single mask or its stable fallback); with ``use_m2m`` every mask
is decoded once more from its own point with its low-res logits (clamped to ±32) as the mask
prompt, single output; masks are resized from the low-res logits straight to the crop size, and
the stability score is read off those logits. Masks whose predicted IoU fails the threshold are
never resized (the official resizes all of them; the kept ones are the same).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from segany import masks as M
from segany.automatic.select import CropMasks
from segany.inference.predictor import Predictor
from segany.modeling import Sam2

_UPSCALE_FLOATS = 64 * 2**20  # crop-sized float logits resized at once (256 MB)


def stability_scores(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """K×H×W logits -> K: area above threshold + offset over area above threshold - offset."""
    inner = (logits > threshold + offset).flatten(1).sum(1, dtype=torch.int32)
    outer = (logits > threshold - offset).flatten(1).sum(1, dtype=torch.int32)
    return inner / outer


def decode_crop_sam2(
    enc: Predictor,
    points: np.ndarray,
    box: list[int],
    image_hw: tuple[int, int],
    *,
    points_per_batch: int,
    pred_iou_thresh: float,
    stability_score_thresh: float,
    stability_score_offset: float,
    use_m2m: bool,
    multimask_output: bool,
) -> CropMasks:
    """The masks of one crop whose image is set on ``enc`` (a SAM 2 model's Predictor), for
    grid ``points`` N×2 (XY crop pixels), in the official order; boxes and RLEs in the crop
    frame. Masks cut by a crop edge that is not an image edge are dropped."""
    model = enc.model
    assert isinstance(model, Sam2)
    state = enc._require_image()
    high_res = state.early
    assert high_res is not None  # a SAM 2 image state carries its high-res features
    crop_h, crop_w = state.original_size
    dev = enc.device
    thr = model.mask_threshold
    image_box = [0, 0, image_hw[1], image_hw[0]]
    chunk = max(1, _UPSCALE_FLOATS // (crop_h * crop_w))
    parts: dict[str, list] = {k: [] for k in ("iou", "stab", "boxes", "points", "rles")}

    def decode(
        coords: torch.Tensor, mask_input: torch.Tensor | None, multimask: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """coords B×2 frame XY (one click each) -> low-res logits B×M×s×s, IoU B×M."""
        labels = torch.ones(len(coords), 1, dtype=torch.int, device=dev)
        lows, ious = [], []
        step = enc.decode_chunk if dev.type == "cpu" else len(coords)
        for s in range(0, len(coords), step):
            low, iou = model.decode(
                state.features,
                high_res,
                (coords[s : s + step, None], labels[s : s + step]),
                None if mask_input is None else mask_input[s : s + step],
                multimask,
            )
            lows.append(low)
            ious.append(iou)
        return torch.cat(lows), torch.cat(ious)

    for start in range(0, len(points), points_per_batch):
        pts = points[start : start + points_per_batch]
        frame = enc.transform.apply_coords(pts, (crop_h, crop_w))
        coords = torch.as_tensor(frame, dtype=torch.float32, device=dev)
        low, iou = decode(coords, None, multimask_output)
        k = low.shape[1]
        low, iou = low.flatten(0, 1), iou.flatten(0, 1)
        pts_t = torch.as_tensor(pts, dtype=torch.float64).repeat_interleave(k, dim=0)
        if use_m2m:
            # Each mask again from its own point, its clamped low-res logits as the mask prompt.
            coords = coords.repeat_interleave(k, dim=0)
            low, iou = decode(coords, low.clamp(-32.0, 32.0)[:, None], False)
            low, iou = low[:, 0], iou[:, 0]
        keep = iou > pred_iou_thresh if pred_iou_thresh > 0 else torch.ones_like(iou).bool()
        idx = keep.nonzero()[:, 0]
        for c in range(0, len(idx), chunk):
            rows = idx[c : c + chunk]
            logits = F.interpolate(
                low[rows, None], (crop_h, crop_w), mode="bilinear", align_corners=False
            )[:, 0]
            stab = stability_scores(logits, thr, stability_score_offset)
            ok = stab >= stability_score_thresh if stability_score_thresh > 0 else stab == stab
            binary = logits[ok] > thr
            del logits
            boxes = M.batched_mask_to_box(binary)
            inner = ~M.is_box_near_crop_edge(boxes, box, image_box)
            parts["iou"].append(iou[rows][ok][inner].float().cpu())
            parts["stab"].append(stab[ok][inner].float().cpu())
            parts["boxes"].append(boxes[inner].cpu())
            parts["points"].append(pts_t[rows.cpu()][ok.cpu()][inner.cpu()])
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
