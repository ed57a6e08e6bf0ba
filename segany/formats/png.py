"""Mask PNGs, the official per-mask folder with ``metadata.csv``, and 16-bit label maps.

- One mask: an 8-bit grayscale PNG, 255 inside and 0 outside (what the official ``amg.py``
  writes); reading thresholds at 128, so an anti-aliased or 0/1 PNG still reads sensibly.
- A mask folder (the official ``amg.py`` layout): ``0.png, 1.png, ...`` in record order and
  ``metadata.csv`` (see ``segany.formats.metadata``). ``metadata.csv`` is written last, so its
  presence means the folder is complete.
- A label map: one 16-bit grayscale PNG, 0 for background and ``i + 1`` where mask ``i`` (record
  order, the SA-1B annotation ``id``) is visible. Masks are painted largest first, so a smaller
  mask lies over a larger one it overlaps and small objects stay visible; among equal areas the
  later record wins. Each pixel holds one label, so overlapping masks read back clipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from segany.atomic import write_bytes_atomic
from segany.errors import InputError
from segany.formats.metadata import read_metadata_csv, write_metadata_csv
from segany.formats.output_set import stale_numbered
from segany.formats.records import records_to_dicts, segmentation_mask, stack_masks

MAX_LABELS = 65535


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of an H×W (uint8/uint16) or H×W×3 RGB uint8 array."""
    arr = np.ascontiguousarray(array)
    if arr.ndim == 3:
        arr = arr[..., ::-1]  # OpenCV writes BGR
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise InputError(f"could not encode a {arr.dtype} array of shape {arr.shape} as PNG")
    return buf.tobytes()


def write_png(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write an H×W or H×W×3 RGB array as a PNG, atomically."""
    write_bytes_atomic(path, encode_png(array))


def read_png(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a PNG unchanged (bit depth kept); colour comes back RGB."""
    path = Path(path)
    data = np.fromfile(path, dtype=np.uint8)
    arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if arr is None:
        raise InputError(f"{path}: not a readable image")
    if arr.ndim == 3:
        arr = arr[..., 2::-1] if arr.shape[2] >= 3 else arr[..., 0]
    return arr


def write_mask_png(path: str | os.PathLike[str], mask: np.ndarray) -> None:
    """One H×W bool mask as an 8-bit PNG (255 inside)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise InputError(f"a mask must be H×W, got shape {mask.shape}")
    write_png(path, mask.astype(bool).astype(np.uint8) * 255)


def read_mask_png(path: str | os.PathLike[str]) -> np.ndarray:
    """An H×W bool mask from a PNG (pixels ≥ 128, or any colour channel ≥ 128)."""
    arr = read_png(path)
    if arr.dtype == np.uint16:
        arr = (arr >> 8).astype(np.uint8)
    if arr.ndim == 3:
        arr = arr.max(axis=2)
    return arr >= 128


def write_mask_folder(folder: str | os.PathLike[str], records: Iterable[Any]) -> None:
    """The official ``amg.py`` folder: ``{i}.png`` per mask, then ``metadata.csv``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = records_to_dicts(records)
    for i, rec in enumerate(rows):
        write_mask_png(folder / f"{i}.png", segmentation_mask(rec["segmentation"]))
    # A re-run with fewer masks must not leave stale masks from the previous run behind.
    for path in stale_numbered(folder, "", len(rows)):
        path.unlink()
    write_metadata_csv(folder / "metadata.csv", rows)


def read_mask_folder(
    folder: str | os.PathLike[str],
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """(masks N×H×W bool, metadata rows) of a folder written by ``write_mask_folder``."""
    folder = Path(folder)
    rows = read_metadata_csv(folder / "metadata.csv")
    masks = [read_mask_png(folder / f"{row['id']}.png") for row in rows]
    if not masks:
        return np.zeros((0, 0, 0), dtype=bool), rows
    return stack_masks(masks), rows


def label_map(masks: np.ndarray) -> np.ndarray:
    """H×W uint16 label map of N×H×W masks: 0 background, ``i + 1`` for mask ``i``.

    Larger masks are painted first so smaller ones stay visible on top.
    """
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise InputError(f"masks must be N×H×W, got shape {masks.shape}")
    if masks.shape[0] > MAX_LABELS:
        raise InputError(f"a 16-bit label map holds at most {MAX_LABELS} masks, got {len(masks)}")
    out = np.zeros(masks.shape[1:], dtype=np.uint16)
    areas = masks.sum(axis=(1, 2))  # (reshape(0, -1) fails for zero masks)
    # Stable sort on -area: largest first, equal areas in record order (later on top).
    for i in np.argsort(-areas, kind="stable"):
        out[masks[i]] = i + 1
    return out


def label_map_to_masks(labels: np.ndarray, count: int | None = None) -> np.ndarray:
    """The visible part of each mask, N×H×W bool (N = ``count`` or the largest label)."""
    labels = np.asarray(labels)
    n = int(labels.max(initial=0)) if count is None else int(count)
    return labels[None] == np.arange(1, n + 1, dtype=labels.dtype)[:, None, None]


def write_label_map(path: str | os.PathLike[str], labels: np.ndarray) -> None:
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype != np.uint16:
        raise InputError(f"a label map is H×W uint16, got {labels.dtype} {labels.shape}")
    write_png(path, labels)


def read_label_map(path: str | os.PathLike[str]) -> np.ndarray:
    """An H×W uint16 label map from a PNG (8-bit maps are widened)."""
    arr = read_png(path)
    if arr.ndim != 2:
        raise InputError(f"{path}: a label map must be a single-channel PNG")
    return arr.astype(np.uint16, copy=False)
