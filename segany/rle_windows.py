"""COCO RLEs of large images, cut to a window and pasted back, without the image-sized mask.

An image of 20 000 × 20 000 px has 400 M pixels: its masks are kept as RLE (a few runs per
column they cross), never as bitmaps. Work on such an image is done on windows, rectangles
small enough to hold whole (the app's ``max_pixels``); these helpers move a mask between the
two sizes by its runs:

- ``rle_runs``: the set runs of an RLE, as flat column-major index ranges;
- ``crop_rle``: the window's part of an image-sized mask, as a window-sized RLE;
- ``paste_rle``: an image-sized mask whose window part is replaced by a window-sized mask
  (the rest kept as it was);
- ``rle_box_area``: XYWH box and area, from the runs (pycocotools, no decode).

A window is ``(x0, y0, x1, y1)`` image pixels, x1 and y1 excluded. Every result equals what
cropping, pasting or measuring the decoded masks would give (tested against that).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocotools import mask as _coco

from segany.errors import InputError
from segany.masks import RLE, check_compressed_counts, compressed_runs, rle_from_runs

__all__ = ["crop_rle", "paste_rle", "rle_box_area", "rle_runs", "shrink_rle"]

Window = tuple[int, int, int, int]


def _size(rle: RLE) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError):
        raise InputError(f"an RLE needs 'size': [H, W] and 'counts'; got {rle!r:.200}") from None
    if h < 0 or w < 0 or not isinstance(counts, (str, bytes, list)):
        raise InputError("an RLE needs a size [H, W] >= 0 and counts (str, bytes or a list)")
    if h * w >= 2**32:
        raise InputError(f"a {h}×{w} mask has too many pixels for COCO RLE (32-bit run lengths)")
    return h, w


def rle_runs(rle: RLE) -> tuple[np.ndarray, np.ndarray]:
    """(start, end): the set pixels of an RLE in either form as flat column-major ranges
    ``start[i]:end[i]`` (int64, sorted, non-empty). The counts are checked: they must add up
    to H·W, else an ``InputError``."""
    h, w = _size(rle)
    counts = rle["counts"]
    runs = np.asarray(
        compressed_runs(counts) if isinstance(counts, (str, bytes)) else counts, np.int64
    )
    if runs.ndim != 1 or (runs < 0).any() or int(runs.sum()) != h * w:
        raise InputError(f"RLE counts must be run lengths >= 0 that add up to H*W = {h * w}")
    bounds = np.concatenate(([0], np.cumsum(runs)))
    start, end = bounds[1:-1:2], bounds[2::2]
    keep = end > start
    return start[keep], end[keep]


def _pieces(
    start: np.ndarray, end: np.ndarray, h: int, c0: int, c1: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs cut at column ends, for the columns c0:c1 only: (column, top row, row after)."""
    first, last = start // h, (end - 1) // h
    lo, hi = np.maximum(first, c0), np.minimum(last, c1 - 1)
    keep = lo <= hi
    start, end, lo, hi = start[keep], end[keep], lo[keep], hi[keep]
    n = hi - lo + 1
    index = np.repeat(np.arange(len(start)), n)
    col = np.repeat(lo, n) + (np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n))
    top = np.maximum(start[index] - col * h, 0)
    bottom = np.minimum(end[index] - col * h, h)
    return col, top, bottom


def check_window(window: Sequence[Any], image_hw: Sequence[int]) -> Window:
    """``window`` as whole pixels inside an (H, W) image and not empty, or an ``InputError``."""
    h, w = (int(v) for v in image_hw)
    try:
        x0, y0, x1, y1 = (int(v) for v in window)
    except (TypeError, ValueError):
        raise InputError(f"a window is x0, y0, x1, y1 in whole pixels, got {window!r}") from None
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise InputError(
            f"the window {[x0, y0, x1, y1]} is not a non-empty rectangle inside the "
            f"{w}×{h} image (x0 < x1 <= {w}, y0 < y1 <= {h})"
        )
    return x0, y0, x1, y1


