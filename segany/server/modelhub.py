"""Model versions, image embeddings and the two model calls the app makes (decode, pre-fill).

Embeddings are computed once per (image content, encoder version): kept as ``.npy`` files in
the project's ``embeddings/`` folder and in a bounded in-memory LRU. A retrained version whose
encoder was frozen shares its parent's embeddings. Model calls are serialised by one lock:
the CPU threads of one call are faster than two calls fighting over them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segany.errors import InputError
from segany.inference.predictor import Prediction, Predictor

ZOOMS_KEPT = 2  # images whose crop embeddings are kept for zoomed corrections


@dataclass(frozen=True)
class Embedding:
    """features 1×C×h×w float32; original (H, W); input (h', w') after resize-longest-side."""

    features: np.ndarray
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    encoder_version: int


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
        """``precision``: the encoder's mode, resolved (not "auto"): embeddings of other modes
        are stored under other names, fp32's under the names from before modes existed."""
        self.folder = Path(folder)
        self.precision = precision
        self.disk_cache = disk_cache  # Predictor's ``cache``: shared embedding cache or None
        self._loader = loader
        self._models: dict[int, Any] = {}
        self._sources: dict[int, str | None] = {}
        self._encoder_of: dict[int, int] = {}
        self.current = 0
        self.lock = threading.RLock()
        self._cache: OrderedDict[tuple[str, int], Embedding] = OrderedDict()
        self.cache_size = cache_size
        self.encoder_runs = 0  # how many embeddings were computed (tests and the load run)
        self._pixels: tuple[str, np.ndarray] | None = None  # the last image read for refining
        self._zooms: OrderedDict[tuple, Any] = OrderedDict()  # ZoomPredictors, by image

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

    # ----- embeddings ---------------------------------------------------------------------
    def embedding(self, sha256: str, read_rgb: Callable[[], np.ndarray]) -> Embedding:
        """The current model's embedding of an image (``read_rgb`` is called only on a miss)."""
        enc = self.encoder_version()
        key = (sha256, enc)
        with self.lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            mode = "" if self.precision == "fp32" else f"-{self.precision}"
            path = self.folder / f"{sha256}-e{enc}{mode}.npz"
            emb = self._read(path, enc) if path.is_file() else None
            if emb is None:
                predictor = Predictor(
                    self.model(enc), precision=self.precision, cache=self.disk_cache or False
                )
                predictor.set_image(read_rgb())
                emb = Embedding(
                    predictor.get_image_embedding().cpu().numpy().astype(np.float32),
                    predictor.original_size or (0, 0),
                    predictor.input_size or (0, 0),
                    enc,
                )
                self.encoder_runs += 1
                self._write(path, emb)
            self._cache[key] = emb
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            return emb

    def _read(self, path: Path, enc: int) -> Embedding | None:
        try:
            with np.load(path, allow_pickle=False) as z:
                return Embedding(
                    z["features"].astype(np.float32),
                    (int(z["original"][0]), int(z["original"][1])),
                    (int(z["input"][0]), int(z["input"][1])),
                    enc,
                )
        except (OSError, KeyError, ValueError):
            return None  # a damaged cache file is recomputed

    def _write(self, path: Path, emb: Embedding) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            np.savez(
                f,
                features=emb.features,
                original=np.asarray(emb.original_size),
                input=np.asarray(emb.input_size),
            )
        tmp.replace(path)

    # ----- model calls --------------------------------------------------------------------
    def decode(
        self,
        emb: Embedding,
        *,
        points: np.ndarray | None,
        labels: np.ndarray | None,
        box: np.ndarray | None,
        mask_input: np.ndarray | None,
        multimask: bool,
        image: np.ndarray | None = None,
    ) -> Prediction:
        """Masks C×H×W, scores C, low-res logits C×s×s for one prompt set; with the
        ``image`` (H×W×3 uint8) the masks are refined with it as guide (``segany.refine``)."""
        with self.lock:
            predictor = Predictor(self.model())
            predictor.set_image_embedding(
                torch.from_numpy(emb.features), emb.original_size, emb.input_size
            )
            pred = predictor.predict(
                points,
                labels,
                box,
                mask_input,
                multimask_output=multimask,
                return_logits=image is not None,
                batched=False,
            )
        if image is None:
            return pred
        if image.shape[:2] != tuple(emb.original_size):
            raise InputError(f"image {image.shape[:2]} is not the embedding's {emb.original_size}")
        return _refined(image, pred, None)

    def decode_zoomed(
        self,
        emb: Embedding,
        sha256: str,
        image: np.ndarray,
        *,
        click_margin: float,
        points: np.ndarray | None,
        labels: np.ndarray | None,
        box: np.ndarray | None,
        mask_input: np.ndarray | None,
        mask_input_frame: list[int] | None,
        multimask: bool,
        refine: bool,
    ) -> tuple[Prediction, tuple[int, int, int, int] | None]:
        """``decode`` with each corrective click answered on a crop around the mask it corrects
        (``segany.zoom``, ``click_margin``); ``image`` H×W×3 uint8 is the embedding's. Returns
        the prediction and the crop (x0, y0, x1, y1) its low-res logits lie in (None: the
        image); that frame comes back as ``mask_input_frame`` with them. Crop embeddings are
        kept per image (``CROPS_KEPT``) for the last ``ZOOMS_KEPT`` images."""
        from segany.zoom import ZoomPredictor

        if image.shape[:2] != tuple(emb.original_size):
            raise InputError(f"image {image.shape[:2]} is not the embedding's {emb.original_size}")
        h, w = emb.original_size
        frame = None if mask_input is None else (mask_input_frame or [0, 0, w, h])
        with self.lock:
            key = (sha256, emb.encoder_version, self.current, float(click_margin))
            zoom = self._zooms.pop(key, None)
            if zoom is None:
                base = Predictor(
                    self.model(), precision=self.precision, cache=self.disk_cache or False
                )
                zoom = ZoomPredictor(base, None, click_margin=click_margin)
                zoom.set_image_embedding(
                    image, torch.from_numpy(emb.features), emb.original_size, emb.input_size
                )
            self._zooms[key] = zoom
            while len(self._zooms) > ZOOMS_KEPT:
                self._zooms.popitem(last=False)
            pred = zoom.predict(
                points,
                labels,
                box,
                mask_input,
                multimask_output=multimask,
                return_logits=refine,
                mask_input_frame=frame,
            )
            crop = zoom.crop
        return (_refined(image, pred, crop) if refine else pred), crop

    def pixels(self, sha256: str, read: Callable[[], np.ndarray]) -> np.ndarray:
        """An image's pixels, by content hash; the last one read is kept. Read outside the
        model lock: decoding the file must not hold up other images' model calls."""
        kept = self._pixels  # one read of the attribute: another request may replace it
        if kept is not None and kept[0] == sha256:
            return kept[1]
        pixels = read()
        self._pixels = (sha256, pixels)
        return pixels

    def prefill(self, emb: Embedding, **options: Any) -> list[Any]:
        """Confident automatic masks (``MaskRecord`` with COCO RLE) for the whole image;
        ``options`` not None go to ``MaskGenerator`` (points_per_side, thresholds)."""
        from segany.automatic import MaskGenerator

        options = {k: v for k, v in options.items() if v is not None}
        options["output_mode"] = "coco_rle"
        with self.lock:
            generator = MaskGenerator.for_model(Predictor(self.model()), **options)
            return generator.generate(
                embedding=torch.from_numpy(emb.features), original_size=emb.original_size
            )


def _refined(
    image: np.ndarray, pred: Prediction, crop: tuple[int, int, int, int] | None
) -> Prediction:
    """``pred`` (masks as logits) snapped to the image's edges (``segany.refine``), with the
    radius of the crop the model saw when it zoomed."""
    from segany.refine import default_radius, refine_logits

    radius = None if crop is None else default_radius((crop[3] - crop[1], crop[2] - crop[0]))
    masks = refine_logits(image, pred.masks, radius) > 0
    return Prediction(masks=masks, scores=pred.scores, logits=pred.logits)
