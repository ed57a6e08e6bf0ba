"""The exports' files, one writer per format (layouts in ``segany.server.exporting``), and
what they share: the categories, the extra annotation fields, the result."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segany.atomic import atomic_path, write_json_atomic
from segany.formats import (
    coco_dataset,
    label_map,
    mask_polygons,
    write_coco,
    write_label_map,
    write_mask_png,
    write_sa1b,
)
from segany.formats.sa1b import SA1BImage
from segany.formats.yolo import LabelLine, mask_line, write_data_yaml, write_labels
from segany.masks import decode_rle

EXTRA_FIELDS = (
    "label",
    "class_id",
    "origin",
    "author",
    "review",
    "reviewer",
    "edits",
    "relabels",
    "model_version",
    "seconds",
)
UNLABELLED = "unlabelled"


@dataclass
class ExportResult:
    folder: Path
    masks: int
    warnings: list[str] = field(default_factory=list)


class Categories:
    """The export's categories: every class (id, name, colour), then ``unlabelled`` if any
    exported mask has no class (id one above the largest class id)."""

    def __init__(self, classes: list[dict[str, Any]], docs: list[tuple[Path, SA1BImage]]):
        self.classes = [dict(c) for c in classes]
        self.unlabelled = sum(
            1 for _, d in docs for a in d.annotations if a.get("class_id") is None
        )
        names = {c["name"].lower() for c in self.classes}
        self.extra_name = UNLABELLED
        while self.extra_name.lower() in names:
            self.extra_name += "_"
        self.extra_id = max((c["id"] for c in self.classes), default=0) + 1
        if self.unlabelled:
            self.classes.append({"id": self.extra_id, "name": self.extra_name, "color": "#808080"})
        self.index = {c["id"]: i for i, c in enumerate(self.classes)}

    def id_of(self, annotation: dict[str, Any]) -> int:
        class_id = annotation.get("class_id")
        return self.extra_id if class_id is None else int(class_id)

    def coco(self) -> list[dict[str, Any]]:
        return [
            {"id": c["id"], "name": c["name"], "supercategory": "object", "color": c["color"]}
            for c in self.classes
        ]


def write_sa1b_folder(folder: Path, docs: list[tuple[Path, SA1BImage]]) -> None:
    for n, (path, doc) in enumerate(docs):
        name = f"{n:06d}_{path.name}"
        link_or_copy(path, folder / name)
        doc.image["file_name"] = name
        write_sa1b(folder / f"{n:06d}_{path.stem}.json", doc)


def link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another file system: a copy, published whole like every output
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)


def coco_polygons(mask: np.ndarray) -> list[list[float]] | None:
    """COCO polygons (flat x, y lists in COCO's pixel frame, where pixel i spans [i, i+1))
    of an H×W bool mask, or None when polygons cannot hold it (holes, or a part of fewer than
    3 boundary points)."""
    rings = []
    for polygon in mask_polygons(mask):
        if len(polygon) > 1 or len(polygon[0]) < 3:
            return None
        rings.append((np.asarray(polygon[0], dtype=np.float64) + 0.5).reshape(-1).tolist())
    return rings or None


Docs = list[tuple[Path, SA1BImage]]
YOLO_SPLIT = "train"
#: Above this an image's masks are not decoded at its size (a large image, worked on by
#: windows: segany.server.windows); the PNG export, which writes image-sized maps, leaves it out.
PNG_MAX_PIXELS = 2**27


def _boxed(rle: dict[str, Any]) -> tuple[np.ndarray, int, int]:
    """The mask of a stored RLE and its XY offset in the image: the mask within its box and a
    pixel of margin (zeros around it, so its outlines are those of the whole mask), or the
    whole mask (offset 0, 0) when that box holds half the image or more and the image is
    within ``PNG_MAX_PIXELS`` (a large image's masks cannot be decoded at its size). Cut and
    traced in its box, a disk a tenth of a 12 MP image's side exports in 0.7 ms against 36 ms
    whole, and 3.5 ms against 615 ms on a 100 MP image (``bench_export_polygons.py``)."""
    from segany.rle_windows import crop_rle, rle_box_area

    h, w = (int(v) for v in rle["size"])
    (x, y, bw, bh), _ = rle_box_area(rle, trusted=True)
    if h * w <= PNG_MAX_PIXELS and 2 * (bw + 2) * (bh + 2) >= h * w:
        return decode_rle(rle, trusted=True), 0, 0
    x0, y0 = max(0, x - 1), max(0, y - 1)
    x1, y1 = min(w, x + bw + 1), min(h, y + bh + 1)
    if x1 <= x0 or y1 <= y0:  # (an empty mask)
        return np.zeros((0, 0), bool), 0, 0
    return decode_rle(crop_rle(rle, (x0, y0, x1, y1)), trusted=True), x0, y0


def _coco_polygons(rle: dict[str, Any]) -> list[list[float]] | None:
    mask, x0, y0 = _boxed(rle)
    rings = coco_polygons(mask)
    if rings is None:
        return None
    return [[v + (x0 if i % 2 == 0 else y0) for i, v in enumerate(ring)] for ring in rings]


def _mask_line(rle: dict[str, Any], index: int) -> LabelLine | None:
    mask, x0, y0 = _boxed(rle)
    line = mask_line(mask, index)
    if line is None:
        return None
    h, w = (int(v) for v in rle["size"])
    crop = np.array([mask.shape[1], mask.shape[0]], dtype=np.float64)
    points = (line.points * crop + [x0, y0]) / np.array([w, h], dtype=np.float64)
    return LabelLine(line.class_index, np.clip(points, 0.0, 1.0), line.holes)


def write_coco_export(
    folder: Path, docs: Docs, categories: Categories, polygons: bool, result: ExportResult
) -> None:
    dataset = coco_dataset([d for _, d in docs], description="segany annotation project")
    by_image = [a for _, d in docs for a in d.annotations]
    kept_rle = 0
    for ann, src in zip(dataset["annotations"], by_image, strict=True):
        ann.update({k: src[k] for k in EXTRA_FIELDS})
        ann["category_id"] = categories.id_of(src)
        if polygons:
            rings = _coco_polygons(src["segmentation"])
            if rings is None:
                kept_rle += 1
            else:
                ann["segmentation"] = rings
    dataset["categories"] = categories.coco()
    if kept_rle:
        result.warnings.append(
            f"{kept_rle} masks with holes (or parts too thin for a polygon) stay RLE"
        )
    write_coco(folder / "instances.json", dataset)


def write_yolo_export(
    folder: Path, docs: Docs, categories: Categories, result: ExportResult
) -> None:
    holes = 0
    for n, (path, doc) in enumerate(docs):
        name = f"{n:06d}_{path.stem}"
        link_or_copy(path, folder / "images" / YOLO_SPLIT / f"{name}{path.suffix.lower()}")
        lines = []
        for ann in doc.annotations:
            index = categories.index[categories.id_of(ann)]
            line = _mask_line(ann["segmentation"], index)
            if line is not None:
                lines.append(line)
                holes += line.holes
        write_labels(folder / "labels" / YOLO_SPLIT / f"{name}.txt", lines)
    write_data_yaml(folder / "data.yaml", [c["name"] for c in categories.classes], YOLO_SPLIT)
    if holes:
        result.warnings.append(f"YOLO polygons cannot hold holes: {holes} holes are filled")


def write_png_export(
    folder: Path, docs: Docs, categories: Categories, result: ExportResult | None = None
) -> None:
    for n, (path, doc) in enumerate(docs):
        if doc.size[0] * doc.size[1] > PNG_MAX_PIXELS:
            if result is not None:
                result.warnings.append(
                    f"{path.name} ({doc.size[1]}×{doc.size[0]} px) is left out: PNG maps "
                    "of an image that large are not written (export COCO or SA-1B for it)"
                )
            continue
        masks = doc.masks()
        sub = folder / f"{n:06d}_{path.stem}"
        for i, mask in enumerate(masks):
            write_mask_png(sub / f"{i}.png", mask)
        instances = label_map(masks)
        write_label_map(folder / f"{n:06d}_{path.stem}_labels.png", instances)
        ids = np.array([0] + [categories.id_of(a) for a in doc.annotations], dtype=np.uint16)
        write_label_map(folder / f"{n:06d}_{path.stem}_classes.png", ids[instances])
    write_json_atomic(folder / "classes.json", _classes_json(categories))


def _classes_json(categories: Categories) -> dict[str, Any]:
    return {
        "background": 0,
        "classes": [{k: c[k] for k in ("id", "name", "color")} for c in categories.classes],
    }
