"""Segment-everything decoding for SAM 2 models, as ``SAM2AutomaticMaskGenerator`` does it.

What differs from SAM 1's path (``MaskGenerator._decode_crop``): the grid points are scaled to
SAM 2's square frame; each point is decoded by the Predictor's ``Sam2PointDecoder`` (the
image-side work once per image; three masks, or with ``multimask_output=False`` the single mask
or its stable fallback); with ``use_m2m`` every mask is decoded once more from its own point
with its low-res logits (clamped to ±32) as the mask prompt, single output (``Sam2.decode``);
masks are resized from the low-res logits straight to the crop size, and the stability score is
read off those logits. Without ``use_m2m``, multimask outputs whose predicted IoU fails the
threshold are never upscaled by the decoder, and no failed mask is resized (the official does
both for all of them; the kept ones are the same).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from segany import masks as M
from segany.automatic.select import CropMasks
from segany.inference.predictor import Predictor
from segany.inference.thread_pool import map_ordered
from segany.modeling import Sam2
from segany.modeling.mask_decoder_sam2_shared import Sam2PointDecoder

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
    decode_chunk: int = 2,
) -> CropMasks:
    """The masks of one crop whose image is set on ``enc`` (a SAM 2 model's Predictor), for
    grid ``points`` N×2 (XY crop pixels), in the official order; boxes and RLEs in the crop
    frame. Masks cut by a crop edge that is not an image edge are dropped. On the CPU
    ``decode_chunk`` prompts go through the decoder at a time (``MaskGenerator.decode_chunk``),
    the chunks side by side when torch has several threads."""
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
    decoder = enc.shared_decoder()  # the Predictor's own: built once per image
    assert isinstance(decoder, Sam2PointDecoder)
    step = decode_chunk if dev.type == "cpu" else points_per_batch

    def passes(iou: torch.Tensor) -> torch.Tensor:
        return iou > pred_iou_thresh if pred_iou_thresh > 0 else torch.ones_like(iou).bool()

    def first_pass(
        sparse: torch.Tensor, kept_only: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sparse prompts B×T×C -> (IoU B×M, kept B×M, low-res logits K×s×s of the kept
        masks in point-major order); ``kept_only=False``: every mask kept."""

        def piece(s: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
            tokens, keys = decoder.transformer(sparse[s : s + step])
            iou = decoder.iou_predictions(tokens)
            if not multimask_output:
                low, single = decoder.stable_single(tokens, keys, iou)
                keep = passes(single) if kept_only else torch.ones_like(single).bool()
                return single, keep, low[keep]
            iou = iou[:, 1:]
            keep = passes(iou) if kept_only else torch.ones_like(iou).bool()
            rows = keep.any(dim=1).nonzero()[:, 0]
            if len(rows) == 0:
                return iou, keep, None
            outputs = range(1, 1 + iou.shape[1])
            return iou, keep, decoder.mask_logits(tokens[rows], keys[rows], outputs)[keep[rows]]

        got = map_ordered(piece, range(0, len(sparse), step))
        lows = [low for _, _, low in got if low is not None]
        low = torch.cat(lows) if lows else sparse.new_zeros(0, 1, 1)
        return torch.cat([i for i, _, _ in got]), torch.cat([k for _, k, _ in got]), low

    def refine(coords: torch.Tensor, low: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """use_m2m: each mask K×s×s again from its own point (coords K×2), its clamped
        low-res logits as the mask prompt, single output -> logits K×s×s, IoU K."""
        labels = torch.ones(len(coords), 1, dtype=torch.int, device=dev)
        mask_input = low.clamp(-32.0, 32.0)[:, None]

        def piece(s: int) -> tuple[torch.Tensor, torch.Tensor]:
            rows = slice(s, s + step)
            points = (coords[rows, None], labels[rows])
            out, iou = model.decode(state.features, high_res, points, mask_input[rows], False)
            return out[:, 0], iou[:, 0]

        got = map_ordered(piece, range(0, len(coords), step))
        return torch.cat([o for o, _ in got]), torch.cat([i for _, i in got])

    for start in range(0, len(points), points_per_batch):
        pts = points[start : start + points_per_batch]
        frame = enc.transform.apply_coords(pts, (crop_h, crop_w))
        coords = torch.as_tensor(frame, dtype=torch.float32, device=dev)
        labels = torch.ones(len(pts), 1, dtype=torch.int, device=dev)
        sparse, _ = model.prompt_encoder(points=(coords[:, None], labels), boxes=None, masks=None)
        iou, keep, low = first_pass(sparse, kept_only=not use_m2m)
        k = iou.shape[1]
        pts_t = torch.as_tensor(pts, dtype=torch.float64).repeat_interleave(k, dim=0)
        iou, keep = iou.flatten(), keep.flatten()
        if use_m2m:  # every mask was kept: refine them all, then apply the threshold
            low, iou = refine(coords.repeat_interleave(k, dim=0), low)
            keep = passes(iou)
            low = low[keep]
        iou, pts_t = iou[keep], pts_t[keep.cpu()]
        for c in range(0, len(low), chunk):
            logits = F.interpolate(
                low[c : c + chunk, None], (crop_h, crop_w), mode="bilinear", align_corners=False
            )[:, 0]
            stab = stability_scores(logits, thr, stability_score_offset)
            ok = stab >= stability_score_thresh if stability_score_thresh > 0 else stab == stab
            binary = logits[ok] > thr
            del logits
            boxes = M.batched_mask_to_box(binary)
            inner = ~M.is_box_near_crop_edge(boxes, box, image_box)
            parts["iou"].append(iou[c : c + chunk][ok][inner].float().cpu())
            parts["stab"].append(stab[ok][inner].float().cpu())
            parts["boxes"].append(boxes[inner].cpu())
            parts["points"].append(pts_t[c : c + chunk][ok.cpu()][inner.cpu()])
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
