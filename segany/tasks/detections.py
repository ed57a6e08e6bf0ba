"""Detections in, masks out: the paper's zero-shot instance segmentation (§7.3) as a library
call. A detector (or a text-grounded one) gives boxes; each image is encoded once and all its
boxes go to the decoder together.

Detections are read from the formats detectors write:

- COCO results JSON: a list of ``{"image_id", "bbox": [x, y, w, h], "score", "category_id"}``;
  ``image_id`` is matched to an image by a COCO ``images`` list when one is given (its
  ``id`` -> ``file_name``), else by file name, stem, or a numeric stem (``000000397133.jpg`` is
  image 397133, as in COCO's own files);
- YOLO txt: one ``<stem>.txt`` per image, lines ``class cx cy w h [confidence]`` normalised to
  the image size (Ultralytics' documented layout);
- a supervision ``Detections`` (``xyxy``, ``confidence``, ``class_id``), read by duck typing.

Boxes are XYXY pixels of the original image; boxes partly outside are clipped to the image (the
official predictor would take them as they are; clipping keeps what the detector meant) and a
box with no area inside the image is refused by name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segany.errors import InputError
from segany.inference.protocol import PredictorLike
from segany.limits import prompts_per_call
from segany.masks import RLE, encode_rles

__all__ = [
    "Detections",
    "InstanceMasks",
    "coco_instance_results",
    "from_supervision",
    "read_coco_detections",
    "read_yolo_detections",
    "segment_detections",
]


@dataclass(frozen=True)
class Detections:
    """One image's detections: ``boxes`` N×4 XYXY float64 (original pixels), ``scores`` N
    float64, ``categories`` N int64."""

    boxes: np.ndarray
    scores: np.ndarray
    categories: np.ndarray
    #: the image's id in the file the detections came from (COCO ``image_id``), if any
    image_id: int | str | None = None

    def __post_init__(self) -> None:
        n = len(self.boxes)
        if self.boxes.shape != (n, 4) or self.scores.shape != (n,):
            raise InputError(
                f"detections need boxes N×4 and scores N, got {self.boxes.shape} and "
                f"{self.scores.shape}"
            )
        if self.categories.shape != (n,):
            raise InputError(f"detections need N categories, got {self.categories.shape}")
        if not (np.isfinite(self.boxes).all() and np.isfinite(self.scores).all()):
            raise InputError("detection boxes and scores must be finite numbers")

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def from_arrays(
        cls,
        boxes: Any,
        scores: Any = None,
        categories: Any = None,
        image_id: int | str | None = None,
    ) -> Detections:
        """From array-likes: boxes N×4 XYXY; scores default 1.0, categories default 1."""
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) if len(boxes) else np.zeros((0, 4))
        n = len(b)
        s = np.ones(n) if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
        c = (
            np.ones(n, np.int64)
            if categories is None
            else np.asarray(categories, dtype=np.int64).reshape(-1)
        )
        return cls(b, s, c, image_id)

    def clipped(self, height: int, width: int, what: str = "image") -> tuple[Detections, int]:
        """The boxes clipped to a ``height``×``width`` image and how many were clipped; a box
        with no area inside the image is an ``InputError`` naming it."""
        limit = np.array([width, height, width, height], np.float64)
        boxes = np.clip(self.boxes, 0.0, limit)
        empty = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
        if empty.any():
            i = int(np.flatnonzero(empty)[0])
            raise InputError(
                f"{what}: detection {i} box {self.boxes[i].tolist()} (XYXY) has no area inside "
                f"the {width}×{height} image"
            )
        changed = int((boxes != self.boxes).any(axis=1).sum())
        return Detections(boxes, self.scores, self.categories, self.image_id), changed


@dataclass(frozen=True)
class InstanceMasks:
    """The masks of one image's detections, in detection order: COCO RLEs (str counts) and the
    decoder's IoU predictions; ``detections`` as segmented (boxes clipped)."""

    detections: Detections
    rles: list[RLE]
    iou_predictions: np.ndarray
    clipped: int = 0


