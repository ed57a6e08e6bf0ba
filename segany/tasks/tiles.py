"""Images larger than the model's frame, answered tile by tile at full resolution.

SAM sees an image at its input size (1024 px officially, 384 for the bundled model): a
3000×2000 photo is shrunk about three times, a slide or an aerial tile far more, and small
objects vanish. ``TiledPredictor`` cuts the image into overlapping square tiles of the model's
own size (``tile_frames``), encodes a tile only when a prompt needs it (each tile's embedding
kept in memory, and on disk through the Predictor's embedding cache), and answers each prompt
on one tile:

- routing: the tile that holds the prompt's points and box with the widest margin to its
  inner edges (edges that are not the image's), so a prompt near a seam goes to the tile in
  which it lies most centrally, and one mask comes back, not two halves;
- a mask (any of the answer's) that reaches an inner edge of its tile continues beyond it: the
  prompt is answered again on a tile that holds the mask's box too, or, when no tile does, on
  a crop around the mask and the prompt (seen at the model's size, so coarser), so masks
  crossing seams come back whole;
- a prompt larger than any tile is answered on a crop around it the same way. A crop (or a
  grown frame) more than ``READ_WHOLE_SIDES`` model sizes long is read shrunk by a whole factor
  (block means, a strip of rows at a time; from a pyramid's lower level when the file has one)
  to 4–6 model sizes, since the model sees it at its own size anyway; its masks still come at
  the frame's full resolution, from the low-res logits, made only when read, a block of
  columns at a time (``segany.inference.column_masks.ColumnMasks``: the mask's box, area and
  RLE in one pass), so a box over most of a huge scan costs neither a frame-sized RGB crop nor
  a frame-sized mask.

Masks come back at the full image's size; the scores and low-res logits are those of the frame
the answer came from (``last_frame``). ``predict_framed`` keeps each answer in its frame instead
(``FramedPrediction``, with the whole image's COCO RLE made without a full-size array), for
images read by region whose full-size masks would not fit in memory. ``generate_tiled``
(``segany.tasks.tiled_generate``) runs segment-everything over the same tiles and the whole
image, for images of any size.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

import segany.tasks.region_files as region_files
from segany.errors import InputError
from segany.images import ImageLike, to_rgb_uint8
from segany.inference.embedding_cache import ImageEmbedding
from segany.inference.prediction import Prediction
from segany.inference.predictor import Predictor, as_model
from segany.inference.protocol import PredictorLike
from segany.limits import check_size_pair
from segany.masks import RLE, place_rle
from segany.prompts import check_prompts

__all__ = ["FramedPrediction", "TiledPredictor", "check_frame", "tile_frames"]

Frame = tuple[int, int, int, int]  # x0, y0, x1, y1: end-exclusive pixels of the image

# A mask box within this many low-res logit cells of an inner frame edge is taken to continue
# beyond it: the upscaled masks fade out a few pixels short of where the frame cuts them.
EDGE_CELLS = 4.0
MAX_GROWTH = 3  # at most this many re-answers on larger frames for one prompt
# A frame up to this many model input sizes on its long side is read at full resolution (the
# Predictor shrinks it to its input size); a larger one is read shrunk (see ``shrink_factor``).
READ_WHOLE_SIDES = 8


@dataclass(frozen=True, eq=False)
class FramedPrediction:
    """One prompt's answer kept in the frame it came from, for images whose full-size masks
    would not fit in memory (``TiledPredictor.predict_framed``): masks C×h×w bool (logits with
    ``return_logits``; for a frame read shrunk, a ``ColumnMasks`` made when read, by blocks
    of columns) of ``frame`` (x0, y0, x1, y1 in the image), scores C, low-res logits
    C×s×s of the frame; ``image_size`` (H, W) of the whole image; ``threshold``: the model's
    mask threshold (logits above it are inside). Outside the frame every mask is empty."""

    frame: Frame
    image_size: tuple[int, int]
    masks: np.ndarray
    scores: np.ndarray
    logits: np.ndarray
    threshold: float = 0.0
    prompt: int = 0  # the prompt's index among those of the call (one prompt set: 0)

    def rle(self, index: int) -> RLE:
        """Mask ``index`` as COCO RLE at the whole image's size, without a full-size array
        (equal to ``encode_rle`` of the pasted mask)."""
        mask = self.masks[index]  # (made when read for a frame read shrunk: ColumnMasks)
        binary = mask if mask.dtype == np.bool_ else mask > self.threshold
        return place_rle(binary, self.image_size, self.frame[:2])

    def pasted(self) -> Prediction:
        """The answer at the whole image's size (C×H×W; False, or -inf logits, outside the
        frame), as ``TiledPredictor.predict`` returns it."""
        h, w = self.image_size
        x0, y0, x1, y1 = self.frame
        made = np.asarray(self.masks)  # (a ColumnMasks made whole: pasting holds it anyway)
        out = Prediction(masks=made, scores=self.scores, logits=self.logits)
        if (x0, y0, x1, y1) == (0, 0, w, h):
            return out
        fill = -np.inf if made.dtype != np.bool_ else False
        masks = np.full((len(made), h, w), fill, dtype=made.dtype)
        masks[:, y0:y1, x0:x1] = made
        return Prediction(masks=masks, scores=self.scores, logits=self.logits)


def tile_frames(size: tuple[int, int], tile: int, overlap: int) -> list[Frame]:
    """Overlapping square tiles covering an image of ``size`` (H, W), row by row.

    Each tile is ``tile`` px on a side (cut to the image when it is smaller), neighbours share
    at least ``overlap`` px, and the last tile of a row or column ends at the image's edge. An
    image within one tile is one frame, the whole image."""
    h, w = (int(v) for v in size)
    if h < 1 or w < 1:
        raise InputError(f"image size must be positive, got {size}")
    if tile < 16:
        raise InputError(f"tile must be at least 16 px, got {tile}")
    if not 0 <= overlap < tile:
        raise InputError(f"overlap must be in [0, tile={tile}), got {overlap}")

    def starts(length: int) -> list[int]:
        if length <= tile:
            return [0]
        n = int(np.ceil((length - overlap) / (tile - overlap)))
        # n tiles spread evenly from 0 to length - tile: every overlap >= the one asked for
        return [round(i * (length - tile) / (n - 1)) for i in range(n)]

    return [(x, y, min(w, x + tile), min(h, y + tile)) for y in starts(h) for x in starts(w)]


def check_frame(frame: Any, size: tuple[int, int]) -> Frame:
    """``frame`` as (x0, y0, x1, y1): four whole pixels, end-exclusive, a non-empty region of
    an image of ``size`` (H, W); else an ``InputError`` saying so."""
    h, w = size
    try:
        values = np.asarray(frame, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        values = np.zeros(0)
    if values.size != 4 or not np.isfinite(values).all() or (values != np.round(values)).any():
        raise InputError(f"a frame is 4 whole pixels x0, y0, x1, y1; got {frame!r}")
    x0, y0, x1, y1 = (int(v) for v in values)
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise InputError(f"frame {[x0, y0, x1, y1]} is not a region of the {w}×{h} image")
    return (x0, y0, x1, y1)


def _by_region(image: Any) -> bool:
    """Whether ``image`` is read a tile at a time: a memory map, or an array-like that is not
    a numpy array (zarr, dask, h5py); a plain array, a PIL image or a path is read whole."""
    if isinstance(image, np.memmap):
        return True
    if isinstance(image, np.ndarray) or not hasattr(image, "shape") or hasattr(image, "detach"):
        return False  # (a torch tensor is read whole, as the Predictor reads it)
    return hasattr(image, "dtype") and hasattr(image, "__getitem__") and not hasattr(image, "mode")


def region_size(image: Any) -> tuple[int, int]:
    """(H, W) of an image read by region, or an ``InputError`` when it is not H×W×3 (or ×4)
    uint8 of a size the limits allow."""
    shape = tuple(int(v) for v in image.shape)
    if len(shape) != 3 or shape[2] not in (3, 4) or np.dtype(image.dtype) != np.uint8:
        raise InputError(
            f"an image read by region must be H×W×3 (or ×4) uint8, got shape {shape} "
            f"and dtype {image.dtype}"
        )
    check_size_pair(shape[:2], what="image")
    return (shape[0], shape[1])


class FrameSource:
    """A frame of an image source as a source of its own: its ``shape`` h×w×3, and 2-D slices
    of it as RGB uint8."""

    def __init__(self, source: Any, frame: Frame, image_format: str) -> None:
        self.source, self.frame, self.format = source, frame, image_format
        x0, y0, x1, y1 = frame
        self.shape = (y1 - y0, x1 - x0, 3)

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        rows, cols = key
        x0, y0 = self.frame[:2]
        r0, r1, _ = rows.indices(self.shape[0])
        c0, c1, _ = cols.indices(self.shape[1])
        part = np.asarray(self.source[y0 + r0 : y0 + r1, x0 + c0 : x0 + c1])
        return to_rgb_uint8(part, self.format)


def _read_reduced(window: FrameSource, factor: int) -> np.ndarray:
    """``window`` shrunk ``factor`` times by block means (PIL's ``reduce``: a block cut by the
    edge averages the pixels it holds), ceil(h/f)×ceil(w/f)×3 uint8, read a strip of about
    ``region_files.STRIP_BYTES`` at a time."""
    from PIL import Image

    h, w = window.shape[:2]
    f = int(factor)
    out = np.empty((-(-h // f), -(-w // f), 3), np.uint8)
    rows = f * max(1, region_files.STRIP_BYTES // (w * 3 * f))  # whole blocks per strip
    for r0 in range(0, h, rows):
        strip = window[r0 : min(h, r0 + rows), 0:w]
        small = np.asarray(Image.fromarray(np.ascontiguousarray(strip)).reduce(f))
        out[r0 // f : r0 // f + small.shape[0]] = small
    return out


def read_frame_reduced(source: Any, frame: Frame, factor: int, image_format: str) -> np.ndarray:
    """``frame`` of ``source`` shrunk ``factor`` times (``_read_reduced``): from the pyramid
    level with the largest factor g that divides ``factor`` when ``source`` has levels
    (``region_files.RegionReader.levels``, e.g. a whole-slide TIFF), its pixels under the frame
    shrunk factor/g times more, so level 0 is not read (the frame's edges then fall on that
    level's pixel grid, within one of its pixels); else from ``source`` itself. A level that
    cannot be read falls back to level 0."""
    x0, y0, x1, y1 = frame
    oh, ow = -(-(y1 - y0) // factor), -(-(x1 - x0) // factor)
    usable = [(g, level) for g, level in getattr(source, "levels", []) if factor % g == 0]
    if usable:
        g, level = max(usable, key=lambda item: item[0])
        lh, lw = (int(v) for v in level.shape[:2])
        sub = (x0 // g, y0 // g, min(lw, -(-x1 // g)), min(lh, -(-y1 // g)))
        with contextlib.suppress(InputError):  # a damaged level: level 0's pixels
            small = _read_reduced(FrameSource(level, sub, image_format), factor // g)[:oh, :ow]
            pad = ((0, oh - small.shape[0]), (0, ow - small.shape[1]), (0, 0))
            return np.pad(small, pad, mode="edge") if pad[0][1] or pad[1][1] else small
    return _read_reduced(FrameSource(source, frame, image_format), factor)


def _prompt_region(
    coords: np.ndarray | None, labels: np.ndarray | None, box: np.ndarray | None
) -> np.ndarray:
    """The box (x0, y0, x1, y1) spanned by a prompt set's points (padding points, label -1,
    left out) and box: what routes it."""
    pts = [] if coords is None else [coords[labels >= 0]] if labels is not None else [coords]
    corners = [box.reshape(2, 2)] if box is not None else []
    xy = np.concatenate(pts + corners) if (pts or corners) else None
    if xy is None or len(xy) == 0:
        raise InputError("a TiledPredictor needs points or a box to route a prompt to a tile")
    return np.concatenate([xy.min(0), xy.max(0)])


def _mask_box(mask: Any) -> tuple[int, int, int, int] | None:
    """An h×w mask's box (x0, y0, x1, y1, end-exclusive), None when empty; a ``ColumnMasks``
    one read by blocks of columns."""
    if hasattr(mask, "stats"):
        return mask.stats()[0]  # type: ignore[no-any-return]
    ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if len(xs) == 0:
        return None
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1


def _margin(frame: Frame, region: np.ndarray, size: tuple[int, int]) -> float:
    """How far ``region`` (XYXY) lies inside ``frame`` from its inner edges (negative: it
    crosses one); an edge on the image's border counts as far away."""
    h, w = size
    x0, y0, x1, y1 = frame
    far = float(max(h, w))
    gaps = (
        far if x0 == 0 else region[0] - x0,
        far if y0 == 0 else region[1] - y0,
        far if x1 == w else x1 - region[2],
        far if y1 == h else y1 - region[3],
    )
    return float(min(gaps))


