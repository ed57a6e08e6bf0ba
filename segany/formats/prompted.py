"""Prompted results (``segany segment``): one JSON document, mask PNGs and an overlay per image.

Per image ``STEM`` in the output folder:
- ``STEM.json``: ``image`` (file_name, width, height), ``multimask``, ``prompts`` (per prompt its
  points, labels and box), ``masks`` (per mask its ``id``, ``prompt``, ``candidate`` index,
  ``score``, ``area``, XYWH ``bbox``, PNG ``file`` and COCO RLE ``segmentation``), and the names
  ``json`` and ``overlay`` (None when not written);
- ``STEM_mask{i}.png``: mask ``i``, 8-bit, 255 inside;
- ``STEM_overlay.png``: the best-scoring mask of each prompt, with the points and boxes.

``bbox`` is the official record convention, the automatic generator's: the tight box
(``segany.masks.batched_mask_to_box``, inclusive pixels) as x0, y0, x1 - x0, y1 - y0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segany.atomic import write_json_atomic
from segany.formats.output_set import stale_numbered
from segany.formats.overlay import write_overlay
from segany.formats.png import write_mask_png
from segany.masks import RLE, batched_mask_to_box, box_xyxy_to_xywh, encode_rle, place_rle


def json_name(stem: str) -> str:
    return f"{stem}.json"


def mask_name(stem: str, index: int) -> str:
    return f"{stem}_mask{index}.png"


def overlay_name(stem: str) -> str:
    return f"{stem}_overlay.png"


def output_paths(out: Path, stem: str, count: int, *, overlay: bool) -> list[Path]:
    """The files written for one image with ``count`` masks (the JSON first)."""
    paths = [out / json_name(stem)] + [out / mask_name(stem, i) for i in range(count)]
    return [*paths, out / overlay_name(stem)] if overlay else paths


def stale_masks(out: Path, stem: str, count: int) -> list[Path]:
    """``STEM_mask{i}.png`` files of an earlier run with more masks (i >= count)."""
    return stale_numbered((out / stem).parent, Path(stem).name + "_mask", count)


def mask_xywh(mask: np.ndarray) -> list[int]:
    """The XYWH box of an H×W mask in the official record convention; [0, 0, 0, 0] if empty."""
    box = batched_mask_to_box(torch.as_tensor(np.asarray(mask), dtype=torch.bool))
    return [int(v) for v in box_xyxy_to_xywh(box).tolist()]


def prompted_document(
    file_name: str,
    size: tuple[int, int],
    points: np.ndarray,
    labels: np.ndarray,
    boxes: np.ndarray,
    *,
    prompt_count: int,
    multimask: bool,
    stem: str,
    overlay: bool,
) -> dict[str, Any]:
    """The JSON document of one image before its masks are added (``masks`` empty).

    ``size`` (H, W); ``points`` N×2 XY with ``labels`` N, shared by every prompt; ``boxes``
    P×4 XYXY, one per prompt (none: ``prompt_count`` prompts of the points alone)."""
    height, width = size
    prompts = [
        {
            "points": points.tolist(),
            "labels": labels.tolist(),
            "box": boxes[b].tolist() if len(boxes) else None,
        }
        for b in range(prompt_count)
    ]
    return {
        "image": {"file_name": file_name, "width": width, "height": height},
        "multimask": bool(multimask),
        "prompts": prompts,
        "masks": [],
        "json": json_name(stem),
        "overlay": overlay_name(stem) if overlay else None,
    }


def mask_entry(
    index: int,
    prompt: int,
    candidate: int,
    score: float,
    mask: np.ndarray,
    file: str | None,
    *,
    frame: tuple[int, int, int, int] | None = None,
    image_hw: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """One element of the document's ``masks``. ``mask`` H×W bool, or, with ``frame`` (x0,
    y0, x1, y1) and ``image_hw`` (an image too large for full-size masks), h×w bool covering
    that frame of the image and empty elsewhere: the entry is that of the pasted mask. A framed
    mask may be one made when read (``ColumnMasks``, a frame too large for its mask): it is
    read by blocks of columns."""
    if hasattr(mask, "stats"):  # ColumnMasks: box (end-exclusive) and area in one pass
        found, area = mask.stats()
        box = (
            [0, 0, 0, 0]
            if found is None
            else [found[0], found[1], found[2] - found[0] - 1, found[3] - found[1] - 1]
        )
    else:
        box, area = mask_xywh(mask), int(mask.sum())
    if frame is None:
        rle = encode_rle(mask)
    else:
        if image_hw is None:
            raise ValueError("a framed mask needs the image's size (image_hw)")
        x0, y0 = int(frame[0]), int(frame[1])
        if area:  # an empty mask's box stays [0, 0, 0, 0]
            box = [box[0] + x0, box[1] + y0, box[2], box[3]]
        rle = place_rle(mask, image_hw, (x0, y0))
    return {
        "id": index,
        "prompt": prompt,
        "candidate": candidate,
        "score": float(score),
        "area": area,
        "bbox": box,
        "file": file,
        "segmentation": rle,
    }


def framed_entries(
    answers: Iterable[tuple[int, tuple[int, int, int, int], np.ndarray, np.ndarray]],
    image_hw: tuple[int, int],
) -> list[dict[str, Any]]:
    """The document's ``masks`` of an image answered by frames, its masks as COCO RLE of the
    whole image: ``answers`` per prompt its index among the prompts, its frame (x0, y0, x1,
    y1), masks C×h×w bool of that frame and scores C, in any order (a tiled predictor visits
    prompts tile by tile). Each answer is used as it comes and not kept, so an iterator of
    answers holds one prompt's masks at a time. The entries come in prompt order."""
    by_prompt: dict[int, list[dict[str, Any]]] = {}
    for p, frame, masks, scores in answers:
        by_prompt[p] = [
            mask_entry(0, p, c, scores[c], masks[c], None, frame=frame, image_hw=image_hw)
            for c in range(masks.shape[0])
        ]
    entries = [e for p in sorted(by_prompt) for e in by_prompt[p]]
    for i, entry in enumerate(entries):
        entry["id"] = i
    return entries


