"""Classical baselines on the same objects and prompts as the model: flood fill and GrabCut.

Each baseline is a predictor-like object (``set_image`` / ``predict``, the contract the
protocols use), so `evaluate_prompts` measures it exactly as it measures a model: same objects,
same center click, same tight box, same corrective clicks. Every evaluation can then say
whether the model beats what a user already has in an image editor.

- ``floodfill``: the "magic wand". From each click, grow the 8-connected region whose every
  channel lies within ±`FLOOD_TOLERANCE` of the clicked pixel's value (OpenCV's
  ``FLOODFILL_FIXED_RANGE``); positive clicks add their region, negative clicks remove theirs,
  in click order. It has no box prompt.
- ``grabcut``: OpenCV's GrabCut (`GRABCUT_ITERATIONS` iterations) on a local crop: the region of
  interest grown by `GRABCUT_MARGIN` of its longer side (at least `GRABCUT_MIN_MARGIN_PX`).
  From a box: inside the box "probably object", the rest of the crop "sure background". From
  clicks: the previous mask (fed back as ``mask_input``; for the first click, the flood fill
  from it) marks "probably object", the rest "probably background", and every click is a sure
  label (a disk of radius `CLICK_RADIUS_PX`).

Both return one mask (score 1.0) and that mask as ±1 "logits" at full resolution, which the
clicks protocol hands back as ``mask_input``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import ArrayLike

from segany.errors import InputError
from segany.evaluate.datasets import Sample
from segany.evaluate.prompts import mask_box
from segany.evaluate.results import EvalResult
from segany.inference.prediction import Prediction
from segany.inference.protocol import PredictorLike
from segany.prompts import check_prompts

FLOOD_TOLERANCE = 24  # per channel, against the clicked pixel (fixed range)
GRABCUT_ITERATIONS = 5
GRABCUT_MARGIN = 0.2  # fraction of the region's longer side added on every side
GRABCUT_MIN_MARGIN_PX = 10
CLICK_RADIUS_PX = 3

BASELINES = ("floodfill", "grabcut")
SUPPORTED: dict[str, tuple[str, ...]] = {
    "floodfill": ("point", "clicks"),
    "grabcut": ("point", "clicks", "box"),
}


def flood_region(image: np.ndarray, x: int, y: int, tolerance: int = FLOOD_TOLERANCE) -> np.ndarray:
    """H×W bool: the 8-connected pixels reachable from (x, y) whose channels all lie within
    ±tolerance of the pixel at (x, y). image: H×W×3 uint8."""
    h, w = image.shape[:2]
    if not (0 <= x < w and 0 <= y < h):
        raise InputError(f"click ({x}, {y}) lies outside the {w}×{h} image")
    canvas = np.zeros((h + 2, w + 2), np.uint8)  # OpenCV's fill mask has a 1-px frame
    flags = 8 | cv2.FLOODFILL_FIXED_RANGE | cv2.FLOODFILL_MASK_ONLY | (1 << 8)
    diff = (tolerance,) * 3
    # MASK_ONLY leaves the image as it is, but OpenCV still wants a writable array.
    src = np.ascontiguousarray(image) if image.flags.writeable else image.copy()
    cv2.floodFill(src, canvas, (x, y), (0, 0, 0), diff, diff, flags)
    return canvas[1:-1, 1:-1].astype(bool)


@dataclass(frozen=True)
class _Prompts:
    """A call's prompts: clicks as (x, y, label) pixels, the box XYXY, the previous mask."""

    clicks: list[tuple[int, int, int]]
    box: np.ndarray | None
    mask_input: np.ndarray | None