class TiledPredictor(PredictorLike):
    """A ``Predictor`` for images larger than the model's frame (see the module's notes).

    predictor: a ``Predictor`` (its precision and disk cache are used; its current image is
    replaced by tiles), or a model / name / path. tile: the tile's side in px (default the
    model's input size, so a tile is seen at full resolution); overlap: px shared by
    neighbouring tiles (default a quarter of a tile: objects up to that size lie wholly in one
    tile). tiles_kept: tile embeddings kept in memory. max_frame: a mask is not grown into a
    frame of more pixels than this (None: any; the app bounds a window's clicks so).

    ``predict`` takes ``Predictor.predict``'s prompts in full-image pixels (one prompt set, or
    B boxes, each routed on its own) and returns masks C×H×W at the full image's size (B×C×H×W
    batched), scores C and the low-res logits C×s×s of the frame each answer came from. A
    ``mask_input`` must be logits this predictor returned for the last prompt; it is answered
    on that prompt's frame.
    """

    def __init__(
        self,
        predictor: Predictor | Any,
        *,
        tile: int | None = None,
        overlap: int | None = None,
        tiles_kept: int = 16,
        max_frame: int | None = None,
    ) -> None:
        self.predictor = (
            predictor if isinstance(predictor, Predictor) else Predictor(as_model(predictor))
        )
        self.model = self.predictor.model
        self.tile = int(self.model.image_size if tile is None else tile)
        self.overlap = int(self.tile // 4 if overlap is None else overlap)
        tile_frames((self.tile, self.tile), self.tile, self.overlap)  # checks both
        if tiles_kept < 1:
            raise InputError(f"tiles_kept must be at least 1, got {tiles_kept}")
        self.tiles_kept = int(tiles_kept)
        self.max_frame = None if max_frame is None else int(max_frame)
        self._source: Any = None  # an H×W×3 array, or an array-like read by region
        self._format = "RGB"
        self._size = (0, 0)
        self.frames: list[Frame] = []
        self._embeddings: OrderedDict[Frame, ImageEmbedding] = OrderedDict()
        self.encoded = 0  # frames encoded since set_image (a count for tests and reports)
        self.last_frame: Frame | None = None
        self._last_logits: np.ndarray | None = None

    # ----- image ---------------------------------------------------------------------------
    def set_image(self, image: ImageLike | Any, image_format: str = "RGB") -> None:
        """Take ``image``: H×W×3 uint8 RGB or what ``Predictor`` takes, or an array read by
        region (a ``numpy.memmap``, e.g. ``tifffile.memmap`` of an uncompressed TIFF, or any
        H×W×3 uint8 array-like with ``shape``, ``dtype`` and 2-D slicing, such as a zarr array):
        only the tiles that prompts need are then read. Nothing is encoded until a prompt needs
        a tile."""
        if _by_region(image):
            size: tuple[int, int] = region_size(image)
            self._source = image
            self._format = image_format
        else:
            self._source = to_rgb_uint8(image, image_format)
            self._format = "RGB"
            size = self._source.shape[:2]
        self._size = size
        self.frames = tile_frames(size, self.tile, self.overlap)
        self._embeddings.clear()
        self.encoded = 0
        self.last_frame = None
        self._last_logits = None

    @property
    def image_size(self) -> tuple[int, int]:
        if self._source is None:
            raise InputError("no image is set: call set_image(...) before predicting")
        return self._size

    def read(self, frame: Frame) -> np.ndarray:
        """The pixels of ``frame`` (XYXY) as h×w×3 uint8 RGB."""
        if self._source is None:
            raise InputError("no image is set: call set_image(...) before predicting")
        x0, y0, x1, y1 = frame
        return to_rgb_uint8(np.asarray(self._source[y0:y1, x0:x1]), self._format)

    def shrink_factor(self, frame: Frame) -> int:
        """The whole factor ``frame``'s pixels are read shrunk by before the model sees them:
        1 up to ``READ_WHOLE_SIDES`` model input sizes on its long side, else one that leaves
        it 4–6 input sizes long (block means; the model's own resize then averages four or
        more of them per input pixel, so the model sees nearly what a resize of the
        full-resolution frame gives: on a 20 000-px scan, a box's mask with IoU 0.97 to the
        full-resolution read's, where 2–3 sizes gave 0.93): the largest such factor, or, for
        a pyramid, a multiple of its largest level factor that fits, so that level is read."""
        long = max(frame[2] - frame[0], frame[3] - frame[1])
        size = int(self.model.image_size)
        if long <= READ_WHOLE_SIDES * size:
            return 1
        most, least = long // (4 * size), -(-long // (6 * size))  # 4 and 6 sizes long
        for g in sorted((g for g, _ in getattr(self._source, "levels", [])), reverse=True):
            if (most // g) * g >= max(least, g):
                return (most // g) * g
        return most

    def _use(self, frame: Frame) -> None:
        """Make ``frame``'s embedding the predictor's current image (encoding it if needed)."""
        emb = self._embeddings.get(frame)
        if emb is None:
            factor = self.shrink_factor(frame)
            p = self.predictor
            if factor == 1:
                p.set_image(self.read(frame))
            else:
                p.set_image(read_frame_reduced(self._source, frame, factor, self._format))
            self.encoded += 1
            assert p.original_size is not None and p.input_size is not None
            early = p.get_early_features() if self.model.needs_early else None
            # The frame's own size: prompts and masks in its full-resolution pixels (the
            # shrunk pixels cover the frame, their last block cut at its edge).
            hw = (frame[3] - frame[1], frame[2] - frame[0])
            emb = ImageEmbedding(p.get_image_embedding(), hw, p.input_size, early)
            if factor > 1:
                p.set_embedding(emb)
            self._embeddings[frame] = emb
            while len(self._embeddings) > self.tiles_kept:
                self._embeddings.popitem(last=False)
            return
        self._embeddings.move_to_end(frame)
        p = self.predictor
        if p.is_image_set and p.get_image_embedding() is emb.features:
            return  # already current: keep its decoder state
        p.set_embedding(emb)

    # ----- routing -------------------------------------------------------------------------
    def route(self, region: ArrayLike) -> Frame:
        """The frame that answers a prompt whose points and box span ``region`` (XYXY): the tile
        holding it with the widest margin to its inner edges, else a crop around it."""
        size = self.image_size
        r = np.asarray(region, dtype=np.float64)
        best = max(self.frames, key=lambda f: _margin(f, r, size))
        if _margin(best, r, size) >= 0:
            return best
        return self._crop_around(r)

    def _crop_around(self, region: np.ndarray) -> Frame:
        """A square crop around ``region`` (XYXY), a tile's overlap wider on every side and at
        least a tile, cut to the image (the model sees it at its own size)."""
        h, w = self.image_size
        side = max(region[2] - region[0], region[3] - region[1]) + 2 * self.overlap
        side = max(side, self.tile)
        cx, cy = (region[0] + region[2]) / 2, (region[1] + region[3]) / 2
        x0 = int(np.clip(np.floor(cx - side / 2), 0, max(0, w - side)))
        y0 = int(np.clip(np.floor(cy - side / 2), 0, max(0, h - side)))
        return (x0, y0, int(min(w, x0 + np.ceil(side))), int(min(h, y0 + np.ceil(side))))

    # ----- prompts -------------------------------------------------------------------------
    def predict(
        self,
        point_coords: ArrayLike | None = None,
        point_labels: ArrayLike | None = None,
        box: ArrayLike | None = None,
        mask_input: ArrayLike | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> Prediction:
        """Prompts in full-image pixels -> masks at the full image's size (see the class)."""
        batched, answers = self._framed(
            point_coords, point_labels, box, mask_input, multimask_output, return_logits, False
        )
        pasted = [a.pasted() for a in self._in_order(answers)]
        if not batched:
            return pasted[0]
        return Prediction(
            masks=np.stack([a.masks for a in pasted]),
            scores=np.stack([a.scores for a in pasted]),
            logits=np.stack([a.logits for a in pasted]),
        )

    def predict_framed(
        self,
        point_coords: ArrayLike | None = None,
        point_labels: ArrayLike | None = None,
        box: ArrayLike | None = None,
        mask_input: ArrayLike | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> list[FramedPrediction]:
        """``predict``'s answers (one per prompt: one prompt set, or each of B boxes), each kept
        in the frame it came from instead of pasted into full-size masks: for images read by
        region whose H×W masks would not fit in memory (``FramedPrediction.rle`` gives the
        whole image's COCO RLE)."""
        return self._in_order(
            self.iter_framed(
                point_coords,
                point_labels,
                box,
                mask_input,
                multimask_output,
                return_logits,
                ordered=False,
            )
        )

    def _in_order(self, answers: Iterator[FramedPrediction]) -> list[FramedPrediction]:
        """Every answer of a call, read in any order, put back in its prompts' order; the last
        prompt's frame and logits are then the ones a ``mask_input`` continues from."""
        out = sorted(answers, key=lambda a: a.prompt)
        self.last_frame = out[-1].frame
        self._last_logits = out[-1].logits
        return out

    def iter_framed(
        self,
        point_coords: ArrayLike | None = None,
        point_labels: ArrayLike | None = None,
        box: ArrayLike | None = None,
        mask_input: ArrayLike | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        *,
        ordered: bool = True,
    ) -> Iterator[FramedPrediction]:
        """``predict_framed``'s answers one at a time, each made when it is asked for: a
        caller that keeps only what it needs of each (its RLE, its box) holds one prompt's
        masks at a time, however many prompts there are. The prompts are checked first.

        ``ordered=False``: the answers come grouped by the frame their prompts are routed to
        (frames in the order their first prompt comes), each with its ``prompt`` index, so
        each tile is encoded once however the prompts are spread over the image; in prompt
        order, prompts scattered over more tiles than ``tiles_kept`` re-encode a tile each
        time they come back to it (300 boxes over a 20 000-px scan, 2048-px tiles: 287
        encodes in prompt order, 169 grouped, for 148 routed tiles and the frames some masks
        grew into). The answers are the same either way."""
        return self._framed(
            point_coords, point_labels, box, mask_input, multimask_output, return_logits, ordered
        )[1]

    def _framed(
        self,
        point_coords: ArrayLike | None,
        point_labels: ArrayLike | None,
        box: ArrayLike | None,
        mask_input: ArrayLike | None,
        multimask_output: bool,
        return_logits: bool,
        ordered: bool = True,
    ) -> tuple[bool, Iterator[FramedPrediction]]:
        """(whether the prompts were batched, one framed answer per prompt, made as the
        iterator is read, in prompt order or, not ``ordered``, grouped by routed frame; the
        prompts are checked before it is returned)."""
        size = self.image_size
        prompts = check_prompts(
            point_coords,
            point_labels,
            box,
            mask_input,
            low_res_size=self.model.prompt_encoder.mask_input_size,
        )
        if prompts.mask_input is not None:
            if self._last_logits is None or prompts.batched:
                raise InputError(
                    "a TiledPredictor takes mask_input only for one prompt, as low-res logits "
                    "it returned for the last prompt (they are in that prompt's tile's frame)"
                )

        def picked(b: int) -> list[np.ndarray | None]:
            fields = (prompts.point_coords, prompts.point_labels, prompts.boxes)
            return [None if a is None else a[b if len(a) > 1 else 0] for a in fields]

        count = prompts.batch_size
        order: list[int] = list(range(count))
        if not ordered and count > 1:  # (no mask_input: it is refused for a batch)
            first: dict[Frame, int] = {}
            routed = [
                first.setdefault(self.route(_prompt_region(*picked(b))), len(first)) for b in order
            ]
            order.sort(key=lambda b: routed[b])

        def answers() -> Iterator[FramedPrediction]:
            for b in order:
                coords, labels, boxes = picked(b)
                mask = None if prompts.mask_input is None else prompts.mask_input[0]
                yield self._answer(
                    coords, labels, boxes, mask, multimask_output, return_logits, size, b
                )

        return prompts.batched, answers()

    def predict_on(
        self,
        frame: ArrayLike,
        point_coords: ArrayLike | None = None,
        point_labels: ArrayLike | None = None,
        box: ArrayLike | None = None,
        mask_input: ArrayLike | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> Prediction:
        """One prompt set (full-image pixels) answered on ``frame`` (x0, y0, x1, y1, whole
        end-exclusive pixels inside the image: a tile, a crop, any region), without routing or
        growth; its embedding is kept as the tiles' are. ``mask_input`` 1×s×s: low-res logits
        in ``frame``'s frame (what an answer on ``frame`` returned). Masks C×H×W at the full
        image's size (False, or -inf logits, outside ``frame``), scores C, low-res logits
        C×s×s of ``frame``; ``last_frame`` is ``frame`` afterwards."""
        return self.predict_on_framed(
            frame, point_coords, point_labels, box, mask_input, multimask_output, return_logits
        ).pasted()

    def predict_on_framed(
        self,
        frame: ArrayLike,
        point_coords: ArrayLike | None = None,
        point_labels: ArrayLike | None = None,
        box: ArrayLike | None = None,
        mask_input: ArrayLike | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> FramedPrediction:
        """``predict_on``'s answer kept in ``frame`` (masks C×h×w of the frame), for images
        read by region."""
        size = self.image_size
        f = check_frame(frame, size)
        prompts = check_prompts(
            point_coords,
            point_labels,
            box,
            mask_input,
            low_res_size=self.model.prompt_encoder.mask_input_size,
        )
        if prompts.batched:
            raise InputError("predict_on answers one prompt set, not a batch")

        def first(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[0]

        out = self._on_frame(
            f,
            first(prompts.point_coords),
            first(prompts.point_labels),
            first(prompts.boxes),
            first(prompts.mask_input),
            multimask_output,
            return_logits,
        )
        self.last_frame = f
        self._last_logits = out.logits
        threshold = float(self.model.mask_threshold)
        return FramedPrediction(f, size, out.masks, out.scores, out.logits, threshold)

    def _answer(
        self,
        coords: np.ndarray | None,
        labels: np.ndarray | None,
        box: np.ndarray | None,
        mask_input: np.ndarray | None,
        multimask: bool,
        return_logits: bool,
        size: tuple[int, int],
        index: int = 0,
    ) -> FramedPrediction:
        """One prompt set (the ``index``-th of its call): route, answer, and grow the frame
        while the mask reaches an inner edge of it."""
        region = _prompt_region(coords, labels, box)
        if mask_input is not None:
            assert self.last_frame is not None
            frame = self.last_frame
        else:
            frame = self.route(region)
        seen = {frame}
        for step in range(MAX_GROWTH + 1):
            out = self._on_frame(frame, coords, labels, box, mask_input, multimask, return_logits)
            if mask_input is not None or step == MAX_GROWTH:
                break  # (mask_input: the logits belong to this frame; it cannot change under them)
            binary = out.masks > 0 if return_logits else out.masks
            grown = self._grown(frame, binary, region, size)
            if grown is None or grown in seen:
                break
            seen.add(grown)
            frame = grown
        self.last_frame = frame
        self._last_logits = out.logits
        threshold = float(self.model.mask_threshold)
        return FramedPrediction(frame, size, out.masks, out.scores, out.logits, threshold, index)

    def _on_frame(
        self,
        frame: Frame,
        coords: np.ndarray | None,
        labels: np.ndarray | None,
        box: np.ndarray | None,
        mask_input: np.ndarray | None,
        multimask: bool,
        return_logits: bool,
    ) -> Prediction:
        """The predictor's answer on ``frame``, prompts shifted into it (frame-sized masks; for
        a frame read shrunk, binary masks made only when read, by blocks of columns: a box
        over most of a scan never holds its frame-sized mask, ``ColumnMasks``)."""
        self._use(frame)
        offset = np.array([frame[0], frame[1]], dtype=np.float64)
        shifted = (
            None if coords is None else coords - offset,
            labels,
            None if box is None else box - np.tile(offset, 2),
            mask_input,
            multimask,
        )
        if not return_logits and not self.model.is_sam2 and self.shrink_factor(frame) > 1:
            return self.predictor.predict_lazy(*shifted)
        return self.predictor.predict(*shifted, return_logits=return_logits)

    def _grown(
        self, frame: Frame, masks: np.ndarray, region: np.ndarray, size: tuple[int, int]
    ) -> Frame | None:
        """A frame holding whole every mask (C×h×w bool, ``frame``'s) that reaches an inner edge
        of ``frame``, and the prompt; None when none does."""
        h, w = size
        x0, y0 = frame[:2]
        cells = self.model.prompt_encoder.mask_input_size[0]  # low-res side (the square's)
        edge = EDGE_CELLS * max(frame[2] - x0, frame[3] - y0) / cells
        whole = region.copy()
        reach = np.zeros(4)
        for c in range(len(masks)):
            found = _mask_box(masks[c])
            if found is None:
                continue
            mbox = np.array([found[0] + x0, found[1] + y0, found[2] + x0, found[3] + y0], float)
            cut = np.array(
                [
                    frame[0] > 0 and mbox[0] <= frame[0] + edge,
                    frame[1] > 0 and mbox[1] <= frame[1] + edge,
                    frame[2] < w and mbox[2] >= frame[2] - edge,
                    frame[3] < h and mbox[3] >= frame[3] - edge,
                ]
            )
            if not cut.any():
                continue
            whole = np.concatenate(
                [np.minimum(whole[:2], mbox[:2]), np.maximum(whole[2:], mbox[2:])]
            )
            # beyond a cut edge the object goes on: look at least an overlap further that way
            reach = np.where(cut, self.overlap, reach)
        if not reach.any():
            return None
        want = np.clip(whole + reach * np.array([-1, -1, 1, 1]), 0, [w, h, w, h])
        tiles = [f for f in self.frames if _margin(f, want, size) >= 0]
        grown = max(tiles, key=lambda f: _margin(f, want, size)) if tiles else None
        grown = grown or self._crop_around(want)
        if self.max_frame is not None:
            if (grown[2] - grown[0]) * (grown[3] - grown[1]) > self.max_frame:
                return None  # (kept on the frame it has)
        return grown
