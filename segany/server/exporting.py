"""Export the project's masks with ``segany.formats``: SA-1B JSON, COCO, YOLO, PNG.

Each export goes to a new folder ``exports/<format>-<time>/``:
- ``sa1b``: ``<n>_<name>.json`` beside a copy (hard link when possible) of each annotated
  image, the layout ``segany train`` reads;
- ``coco``: ``instances.json`` (file names relative to the project's folder of images);
  segmentations are RLE, or with ``polygons`` COCO polygons (the outer rings through the
  centres of the boundary pixels; a mask with holes, or with a part too thin for a polygon,
  stays RLE, which COCO allows per annotation);
- ``yolo``: Ultralytics' segmentation layout (``segany.formats.yolo``): ``data.yaml``,
  ``images/train/`` and ``labels/train/``;
- ``png``: per image a folder of mask PNGs (``0.png``, ... in annotation order), a 16-bit
  instance map ``<n>_<name>_labels.png`` (``segany.formats.png``), a 16-bit class map
  ``<n>_<name>_classes.png`` (each pixel its class id, 0 background; smaller masks over larger
  ones, as the instance map) and ``classes.json`` (ids, names, colours).

Categories are the project's classes, every one of them, with the class id as category id
(COCO, PNG class maps) or its position among them as class index (YOLO): the same ids from one
export to the next. Masks without a class go to one more category, ``unlabelled``.
Exports hold the masks (review ``unreviewed`` and ``accepted``; with ``accepted_only`` only
accepted ones); proposals and rejected masks are not masks. Images marked skipped, and images
without masks, are left out. The answer's ``warnings`` say what was left out or changed.
Annotation fields beyond the formats' own (label, class, origin, author, review, edits, model
version, seconds) ride along in the JSON formats.
"""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segany.formats import sa1b_document
from segany.formats.sa1b import SA1BImage
from segany.server.annotations import Annotations
from segany.server.classes import Classes
from segany.server.db import EXPORTED
from segany.server.export_formats import (
    EXTRA_FIELDS,
    Categories,
    ExportResult,
    write_coco_export,
    write_png_export,
    write_sa1b_folder,
    write_yolo_export,
)
from segany.server.project import ProjectFolder


@dataclass(frozen=True)
class ExportOptions:
    polygons: bool = False  # COCO segmentations as polygons
    accepted_only: bool = False


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


def documents(
    project: ProjectFolder, notes: Annotations, states: tuple[str, ...] = EXPORTED
) -> list[tuple[Path, SA1BImage]]:
    """(image file, SA-1B document) for every image not skipped with masks in ``states``."""
    rows, _ = notes.images()
    docs = []
    for image, _tally in rows:
        if image.status == "skipped":
            continue
        masks = notes.masks(image.id, states)
        if not masks:
            continue
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


def left_out(notes: Annotations, accepted_only: bool) -> list[str]:
    """What an export of the project leaves out, one sentence each."""
    rows, _ = notes.images()
    skipped = [(r, t) for r, t in rows if r.status == "skipped" and t["masks"]]
    out = []
    if skipped:
        count = sum(t["masks"] for _, t in skipped)
        names = ", ".join(r.path for r, _ in skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        out.append(
            f"{count} masks of {len(skipped)} skipped images are left out ({names}); mark "
            "an image annotated to export its masks"
        )
    proposals = sum(t["proposals"] for r, t in rows if r.status != "skipped")
    if proposals:
        out.append(f"{proposals} proposals waiting for review are left out (accept them first)")
    unreviewed = sum(t["unreviewed"] for r, t in rows if r.status != "skipped")
    if accepted_only and unreviewed:
        out.append(f"{unreviewed} unreviewed masks are left out (accepted masks only)")
    return out


def export(
    project: ProjectFolder,
    notes: Annotations,
    classes: Classes,
    fmt: str,
    options: ExportOptions | None = None,
) -> ExportResult:
    """Write an export (the module's layouts) in a new folder."""
    options = options or ExportOptions()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    folder = project.root / "exports" / f"{fmt}-{stamp}"
    # Written in a hidden folder and renamed when complete: a failed export (a full disk)
    # leaves no partial folder among the exports.
    final, folder = folder, folder.with_name(f".{folder.name}.partial")
    folder.mkdir(parents=True)
    try:
        result = _write(folder, fmt, project, notes, classes, options)
        folder.rename(final)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    result.folder = final
    return result


def _write(
    folder: Path,
    fmt: str,
    project: ProjectFolder,
    notes: Annotations,
    classes: Classes,
    options: ExportOptions,
) -> ExportResult:
    states = ("accepted",) if options.accepted_only else EXPORTED
    docs = documents(project, notes, states)
    result = ExportResult(folder, sum(len(d.annotations) for _, d in docs))
    result.warnings.extend(left_out(notes, options.accepted_only))
    categories = Categories(classes.all(), docs)
    if categories.unlabelled:
        result.warnings.append(
            f"{categories.unlabelled} masks have no class: exported as {categories.extra_name!r}"
        )
    if fmt == "sa1b":
        write_sa1b_folder(folder, docs)
    elif fmt == "coco":
        write_coco_export(folder, docs, categories, options.polygons, result)
    elif fmt == "yolo":
        write_yolo_export(folder, docs, categories, result)
    else:
        write_png_export(folder, docs, categories, result)
    return result
