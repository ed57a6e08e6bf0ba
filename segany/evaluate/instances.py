"""Zero-shot instance segmentation, the paper's §7.3 protocol: a detector's boxes prompt the
model, and the masks are scored by COCO mask AP (pycocotools) against the ground truth.

The ground truth is a COCO annotation file (its ``images``, ``categories`` and
``annotations``); the detections a COCO results file whose ``image_id`` values are that file's
image ids. Each image is encoded once and its boxes decoded together
(``segany.tasks.segment_detections``); the detector's category and score are kept, so the AP is
the detector's ranking with the model's masks. Images without detections count as misses, as
in COCO.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from segany.errors import InputError
from segany.evaluate.results import Estimate, EvalResult
from segany.images import read_image
from segany.inference.protocol import PredictorLike
from segany.tasks.detections import coco_instance_results, read_coco_detections, segment_detections

__all__ = ["INSTANCE_METRICS", "evaluate_instances"]

#: COCOeval's summary, in its order.
INSTANCE_METRICS = ("ap", "ap50", "ap75", "ap:small", "ap:medium", "ap:large")


def _images_dir(gt_path: Path, images: str | Path | None) -> Path:
    if images is not None:
        return Path(images)
    for name in ("images", "val2017", "."):
        folder = gt_path.parent / name
        if folder.is_dir() and any(folder.iterdir()):
            return folder
    return gt_path.parent


def evaluate_instances(
    predictor: PredictorLike,
    annotations: str | Path,
    detections: str | Path,
    *,
    images: str | Path | None = None,
    min_score: float = 0.0,
    batch_size: int | None = None,
    progress: Callable[[Any], Any] | None = None,
) -> EvalResult:
    """Mask AP of ``predictor``'s masks for ``detections`` against ``annotations``.

    metrics: "ap", "ap50", "ap75", "ap:small|medium|large" (COCOeval's values, n = images;
    no interval: AP is not a mean over objects)."""
    gt_path = Path(annotations)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(gt_path))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{gt_path}: not a readable COCO annotation file ({e})") from None
    folder = _images_dir(gt_path, images)
    listed = coco.dataset.get("images", [])
    paths = [folder / str(im.get("file_name", "")) for im in listed]
    by_path = read_coco_detections(detections, paths, coco_images=listed, min_score=min_score)
    id_of = {folder / str(im.get("file_name", "")): im["id"] for im in listed}
    rows: list[dict[str, Any]] = []
    per_image = []
    t0 = time.perf_counter()
    todo = list(by_path.items())
    for path, dets in progress(todo) if progress else todo:
        if not path.is_file():
            raise InputError(f"{path}: image {id_of[path]} of {gt_path.name} is not there")
        image = read_image(path)
        t = time.perf_counter()
        out = segment_detections(predictor, image, dets, batch_size=batch_size, what=str(path))
        rows.extend(coco_instance_results(id_of[path], out))
        per_image.append(
            {
                "image_id": id_of[path],
                "detections": len(dets),
                "clipped": out.clipped,
                "seconds": round(time.perf_counter() - t, 4),
            }
        )
    segment_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    stats = np.full(len(INSTANCE_METRICS), np.nan)
    if rows:
        with contextlib.redirect_stdout(io.StringIO()):
            ev = COCOeval(coco, coco.loadRes(json.loads(json.dumps(rows))), iouType="segm")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        stats = np.asarray(ev.stats[: len(INSTANCE_METRICS)], np.float64)
    match_s = time.perf_counter() - t1
    n = len(listed)
    metrics = {
        name: Estimate(float(v) if v >= 0 else float("nan"), float("nan"), float("nan"), n)
        for name, v in zip(INSTANCE_METRICS, stats, strict=True)
    }
    timing = {"segment": segment_s, "match": match_s}
    return EvalResult(
        protocol="instances",
        metrics=metrics,
        per_image=per_image,
        seconds=sum(timing.values()),
        settings={
            "detections": str(detections),
            "min_score": min_score,
            "images": n,
            "images_with_detections": len(by_path),
            "masks": "single output per box (the paper's box prompt)",
        },
        timing=timing,
    )