def from_supervision(detections: Any) -> Detections:
    """A supervision ``Detections`` (``xyxy``, optional ``confidence`` and ``class_id``)."""
    if not hasattr(detections, "xyxy"):
        raise InputError(
            f"expected a supervision Detections (with .xyxy), got {type(detections).__name__}"
        )
    return Detections.from_arrays(
        detections.xyxy,
        getattr(detections, "confidence", None),
        getattr(detections, "class_id", None),
    )


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{what} must be a number, got {value!r:.60}")
    return float(value)


def _image_index(images: Sequence[Path], coco_images: Iterable[Mapping[str, Any]] | None):
    """image_id (int or str) -> path, from a COCO ``images`` list or the file names."""
    by_name: dict[Any, Path] = {}
    for p in images:
        by_name.setdefault(p.name, p)
        by_name.setdefault(p.stem, p)
        if p.stem.isdigit():
            by_name.setdefault(int(p.stem), p)
    if coco_images is None:
        return by_name
    index: dict[Any, Path] = {}
    for im in coco_images:
        name = Path(str(im.get("file_name", ""))).name
        if name in by_name:
            index[im.get("id")] = by_name[name]
    return index


def read_coco_detections(
    path: str | os.PathLike[str],
    images: Sequence[str | os.PathLike[str]],
    *,
    coco_images: Iterable[Mapping[str, Any]] | None = None,
    min_score: float = 0.0,
) -> dict[Path, Detections]:
    """COCO results JSON -> detections per image path (only images with detections). An
    ``image_id`` matching none of ``images`` is an ``InputError`` naming it and how ids are
    matched."""
    try:
        rows = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InputError(f"{path}: not a readable COCO results JSON file ({e})") from None
    if isinstance(rows, dict) and "annotations" in rows:
        rows = rows["annotations"]  # a ground-truth-style file: its annotations as detections
    if not isinstance(rows, list):
        raise InputError(f"{path}: a COCO results file is a JSON list of detections")
    index = _image_index([Path(p) for p in images], coco_images)
    grouped: dict[Path, list[tuple[list[float], float, int]]] = {}
    ids: dict[Path, Any] = {}
    for i, row in enumerate(rows):
        where = f"{path}: detection {i}"
        if not isinstance(row, dict) or "bbox" not in row or "image_id" not in row:
            raise InputError(f"{where}: needs 'image_id' and 'bbox' [x, y, w, h]")
        box = row["bbox"]
        if not isinstance(box, list) or len(box) != 4:
            raise InputError(f"{where}: 'bbox' must be [x, y, w, h], got {box!r:.60}")
        x, y, w, h = (_number(v, f"{where} bbox") for v in box)
        score = _number(row.get("score", 1.0), f"{where} score")
        category = row.get("category_id", 1)
        if isinstance(category, bool) or not isinstance(category, int):
            raise InputError(f"{where}: 'category_id' must be an integer, got {category!r:.40}")
        key = row["image_id"]
        if isinstance(key, str) and key.isdigit() and key not in index:
            key = int(key)
        target = index.get(key) if isinstance(key, (int, str)) else None
        if target is None:
            how = "the COCO images list" if coco_images is not None else "file name or stem"
            raise InputError(
                f"{where}: image_id {row['image_id']!r:.60} is none of the {len(images)} "
                f"images given (matched by {how})"
            )
        ids.setdefault(target, row["image_id"])
        if score >= min_score:
            grouped.setdefault(target, []).append(([x, y, x + w, y + h], score, category))
    return {
        p: Detections.from_arrays(
            [r[0] for r in v], [r[1] for r in v], [r[2] for r in v], image_id=ids[p]
        )
        for p, v in grouped.items()
    }


