"""Export the project's masks with ``segany.formats``: SA-1B JSON, COCO instances, PNG masks.

Each export goes to a new folder ``exports/<format>-<time>/``:
- ``sa1b``: ``<n>_<name>.json`` beside a copy (hard link when possible) of each annotated
  image, the layout ``segany train`` reads;
- ``coco``: ``instances.json`` (file names relative to the project's folder of images);
- ``png``: per image a folder of mask PNGs (``0.png``, ... in annotation order) and a 16-bit
  label map ``<n>_<name>_labels.png`` (``segany.formats.png``).
Images marked skipped, and images without masks, are left out. Annotation fields beyond the
formats' own (label, origin, author, model version, seconds) ride along in the JSON formats.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path
from typing import Any

from segany.atomic import atomic_path
from segany.formats import (
    coco_dataset,
    label_map,
    sa1b_document,
    write_coco,
    write_label_map,
    write_mask_png,
    write_sa1b,
)
from segany.formats.sa1b import SA1BImage
from segany.server.annotations import Annotations
from segany.server.project import ProjectFolder

EXTRA_FIELDS = ("label", "origin", "author", "model_version", "seconds")


def _records(masks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for m in masks:
        rec: dict[str, Any] = {"segmentation": m["rle"], "area": m["area"], "bbox": m["bbox"]}
        if m["predicted_iou"] is not None:
            rec["predicted_iou"] = m["predicted_iou"]
        points = (m["prompts"] or {}).get("points")
        if points:
            rec["point_coords"] = points
        out.append(rec)
    return out


def documents(project: ProjectFolder, notes: Annotations) -> list[tuple[Path, SA1BImage]]:
    """(image file, SA-1B document) for every annotated image with at least one mask."""
    rows, _ = notes.images()
    docs = []
    for image, count in rows:
        if image.status == "skipped" or count == 0:
            continue
        masks = notes.masks(image.id)
        doc = sa1b_document(
            _records(masks),
            file_name=Path(image.path).name,
            width=image.width,
            height=image.height,
            image_id=image.id,
        )
        for ann, m in zip(doc.annotations, masks, strict=True):
            ann.update({k: m[k] for k in EXTRA_FIELDS})
        docs.append((project.root / image.path, doc))
    return docs


def export(project: ProjectFolder, notes: Annotations, fmt: str) -> tuple[Path, int]:
    """Write an export; returns its folder and the number of masks in it."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    folder = project.root / "exports" / f"{fmt}-{stamp}"
    folder.mkdir(parents=True)
    docs = documents(project, notes)
    total = sum(len(d.annotations) for _, d in docs)
    if fmt == "sa1b":
        write_sa1b_folder(folder, docs)
    elif fmt == "coco":
        dataset = coco_dataset([d for _, d in docs], description="segany annotation project")
        by_image = [a for _, d in docs for a in d.annotations]
        for ann, src in zip(dataset["annotations"], by_image, strict=True):
            ann.update({k: src[k] for k in EXTRA_FIELDS})
        write_coco(folder / "instances.json", dataset)
    else:
        for n, (path, doc) in enumerate(docs):
            masks = doc.masks()
            sub = folder / f"{n:06d}_{path.stem}"
            for i, mask in enumerate(masks):
                write_mask_png(sub / f"{i}.png", mask)
            write_label_map(folder / f"{n:06d}_{path.stem}_labels.png", label_map(masks))
    return folder, total


def write_sa1b_folder(folder: Path, docs: list[tuple[Path, SA1BImage]]) -> None:
    for n, (path, doc) in enumerate(docs):
        name = f"{n:06d}_{path.name}"
        target = folder / name
        try:
            os.link(path, target)
        except OSError:  # another file system: a copy, published whole like every output
            with atomic_path(target) as tmp:
                shutil.copyfile(path, tmp)
        doc.image["file_name"] = name
        write_sa1b(folder / f"{n:06d}_{path.stem}.json", doc)