class _Baseline(PredictorLike):
    """Shared predictor plumbing: the image, the checks, the one-mask return."""

    name = ""

    def __init__(self) -> None:
        self.image: np.ndarray | None = None

    def set_image(self, image: np.ndarray) -> None:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputError(f"expected an H×W×3 uint8 image, got {image.dtype} {image.shape}")
        self.image = np.array(image, order="C")  # a writable copy: OpenCV needs one

    def predict(
        self,
        point_coords: ArrayLike | None = None,
        point_labels: ArrayLike | None = None,
        box: ArrayLike | None = None,
        mask_input: ArrayLike | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> Prediction:
        """One mask (score 1.0) whatever ``multimask_output`` says: masks 1×H×W (bool, or the
        ±1 logits with ``return_logits``), scores 1, and the ±1 logits 1×H×W, which the clicks
        protocol hands back as ``mask_input``."""
        if self.image is None:
            raise InputError("call set_image before predict")
        # The Predictor's checks; mask_input is full-size ±1 logits here, not low-res ones.
        checked = check_prompts(point_coords, point_labels, box, None, low_res_size=(0, 0))
        if checked.batch_size > 1:
            raise InputError("a baseline answers one prompt per call, not a batch")
        clicks = []
        if checked.point_coords is not None and checked.point_labels is not None:
            for (x, y), label in zip(checked.point_coords[0], checked.point_labels[0], strict=True):
                clicks.append((int(round(x)), int(round(y)), int(label)))
        boxes = None if checked.boxes is None else checked.boxes[0]
        masks = None if mask_input is None else np.asarray(mask_input)
        mask = self._mask(self.image, _Prompts(clicks, boxes, masks))
        logits = np.where(mask, 1.0, -1.0).astype(np.float32)[None]
        return Prediction(logits if return_logits else mask[None], np.ones(1, np.float32), logits)

    @abstractmethod
    def _mask(self, image: np.ndarray, prompts: _Prompts) -> np.ndarray:
        """The H×W bool answer to ``prompts``."""


class FloodFill(_Baseline):
    """The magic wand: see the module notes. Points only."""

    name = "floodfill"

    def __init__(self, tolerance: int = FLOOD_TOLERANCE) -> None:
        super().__init__()
        self.tolerance = tolerance

    def _mask(self, image: np.ndarray, prompts: _Prompts) -> np.ndarray:
        if prompts.box is not None or not prompts.clicks:
            raise InputError("the flood fill baseline answers clicks only (no box)")
        mask = np.zeros(image.shape[:2], bool)
        for x, y, label in prompts.clicks:
            region = flood_region(image, x, y, self.tolerance)
            mask = mask | region if label > 0 else mask & ~region
        return mask


class GrabCut(_Baseline):
    """GrabCut on a local crop: see the module notes. A box, clicks, or both."""

    name = "grabcut"

    def __init__(
        self,
        iterations: int = GRABCUT_ITERATIONS,
        margin: float = GRABCUT_MARGIN,
        tolerance: int = FLOOD_TOLERANCE,
    ) -> None:
        super().__init__()
        self.iterations, self.margin, self.tolerance = iterations, margin, tolerance

    def _mask(self, image: np.ndarray, prompts: _Prompts) -> np.ndarray:
        h, w = image.shape[:2]
        clicks, box, mask_input = prompts.clicks, prompts.box, prompts.mask_input
        labels = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
        if box is not None:
            x0, y0, x1, y1 = (int(round(v)) for v in box.ravel())
            roi = np.zeros((h, w), bool)
            roi[max(y0, 0) : y1 + 1, max(x0, 0) : x1 + 1] = True
            labels[:] = cv2.GC_BGD
            labels[roi] = cv2.GC_PR_FGD
        elif mask_input is not None and mask_input.shape[-2:] == (h, w):
            roi = mask_input.reshape(h, w) > 0
            labels[roi] = cv2.GC_PR_FGD
        elif clicks:
            roi = np.zeros((h, w), bool)
            for x, y, label in clicks:
                if label > 0:
                    roi |= flood_region(image, x, y, self.tolerance)
            labels[roi] = cv2.GC_PR_FGD
        else:
            raise InputError("the GrabCut baseline needs a box or clicks")
        for x, y, label in clicks:
            value = cv2.GC_FGD if label > 0 else cv2.GC_BGD
            cv2.circle(labels, (x, y), CLICK_RADIUS_PX, int(value), -1)
            r = CLICK_RADIUS_PX
            roi[max(y - r, 0) : y + r + 1, max(x - r, 0) : x + r + 1] = True
        y0, y1, x0, x1 = self._crop(roi)
        crop_labels = np.ascontiguousarray(labels[y0:y1, x0:x1])
        fg = (crop_labels == cv2.GC_FGD) | (crop_labels == cv2.GC_PR_FGD)
        mask = np.zeros((h, w), bool)
        if fg.all() or not fg.any():  # GrabCut needs samples of both: keep what the seeds say
            mask[y0:y1, x0:x1] = fg
            return mask
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        crop = np.ascontiguousarray(image[y0:y1, x0:x1, ::-1])  # OpenCV expects BGR
        cv2.setRNGSeed(0)  # its colour models start from k-means: same answer every run
        mode = cv2.GC_INIT_WITH_MASK  # the rectangle argument is unused in this mode
        cv2.grabCut(crop, crop_labels, (0, 0, 0, 0), bgd, fgd, self.iterations, mode)
        mask[y0:y1, x0:x1] = (crop_labels == cv2.GC_FGD) | (crop_labels == cv2.GC_PR_FGD)
        return mask

    def _crop(self, roi: np.ndarray) -> tuple[int, int, int, int]:
        """Rows y0:y1 and columns x0:x1 of the region of interest grown by the margin."""
        h, w = roi.shape
        if not roi.any():
            return 0, h, 0, w
        x0, y0, x1, y1 = (int(v) for v in mask_box(roi))  # the protocol's tight box
        side = max(y1 - y0 + 1, x1 - x0 + 1)
        pad = max(GRABCUT_MIN_MARGIN_PX, int(round(self.margin * side)))
        return max(y0 - pad, 0), min(y1 + pad + 1, h), max(x0 - pad, 0), min(x1 + pad + 1, w)


def make_baseline(name: str) -> FloodFill | GrabCut:
    if name == "floodfill":
        return FloodFill()
    if name == "grabcut":
        return GrabCut()
    raise InputError(f"unknown baseline {name!r}: choose from {list(BASELINES)}")


def evaluate_baselines(
    dataset: Sequence[Sample],
    protocols: Sequence[str],
    names: Sequence[str] = BASELINES,
    **options: Any,
) -> dict[str, EvalResult]:
    """Each baseline on the prompted protocols it answers, with the options (seed, clicks,
    box noise, objects per image) the model's run used: {"floodfill:point": result, ...}."""
    from segany.evaluate.protocols import evaluate_prompts

    out: dict[str, EvalResult] = {}
    for name in names:
        run = [p for p in protocols if p in SUPPORTED.get(name, ())]
        if name not in SUPPORTED:
            raise InputError(f"unknown baseline {name!r}: choose from {list(BASELINES)}")
        if not run:
            continue
        results = evaluate_prompts(make_baseline(name), dataset, run, **options)
        for proto, result in results.items():
            result.settings["baseline"] = name
            out[f"{name}:{proto}"] = result
    return out


def _headline_ious(result: Mapping[str, Any], proto: str) -> dict[tuple[str, str], float]:
    """Per object (image_id, object_id): the IoU each protocol's headline is the mean of
    (for clicks, the IoU after 3 clicks, or after the last one when fewer were allowed)."""
    out = {}
    for row in result.get("per_object", []):
        key = (str(row["image_id"]), str(row["object_id"]))
        out[key] = float(
            row["ious"][min(3, len(row["ious"])) - 1] if proto == "clicks" else row["iou"]
        )
    return out


def format_against_baselines(report: Mapping[str, Any]) -> str:
    """The model's figures beside each baseline's, per prompted protocol, and on how many
    objects the model's mask beats the baseline's (higher IoU; clicks: after 3 clicks)."""
    from segany.evaluate.report import _render

    protos = report.get("protocols", {})
    names = [b for b in BASELINES if any(k.startswith(f"{b}:") for k in protos)]
    rows: list[list[str]] = []
    for proto in ("point", "clicks", "box"):
        if proto not in protos:
            continue
        model = protos[proto]
        base = {b: protos.get(f"{b}:{proto}") for b in names}
        for i, (metric, est) in enumerate(model["metrics"].items()):
            digits = 2 if metric.startswith("noc") else 4
            cells = [proto if i == 0 else "", metric, _cell(est.get("value"), digits)]
            for b in names:
                other = (base[b] or {}).get("metrics", {}).get(metric)
                cells.append(_cell(other.get("value") if other else None, digits))
            rows.append(cells)
        mine = _headline_ious(model, proto)
        wins = ["", "model wins", ""]
        for b in names:
            theirs = _headline_ious(base[b], proto) if base[b] else {}
            shared = [k for k in mine if k in theirs]
            better = sum(mine[k] > theirs[k] for k in shared)
            wins.append(f"{better}/{len(shared)}" if shared else "-")
        rows.append(wins)
    if not rows:
        return "(no prompted protocol to compare with the baselines)"
    return _render(["protocol", "metric", "model", *names], rows)


def _cell(value: Any, digits: int) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"
