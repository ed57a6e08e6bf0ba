"""The prompted protocols of the paper's zero-shot evaluation: single point, N clicks, box.

Each takes a predictor-like object (`segany.inference.protocol.PredictorLike`, the
`segany.Predictor` contract: `set_image(image H×W×3 uint8)`, then `predict(...)` returning masks
C×H×W, scores C and low-res logits C×h×w), so a fine-tune, an exported model or a hand-made fake
can be measured the same way.
Protocols run together (`evaluate_prompts`) encode each image once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from segany.errors import InputError
from segany.evaluate.datasets import EvalObject, Sample, iterate, stable_seed
from segany.evaluate.prompts import (
    ClickRegion,
    center_point,
    jitter_box,
    mask_box,
    mask_iou,
    next_click,
)
from segany.evaluate.results import DEFAULT_BOOTSTRAP, Estimate, EvalResult, estimates
from segany.inference.protocol import PredictorLike

PROMPT_PROTOCOLS = ("point", "clicks", "box")
REPORTED_CLICKS = (1, 2, 3, 5, 9)
NOC_TARGETS = (0.85, 0.90)


def _predict(
    predictor: PredictorLike, shape: tuple[int, int], **prompts: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Call predict and check what came back: (masks C×H×W bool, scores C, logits C×h×w)."""
    masks, scores, logits = predictor.predict(**prompts)
    masks, scores, logits = np.asarray(masks), np.asarray(scores), np.asarray(logits)
    if masks.ndim != 3 or masks.shape[1:] != shape or scores.shape != masks.shape[:1]:
        raise InputError(
            f"predictor returned masks {masks.shape} and scores {scores.shape}; "
            f"expected C×{shape[0]}×{shape[1]} and C"
        )
    return (masks if masks.dtype == bool else masks > 0), scores, logits


def _point_object(
    predictor: PredictorLike, gt: np.ndarray, *, shape: tuple[int, int], **_unused: Any
) -> dict[str, Any]:
    x, y = center_point(gt)
    masks, scores, _ = _predict(
        predictor,
        shape,
        point_coords=np.array([[x, y]], dtype=np.float32),
        point_labels=np.array([1]),
        multimask_output=True,
    )
    ious = [float(v) for v in mask_iou(masks, gt)]
    top = int(np.argmax(scores))
    return {
        "point": [x, y],
        "iou": ious[top],
        "oracle_iou": max(ious),
        "score": float(scores[top]),
        "mask_index": top,
        "ious": ious,
    }


def _clicks_object(
    predictor: PredictorLike,
    gt: np.ndarray,
    *,
    shape: tuple[int, int],
    max_clicks: int,
    click_region: ClickRegion,
    **_unused: Any,
) -> dict[str, Any]:
    """Click at the center, then at the center of the largest error region, feeding the chosen
    mask's low-res logits back; the first click asks for 3 masks (the top-scoring one is kept),
    later clicks for one, as the paper does once the prompt is unambiguous."""
    x, y = center_point(gt)
    clicks: list[tuple[int, int, int]] = [(x, y, 1)]
    ious: list[float] = []
    pred = np.zeros_like(gt)  # replaced by the first prediction before any use
    mask_input: np.ndarray | None = None
    for k in range(max_clicks):
        if k > 0:
            click = next_click(gt, pred, click_region)
            if click is None:  # nothing left to correct: the mask would stay as it is
                ious.extend([ious[-1]] * (max_clicks - k))
                break
            clicks.append(click)
        masks, scores, logits = _predict(
            predictor,
            shape,
            point_coords=np.array([c[:2] for c in clicks], dtype=np.float32),
            point_labels=np.array([c[2] for c in clicks]),
            mask_input=mask_input,
            multimask_output=k == 0,
        )
        best = int(np.argmax(scores))
        pred, mask_input = masks[best], logits[best][None]  # 1×h×w logits for the next round
        ious.append(float(mask_iou(pred, gt)))
    row: dict[str, Any] = {"ious": ious, "clicks": [list(c) for c in clicks]}
    for target in NOC_TARGETS:
        reached = [k + 1 for k, v in enumerate(ious) if v >= target]
        row[_noc_name(target)] = reached[0] if reached else max_clicks  # capped
    return row


