"""Segment everything in an image of any size, tile by tile, resumable after a kill.

``generate_tiled`` decodes a ``MaskGenerator``'s grid on every tile (``tile_frames``) and on the
whole image; masks cut by a tile's inner edge are dropped and the rest de-duplicated across
tiles by box NMS preferring the tiles' (sharper) masks, as SAM's crop layers do. It is built to
run on images far larger than memory allows whole (a 20 000 × 20 000 scan is 1.2 GB of RGB and
a full-size mask 400 MB):

- the image is read a tile at a time (a region source: ``segany.tasks.region_files``, a
  ``numpy.memmap``, a zarr array); only an image at most ``overview_side`` px on a side is
  read whole for the whole-image pass, a larger one is shrunk by block means a strip at a time
  (``read_overview``; from a pyramidal TIFF's lower level when one fits, ``overview_factor``)
  and its masks blown back up by nearest neighbour;
- masks stay COCO RLE in their tile's frame until the end, and are pasted into the image's
  frame as RLE (``segany.masks.place_rle``): no image-sized array is made in ``coco_rle``
  output mode (``binary_mask`` output is image-sized by definition);
- with ``progress`` (a folder), each finished frame's candidates are written there atomically
  (``segany.atomic``), so a run that is killed resumes where it stopped and ends with the same
  records as a run that was not. The folder records what the candidates depend on (model,
  options, tiles, image); with other settings it is started afresh. ``clear_progress`` removes
  it once the caller has saved the records.

The pixel limit (``segany.limits``) applies: raise it for a large image with
``segany.limits.pixel_limit(n)`` around the call (the command line's ``--max-pixels``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segany import masks as M
from segany.atomic import write_json_atomic
from segany.automatic.select import CropMasks, MaskCandidates, MaskRecord
from segany.errors import InputError
from segany.images import ImageLike, to_rgb_uint8
from segany.limits import check_size_pair
from segany.tasks.region_files import open_regions, overview_factor, read_overview
from segany.tasks.tiles import _by_region, tile_frames

__all__ = ["OVERVIEW_SIDE", "clear_progress", "generate_tiled"]

#: Above this side the whole-image pass decodes a shrunk overview of the image, not the image.
OVERVIEW_SIDE = 2048
PROGRESS_FORMAT = "segany-tiles/1"
RUN_FILE = "run.json"


def generate_tiled(
    generator: Any,
    image: ImageLike | Any,
    *,
    tile: int | None = None,
    overlap: int | None = None,
    whole_image: bool = True,
    image_format: str = "RGB",
    progress: str | os.PathLike[str] | None = None,
    overview_side: int = OVERVIEW_SIDE,
    on_frame: Callable[[int, int], None] | None = None,
) -> list[MaskRecord]:
    """Segment everything in a large image (see the module's notes).

    generator: a ``MaskGenerator`` (its first grid, thresholds and output mode; crop layers are
    replaced by the tiles). image: H×W×3 uint8 RGB or what ``Predictor`` takes, a path (large
    TIFF/BigTIFF and ``.npy`` files are read by region), or a region source. tile, overlap: the
    tiles' side and shared px (default the model's input size and a quarter of it).
    whole_image: decode the whole image too (finds objects larger than the overlap).
    progress: a folder keeping finished frames (resume after a kill). on_frame(i, n): called
    after frame i of n is decoded and saved (progress reports; tests stop runs with it).
    Returns the generator's records at the full image's size, in its output mode.
    """
    source, size = _open(image, image_format)
    h, w = size
    side = int(generator.model.image_size if tile is None else tile)
    if overview_side < generator.model.image_size:
        raise InputError(
            f"overview_side must be at least the model's input size "
            f"({generator.model.image_size}), got {overview_side}"
        )
    frames = [list(f) for f in tile_frames(size, side, side // 4 if overlap is None else overlap)]
    if whole_image and frames != [[0, 0, w, h]]:
        frames = [[0, 0, w, h], *frames]
    # the whole-image pass's shrink factor (1: the image itself)
    factor = 1
    if max(h, w) > overview_side:
        factor = overview_factor(source, overview_side, int(generator.model.image_size))
    store = None
    if progress is not None:
        settings = _settings(generator, source, size, frames, overview_side)
        # a pyramid's levels can move the factor: recorded for them only, so that the progress
        # folders of other images stay valid
        if getattr(source, "levels", None):
            settings["overview_factor"] = factor
        store = _Progress(Path(progress), settings)
    crops = []
    for i, frame in enumerate(frames):
        crop = store.load(i) if store is not None else None
        if crop is None:
            crop = _decode(generator, source, frame, size, factor)
            if store is not None:
                store.save(i, crop)
            if on_frame is not None:
                on_frame(i, len(frames))
        crops.append(crop)
    sel = generator._selection
    candidates = MaskCandidates(
        (h, w),
        generator.stability_score_offset,
        sel.pred_iou_thresh,
        sel.stability_score_thresh,
        multi_crop=len(crops) > 1,
        crops=crops,
    )
    return list(generator.refilter(candidates))


def clear_progress(progress: str | os.PathLike[str]) -> None:
    """Remove a ``progress`` folder (once the records it led to are saved)."""
    shutil.rmtree(progress, ignore_errors=True)


def _open(image: Any, image_format: str) -> tuple[Any, tuple[int, int]]:
    """The image as H×W×3 uint8 RGB or a region source, and its size (H, W)."""
    if isinstance(image, (str, os.PathLike)):
        image = open_regions(image)
    if _by_region(image):
        shape = tuple(int(v) for v in image.shape)
        if len(shape) != 3 or shape[2] not in (3, 4) or np.dtype(image.dtype) != np.uint8:
            raise InputError(
                f"an image read by region must be H×W×3 (or ×4) uint8, got shape {shape} "
                f"and dtype {image.dtype}"
            )
        h, w = check_size_pair(shape[:2], what="image")
        if image_format == "BGR" or shape[2] == 4:
            return _Converted(image, image_format), (h, w)
        return image, (h, w)
    rgb = to_rgb_uint8(image, image_format)
    return rgb, (rgb.shape[0], rgb.shape[1])


class _Converted:
    """A region source of BGR or 4-channel pixels presented as RGB."""

    dtype = np.dtype(np.uint8)

    def __init__(self, source: Any, image_format: str) -> None:
        self.source, self.image_format = source, image_format
        self.shape = (*tuple(source.shape[:2]), 3)

    def __getitem__(self, key: Any) -> np.ndarray:
        return to_rgb_uint8(np.asarray(self.source[key]), self.image_format)


def _read(source: Any, frame: list[int]) -> np.ndarray:
    x0, y0, x1, y1 = frame
    return to_rgb_uint8(np.asarray(source[y0:y1, x0:x1]))


def _decode(
    generator: Any, source: Any, frame: list[int], size: tuple[int, int], factor: int
) -> CropMasks:
    """One frame's candidates, in the frame's own coordinates (the image's for the whole, seen
    shrunk ``factor`` times)."""
    h, w = size
    if frame != [0, 0, w, h] or factor == 1:
        return generator.candidates_of_crop(_read(source, frame), frame, size)
    small = read_overview(source, factor)
    sh, sw = small.shape[:2]
    crop = generator.candidates_of_crop(small, [0, 0, sw, sh], (sh, sw))
    # Back to the image: each overview pixel is a factor×factor block (cut at the edge).
    rles = [M.place_rle(M.decode_rle(r, trusted=True), size, (0, 0), factor) for r in crop.rles]
    b = crop.boxes.to(torch.int64)
    limit = torch.tensor([w, h, w, h]) - 1
    boxes = torch.minimum(torch.cat([b[:, :2] * factor, (b[:, 2:] + 1) * factor - 1], 1), limit)
    return CropMasks(
        [0, 0, w, h],
        crop.iou,
        crop.stability,
        boxes.reshape(-1, 4),
        crop.points * factor,
        rles,
    )


# ----- progress ---------------------------------------------------------------------------------
def _settings(
    generator: Any, source: Any, size: tuple[int, int], frames: list[list[int]], overview: int
) -> dict[str, Any]:
    """What a frame's candidates depend on: the model's weights (a digest of every tensor's
    first values), the grid and cuts, the frames, and the image (its size and sampled rows)."""
    digest = hashlib.sha256()
    for name, t in generator.model.state_dict().items():
        flat = t.detach().reshape(-1)[:64].to("cpu", torch.float32).numpy()
        digest.update(name.encode() + str(tuple(t.shape)).encode() + flat.tobytes())
    h, w = size
    pixels = hashlib.sha256()
    for y in sorted({0, h // 3, h // 2, (2 * h) // 3, h - 1}):
        pixels.update(np.ascontiguousarray(_read(source, [0, y, w, y + 1])).tobytes())
    sel = generator._selection
    return {
        "format": PROGRESS_FORMAT,
        "model": digest.hexdigest(),
        "grid": hashlib.sha256(np.asarray(generator.point_grids[0]).tobytes()).hexdigest(),
        "points_per_batch": generator.points_per_batch,
        "pred_iou_thresh": sel.pred_iou_thresh,
        "stability_score_thresh": sel.stability_score_thresh,
        "stability_score_offset": generator.stability_score_offset,
        "image": [h, w],
        "pixels": pixels.hexdigest(),
        "frames": frames,
        "overview_side": overview,
    }


class _Progress:
    """A folder of finished frames: ``run.json`` (the settings) and ``NNNNNN.json`` per frame,
    each written atomically; a folder holding other settings is emptied first."""

    def __init__(self, folder: Path, settings: dict[str, Any]) -> None:
        self.folder = folder
        path = folder / RUN_FILE
        try:
            before = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            before = None
        record = json.loads(json.dumps(settings))
        if before != record:
            if folder.is_file():
                raise InputError(f"the progress folder {folder} is a file")
            clear_progress(folder)
            write_json_atomic(path, record)

    def _path(self, index: int) -> Path:
        return self.folder / f"{index:06d}.json"

    def load(self, index: int) -> CropMasks | None:
        try:
            data = json.loads(self._path(index).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None  # cannot happen with atomic writes; decode the frame again if it does
        t = data["dtypes"]
        return CropMasks(
            data["crop_box"],
            torch.tensor(data["iou"], dtype=getattr(torch, t[0])),
            torch.tensor(data["stability"], dtype=getattr(torch, t[1])),
            torch.tensor(data["boxes"], dtype=getattr(torch, t[2])).reshape(-1, 4),
            torch.tensor(data["points"], dtype=getattr(torch, t[3])).reshape(-1, 2),
            data["rles"],
        )

    def save(self, index: int, crop: CropMasks) -> None:
        write_json_atomic(
            self._path(index),
            {
                "crop_box": [int(v) for v in crop.crop_box],
                "iou": crop.iou.tolist(),
                "stability": crop.stability.tolist(),
                "boxes": crop.boxes.tolist(),
                "points": crop.points.tolist(),
                "rles": crop.rles,
                # (float32 and float64 values round-trip exactly through JSON's decimals)
                "dtypes": [
                    str(t.dtype).removeprefix("torch.")
                    for t in (crop.iou, crop.stability, crop.boxes, crop.points)
                ],
            },
        )
