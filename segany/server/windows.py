"""Images above the app's whole-image limit, worked on by windows.

An image of more than ``max_pixels`` (a slide, an aerial scan: 10 000–60 000 px a side) is
never read whole. It is accepted when it is a TIFF or BigTIFF that ``segany.tasks.region_files``
reads by region (uncompressed, or compressed with ``pip install 'segany[tiff]'``), up to
``max_large_pixels``, and every model call on it names a **window**: ``x0, y0, x1, y1`` image
pixels of at most ``max_pixels``. In a window call the window is the image: the file endpoint
sends its pixels, the embedding is the window's, prompts and masks are in window pixels, and
``GET /images/ID/masks?window=`` sends each mask cut to the window. A mask saved or edited
with a window is pasted into the image at the window (``segany.rle_windows``: masks stay RLE
at the image's size, a few runs a column, never a bitmap). ``?scale=k`` shrinks what the file
endpoint sends (block means, read from a pyramid's level where it has one): an overview to
find one's way around the image.

Windows are cached as the images are: the embedding of a window is kept under the image's
sha256 and the window (``window_key``), so moving back to a window costs no encoder run.

The windows the page opens are tiles of the whole image (``window_grid``): side S·2^k (S the
model's input size), cut by ``segany.tasks.tiles.tile_frames``, the same grid as
``segany.tasks.regions``' level of that side. A click zoomed in further is answered on the
whole image's finer levels (``ModelHub.decode_in_image``), the finest of which is the tiling
of ``segany segment --tile``: the app and the batch commands share one grid, and through a
shared ``--cache`` the same tile embeddings.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segany.errors import InputError
from segany.limits import pixel_limit
from segany.rle_windows import check_window

Window = tuple[int, int, int, int]
SOURCES_KEPT = 2  # open large files kept (a TIFF's header parsed, its levels found)
WINDOW_SIDE = 4096  # the longest side of the windows the page opens (its canvas, its masks)


def window_side(model_side: int, max_pixels: int) -> int:
    """The side of the windows the page opens: ``model_side``·2^k, the largest within
    ``WINDOW_SIDE`` and ``max_pixels``; below ``model_side``, the largest square within
    ``max_pixels``."""
    most = min(WINDOW_SIDE, math.isqrt(max(1, max_pixels)))
    if most < model_side:
        return max(16, most)
    side = model_side
    while side * 2 <= most:
        side *= 2
    return side


def window_grid(
    size: tuple[int, int], model_side: int, max_pixels: int
) -> tuple[int, int, list[int], list[int]]:
    """The windows of an image of ``size`` (H, W): (side, overlap, column starts, row
    starts); window (i, j) is [x_i, y_j, min(W, x_i + side), min(H, y_j + side)], the tiles
    ``tile_frames(size, side, side // 4)`` cuts."""
    from segany.tasks.tiles import tile_frames

    side = window_side(model_side, max_pixels)
    overlap = side // 4
    frames = tile_frames(size, side, overlap)
    return side, overlap, sorted({f[0] for f in frames}), sorted({f[1] for f in frames})


def parse_window(text: str | Sequence[Any] | None) -> list[Any] | None:
    """A window from a query string (``"x0,y0,x1,y1"``) or a JSON list; None for none."""
    if text is None:
        return None
    if isinstance(text, str):
        parts = [p.strip() for p in text.split(",")]
        try:
            return [int(p) for p in parts]
        except ValueError:
            raise InputError(
                f"window must be x0,y0,x1,y1 in whole image pixels, got {text!r}"
            ) from None
    return list(text)


def window_key(sha256: str, window: Window | None) -> str:
    """The name an image's (window's) embedding and pixels are kept under."""
    if window is None:
        return sha256
    return f"{sha256}-w{window[0]}-{window[1]}-{window[2]}-{window[3]}"


def meets(bbox: Sequence[int], window: Sequence[int]) -> bool:
    """Whether a stored mask's box (x, y, w, h: w and h one less than its extent) meets the
    window: masks that do not are left out before any of their runs is read."""
    x, y, w, h = bbox
    return x < window[2] and y < window[3] and x + w >= window[0] and y + h >= window[1]


def empty_rle(height: int, width: int) -> dict[str, Any]:
    """The empty mask of an image, as an RLE (to paste a window's mask into)."""
    return {"size": [height, width], "counts": [height * width]}


def in_window(mask: dict[str, Any], window: Window | None) -> dict[str, Any]:
    """A stored mask (``MaskOut``'s fields) as sent for a window: its RLE cut to the window
    (bbox and area stay the whole mask's); unchanged for None."""
    from segany.rle_windows import crop_rle

    if window is None:
        return mask
    return {**mask, "rle": crop_rle(mask["rle"], window), "window": list(window)}


def prompts_in_image(prompts: dict[str, Any] | None, window: Window | None) -> Any:
    """A mask's ``prompts`` (``points`` N×2, ``box`` XYXY) made in a window, moved into image
    pixels; other keys and malformed values are kept as they were."""
    if not prompts or window is None:
        return prompts
    x0, y0 = window[:2]
    out = dict(prompts)
    try:
        if out.get("points"):
            out["points"] = [[float(x) + x0, float(y) + y0] for x, y in out["points"]]
        if out.get("box"):
            a, b, c, d = (float(v) for v in out["box"])
            out["box"] = [a + x0, b + y0, c + x0, d + y0]
    except (TypeError, ValueError):
        return prompts
    return out


class LargeImages:
    """The large images' open files and the checks of windows (thread-safe)."""

    def __init__(self, max_pixels: int, max_large_pixels: int) -> None:
        self.max_pixels = max_pixels
        self.max_large_pixels = max(max_pixels, max_large_pixels, 1)
        self._sources: OrderedDict[Path, Any] = OrderedDict()
        self._lock = threading.Lock()

    def is_large(self, row: Any) -> bool:
        return int(row.width) * int(row.height) > self.max_pixels

    def window(self, row: Any, window: Sequence[Any] | None, *, scale: int = 1) -> Window | None:
        """``window`` checked for the image ``row`` (None: the whole image), or an
        ``InputError``: a large image needs one (or a ``scale`` that brings it within the
        limit), and a window holds at most ``max_pixels`` once shrunk ``scale`` times."""
        if not 1 <= scale <= max(row.width, row.height):
            raise InputError(
                f"scale must be a whole number from 1 to the image's longer side "
                f"({max(row.width, row.height)}), got {scale}"
            )
        if window is None:
            if self.is_large(row) and row.width * row.height / scale**2 > self.max_pixels:
                raise InputError(
                    f"image {row.id} is {row.width}×{row.height} px, more than the "
                    f"{self.max_pixels} px the app works on at once: name a window "
                    "(x0, y0, x1, y1 image pixels) of at most that many, or a scale that "
                    "shrinks the image to them"
                )
            return None
        box = check_window(window, (row.height, row.width))
        pixels = (box[2] - box[0]) * (box[3] - box[1])
        if pixels / scale**2 > self.max_pixels:
            raise InputError(
                f"the window {list(box)} holds {pixels} px, more than the {self.max_pixels} "
                "px the app works on at once" + (f" (shrunk {scale} times)" if scale > 1 else "")
            )
        return box

    def source(self, path: Path) -> Any:
        """The file as a region source (``open_regions``), kept open for the next window."""
        from segany.tasks.region_files import open_regions

        with self._lock:
            if path in self._sources:
                self._sources.move_to_end(path)
                return self._sources[path]
        with pixel_limit(self.max_large_pixels):
            source = open_regions(path)
        with self._lock:
            self._sources[path] = source
            while len(self._sources) > SOURCES_KEPT:
                self._sources.popitem(last=False)
        return source

    def read(self, path: Path, window: Window | None, scale: int = 1) -> np.ndarray:
        """The window's pixels (the whole image's for None), h×w×3 uint8, shrunk ``scale``
        times (block means by PIL's ``reduce``, a strip at a time, from a pyramid's level
        where the file has one: ``segany.tasks.tiles.read_frame_reduced``)."""
        from segany.tasks.tiles import read_frame_reduced

        source = self.source(path)
        h, w = (int(v) for v in source.shape[:2])
        x0, y0, x1, y1 = window or (0, 0, w, h)
        with pixel_limit(self.max_large_pixels):  # (strips as long as the image's side)
            if scale == 1:
                return np.ascontiguousarray(source[y0:y1, x0:x1])
            return read_frame_reduced(source, (x0, y0, x1, y1), scale, "RGB")
