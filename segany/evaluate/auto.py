"""Automatic masks as object proposals: average recall of ground-truth masks (pycocotools).

The generated masks of each image are detections of one class, scored by their predicted IoU;
COCOeval with useCats=0 matches them to the ground truth at IoU 0.50:0.05:0.95 and gives recall
at each detection budget (AR@100, AR@1000) and object size (COCO's small/medium/large areas).
Crowd regions are ignored, as COCOeval does.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from segany.errors import InputError
from segany.evaluate.datasets import Sample, iterate, segmentation_to_rle
from segany.evaluate.results import DEFAULT_BOOTSTRAP, Estimate, EvalResult, estimates
from segany.masks import encode_rle

MAX_DETS = (100, 1000)
PROPOSAL_DETS = (1000,)  # the paper's object proposals report AR@1000
AREA_RANGES = {  # COCO's object sizes, in pixels
    "all": (0.0, 1e10),
    "small": (0.0, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, 1e10),
}


class GeneratorLike(Protocol):
    def generate(self, image: np.ndarray) -> Sequence[Any]: ...


def proposal_rle(record: Any, height: int, width: int) -> tuple[dict[str, Any], float]:
    """A generated mask (MaskRecord or its dict form; binary mask, COCO RLE or uncompressed
    RLE) -> (compressed RLE, predicted IoU)."""
    get = record.get if isinstance(record, dict) else lambda k: getattr(record, k, None)
    seg, score = get("segmentation"), get("predicted_iou")
    if seg is None or score is None:
        raise InputError("a generated mask needs 'segmentation' and 'predicted_iou'")
    if isinstance(seg, dict):
        return segmentation_to_rle(seg, height, width), float(score)
    mask = np.asarray(seg, dtype=bool)
    if mask.shape != (height, width):
        raise InputError(f"generated mask is {mask.shape}, the image is {(height, width)}")
    return encode_rle(mask), float(score)


def _coco(images: list[dict], anns: list[dict]) -> COCO:
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns, "categories": [{"id": 1}]}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


def _ann(ann_id: int, image_id: int, rle: dict, iscrowd: bool = False, **extra) -> dict:
    area = float(mask_utils.area(rle))
    bbox = [float(v) for v in mask_utils.toBbox(rle)]
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "segmentation": rle,
        "area": area,
        "bbox": bbox,
        "iscrowd": int(iscrowd),
    } | extra


def evaluate_auto(
    generator: GeneratorLike,
    dataset: Sequence[Sample],
    *,
    max_dets: Sequence[int] = MAX_DETS,
    seed: int = 0,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    progress: bool = False,
) -> EvalResult:
    """Average recall of each dataset's objects by `generator.generate(image)`'s masks.

    metrics: "ar@M" and "ar@M:small|medium|large" for each M in max_dets (values from COCOeval;
    intervals from bootstrapping the objects' recall, whose mean is exactly COCO's AR).
    """
    max_dets = sorted(int(m) for m in max_dets)
    if not max_dets or max_dets[0] < 1:
        raise InputError(f"max_dets must be positive detection budgets, got {max_dets}")
    images: list[dict[str, Any]] = []
    gts: list[dict[str, Any]] = []
    dts: list[dict[str, Any]] = []
    image_rows: list[dict[str, Any]] = []
    gt_keys: dict[int, tuple[Any, Any]] = {}  # internal gt id -> (image_id, object_id)
    load_s = generate_s = 0.0
    for sample in iterate(dataset, progress):
        t0 = time.perf_counter()
        image = sample.load_image()
        t1 = time.perf_counter()
        records = generator.generate(image)
        t2 = time.perf_counter()
        load_s, generate_s = load_s + t1 - t0, generate_s + t2 - t1
        img_id = len(images) + 1  # COCOeval needs ints; the rows keep the dataset's ids
        images.append({"id": img_id, "height": sample.height, "width": sample.width})
        for obj in sample.objects:
            if obj.area == 0:  # nothing to recall (COCOeval would count it as missed)
                continue
            gts.append(_ann(len(gts) + 1, img_id, obj.rle, obj.iscrowd))
            gt_keys[len(gts)] = (sample.image_id, obj.object_id)
        for rec in records:
            rle, score = proposal_rle(rec, sample.height, sample.width)
            dts.append(_ann(len(dts) + 1, img_id, rle, score=score))
        image_rows.append(
            {"image_id": sample.image_id, "proposals": len(records), "seconds": round(t2 - t0, 4)}
        )
    t3 = time.perf_counter()
    ev = COCOeval(_coco(images, gts), _coco(images, dts), iouType="segm")
    ev.params.useCats = 0
    ev.params.imgIds = [im["id"] for im in images]
    ev.params.maxDets = max_dets
    ev.params.areaRng = list(AREA_RANGES.values())
    ev.params.areaRngLbl = list(AREA_RANGES)
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    recalls = _object_recalls(ev, len(images), max_dets)
    best = _best_ious(gts, dts, max_dets[-1])
    match_s = time.perf_counter() - t3

    metrics: dict[str, Estimate] = {}
    coco_recall = ev.eval["recall"]  # T×K×A×M, -1 where no ground truth
    for a, size in enumerate(AREA_RANGES):
        for m, budget in enumerate(max_dets):
            name = f"ar@{budget}" + ("" if size == "all" else f":{size}")
            values = [r[m] for r in recalls[a].values()]
            est = estimates({name: values}, bootstrap, seed)[name]
            r = coco_recall[:, 0, a, m]
            value = float(r.mean()) if (r > -1).all() else float("nan")
            metrics[name] = Estimate(value, est.low, est.high, est.n)

    per_object = []
    for gt_id, per_budget in recalls[0].items():
        image_id, object_id = gt_keys[gt_id]
        row = {
            "image_id": image_id,
            "object_id": object_id,
            "area": gts[gt_id - 1]["area"],
            "best_iou": best.get(gt_id, 0.0),
        }
        row |= {f"recall@{b}": per_budget[m] for m, b in enumerate(max_dets)}
        per_object.append(row)
    by_image: dict[Any, list[dict]] = {}
    for r in per_object:
        by_image.setdefault(r["image_id"], []).append(r)
    for row in image_rows:
        mine = by_image.get(row["image_id"], [])
        row["objects"] = len(mine)
        for b in max_dets:
            row[f"ar@{b}"] = float(np.mean([r[f"recall@{b}"] for r in mine])) if mine else None
    timing = {"load": load_s, "generate": generate_s, "match": match_s}
    return EvalResult(
        protocol="auto",
        metrics=metrics,
        per_image=image_rows,
        per_object=per_object,
        seconds=sum(timing.values()),
        settings={
            "max_dets": max_dets,
            "iou_thresholds": "0.50:0.05:0.95",
            "use_cats": 0,
            "score": "predicted_iou",
            "area_ranges": AREA_RANGES,
            "seed": seed,
            "bootstrap": bootstrap,
            "images": len(images),
        },
        timing=timing,
    )


def _object_recalls(ev: COCOeval, num_images: int, max_dets: list[int]):
    """Per area range, {gt id: [recall at each budget]}: the fraction of IoU thresholds at which
    COCOeval matched the object to one of the image's top-`budget` proposals."""
    out: list[dict[int, list[float]]] = []
    for a in range(len(AREA_RANGES)):
        found: dict[int, list[float]] = {}
        for i in range(num_images):
            e = ev.evalImgs[a * num_images + i]  # ordered by area range, then image
            if e is None:
                continue
            rank = {dt_id: r for r, dt_id in enumerate(e["dtIds"])}  # by descending score
            matches = np.asarray(e["gtMatches"])  # T×G: matched dt id, 0 for none
            for g, gt_id in enumerate(e["gtIds"]):
                if e["gtIgnore"][g]:
                    continue
                ranks = [rank.get(int(d), -1) if d else -1 for d in matches[:, g]]
                found[gt_id] = [
                    float(np.mean([0 <= r < budget for r in ranks])) for budget in max_dets
                ]
        out.append(found)
    return out


