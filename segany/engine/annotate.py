"""The work a worker does for one image: decode it, run the MaskGenerator, build the SA-1B doc.

Workers (local processes or Ray actors) build one ``Annotator`` from a ``WorkerSpec`` (the model
is loaded once) and call it per ``Task``. A task carries the image's bytes, read by the driver,
so workers need no access to the inputs and a cluster needs no shared file system.

Fully automatic mode: the generator's grid over the whole image (and its crops).
Semi-automatic mode (a task with ``existing`` annotations): ``segany.automatic.semi`` (shared
with the app's pre-fill) decodes only where the existing masks leave room and keeps only new
masks. Existing annotations are copied unchanged; new ones get ids after the largest existing
id and ``"origin": "automatic"``.
"""

from __future__ import annotations

import contextlib
import io
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from segany.errors import InputError

if TYPE_CHECKING:
    from segany.modeling import Sam

#: Default largest image, in pixels, a worker decodes (bigger ones go to the errors file).
MAX_PIXELS = 100_000_000


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs to build its model and generator (picklable)."""

    model: str | None = None  # name or path for segany.checkpoints.load_model; None: bundled
    device: str = "cpu"
    preset: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # MaskGenerator keywords
    threads: int = 1  # torch/OpenCV threads in each worker
    max_pixels: int = MAX_PIXELS
    semi_max_overlap: float = 0.5  # semi: drop new masks this much inside existing ones
    # Fully automatic mode, tile by tile (segany.tasks.generate_tiled): the tiles' side (0: the
    # model's input size) and overlap (None: a quarter of a tile); tile None: untiled.
    tile: int | None = None
    tile_overlap: int | None = None

    def settings(self) -> dict[str, Any]:
        """What decides the annotations (threads and device do not)."""
        opts = {k: v for k, v in self.options.items() if k != "point_grids"}
        if "point_grids" in self.options:
            opts["point_grids"] = [np.asarray(g).tolist() for g in self.options["point_grids"]]
        return {
            "model": self.model,
            "preset": self.preset,
            "options": opts,
            "max_pixels": self.max_pixels,
            "semi_max_overlap": self.semi_max_overlap,
            # (only when tiled: the settings of earlier, untiled runs stay the same)
            **({"tile": [self.tile, self.tile_overlap]} if self.tile is not None else {}),
        }


@dataclass
class Task:
    """One image for a worker. ``existing``: SA-1B-style dict of annotations to keep (semi)."""

    index: int  # 1-based position in the run: the SA-1B image_id
    key: str
    file_name: str
    data: bytes
    existing: dict[str, Any] | None = None
    member: str = ""  # its JSON's name in the shard (``output.json_names``)
    source: str = ""  # what error reports show for it
    stamp: list[int] | None = None  # the file's ``Blob.stamp()`` right after its bytes were read
    changed: bool = False  # the stamp differed before and after the read


#: What a failure's reason says when the file changed while it was read.
CHANGED_NOTE = "; the file changed while it was read, so a re-run of the same command retries it"


def failure(index: int, key: str, reason: str) -> dict[str, Any]:
    return {"index": index, "key": key, "ok": False, "reason": reason}


def with_read_stamp(
    result: dict[str, Any], stamp: list[int] | None, changed: bool
) -> dict[str, Any]:
    """A failed result with what a re-run needs to tell a changed image (retried) from a bad
    one (kept as failed): the file's stamp after the read, and whether it changed during it."""
    if result["ok"]:
        return result
    reason = str(result["reason"]) + (CHANGED_NOTE if changed else "")
    return {**result, "reason": reason, "stamp": stamp, "changed": changed}


