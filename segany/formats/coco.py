"""COCO instances JSON for a whole run, readable by ``pycocotools.coco.COCO`` and ``loadRes``.

Built from the per-image SA-1B documents (so a folder run that skipped finished images still
lists them). Every mask becomes one annotation, its segmentation a compressed RLE, ``iscrowd``
0, ``score`` its predicted IoU; the SAM fields (``predicted_iou``, ``stability_score``,
``point_coords``, ``crop_box``) ride along. Categories come from the masks' ``label`` fields
(the annotation app's classes): one category per distinct label, ids 1.. in sorted name order,
unlabelled masks in "object"; masks with no labels at all give the single category 1
("object"). ``bbox`` is COCO's own (``pycocotools.mask.toBbox``: w = last column - first + 1),
not SA-1B's one pixel narrower box, so every COCO reader gets the box it computes itself.

Ids start at 1: ``COCOeval`` treats a matched ground-truth id of 0 as "unmatched".
Image ids are the SA-1B ``image_id`` values when they are distinct positive integers,
otherwise ``1..N`` in input order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from segany.atomic import write_json_atomic
from segany.errors import InputError
from segany.formats.records import stack_masks
from segany.formats.sa1b import SA1BImage
from segany.limits import check_image_size
from segany.masks import decode_rle

UNLABELLED = "object"  # the category of masks without a label
CATEGORY = {"id": 1, "name": UNLABELLED, "supercategory": "object"}
_SAM_FIELDS = ("predicted_iou", "stability_score", "point_coords", "crop_box")


def coco_dataset(
    documents: Iterable[SA1BImage], *, description: str = "segany automatic masks"
) -> dict[str, Any]:
    """A COCO instances dict (``info, licenses, images, annotations, categories``)."""
    docs = list(documents)
    categories = _categories(docs)
    by_name = {c["name"]: c["id"] for c in categories}
    given = [d.image.get("image_id") for d in docs]
    keep_ids = all(isinstance(i, int) and i > 0 for i in given) and len(set(given)) == len(given)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for n, doc in enumerate(docs, start=1):
        image_id = int(doc.image["image_id"]) if keep_ids else n
        height, width = doc.size
        images.append(
            {
                "id": image_id,
                "width": width,
                "height": height,
                "file_name": str(doc.image.get("file_name", "")),
            }
        )
        for ann in doc.annotations:
            rle = ann["segmentation"]
            out: dict[str, Any] = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": by_name[_label(ann)],
                "segmentation": {"size": list(rle["size"]), "counts": rle["counts"]},
                "area": float(ann["area"]) if "area" in ann else float(_area(rle)),
                "bbox": _bbox(rle),
                "iscrowd": 0,
            }
            if "predicted_iou" in ann:
                out["score"] = float(ann["predicted_iou"])
            out.update({k: ann[k] for k in _SAM_FIELDS if k in ann})
            annotations.append(out)
    return {
        "info": {"description": description},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }


def _label(ann: dict[str, Any]) -> str:
    label = ann.get("label")
    return str(label).strip() if label is not None and str(label).strip() else UNLABELLED


def _categories(docs: Sequence[SA1BImage]) -> list[dict[str, Any]]:
    """One category per distinct label (sorted names, ids from 1); unlabelled: "object"."""
    names = sorted({_label(a) for d in docs for a in d.annotations}) or [UNLABELLED]
    return [{"id": i, "name": n, "supercategory": "object"} for i, n in enumerate(names, 1)]


def coco_results(dataset: dict[str, Any]) -> list[dict[str, Any]]:
    """The annotations as a COCO *results* list (for ``COCO.loadRes`` / ``COCOeval``).

    ``bbox`` is left out on purpose: with it ``loadRes`` would take the box branch and set each
    area to the box area; without it the area and box are computed from the mask.
    """
    return [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "segmentation": a["segmentation"],
            "score": float(a.get("score", 1.0)),
        }
        for a in dataset["annotations"]
    ]


def write_coco(path: str | os.PathLike[str], dataset: dict[str, Any]) -> None:
    write_json_atomic(path, dataset)


def read_coco(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a COCO instances JSON; raises ``InputError`` when it is not one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not a JSON file ({e})") from None
    if not isinstance(data, dict) or not {"images", "annotations"} <= data.keys():
        raise InputError(f"{path}: not a COCO instances file (needs 'images' and 'annotations')")
    if not isinstance(data["images"], list) or not isinstance(data["annotations"], list):
        raise InputError(f"{path}: 'images' and 'annotations' must be lists")
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or not {"id", "height", "width"} <= im.keys():
            raise InputError(f"{path}: image {i} needs 'id', 'height' and 'width'")
        check_image_size(im["height"], im["width"], what=f"{path}: image {im['id']!r:.40}")
    return data


def coco_image_masks(dataset: dict[str, Any], image_id: int) -> np.ndarray:
    """The masks of one image, N×H×W bool, in annotation order (RLE segmentations only)."""
    images = {im["id"]: im for im in dataset["images"]}
    if image_id not in images:
        raise InputError(f"no image with id {image_id} in the COCO dataset")
    size = (int(images[image_id]["height"]), int(images[image_id]["width"]))
    anns: Sequence[dict[str, Any]] = [
        a for a in dataset["annotations"] if a["image_id"] == image_id
    ]
    return stack_masks((decode_rle(a["segmentation"]) for a in anns), size)


def _area(rle: dict[str, Any]) -> int:
    return int(mask_utils.area(_bytes_rle(rle)))


def _bbox(rle: dict[str, Any]) -> list[float]:
    # COCO's own convention (w = x1 - x0 + 1), as pycocotools computes it.
    return [float(v) for v in mask_utils.toBbox(_bytes_rle(rle))]


def _bytes_rle(rle: dict[str, Any]) -> dict[str, Any]:
    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed
        return mask_utils.frPyObjects(dict(rle), *rle["size"])
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    return {"size": list(rle["size"]), "counts": counts}
