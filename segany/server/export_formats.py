"""The COCO, YOLO and PNG exports' files (layouts in ``segany.server.exporting``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from segany.atomic import write_json_atomic
from segany.formats import (
    coco_dataset,
    label_map,
    write_coco,
    write_label_map,
    write_mask_png,
)
from segany.formats.sa1b import SA1BImage
from segany.formats.yolo import mask_line, write_data_yaml, write_labels
from segany.masks import decode_rle
from segany.server.exporting import (
    EXTRA_FIELDS,
    Categories,
    ExportResult,
    coco_polygons,
    link_or_copy,
)

Docs = list[tuple[Path, SA1BImage]]
YOLO_SPLIT = "train"


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
            rings = coco_polygons(decode_rle(src["segmentation"], trusted=True))
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
            line = mask_line(decode_rle(ann["segmentation"], trusted=True), index)
            if line is not None:
                lines.append(line)
                holes += line.holes
        write_labels(folder / "labels" / YOLO_SPLIT / f"{name}.txt", lines)
    write_data_yaml(folder / "data.yaml", [c["name"] for c in categories.classes], YOLO_SPLIT)
    if holes:
        result.warnings.append(f"YOLO polygons cannot hold holes: {holes} holes are filled")


def write_png_export(folder: Path, docs: Docs, categories: Categories) -> None:
    for n, (path, doc) in enumerate(docs):
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