def read_yolo_detections(
    folder: str | os.PathLike[str],
    images: Mapping[Any, tuple[int, int]],
    *,
    min_score: float = 0.0,
) -> dict[Path, Detections]:
    """YOLO txt labels (``<stem>.txt`` in ``folder``) -> detections per image path; ``images``
    maps each image path to its (height, width), which the normalised boxes need. Images
    without a label file have no detections; a label file matching no image is refused."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: expected a folder of YOLO .txt label files")
    stems = {Path(p).stem: (Path(p), hw) for p, hw in images.items()}
    out: dict[Path, Detections] = {}
    for txt in sorted(root.glob("*.txt")):
        if txt.stem not in stems:
            raise InputError(f"{txt}: no image named {txt.stem}.* among the images given")
        path, (height, width) = stems[txt.stem]
        boxes, scores, cats = [], [], []
        for n, line in enumerate(txt.read_text(encoding="utf-8").splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) not in (5, 6):
                kind = "a segmentation polygon" if len(parts) > 6 else "too few values"
                raise InputError(
                    f"{txt}:{n}: expected 'class cx cy w h [confidence]', got {len(parts)} "
                    f"values ({kind})"
                )
            try:
                cls, cx, cy, w, h = int(parts[0]), *(float(v) for v in parts[1:5])
                conf = float(parts[5]) if len(parts) == 6 else 1.0
            except ValueError:
                raise InputError(f"{txt}:{n}: not numbers: {line!r:.80}") from None
            if conf < min_score:
                continue
            boxes.append(
                [
                    (cx - w / 2) * width,
                    (cy - h / 2) * height,
                    (cx + w / 2) * width,
                    (cy + h / 2) * height,
                ]
            )
            scores.append(conf)
            cats.append(cls)
        if boxes:
            out[path] = Detections.from_arrays(boxes, scores, cats, image_id=path.stem)
    return out


def segment_detections(
    predictor: PredictorLike,
    image: np.ndarray,
    detections: Detections,
    *,
    batch_size: int | None = None,
    what: str = "image",
) -> InstanceMasks:
    """One mask per detection: ``image`` (H×W×3) is encoded once and its boxes are decoded
    ``batch_size`` at a time (one decoder call each; None: as many as keep a call's masks
    within ``segany.limits.MASK_PIXELS_PER_BATCH``, at most 64), single-mask output as the
    paper's box prompts. Equal to ``predictor.predict(box=b, multimask_output=False)`` per
    box."""
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise InputError(f"batch_size must be an int >= 1 or None, got {batch_size!r}")
    height, width = int(image.shape[0]), int(image.shape[1])
    step = batch_size or prompts_per_call(1, height, width)
    dets, clipped = detections.clipped(height, width, what)
    rles: list[RLE] = []
    ious: list[np.ndarray] = []
    if len(dets):
        predictor.set_image(image)
    for start in range(0, len(dets), step):
        boxes = dets.boxes[start : start + step]
        pred = predictor.predict(box=boxes, multimask_output=False)
        masks, scores = np.asarray(pred.masks), np.asarray(pred.scores, np.float64)
        if masks.ndim == 3:  # one box answers unbatched (1×H×W), as the official predictor
            masks, scores = masks[None], scores[None]
        rles.extend(encode_rles(masks[:, 0]))
        ious.append(scores[:, 0])
    iou = np.concatenate(ious) if ious else np.zeros(0)
    return InstanceMasks(dets, rles, iou, clipped)


def coco_instance_results(image_id: int | str, masks: InstanceMasks) -> list[dict[str, Any]]:
    """COCO results rows (segm): the detector's category and score kept, the mask as RLE, the
    box as the detector gave it (clipped, XYWH)."""
    rows = []
    d = masks.detections
    for box, score, cat, rle in zip(d.boxes, d.scores, d.categories, masks.rles, strict=True):
        x0, y0, x1, y1 = (float(v) for v in box)
        rows.append(
            {
                "image_id": image_id,
                "category_id": int(cat),
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "score": float(score),
                "segmentation": {"size": list(rle["size"]), "counts": rle["counts"]},
            }
        )
    return rows