def _best_ious(gts: list[dict], dts: list[dict], budget: int) -> dict[int, float]:
    """Each non-crowd object's best IoU with its image's top-`budget` proposals."""
    best: dict[int, float] = {}
    per_image: dict[int, tuple[list[dict], list[dict]]] = {}
    for ann in gts:
        if not ann["iscrowd"]:
            per_image.setdefault(ann["image_id"], ([], []))[0].append(ann)
    for ann in dts:
        per_image.setdefault(ann["image_id"], ([], []))[1].append(ann)
    for g, d in per_image.values():
        d = sorted(d, key=lambda a: -a["score"])[:budget]
        if not g or not d:
            continue
        ious = mask_utils.iou(
            [a["segmentation"] for a in d], [a["segmentation"] for a in g], [0] * len(g)
        )
        for j, ann in enumerate(g):
            best[ann["id"]] = float(np.max(ious[:, j]))
    return best


def evaluate_proposals(
    generator: GeneratorLike,
    dataset: Sequence[Sample],
    *,
    max_dets: Sequence[int] = PROPOSAL_DETS,
    seed: int = 0,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    progress: bool = False,
) -> EvalResult:
    """The paper's object proposals (§7.3): ``evaluate_auto``'s class-agnostic average recall,
    reported at 1000 proposals per image by object size ("ar@1000", "ar@1000:small|medium|
    large"), for a generator made for recall (``MaskGenerator.from_preset("proposals", ...)``).
    """
    result = evaluate_auto(
        generator, dataset, max_dets=max_dets, seed=seed, bootstrap=bootstrap, progress=progress
    )
    return replace(result, protocol="proposals")