def _box_object(
    predictor: PredictorLike,
    gt: np.ndarray,
    *,
    shape: tuple[int, int],
    box_noise: float,
    box_noise_max_px: float,
    rng: np.random.Generator,
    **_unused: Any,
) -> dict[str, Any]:
    box = jitter_box(mask_box(gt), box_noise, box_noise_max_px, shape, rng)
    masks, scores, _ = _predict(predictor, shape, box=box, multimask_output=False)
    top = int(np.argmax(scores))
    return {
        "box": [round(float(v), 3) for v in box],
        "iou": float(mask_iou(masks[top], gt)),
        "score": float(scores[top]),
    }


_RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {
    "point": _point_object,
    "clicks": _clicks_object,
    "box": _box_object,
}


def _noc_name(target: float) -> str:
    return f"noc@{round(target * 100)}"


def _objects_to_prompt(sample: Sample, limit: int | None, seed: int) -> list[EvalObject]:
    """Non-crowd, non-empty objects; at most `limit`, drawn with a per-image seeded generator."""
    objects = [o for o in sample.objects if not o.iscrowd and o.area > 0]
    if limit is not None and len(objects) > limit:
        rng = np.random.default_rng(stable_seed(seed, sample.image_id))
        keep = sorted(rng.choice(len(objects), size=limit, replace=False))
        objects = [objects[i] for i in keep]
    return objects


def evaluate_prompts(
    predictor: PredictorLike,
    dataset: Sequence[Sample],
    protocols: Sequence[str] = PROMPT_PROTOCOLS,
    *,
    max_clicks: int = 20,
    click_region: ClickRegion = "area",
    box_noise: float = 0.0,
    box_noise_max_px: float = 20.0,
    objects_per_image: int | None = None,
    seed: int = 0,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    progress: bool = False,
) -> dict[str, EvalResult]:
    """Run the prompted protocols over a dataset, encoding each image once.

    max_clicks caps the click sequence and NoC; box_noise is the std of the box jitter as a
    fraction of the box side (0 = tight boxes), at most box_noise_max_px pixels per side;
    seed drives the object subset, the box jitter and the bootstrap.
    """
    unknown = [p for p in protocols if p not in _RUNNERS]
    if unknown or not protocols:
        raise InputError(f"unknown protocols {unknown}: choose from {list(_RUNNERS)}")
    if max_clicks < 1:
        raise InputError(f"max_clicks must be at least 1, got {max_clicks}")
    if box_noise < 0 or box_noise_max_px < 0:
        raise InputError("box noise and its pixel cap must not be negative")
    settings: dict[str, dict[str, Any]] = {
        "point": {"point": "center (max interior distance)", "multimask_output": True},
        "clicks": {
            "max_clicks": max_clicks,
            "click_region": click_region,
            "first_click": "center; 3 masks, top-scoring kept",
            "mask_input": "previous low-res logits",
        },
        "box": {"box_noise": box_noise, "box_noise_max_px": box_noise_max_px},
    }
    rows: dict[str, list[dict[str, Any]]] = {p: [] for p in protocols}
    image_rows: dict[str, list[dict[str, Any]]] = {p: [] for p in protocols}
    prompt_s = dict.fromkeys(protocols, 0.0)
    load_s = encode_s = 0.0
    images_used = 0
    for sample in iterate(dataset, progress):
        objects = _objects_to_prompt(sample, objects_per_image, seed)
        if not objects:
            continue
        images_used += 1
        t0 = time.perf_counter()
        image = sample.load_image()
        gts = [o.mask() for o in objects]
        t1 = time.perf_counter()
        if image.shape[:2] != (sample.height, sample.width):
            raise InputError(
                f"image {sample.path or sample.image_id} is {image.shape[:2]}, its annotations say "
                f"{(sample.height, sample.width)}"
            )
        predictor.set_image(image)
        t2 = time.perf_counter()
        load_s, encode_s = load_s + t1 - t0, encode_s + t2 - t1
        for proto in protocols:
            start = time.perf_counter()
            obj_rows = []
            for obj, gt in zip(objects, gts, strict=True):
                rng = np.random.default_rng(stable_seed(seed, sample.image_id, obj.object_id))
                found = _RUNNERS[proto](
                    predictor,
                    gt,
                    shape=gt.shape,
                    max_clicks=max_clicks,
                    click_region=click_region,
                    box_noise=box_noise,
                    box_noise_max_px=box_noise_max_px,
                    rng=rng,
                )
                base = {"image_id": sample.image_id, "object_id": obj.object_id, "area": obj.area}
                obj_rows.append(base | found)
            spent = time.perf_counter() - start
            prompt_s[proto] += spent
            rows[proto].extend(obj_rows)
            image_row: dict[str, Any] = {"image_id": sample.image_id, "objects": len(obj_rows)}
            image_row |= {k: e.value for k, e in _columns_estimates(proto, obj_rows, 0, 0).items()}
            image_row["seconds"] = round(spent + t2 - t0, 4)
            image_rows[proto].append(image_row)
    results: dict[str, EvalResult] = {}
    for proto in protocols:
        metrics = _columns_estimates(proto, rows[proto], bootstrap, seed)
        series: dict[str, list[float]] = {}
        if proto == "clicks":
            curve = np.array([r["ious"] for r in rows[proto]]).reshape(-1, max_clicks)
            series["miou_by_clicks"] = [float(v) for v in curve.mean(axis=0)] if len(curve) else []
        timing = {"load": load_s, "encode": encode_s, "prompt": prompt_s[proto]}
        results[proto] = EvalResult(
            protocol=proto,
            metrics=metrics,
            per_image=image_rows[proto],
            per_object=rows[proto],
            seconds=sum(timing.values()),
            settings=settings[proto]
            | {
                "seed": seed,
                "bootstrap": bootstrap,
                "objects_per_image": objects_per_image,
                "images": images_used,
                "shared_with": [p for p in protocols if p != proto],
            },
            series=series,
            timing=timing,
        )
    return results


