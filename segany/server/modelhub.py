"""Model versions, image embeddings and the two model calls the app makes (decode, pre-fill).

Embeddings are computed once per (image content, encoder version, precision) and kept by
``ProjectEmbeddings`` (the library's embedding cache in the project, and an in-memory LRU); a
retrained version whose encoder was frozen shares its parent's. Decoding goes through one
Predictor per image (``ImageSessions``), kept across clicks with its decoder's image-side work.
Model calls are serialised by one lock: the CPU threads of one call are faster than two calls
fighting over them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segany.automatic.select import MaskRecord
from segany.errors import InputError
from segany.inference.embedding_cache import ImageEmbedding
from segany.inference.predictor import Prediction, Predictor
from segany.server.embeddings import ProjectEmbeddings
from segany.server.prompt_checks import DecodePrompts
from segany.server.sessions import ImageSession, ImageSessions

if TYPE_CHECKING:
    from segany.tasks.regions import RegionPredictor
    from segany.tasks.tiles import FramedPrediction

LARGE_KEPT = 2  # large images whose tile embeddings are kept in memory
ReadImage = Callable[[], np.ndarray]  # the image's pixels H×W×3 uint8, read on demand


class ModelHub:
    def __init__(
        self,
        folder: Path,
        loader: Callable[[str | None], Any],
        *,
        cache_size: int,
        precision: str = "fp32",
        disk_cache: Any = None,
    ) -> None:
        """``folder``: the project's embeddings; ``cache_size``: embeddings kept in memory;
        ``precision``: the encoder's mode, resolved (not "auto"); ``disk_cache``: the
        Predictor's ``cache`` (a shared embedding cache, or None)."""
        self.precision = precision
        self.disk_cache = disk_cache
        self.embeddings = ProjectEmbeddings(folder, memory=cache_size, precision=precision)
        self.sessions = ImageSessions()
        self._loader = loader
        self._models: dict[int, Any] = {}
        self._sources: dict[int, str | None] = {}
        self._encoder_of: dict[int, int] = {}
        self.current = 0
        self.lock = threading.RLock()
        self.encoder_runs = 0  # how many embeddings were computed (tests and the load run)
        self.tile_runs = 0  # tile embeddings made for clicks in a zoomed view (decode_region)
        self._pixels: tuple[str, np.ndarray] | None = None  # the last image read for refining
        self._thresholds: tuple[tuple[int, int | None], dict[str, float]] | None = None
        # Large images' RegionPredictors over the whole image, by (sha256, model version)
        self._large: OrderedDict[tuple[str, int], RegionPredictor] = OrderedDict()

    # ----- versions -----------------------------------------------------------------------
    def register(self, version: int, source: str | None, encoder_version: int | None = None):
        self._sources[version] = source
        self._encoder_of[version] = version if encoder_version is None else encoder_version

    def add_loaded(self, version: int, model: Any) -> None:
        with self.lock:
            self._models[version] = model.eval()

    def model(self, version: int | None = None) -> Any:
        v = self.current if version is None else version
        if v not in self._sources:
            raise InputError(f"unknown model version {v}")
        with self.lock:
            if v not in self._models:
                # Keep the current version and the one asked for; drop others to bound memory.
                for old in [k for k in self._models if k not in (self.current, v)]:
                    del self._models[old]
                self._models[v] = self._loader(self._sources[v]).eval()
            return self._models[v]

    def encoder_version(self, version: int | None = None) -> int:
        return self._encoder_of[self.current if version is None else version]

    def mask_input_size(self) -> tuple[int, int]:
        """(s, s): the current model's low-res mask logits, what ``mask_input`` must be."""
        size = self.model().prompt_encoder.mask_input_size
        return int(size[0]), int(size[1])

    def _predictor(self, version: int) -> Predictor:
        # The project's precision and the shared disk cache: zoomed crops are encoded with them.
        return Predictor(
            self.model(version), precision=self.precision, cache=self.disk_cache or False
        )

    # ----- embeddings ---------------------------------------------------------------------
    def embedding(self, sha256: str, read_rgb: ReadImage) -> ImageEmbedding:
        """The current model's embedding of an image (``read_rgb`` is called only on a miss)."""
        with self.lock:
            enc = self.encoder_version()
            emb = self.embeddings.get(sha256, enc)
            if emb is None:
                encoder = self._predictor(enc)
                encoder.set_image(read_rgb())
                assert encoder.original_size is not None and encoder.input_size is not None
                features = encoder.get_image_embedding().detach().to("cpu", copy=True)
                early = None
                if encoder.model.needs_early:  # SAM-HQ's early map, SAM 2's high-res features
                    early = encoder.get_early_features().detach().to("cpu", copy=True)
                emb = ImageEmbedding(features, encoder.original_size, encoder.input_size, early)
                self.encoder_runs += 1
                self.embeddings.put(sha256, enc, emb)
            return emb

    def session(self, sha256: str, read_rgb: ReadImage) -> ImageSession:
        """The image's Predictor under the current model, kept across calls."""
        with self.lock:
            version = self.current
            return self.sessions.get(
                sha256,
                version,
                lambda: ImageSession.of(self.embedding(sha256, read_rgb), self._predictor(version)),
            )

    # ----- model calls --------------------------------------------------------------------
    def decode(
        self,
        sha256: str,
        read_rgb: ReadImage,
        prompts: DecodePrompts,
        *,
        multimask: bool,
        image: np.ndarray | None = None,
    ) -> Prediction:
        """Masks C×H×W, scores C, low-res logits C×s×s for one prompt set; with the
        ``image`` (H×W×3 uint8) the masks are refined with it as guide (``segany.refine``)."""
        with self.lock:
            session = self.session(sha256, read_rgb)
            pred = session.predictor.predict(
                prompts.points,
                prompts.labels,
                prompts.box,
                prompts.mask_input,
                multimask_output=multimask,
                return_logits=image is not None,
                batched=False,
            )
        if image is None:
            return pred
        _check_pixels(image, session.embedding)
        return _refined(image, pred, None)

    def decode_zoomed(
        self,
        sha256: str,
        read_rgb: ReadImage,
        image: np.ndarray,
        *,
        click_margin: float,
        prompts: DecodePrompts,
        mask_input_frame: list[int] | None,
        multimask: bool,
        refine: bool,
    ) -> tuple[Prediction, tuple[int, int, int, int] | None]:
        """``decode`` with each corrective click answered on a crop around the mask it corrects
        (``segany.zoom``, ``click_margin``); ``image`` H×W×3 uint8 is the embedding's. Returns
        the prediction and the crop (x0, y0, x1, y1) its low-res logits lie in (None: the
        image); that frame comes back as ``mask_input_frame`` with them. Crop embeddings are
        kept with the image's session (``segany.zoom.CROPS_KEPT`` per image)."""
        with self.lock:
            session = self.session(sha256, read_rgb)
            _check_pixels(image, session.embedding)
            h, w = session.embedding.original_size
            frame = None if prompts.mask_input is None else (mask_input_frame or [0, 0, w, h])
            zoom = session.zoomed(image, click_margin)
            pred = zoom.predict(
                prompts.points,
                prompts.labels,
                prompts.box,
                prompts.mask_input,
                multimask_output=multimask,
                return_logits=refine,
                mask_input_frame=frame,
            )
            crop = zoom.crop
        return (_refined(image, pred, crop) if refine else pred), crop

    def decode_region(
        self,
        sha256: str,
        read_rgb: ReadImage,
        image: np.ndarray,
        *,
        view: list[float],
        prompts: DecodePrompts,
        mask_input_frame: list[int] | None,
        multimask: bool,
        refine: bool,
    ) -> tuple[Prediction, tuple[int, int, int, int] | None] | None:
        """``decode`` for a click made with ``view`` (x0, y0, x1, y1 image pixels) in sight:
        answered on tile embeddings at the view's scale (``segany.tasks.regions``; masks at the
        image's size). Returns the prediction and the frame (x0, y0, x1, y1) its low-res
        logits lie in, or None where the whole image's embedding answers (then ``decode``)."""
        with self.lock:
            session = self.session(sha256, read_rgb)
            _check_pixels(image, session.embedding)
            version = self.current
            # Tiles go to the project's embedding cache unless a shared one is configured.
            cache = self.disk_cache or self.embeddings.store
            regions = session.regioned(
                image,
                lambda: Predictor(self.model(version), precision=self.precision, cache=cache),
            )
            before = regions.encoded
            pred = regions.predict(
                view,
                prompts.points,
                prompts.labels,
                prompts.box,
                prompts.mask_input,
                mask_input_frame,
                multimask_output=multimask,
                return_logits=refine,
            )
            self.tile_runs += regions.encoded - before
            frame = regions.frame
        if pred is None:
            return None
        if refine and frame is not None:  # refined where the tile is: the rest is no mask
            x0, y0, x1, y1 = frame
            inner = Prediction(pred.masks[:, y0:y1, x0:x1], pred.scores, pred.logits)
            inner = _refined(np.ascontiguousarray(image[y0:y1, x0:x1]), inner, frame)
            masks = np.zeros(pred.masks.shape, dtype=bool)
            masks[:, y0:y1, x0:x1] = inner.masks
            return Prediction(masks, pred.scores, pred.logits), frame
        return (_refined(image, pred, frame) if refine else pred), frame

    def decode_in_image(
        self,
        sha256: str,
        source: Any,
        window: tuple[int, int, int, int],
        *,
        view: list[float],
        prompts: DecodePrompts,
        mask_input_frame: list[int] | None,
        multimask: bool,
        refine: bool,
        max_frame: int,
    ) -> FramedPrediction | None:
        """A click made in a ``window`` of a large image with ``view`` in sight, every
        coordinate in image pixels: answered on the tiles of the whole image at the view's
        scale (``RegionPredictor`` over ``source``, the file read by region: the tiles
        ``segany segment --tile`` and the other levels use, not tiles of the window), the
        answer kept in its frame, which a mask grows into only up to ``max_frame`` pixels (the
        app's per-window limit). None where the window's own embedding answers: a view about
        as large as the window, ``mask_input`` without a frame (logits of the window), or a
        point or box corner outside the window."""
        from segany.tasks.regions import RegionPredictor, view_tile
        from segany.tasks.tiles import FramedPrediction

        corners = None if prompts.box is None else np.asarray(prompts.box).reshape(2, 2)
        xy = np.concatenate([a.reshape(-1, 2) for a in (prompts.points, corners) if a is not None])
        x0, y0, x1, y1 = window
        if not ((xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0) & (xy[:, 1] <= y1)).all():
            return None
        with self.lock:
            version = self.current
            for old in [k for k in self._large if k[1] != version]:
                del self._large[old]  # (only the current version decodes: free the others)
            model = self.model(version)
            size = (int(source.shape[0]), int(source.shape[1]))
            if prompts.mask_input is None:
                if view_tile(view, size, int(model.image_size)) >= max(x1 - x0, y1 - y0):
                    return None
            elif mask_input_frame is None:
                return None
            key = (sha256, version)
            regions = self._large.get(key)
            if regions is None:
                cache = self.disk_cache or self.embeddings.store
                regions = RegionPredictor(
                    Predictor(model, precision=self.precision, cache=cache), max_frame=max_frame
                )
                regions.set_image(source)
                self._large[key] = regions
                while len(self._large) > LARGE_KEPT:
                    self._large.popitem(last=False)
            self._large.move_to_end(key)
            before = regions.encoded
            out = regions.predict_framed(
                view,
                prompts.points,
                prompts.labels,
                prompts.box,
                prompts.mask_input,
                mask_input_frame,
                multimask_output=multimask,
                return_logits=refine,
            )
            self.tile_runs += regions.encoded - before
        if out is None or not refine:
            return out
        x0, y0, x1, y1 = out.frame
        pixels = np.ascontiguousarray(source[y0:y1, x0:x1])  # RGB (open_regions')
        inner = _refined(pixels, Prediction(out.masks, out.scores, out.logits), out.frame)
        return FramedPrediction(out.frame, out.image_size, inner.masks, out.scores, out.logits)

    def pixels(self, sha256: str, read: Callable[[], np.ndarray]) -> np.ndarray:
        """An image's pixels, by content hash; the last one read is kept. Read outside the
        model lock: decoding the file must not hold up other images' model calls."""
        kept = self._pixels  # one read of the attribute: another request may replace it
        if kept is not None and kept[0] == sha256:
            return kept[1]
        pixels = read()
        self._pixels = (sha256, pixels)
        return pixels

    def generator(self, predictor: Predictor | None = None, **options: Any) -> Any:
        """The pre-fill's ``MaskGenerator``: the current model's own thresholds
        (``MaskGenerator.for_model``), then ``options`` that are not None."""
        from segany.automatic import MaskGenerator

        options = {k: v for k, v in options.items() if v is not None}
        options["output_mode"] = "coco_rle"
        with self.lock:
            return MaskGenerator.for_model(predictor or Predictor(self.model()), **options)

    def prefill_thresholds(self, points_per_side: int | None) -> dict[str, float]:
        """The thresholds a pre-fill without any uses (``thresholds``), for the current model."""
        key = (self.current, points_per_side)
        if self._thresholds is None or self._thresholds[0] != key:
            generator = self.generator(points_per_side=points_per_side)
            self._thresholds = (key, thresholds(generator))
        return dict(self._thresholds[1])

    def prefill(
        self,
        sha256: str,
        read_rgb: ReadImage,
        annotated: np.ndarray | None,
        *,
        tile: int | None = None,
        overlap: int | None = None,
        progress: Path | None = None,
        **options: Any,
    ) -> tuple[list[MaskRecord], dict[str, float]]:
        """Confident automatic masks (``MaskRecord`` with COCO RLE) for the whole image, or with
        ``annotated`` (H×W bool, the pixels existing masks cover) only new masks where those
        leave room (``segany.automatic.semi``, as the engine's semi-automatic mode), and the
        thresholds the generator used (``thresholds``). ``options``: see ``generator``.

        ``tile`` (px; 0: the model's input size), for an image larger than a tile: the grid is
        decoded on overlapping tiles of that side (``overlap`` px shared; None: a quarter) and
        on the whole image, as ``segany auto --tile`` does (``segany.tasks.generate_tiled``),
        finished tiles kept in ``progress`` (a folder) until the run ends, so a server stopped
        midway resumes there; with ``annotated``, the new masks are those the semi-automatic
        rule keeps (``segany.automatic.semi.keep_new``)."""
        from segany.automatic.semi import generate_semi

        if tile is not None:
            tiling = (tile, overlap, progress)
            return self._prefill_tiled(sha256, read_rgb, annotated, tiling, options)
        with self.lock:
            session = self.session(sha256, read_rgb)
            emb = session.embedding
            generator = self.generator(session.predictor, **options)
            features, size = emb.features, emb.original_size
            if annotated is None:
                records = generator.generate(embedding=features, original_size=size)
            else:
                semi = generate_semi(generator, annotated, embedding=features, original_size=size)
                records = list(semi.records)
        return records, thresholds(generator)

    def _prefill_tiled(
        self,
        sha256: str,
        read_rgb: ReadImage,
        annotated: np.ndarray | None,
        tiling: tuple[int, int | None, Path | None],
        options: dict[str, Any],
    ) -> tuple[list[MaskRecord], dict[str, float]]:
        from segany.automatic.semi import keep_new

        tile, overlap, progress = tiling
        from segany.tasks.tiled_generate import clear_progress, generate_tiled

        with self.lock:
            model = self.model()
            side = tile or int(model.image_size)
            image = read_rgb()
            if max(image.shape[:2]) <= side:  # one tile: the whole image's pre-fill
                return self.prefill(sha256, lambda: image, annotated, **options)
            # its own predictor: the tiles' embeddings must not replace the session's
            predictor = Predictor(model, precision=self.precision, cache=self.disk_cache)
            generator = self.generator(predictor, **options)
            records = generate_tiled(
                generator, image, tile=side, overlap=overlap, progress=progress
            )
            if progress is not None:
                clear_progress(progress)
        if annotated is not None:
            records = list(keep_new(records, annotated))
        return records, thresholds(generator)


def thresholds(generator: Any) -> dict[str, float]:
    """What decides which of a generator's masks are kept, by the generator's option names."""
    names = ("pred_iou_thresh", "stability_score_thresh", "stability_score_offset")
    out = {k: float(getattr(generator, k)) for k in names}
    out["points_per_side"] = float(generator.points_per_side or 0)
    return out


def _check_pixels(image: np.ndarray, emb: ImageEmbedding) -> None:
    if image.shape[:2] != tuple(emb.original_size):
        raise InputError(f"image {image.shape[:2]} is not the embedding's {emb.original_size}")


def _refined(
    image: np.ndarray, pred: Prediction, crop: tuple[int, int, int, int] | None
) -> Prediction:
    """``pred`` (masks as logits) snapped to the image's edges (``segany.refine``), with the
    radius of the crop the model saw when it zoomed."""
    from segany.refine import default_radius, refine_logits

    radius = None if crop is None else default_radius((crop[3] - crop[1], crop[2] - crop[0]))
    masks = refine_logits(image, pred.masks, radius) > 0
    return Prediction(masks=masks, scores=pred.scores, logits=pred.logits)
