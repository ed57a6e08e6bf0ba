"""SA-1B per-image JSON: image info plus one annotation per mask, masks as COCO RLE.

The layout of the SA-1B dataset's files (and of ``segment_anything``'s ``coco_rle`` output)::

    {"image": {"image_id": int, "width": W, "height": H, "file_name": str},
     "annotations": [{"id": int, "segmentation": {"size": [H, W], "counts": str},
                      "bbox": [x, y, w, h], "area": int, "predicted_iou": float,
                      "stability_score": float, "crop_box": [x, y, w, h],
                      "point_coords": [[x, y]]}, ...]}

segany numbers annotations ``0..N-1`` in record order, so ``id`` matches the ``{id}.png`` file
and the ``id`` column that the per-mask PNG writer produces for the same records.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segany.atomic import write_json_atomic
from segany.errors import InputError
from segany.formats.records import plain, records_to_dicts, segmentation_rle, stack_masks
from segany.limits import check_image_size
from segany.masks import decode_rle

ANNOTATION_FIELDS = (
    "id",
    "segmentation",
    "bbox",
    "area",
    "predicted_iou",
    "stability_score",
    "crop_box",
    "point_coords",
)


@dataclass
class SA1BImage:
    """One SA-1B file: ``image`` info and its ``annotations`` (plain dicts, RLE masks)."""

    image: dict[str, Any]
    annotations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the image."""
        return int(self.image["height"]), int(self.image["width"])

    def masks(self) -> np.ndarray:
        """All masks decoded, N×H×W bool, in annotation order."""
        return stack_masks((decode_rle(a["segmentation"]) for a in self.annotations), self.size)

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image, "annotations": self.annotations}


def sa1b_document(
    records: Iterable[Any],
    *,
    file_name: str,
    width: int,
    height: int,
    image_id: int = 0,
) -> SA1BImage:
    """Build the SA-1B document for one image from mask records (any output mode)."""
    image = {
        "image_id": int(image_id),
        "width": int(width),
        "height": int(height),
        "file_name": str(file_name),
    }
    annotations = []
    for i, rec in enumerate(records_to_dicts(records)):
        rle = segmentation_rle(rec["segmentation"])
        if [int(s) for s in rle["size"]] != [int(height), int(width)]:
            raise InputError(
                f"mask {i} is {rle['size'][0]}×{rle['size'][1]} but the image is {height}×{width}"
            )
        ann: dict[str, Any] = {"id": i, "segmentation": rle}
        for key in ANNOTATION_FIELDS[2:]:
            if key in rec:
                ann[key] = plain(rec[key])
        annotations.append(ann)
    return SA1BImage(image, annotations)


def write_sa1b(path: str | os.PathLike[str], document: SA1BImage) -> None:
    """Write one SA-1B JSON file atomically."""
    write_json_atomic(path, document.to_dict())


def read_sa1b(path: str | os.PathLike[str]) -> SA1BImage:
    """Read and check an SA-1B JSON file; raises ``InputError`` when it is not one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not a JSON file ({e})") from None
    return parse_sa1b(data, source=str(path))


def parse_sa1b(data: Any, *, source: str = "SA-1B document") -> SA1BImage:
    """Check a loaded SA-1B dict and wrap it."""
    if not isinstance(data, dict) or not isinstance(data.get("image"), dict):
        raise InputError(f"{source}: not an SA-1B file (no 'image' object)")
    image = data["image"]
    missing = [k for k in ("width", "height") if k not in image]
    if missing:
        raise InputError(f"{source}: image info lacks {missing}")
    size = check_image_size(image["height"], image["width"], what=f"{source}: image")
    annotations = data.get("annotations", [])
    if not isinstance(annotations, list):
        raise InputError(f"{source}: 'annotations' must be a list")
    for i, ann in enumerate(annotations):
        if not isinstance(ann, dict) or not isinstance(ann.get("segmentation"), dict):
            raise InputError(f"{source}: annotation {i} has no RLE 'segmentation'")
        rle_size = ann["segmentation"].get("size")
        if not isinstance(rle_size, list) or tuple(rle_size) != size:
            raise InputError(
                f"{source}: annotation {i} has RLE size {rle_size!r:.40}, expected the image "
                f"size [{size[0]}, {size[1]}]"
            )
    return SA1BImage(image, annotations)
