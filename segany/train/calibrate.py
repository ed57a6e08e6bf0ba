"""The automatic generator's quality thresholds for a model, and its logits' temperature.

The official thresholds (predicted IoU ≥ 0.88, stability ≥ 0.95 at a logit offset of 1) suit
the official models, whose masks are sharp and confident. A small model's are not: on
segany-tiny's held-out synthetic scenes they keep under one mask per image.
``sweep_generator_thresholds`` decodes each image once and measures every combination of
thresholds (average recall, COCO's AR@100, and the share of masks that match an object at
IoU ≥ 0.5); ``pick_thresholds`` takes the highest recall whose precision meets a floor
(near-equal recalls: the more precise). The
result is stored in the model's ``generator_defaults`` (saved with its weights), read by
``MaskGenerator.for_model``.

``fit_logit_scale`` measures whether the logits themselves are miscalibrated instead: the k
whose ``sigmoid(k·logit)`` best predicts the ground-truth pixels (binary cross-entropy over
whole images, the usual temperature scaling), from the center point's best-of-3 mask (an
ambiguous click is not counted against sharpness) and the tight box's mask. k near 1 means the
soft logits are an honest picture of the model's uncertainty and the thresholds are what to
change.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.nn import functional as F

from segany.errors import InputError

if TYPE_CHECKING:
    from segany.formats.datasets import Sample
    from segany.modeling import Sam


def _bce(logits: torch.Tensor, targets: torch.Tensor, k: float) -> float:
    return float(F.binary_cross_entropy_with_logits(logits * k, targets))


def fit_logit_scale(
    model: Sam, samples: Sequence[Sample], lo: float = 0.1, hi: float = 100.0
) -> tuple[float, dict[str, float]]:
    """The scale k in [lo, hi] minimising the pixel BCE of ``sigmoid(k·logit)`` against the
    ground truth (center-point best-of-3 and tight-box masks over ``samples``' objects).

    Returns k and ``{"bce_at_1", "bce", "pixels"}``. The loss is convex in k; the minimum is
    found by a golden-section search on log k to a relative precision of 1e-3.
    """
    from segany.evaluate.prompts import center_point, mask_box
    from segany.inference.predictor import Predictor
    from segany.masks import mask_iou

    if not samples:
        raise InputError("fit_logit_scale needs at least one sample")
    predictor = Predictor(model.eval(), cache=False)
    logits_all: list[torch.Tensor] = []
    targets_all: list[torch.Tensor] = []
    for sample in samples:
        image = sample.load_image()
        predictor.set_image(image)
        for obj in sample.objects:
            gt = obj.mask()
            if not gt.any():
                continue
            target = torch.from_numpy(np.ascontiguousarray(gt)).float()
            x, y = center_point(gt)
            point = predictor.predict(
                np.array([[x, y]], dtype=np.float32), np.array([1]), return_logits=True
            )
            masks = torch.as_tensor(point.masks)  # 3×H×W logits
            best = int(torch.argmax(mask_iou(masks > 0, gt)))
            box = predictor.predict(
                box=np.asarray(mask_box(gt), dtype=np.float32),
                multimask_output=False,
                return_logits=True,
            )
            for logits in (masks[best], torch.as_tensor(box.masks)[0]):
                logits_all.append(logits.flatten().float())
                targets_all.append(target.flatten())
    if not logits_all:
        raise InputError("fit_logit_scale found no non-empty object in the samples")
    logits = torch.cat(logits_all)
    targets = torch.cat(targets_all)
    a, b = math.log(lo), math.log(hi)
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = _bce(logits, targets, math.exp(c)), _bce(logits, targets, math.exp(d))
    while b - a > 1e-3:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = _bce(logits, targets, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = _bce(logits, targets, math.exp(d))
    k = math.exp((a + b) / 2)
    return k, {
        "bce_at_1": _bce(logits, targets, 1.0),
        "bce": _bce(logits, targets, k),
        "pixels": float(logits.numel()),
    }


@dataclass(frozen=True)
class ThresholdRow:
    """One combination of thresholds and what the generator gave with it."""

    stability_score_offset: float
    pred_iou_thresh: float
    stability_score_thresh: float
    ar100: float  # COCO average recall over IoU 0.50:0.95, 100 masks per image
    precision50: float  # share of the masks with IoU ≥ 0.5 against some ground-truth object
    masks_per_image: float


def sweep_generator_thresholds(
    model: Sam,
    samples: Sequence[Sample],
    offsets: Sequence[float] = (1.0, 0.5, 0.25),
    pred_iou: Sequence[float] = (0.5, 0.6, 0.7, 0.8, 0.88),
    stability: Sequence[float] = (0.8, 0.9, 0.95),
    points_per_side: int = 32,
) -> list[ThresholdRow]:
    """Every combination of the thresholds, on a ``points_per_side`` grid (the official 32 by
    default; other options at the official defaults). Each image is decoded once per offset
    (``generate_candidates``)."""
    from pycocotools import mask as mask_utils

    from segany.automatic import MaskGenerator
    from segany.evaluate import evaluate_auto

    if not samples:
        raise InputError("sweep_generator_thresholds needs at least one sample")
    floor_iou, floor_stab = min(pred_iou), min(stability)
    truths = [
        [mask_utils.encode(np.asfortranarray(o.mask().astype(np.uint8))) for o in s.objects]
        for s in samples
    ]
    rows = []
    for offset in offsets:
        generator = MaskGenerator(
            model,
            points_per_side=points_per_side,
            stability_score_offset=offset,
            output_mode="coco_rle",
        )
        candidates = [
            generator.generate_candidates(
                s.load_image(), pred_iou_floor=floor_iou, stability_floor=floor_stab
            )
            for s in samples
        ]
        for iou_t, stab_t in itertools.product(pred_iou, stability):
            chosen = [
                generator.refilter(c, pred_iou_thresh=iou_t, stability_score_thresh=stab_t)
                for c in candidates
            ]
            replay = _Replay(chosen)
            ar = evaluate_auto(replay, samples, max_dets=[100], bootstrap=0)
            hits = total = 0
            for records, truth in zip(chosen, truths, strict=True):
                if records and truth:
                    ious = mask_utils.iou(
                        [r.segmentation for r in records], truth, [0] * len(truth)
                    )
                    hits += int((np.asarray(ious).max(1) >= 0.5).sum())
                total += len(records)
            rows.append(
                ThresholdRow(
                    offset,
                    iou_t,
                    stab_t,
                    float(ar.metrics["ar@100"].value),
                    hits / total if total else 0.0,
                    total / len(samples),
                )
            )
    return rows


def pick_thresholds(
    rows: Sequence[ThresholdRow], min_precision: float, tolerance: float = 0.01
) -> ThresholdRow:
    """Among the rows whose precision is at least ``min_precision``, those within
    ``tolerance`` of the highest AR@100 count as equal (a sweep on tens of images does not tell
    them apart); of those, the most precise (ties: the stricter thresholds, then the larger
    offset)."""
    ok = [r for r in rows if r.precision50 >= min_precision]
    if not ok:
        raise InputError(f"no threshold combination reaches precision {min_precision}")
    best = max(r.ar100 for r in ok)
    near = [r for r in ok if r.ar100 >= best - tolerance]
    return max(
        near,
        key=lambda r: (
            r.precision50,
            r.pred_iou_thresh,
            r.stability_score_thresh,
            r.stability_score_offset,
        ),
    )


class _Replay:
    """A generator-like object handing out precomputed records in order (for evaluate_auto)."""

    def __init__(self, records: list[list[Any]]) -> None:
        self.records, self.i = records, 0

    def generate(self, image: np.ndarray) -> list[Any]:
        out = self.records[self.i]
        self.i += 1
        return out
