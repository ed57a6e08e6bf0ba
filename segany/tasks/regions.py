"""Clicks on a large image answered on the region in view, with the tiles of ``segany.tasks.tiles``.

An annotator zoomed into a 24 MP photo looks at a region a few hundred to a few thousand pixels
wide. The whole image's embedding sees that region at the model's input size over the image's
(1024/6000 officially, 384/6000 for the bundled model), so a click's mask is upscaled many
times from the model's output and thin parts are lost. ``RegionPredictor`` answers the click on
an embedding at the region's scale instead: square tiles of side S·2^k (S the model's input
size, k the smallest with S·2^k at least the view's longer side), cut by ``tile_frames`` and
answered by a ``TiledPredictor`` (routing to the tile that holds the prompt most centrally,
growing to a larger frame when a mask reaches a tile's inner edge). Level 0 is the tiling
``segany segment --tile`` uses; each coarser level halves the resolution the model sees. A view
whose tile would hold the whole image is left to the whole image's embedding (``predict``
returns None). Every level's tile embeddings are kept in memory (``tiles_kept`` per level) and
on disk through the Predictor's embedding cache.

Corrections: an answer's low-res logits lie in its frame (``frame`` after the call). Fed back as
``mask_input`` with that frame, the next click is answered on the same frame while every point
and the box lie inside it; a prompt that leaves it is answered on the frame routing gives for
the prompt and the mask, the mask carried into it (``segany.zoom``'s logits conversions).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike

from segany.errors import InputError
from segany.images import ImageLike, to_rgb_uint8
from segany.inference.prediction import Prediction
from segany.inference.predictor import Predictor
from segany.prompts import check_prompts
from segany.tasks.tiles import (
    Frame,
    FramedPrediction,
    TiledPredictor,
    _by_region,
    check_frame,
    region_size,
)
from segany.zoom import logits_to_pixels, pixels_to_logits

__all__ = ["RegionPredictor", "check_view", "view_tile"]


def check_view(view: Any, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """``view`` (x0, y0, x1, y1 image pixels, what a page shows; it may reach past the image)
    cut to an image of ``size`` (H, W); an ``InputError`` when it is not 4 finite numbers with
    x0 < x1 and y0 < y1 or does not overlap the image."""
    h, w = size
    try:
        values = np.asarray(view, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        values = np.zeros(0)
    if values.size != 4 or not np.isfinite(values).all():
        raise InputError(f"a view is 4 finite numbers x0, y0, x1, y1 (image pixels); got {view!r}")
    x0, y0, x1, y1 = (float(v) for v in values)
    if not (x0 < x1 and y0 < y1):
        raise InputError(f"a view needs x0 < x1 and y0 < y1; got {[x0, y0, x1, y1]}")
    cut = (max(x0, 0.0), max(y0, 0.0), min(x1, float(w)), min(y1, float(h)))
    if not (cut[0] < cut[2] and cut[1] < cut[3]):
        raise InputError(f"the view {[x0, y0, x1, y1]} does not overlap the {w}×{h} image")
    return cut


def view_tile(view: Any, size: tuple[int, int], long_side: int) -> int:
    """The tile side for a ``view`` (``check_view``'s) of an image of ``size`` (H, W) and a
    model of input ``long_side``: ``long_side``·2^k, the smallest at least the view's longer
    side. A side of at least the image's longer side means the whole image."""
    x0, y0, x1, y1 = check_view(view, size)
    return _tile_for(max(x1 - x0, y1 - y0), long_side)


def _tile_for(side: float, long_side: int) -> int:
    """long_side·2^k, the smallest at least ``side``."""
    k = max(0, math.ceil(math.log2(max(side, 1.0) / long_side) - 1e-9))
    return int(long_side * 2**k)


class RegionPredictor:
    """Prompts answered at the scale of the region in view (see the module's notes).

    predictor: the ``Predictor`` that encodes tiles (its precision and disk cache are used; its
    current image is replaced); tiles_kept: tile embeddings kept in memory per level;
    max_frame: the most pixels of a frame a mask grows into (``TiledPredictor``'s)."""

    def __init__(
        self, predictor: Predictor, *, tiles_kept: int = 6, max_frame: int | None = None
    ) -> None:
        self.predictor = predictor
        self.model = predictor.model
        self.long_side = int(self.model.image_size)
        s = self.model.prompt_encoder.mask_input_size
        self.low_res = (int(s[0]), int(s[1]))
        self.tiles_kept = int(tiles_kept)
        self.max_frame = max_frame  # (TiledPredictor's: frames masks may grow into, px)
        self._image: Any = None  # H×W×3 uint8, or an array-like read by region
        self._format = "RGB"
        self._levels: dict[int, TiledPredictor] = {}
        self.frame: Frame | None = None  # where the last answer's low-res logits lie

    def set_image(self, image: ImageLike | Any, image_format: str = "RGB") -> None:
        """``image``: H×W×3 uint8 RGB (or what ``Predictor`` takes), or an array read by region
        as ``TiledPredictor.set_image`` takes it (a TIFF's region source, a memory map: only
        the tiles prompts need are read); nothing is encoded yet."""
        if _by_region(image):
            region_size(image)  # (checked now, not at the first click)
            self._image, self._format = image, image_format
        else:
            self._image, self._format = to_rgb_uint8(image, image_format), "RGB"
        self._levels.clear()
        self.frame = None

    @property
    def size(self) -> tuple[int, int]:
        if self._image is None:
            raise InputError("no image is set: call set_image(...) before predicting")
        return (int(self._image.shape[0]), int(self._image.shape[1]))

    @property
    def encoded(self) -> int:
        """Tile embeddings computed since ``set_image`` (or read from the disk cache)."""
        return sum(t.encoded for t in self._levels.values())

    def level(self, tile: int) -> TiledPredictor:
        """The ``TiledPredictor`` of tiles ``tile`` px on a side over this image."""
        tiled = self._levels.get(tile)
        if tiled is None:
            tiled = TiledPredictor(
                self.predictor, tile=tile, tiles_kept=self.tiles_kept, max_frame=self.max_frame
            )
            tiled.set_image(self._image, self._format)
            self._levels[tile] = tiled
        return tiled

    def predict(
        self,
        view: ArrayLike,
        point_coords: ArrayLike | None = None,
        point_labels: ArrayLike | None = None,
        box: ArrayLike | None = None,
        mask_input: ArrayLike | None = None,
        mask_input_frame: ArrayLike | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> Prediction | None:
        """One prompt set in full-image pixels with the ``view`` (x0, y0, x1, y1) it was made
        in. Returns masks C×H×W at the image's size, scores C and low-res logits C×s×s of
        ``frame``; or None where the whole image's embedding answers (a view of about the
        whole image, or ``mask_input`` without a frame: logits of the whole image).
        ``mask_input`` 1×s×s lies in ``mask_input_frame`` (the ``frame`` of the answer that
        returned it)."""
        out = self.predict_framed(
            view,
            point_coords,
            point_labels,
            box,
            mask_input,
            mask_input_frame,
            multimask_output,
            return_logits,
        )
        return None if out is None else out.pasted()

    def predict_framed(
        self,
        view: ArrayLike,
        point_coords: ArrayLike | None = None,
        point_labels: ArrayLike | None = None,
        box: ArrayLike | None = None,
        mask_input: ArrayLike | None = None,
        mask_input_frame: ArrayLike | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> FramedPrediction | None:
        """``predict``'s answer kept in the frame it came from (masks C×h×w of ``frame``), for
        an image read by region whose image-sized masks would not fit in memory."""
        size = self.size
        tile = view_tile(view, size, self.long_side)
        prompts = check_prompts(
            point_coords, point_labels, box, mask_input, low_res_size=self.low_res
        )
        if prompts.batched:
            raise InputError("a region answers one prompt set, not a batch")
        if mask_input_frame is not None and mask_input is None:
            raise InputError("mask_input_frame given without a mask_input")
        full = dict(multimask_output=multimask_output, return_logits=return_logits)
        self.frame = None
        if mask_input is None:
            tiled = self.level(tile)
            if len(tiled.frames) == 1:
                return None  # the tile is the whole image: its stored embedding answers
            (out,) = tiled.predict_framed(point_coords, point_labels, box, **full)
            return self._answered(out)
        if mask_input_frame is None:
            return None  # logits of the whole image: corrected on it
        src = check_frame(mask_input_frame, size)
        corners = None if prompts.boxes is None else prompts.boxes.reshape(2, 2)
        region = _prompt_region(prompts.point_coords, corners)
        mask = np.asarray(prompts.mask_input)[0]  # 1×s×s
        if _inside(region, src):
            dst = src
        else:
            local = logits_to_pixels(mask, (src[3] - src[1], src[2] - src[0]), self.long_side)
            box_px = _mask_box(local[0] > 0, src)
            if box_px is not None:
                region = np.concatenate(
                    [np.minimum(region[:2], box_px[:2]), np.maximum(region[2:], box_px[2:])]
                )
            side = max(region[2] - region[0], region[3] - region[1])
            tiled = self.level(max(tile, _tile_for(side, self.long_side)))
            dst = tiled.route(region)
            mask = _carry(local[0], src, dst, self.long_side, self.low_res)  # 1×s×s
        level = self.level(tile)
        return self._answered(
            level.predict_on_framed(dst, point_coords, point_labels, box, mask, **full)
        )

    def _answered(self, out: FramedPrediction) -> FramedPrediction:
        h, w = self.size
        self.frame = None if out.frame == (0, 0, w, h) else out.frame
        return out


def _prompt_region(points: np.ndarray | None, corners: np.ndarray | None) -> np.ndarray:
    """XYXY around every point (1×N×2) and box corner (2×2) of one prompt set."""
    parts = [a.reshape(-1, 2) for a in (points, corners) if a is not None]
    if not parts:
        raise InputError("a region answer needs points or a box to place the prompt")
    xy = np.concatenate(parts).astype(np.float64)
    return np.concatenate([xy.min(0), xy.max(0)])


def _inside(region: np.ndarray, frame: Frame) -> bool:
    x0, y0, x1, y1 = frame
    return bool(region[0] >= x0 and region[1] >= y0 and region[2] < x1 and region[3] < y1)


def _mask_box(mask: torch.Tensor, frame: Frame) -> np.ndarray | None:
    """XYXY image pixels around a frame-sized bool mask (None when empty)."""
    ys = torch.nonzero(mask.any(dim=1)).flatten()
    xs = torch.nonzero(mask.any(dim=0)).flatten()
    if len(xs) == 0:
        return None
    x0, y0 = frame[:2]
    return np.array(
        [int(xs[0]) + x0, int(ys[0]) + y0, int(xs[-1]) + 1 + x0, int(ys[-1]) + 1 + y0], float
    )


def _carry(
    logits: torch.Tensor, src: Frame, dst: Frame, long_side: int, low_res: tuple[int, int]
) -> np.ndarray:
    """``src``-sized logits (h×w) as 1×s×s low-res logits of ``dst``: where the frames
    overlap the mask is kept, elsewhere it is the map's minimum (at most 0)."""
    fill = min(float(logits.min()), 0.0)
    out = torch.full((dst[3] - dst[1], dst[2] - dst[0]), fill)
    x0, y0 = max(src[0], dst[0]), max(src[1], dst[1])
    x1, y1 = min(src[2], dst[2]), min(src[3], dst[3])
    if x0 < x1 and y0 < y1:
        out[y0 - dst[1] : y1 - dst[1], x0 - dst[0] : x1 - dst[0]] = logits[
            y0 - src[1] : y1 - src[1], x0 - src[0] : x1 - src[0]
        ]
    return pixels_to_logits(out, long_side, low_res)
