"""One Predictor per image an annotator is working on, kept across clicks.

A click on an image decodes against that image's embedding; the decoder's image-side work (the
projections ``PointDecoder`` makes once per image) is kept by the Predictor that holds the
embedding. So the app keeps that Predictor for the last few images (least recently used go
first) instead of making one per request, and a zooming server keeps its ``ZoomPredictor``
around the same Predictor (its crop embeddings too). A click made zoomed into a large image is
answered by the session's ``RegionPredictor`` (``segany.tasks.regions``: tile embeddings at the
scale of the region in view, kept with the session and in the project's embedding cache).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from segany.inference.embedding_cache import ImageEmbedding
from segany.inference.predictor import Predictor

if TYPE_CHECKING:
    from segany.tasks.regions import RegionPredictor
    from segany.zoom import ZoomPredictor

IMAGES_KEPT = 4  # images an annotator moves between without the decoder's set-up again


@dataclass
class ImageSession:
    """An image's embedding, the Predictor it is set on, and (zooming) its ZoomPredictor."""

    embedding: ImageEmbedding
    predictor: Predictor
    zoom: ZoomPredictor | None = None
    regions: RegionPredictor | None = None

    @classmethod
    def of(cls, embedding: ImageEmbedding, predictor: Predictor) -> ImageSession:
        predictor.set_embedding(embedding)
        return cls(embedding, predictor)

    def zoomed(self, image: np.ndarray, click_margin: float) -> ZoomPredictor:
        """The ZoomPredictor (``click_margin``) over this session's Predictor; ``image``
        H×W×3 uint8 is the embedding's, for the crops."""
        from segany.zoom import ZoomPredictor

        if self.zoom is None or self.zoom.click_margin != float(click_margin):
            zoom = ZoomPredictor(self.predictor, None, click_margin=click_margin)
            emb = self.embedding
            zoom.set_image_embedding(
                image, emb.features, emb.original_size, emb.input_size, early=emb.early
            )
            self.zoom = zoom
        return self.zoom

    def regioned(self, image: np.ndarray, make: Callable[[], Predictor]) -> RegionPredictor:
        """The RegionPredictor over this session's image (H×W×3 uint8, the embedding's); its
        tiles are encoded by the Predictor ``make`` gives (not the session's, which keeps the
        whole image's embedding)."""
        from segany.tasks.regions import RegionPredictor

        if self.regions is None:
            regions = RegionPredictor(make())
            regions.set_image(image)
            self.regions = regions
        return self.regions


class ImageSessions:
    """Sessions by (image sha256, model version), at most ``size`` of them.

    The lock guards the table only; a session's Predictor is not thread-safe, so callers use it
    under one lock of their own (``ModelHub.lock``, which serialises every model call)."""

    def __init__(self, size: int = IMAGES_KEPT) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, int], ImageSession] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, sha256: str, version: int, make: Callable[[], ImageSession]) -> ImageSession:
        """The session of ``sha256`` under model ``version``, made with ``make`` if missing.
        Sessions of other versions are dropped: only the current version decodes."""
        key = (sha256, version)
        with self._lock:
            for old in [k for k in self._items if k[1] != version]:
                del self._items[old]
            session = self._items.get(key)
            if session is not None:
                self._items.move_to_end(key)
                return session
        session = make()  # outside the table's lock: it may run the encoder
        with self._lock:
            self._items[key] = session
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return session