def _columns_estimates(
    proto: str, rows: list[dict[str, Any]], n_boot: int, seed: int
) -> dict[str, Estimate]:
    if proto == "point":
        cols = {"miou": [r["iou"] for r in rows], "oracle_miou": [r["oracle_iou"] for r in rows]}
    elif proto == "box":
        cols = {"miou": [r["iou"] for r in rows]}
    else:
        n = len(rows[0]["ious"]) if rows else max(REPORTED_CLICKS)
        cols = {f"miou@{k}": [r["ious"][k - 1] for r in rows] for k in REPORTED_CLICKS if k <= n}
        cols |= {_noc_name(t): [r[_noc_name(t)] for r in rows] for t in NOC_TARGETS}
    return estimates(cols, n_boot, seed)


def evaluate_points(predictor: PredictorLike, dataset: Sequence[Sample], **options) -> EvalResult:
    """Single center point: `.miou` (top-scoring mask) and metrics["oracle_miou"] (best of 3)."""
    return evaluate_prompts(predictor, dataset, ("point",), **options)["point"]


def evaluate_clicks(predictor: PredictorLike, dataset: Sequence[Sample], **options) -> EvalResult:
    """N corrective clicks: metrics "miou@1/2/3/5/9", "noc@85", "noc@90"; series
    "miou_by_clicks"."""
    return evaluate_prompts(predictor, dataset, ("clicks",), **options)["clicks"]


def evaluate_box(predictor: PredictorLike, dataset: Sequence[Sample], **options) -> EvalResult:
    """Tight (optionally jittered) ground-truth box: `.miou`."""
    return evaluate_prompts(predictor, dataset, ("box",), **options)["box"]