def write_prompted_framed(
    out: Path,
    document: dict[str, Any],
    entries: list[dict[str, Any]],
    *,
    where: Callable[[Path], Path] | None = None,
) -> None:
    """Write an image's JSON alone, its masks as COCO RLE (``framed_entries``; no PNGs, no
    overlay: both would be full-size arrays); fills ``document["masks"]``.
    ``document["overlay"]`` must be None."""
    if document["overlay"] is not None:
        raise ValueError("an image written by frames has no overlay")
    place = where or (lambda path: path)
    document["masks"].extend(entries)
    write_json_atomic(place(out / document["json"]), document, indent=1)


def write_prompted(
    out: Path,
    stem: str,
    document: dict[str, Any],
    masks: np.ndarray,
    scores: np.ndarray,
    image: np.ndarray,
    *,
    where: Callable[[Path], Path] | None = None,
) -> None:
    """Write an image's mask PNGs, overlay and JSON; fills ``document["masks"]``.

    ``masks`` P×C×H×W bool and ``scores`` P×C (P prompts, C candidates each); ``image``
    H×W×3 uint8 for the overlay. ``where`` maps a final path to the path to write (an
    ``OutputSet``'s ``staged``); None writes in place."""
    answers = ((p, masks[p], scores[p]) for p in range(masks.shape[0]))
    write_prompted_answers(out, stem, document, answers, image, where=where)


def write_prompted_answers(
    out: Path,
    stem: str,
    document: dict[str, Any],
    answers: Iterable[tuple[int, np.ndarray, np.ndarray]],
    image: np.ndarray,
    *,
    where: Callable[[Path], Path] | None = None,
) -> list[tuple[RLE, float]]:
    """``write_prompted`` for answers that come a prompt at a time, in any order: per prompt
    its index, masks C×H×W bool and scores C (the same C for every prompt). Each answer's
    PNGs are written as it comes and only its RLEs are kept, so hundreds of prompts on a
    large photo never hold their masks at once; the overlay is drawn from the RLEs. Returns
    per prompt, in prompt order, its best mask's RLE and its first candidate's score."""
    place = where or (lambda path: path)
    by_prompt: dict[int, list[dict[str, Any]]] = {}
    for p, masks, scores in answers:
        count = masks.shape[0]
        made = []
        for c in range(count):
            index = p * count + c
            name = mask_name(stem, index)
            write_mask_png(place(out / name), masks[c])
            made.append(mask_entry(index, p, c, scores[c], masks[c], name))
        by_prompt[p] = made
    entries = [e for p in sorted(by_prompt) for e in by_prompt[p]]
    document["masks"].extend(entries)
    order = sorted(by_prompt)
    best = [max(by_prompt[p], key=lambda e: e["score"]) for p in order]
    if document["overlay"] is not None:
        shared = document["prompts"][0]
        boxes = [q["box"] for q in document["prompts"] if q["box"] is not None]
        write_overlay(
            place(out / document["overlay"]),
            image,
            [e["segmentation"] for e in best],
            points=np.array(shared["points"], dtype=np.float64).reshape(-1, 2),
            labels=np.array(shared["labels"], dtype=np.int64),
            boxes=np.array(boxes, dtype=np.float64).reshape(-1, 4),
        )
    write_json_atomic(place(out / document["json"]), document, indent=1)
    return [(b["segmentation"], by_prompt[p][0]["score"]) for p, b in zip(order, best, strict=True)]