def decode_image(data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Image bytes -> H×W×3 uint8 RGB (EXIF orientation applied), or ``InputError`` saying why.

    The size is checked from the header before the pixels are decoded."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    from segany.images import pil_to_array

    if not data:
        raise InputError(f"{name}: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # odd EXIF warnings; DecompressionBomb is ours
            with Image.open(io.BytesIO(data)) as raw:
                w, h = raw.size
                if w * h > max_pixels:
                    raise InputError(
                        f"{name}: too large ({w}×{h} = {w * h} pixels; the limit is {max_pixels})"
                    )
                raw.load()
                return np.ascontiguousarray(pil_to_array(ImageOps.exif_transpose(raw)))
    except UnidentifiedImageError:
        raise InputError(f"{name}: not an image file or an unsupported format") from None
    except (Image.DecompressionBombError, OSError, SyntaxError, ValueError, TypeError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"{name}: cannot decode image ({e})") from None


class Annotator:
    """A loaded model and generator; ``__call__(task)`` returns a result dict (never raises for
    a bad image: the reason goes into the result)."""

    def __init__(self, spec: WorkerSpec) -> None:
        import cv2
        import torch

        from segany.automatic import MaskGenerator
        from segany.checkpoints import load_model
        from segany.inference.predictor import Predictor

        torch.set_num_threads(spec.threads)
        cv2.setNumThreads(spec.threads)
        self.spec = spec
        model = cast("Sam", load_model(spec.model, device=spec.device, progress=False))
        self.predictor = Predictor(model)
        self.options = dict(spec.options, output_mode="coco_rle")
        # The model's own defaults, then the preset's options, then the run's.
        self.generator = MaskGenerator.for_model(self.predictor, spec.preset, **self.options)

    def __call__(self, task: Task) -> dict[str, Any]:
        t0 = time.perf_counter()
        try:
            with self._pixel_limit():
                image = decode_image(task.data, task.key, self.spec.max_pixels)
                if task.existing is None:
                    doc = self._automatic(image, task)
                else:
                    doc = self._semi(image, task)
        except (InputError, ValueError) as e:
            return failure(task.index, task.key, str(e).splitlines()[0])
        return {
            "index": task.index,
            "key": task.key,
            "ok": True,
            "doc": doc,
            "seconds": round(time.perf_counter() - t0, 4),
        }

    def _pixel_limit(self) -> contextlib.AbstractContextManager[None]:
        """A tiled run's --max-pixels above the library's limit is the run's explicit choice
        (``segany.limits.pixel_limit``); untiled work keeps the library's limit."""
        from segany.limits import current_pixel_limit, pixel_limit

        if self.spec.tile is not None and self.spec.max_pixels > current_pixel_limit():
            return pixel_limit(self.spec.max_pixels)
        return contextlib.nullcontext()

    def _image_info(self, image: np.ndarray, task: Task) -> dict[str, Any]:
        h, w = image.shape[:2]
        return {"image_id": task.index, "width": w, "height": h, "file_name": task.file_name}

    def _automatic(self, image: np.ndarray, task: Task) -> dict[str, Any]:
        from segany.formats import sa1b_document

        if self.spec.tile is None:
            records = self.generator.generate(image)
        else:
            from segany.tasks.tiled_generate import generate_tiled

            records = generate_tiled(
                self.generator, image, tile=self.spec.tile or None, overlap=self.spec.tile_overlap
            )
        info = self._image_info(image, task)
        doc = sa1b_document(
            records,
            file_name=info["file_name"],
            width=info["width"],
            height=info["height"],
            image_id=info["image_id"],
        )
        return doc.to_dict()

    def _semi(self, image: np.ndarray, task: Task) -> dict[str, Any]:
        from segany.automatic.semi import SemiOptions, annotated_pixels, generate_semi
        from segany.formats.records import (
            plain,
            records_to_dicts,
            segmentation_mask,
            segmentation_rle,
        )
        from segany.formats.sa1b import ANNOTATION_FIELDS

        existing = task.existing or {}
        h, w = image.shape[:2]
        info = existing.get("image") or self._image_info(image, task)
        old = list(existing.get("annotations", []))
        masks = (segmentation_mask(ann["segmentation"]) for ann in old)
        annotated = annotated_pixels(masks, (h, w), source=task.key)
        options = SemiOptions(max_overlap=self.spec.semi_max_overlap)
        new = records_to_dicts(
            generate_semi(self.generator, annotated, image=image, options=options).records
        )
        next_id = 1 + max((int(a.get("id", -1)) for a in old), default=-1)
        annotations = list(old)
        for j, rec in enumerate(new):
            added: dict[str, Any] = {
                "id": next_id + j,
                "segmentation": segmentation_rle(rec["segmentation"]),
            }
            for k in ANNOTATION_FIELDS[2:]:
                if k in rec:
                    added[k] = plain(rec[k])
            added["origin"] = "automatic"
            annotations.append(added)
        return {"image": info, "annotations": annotations}
