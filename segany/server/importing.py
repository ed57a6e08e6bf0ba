"""Import a COCO instances file into the project, so an existing dataset can be corrected.

The file and its images must be inside the project folder (upload or copy them first): each
image's ``file_name`` is looked up in the images folder (by default the file's own folder),
registered as a project image if new, and must have the size the file states. Segmentations
may be RLE (compressed or not) or polygons, read with pycocotools as every COCO reader does.
Each category becomes the class of that name (made if new); masks arrive with origin
``imported``, review ``unreviewed`` and the given author. A mask the image already has (the
pre-fill's duplicate rule, ``segany.server.proposals``) is left out, so importing the same file
twice adds nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from segany.errors import InputError
from segany.formats import read_coco
from segany.masks import decode_rle, encode_rle
from segany.server.annotations import Annotations
from segany.server.project import NotFound, ProjectFolder


def import_coco(
    project: ProjectFolder,
    notes: Annotations,
    annotations: str,
    images: str | None,
    author: str,
) -> dict[str, Any]:
    """Import ``annotations`` (a COCO file inside the project); counts as ``ImportOut``."""
    path = project.inside(annotations)
    if not path.is_file():
        raise NotFound(f"no COCO file {annotations!r} in the project")
    data = read_coco(path)
    folder = project.inside(images) if images else path.parent
    names = _category_names(data)
    before = {c.lower() for c in _class_names(notes)}
    by_image: dict[Any, list[dict[str, Any]]] = {}
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann or "segmentation" not in ann:
            raise InputError(f"{path}: annotation {i} needs 'image_id' and 'segmentation'")
        by_image.setdefault(ann["image_id"], []).append(ann)
    found = added = duplicates = 0
    missing: list[str] = []
    for im in data["images"]:
        file_name = str(im.get("file_name", ""))
        target = folder / file_name
        if not file_name or not target.is_file() or project.root not in target.resolve().parents:
            missing.append(file_name)
            continue
        info = project.check_image(target.read_bytes(), file_name)
        size = (int(im["height"]), int(im["width"]))
        if size != (info.height, info.width):
            raise InputError(
                f"{path}: {file_name} is {info.height}×{info.width} but the file says "
                f"{size[0]}×{size[1]}"
            )
        row, _ = notes.add_image(project.relative(target), info)
        found += 1
        anns = by_image.get(im["id"], [])
        masks = [_mask(a, size, path) for a in anns]
        keep = notes.novel(row.id, masks)
        for ann, mask, new in zip(anns, masks, keep, strict=True):
            if not new or not mask.any():
                duplicates += int(not new)
                continue
            fields = {
                "rle": encode_rle(mask),
                "label": names.get(ann.get("category_id"), ""),
                "author": author,
                "origin": "imported",
            }
            notes.add_mask(row.id, fields)
            added += 1
    after = {c.lower() for c in _class_names(notes)}
    return {
        "images": found,
        "masks": added,
        "duplicates": duplicates,
        "classes": len(after - before),
        "missing": missing,
    }


def _category_names(data: dict[str, Any]) -> dict[Any, str]:
    out = {}
    for c in data.get("categories") or []:
        if isinstance(c, dict) and "id" in c and str(c.get("name", "")).strip():
            out[c["id"]] = str(c["name"]).strip()
    return out


def _class_names(notes: Annotations) -> list[str]:
    from sqlalchemy import select

    from segany.server.db import ClassRow

    with notes.sessions() as s:
        return list(s.scalars(select(ClassRow.name)))


def _mask(ann: dict[str, Any], size: tuple[int, int], path: Any) -> np.ndarray:
    """An annotation's H×W bool mask (RLE or polygons), or an InputError naming it."""
    seg = ann["segmentation"]
    h, w = size
    where = f"{path}: annotation {ann.get('id', '?')!r:.40}"
    if isinstance(seg, dict):
        if [int(v) for v in seg.get("size", [])] != [h, w]:
            raise InputError(f"{where}: its RLE size {seg.get('size')} is not the image's")
        try:
            return decode_rle(seg)  # checked: counts must cover the image
        except InputError as e:
            raise InputError(f"{where}: {e}") from None
    if not isinstance(seg, list) or not seg:
        raise InputError(f"{where}: segmentation must be an RLE or a list of polygons")
    for ring in seg:
        ok = isinstance(ring, list) and len(ring) >= 6 and len(ring) % 2 == 0
        if not ok or not all(isinstance(v, (int, float)) and np.isfinite(v) for v in ring):
            raise InputError(f"{where}: a polygon is a flat list of at least 3 x, y pairs")
    rles = mask_utils.frPyObjects(seg, h, w)
    return np.asarray(mask_utils.decode(mask_utils.merge(rles)), dtype=bool)