def crop_rle(rle: RLE, window: Sequence[int]) -> RLE:
    """The part of ``rle`` (H×W) inside ``window``, as a (y1-y0)×(x1-x0) RLE."""
    h, w = _size(rle)
    x0, y0, x1, y1 = check_window(window, (h, w))
    start, end = rle_runs(rle)
    col, top, bottom = _pieces(start, end, h, x0, x1)
    top, bottom = np.maximum(top, y0), np.minimum(bottom, y1)
    keep = top < bottom
    wh = y1 - y0
    base = (col[keep] - x0) * wh - y0
    return rle_from_runs(base + top[keep], base + bottom[keep], (wh, x1 - x0))


def shrink_rle(rle: RLE, factor: int) -> RLE:
    """``rle`` (H×W) shrunk ``factor`` times, as a ⌈H/f⌉×⌈W/f⌉ RLE: a pixel is set where any
    pixel of its f×f block is (so thin and small masks stay visible on an overview), made from
    the runs, never decoded at full size."""
    h, w = _size(rle)
    f = int(factor)
    if f != factor or not 1 <= f <= max(h, w):
        raise InputError(f"factor must be a whole number from 1 to {max(h, w)}, got {factor!r}")
    oh, ow = -(-h // f), -(-w // f)
    col, top, bottom = _pieces(*rle_runs(rle), h, 0, w)
    base = (col // f) * oh
    start, end = base + top // f, base + (bottom - 1) // f + 1
    order = np.argsort(start, kind="stable")
    start, end = start[order], end[order]
    if len(start) == 0:
        return rle_from_runs(start, end, (oh, ow))
    # Runs of neighbouring columns land on the same column: merge those that overlap.
    reach = np.maximum.accumulate(end)
    first = np.concatenate(([0], np.nonzero(start[1:] > reach[:-1])[0] + 1))
    return rle_from_runs(start[first], np.maximum.reduceat(end, first), (oh, ow))


def paste_rle(rle: RLE, piece: RLE, window: Sequence[int]) -> RLE:
    """``rle`` (H×W) with its part inside ``window`` replaced by ``piece``, a window-sized
    RLE; outside the window the mask is kept as it was."""
    h, w = _size(rle)
    x0, y0, x1, y1 = check_window(window, (h, w))
    if _size(piece) != (y1 - y0, x1 - x0):
        raise InputError(
            f"the mask is {_size(piece)[0]}×{_size(piece)[1]} but the window "
            f"{[x0, y0, x1, y1]} is {y1 - y0}×{x1 - x0}"
        )
    start, end = rle_runs(rle)
    col, top, bottom = _pieces(start, end, h, 0, w)
    inside = (col >= x0) & (col < x1)
    # outside the window's columns as they were; inside them, above and below its rows
    above = (col[inside], top[inside], np.minimum(bottom[inside], y0))
    below = (col[inside], np.maximum(top[inside], y1), bottom[inside])
    p_col, p_top, p_bottom = _pieces(*rle_runs(piece), y1 - y0, 0, x1 - x0)
    placed = (p_col + x0, p_top + y0, p_bottom + y0)
    outside = (col[~inside], top[~inside], bottom[~inside])
    cols, tops, bottoms = (
        np.concatenate(parts) for parts in zip(outside, above, below, placed, strict=True)
    )
    keep = tops < bottoms
    s = cols[keep] * h + tops[keep]
    e = cols[keep] * h + bottoms[keep]
    order = np.argsort(s, kind="stable")
    return rle_from_runs(s[order], e[order], (h, w))


def rle_box_area(rle: RLE, *, trusted: bool = False) -> tuple[list[int], int]:
    """(XYWH box, area) of a COCO RLE with compressed counts, from its runs (the box of an
    empty mask is [0, 0, 0, 0]). The box is COCO's: width and height in whole pixels. The
    counts are checked unless ``trusted`` (made by segany in this process)."""
    h, w = _size(rle)
    counts = rle["counts"]
    if not isinstance(counts, (str, bytes)):
        raise InputError("rle_box_area takes compressed counts (a COCO RLE string)")
    raw = counts.encode("ascii") if isinstance(counts, str) else counts
    if not trusted:
        check_compressed_counts(raw, h * w)
    obj = {"size": [h, w], "counts": raw}
    box = _coco.toBbox(obj)
    return [int(v) for v in box], int(_coco.area(obj))
