"""Normalise mask records before writing them.

Writers accept what ``MaskGenerator.generate`` returns in any output mode: ``MaskRecord``
objects (anything with ``to_dict()``) or the official plain dicts, whose ``segmentation`` is an
H×W bool array, a COCO RLE dict (``counts`` str/bytes) or an uncompressed RLE dict (``counts``
a list). Keeping this in one place means every format sees the same fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from segany.errors import InputError
from segany.masks import decode_rle, encode_rle

#: The fields of an automatic mask record, in the official generator's order.
RECORD_FIELDS = (
    "segmentation",
    "area",
    "bbox",
    "predicted_iou",
    "point_coords",
    "stability_score",
    "crop_box",
)


def record_to_dict(record: Any) -> dict[str, Any]:
    """A plain dict copy of one record (a ``MaskRecord`` or a mapping)."""
    if hasattr(record, "to_dict"):
        record = record.to_dict()
    if not isinstance(record, Mapping):
        raise InputError(
            f"expected a mask record (MaskRecord or dict), got {type(record).__name__}"
        )
    if "segmentation" not in record:
        raise InputError("mask record has no 'segmentation'")
    return dict(record)


def records_to_dicts(records: Iterable[Any]) -> list[dict[str, Any]]:
    return [record_to_dict(r) for r in records]


def segmentation_mask(segmentation: Any) -> np.ndarray:
    """``segmentation`` (bool array or either RLE form) as an H×W bool array."""
    if isinstance(segmentation, Mapping):
        return decode_rle(dict(segmentation))
    mask = np.asarray(segmentation)
    if mask.ndim != 2:
        raise InputError(f"a mask must be H×W, got shape {mask.shape}")
    return mask.astype(bool, copy=False)


def segmentation_rle(segmentation: Any) -> dict[str, Any]:
    """``segmentation`` as a compressed COCO RLE ``{"size": [H, W], "counts": str}``."""
    if isinstance(segmentation, Mapping):
        counts = segmentation.get("counts")
        if isinstance(counts, str):
            return {"size": [int(s) for s in segmentation["size"]], "counts": counts}
        if isinstance(counts, bytes):
            return {"size": [int(s) for s in segmentation["size"]], "counts": counts.decode()}
    return encode_rle(segmentation_mask(segmentation))


def stack_masks(masks: Iterable[np.ndarray], size: tuple[int, int] | None = None) -> np.ndarray:
    """Stack H×W masks to N×H×W bool (N may be 0, which needs ``size``)."""
    masks = [np.asarray(m, dtype=bool) for m in masks]
    if masks:
        return np.stack(masks)
    if size is None:
        raise InputError("cannot stack zero masks without knowing the image size")
    return np.zeros((0, *size), dtype=bool)


def plain(value: Any) -> Any:
    """numpy scalars/arrays (and nested lists of them) as plain Python for JSON/CSV."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "tolist"):  # torch tensors
        return value.tolist()
    return value
