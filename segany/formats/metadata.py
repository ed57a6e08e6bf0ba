"""``metadata.csv`` exactly as the official ``amg.py`` writes it beside the per-mask PNGs.

Header (one line, no spaces)::

    id,area,bbox_x0,bbox_y0,bbox_w,bbox_h,point_input_x,point_input_y,predicted_iou,
    stability_score,crop_box_x0,crop_box_y0,crop_box_w,crop_box_h

one row per mask, ``id`` the index that names ``{id}.png``, the point the mask's first prompt
point, values written with ``str()``, lines joined by ``\\n`` with no final newline.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from segany.atomic import write_text_atomic
from segany.errors import InputError
from segany.formats.records import plain

HEADER = (
    "id",
    "area",
    "bbox_x0",
    "bbox_y0",
    "bbox_w",
    "bbox_h",
    "point_input_x",
    "point_input_y",
    "predicted_iou",
    "stability_score",
    "crop_box_x0",
    "crop_box_y0",
    "crop_box_w",
    "crop_box_h",
)


def metadata_row(index: int, record: dict[str, Any]) -> list[str]:
    """The CSV fields of one record (a plain dict with the official keys)."""
    point = plain(record["point_coords"])[0]
    values = [
        index,
        plain(record["area"]),
        *plain(record["bbox"]),
        *point,
        plain(record["predicted_iou"]),
        plain(record["stability_score"]),
        *plain(record["crop_box"]),
    ]
    if len(values) != len(HEADER):
        raise InputError(f"record {index} does not fit metadata.csv ({len(values)} fields)")
    return [str(v) for v in values]


def metadata_csv(records: Iterable[dict[str, Any]]) -> str:
    lines = [",".join(HEADER)]
    lines += [",".join(metadata_row(i, rec)) for i, rec in enumerate(records)]
    return "\n".join(lines)


def write_metadata_csv(path: str | os.PathLike[str], records: Iterable[dict[str, Any]]) -> None:
    write_text_atomic(path, metadata_csv(records))


def read_metadata_csv(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows as dicts keyed by the header; integers as int, other numbers as float."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != HEADER:
            raise InputError(f"{path}: not an amg metadata.csv (header {reader.fieldnames})")
        return [{k: _number(v, path) for k, v in row.items()} for row in reader]


def _number(text: str, path: Path) -> int | float:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise InputError(f"{path}: {text!r} is not a number") from None
