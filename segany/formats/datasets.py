"""Annotated image collections: COCO instances JSON, SA-1B folders, image + label-map folders.

The one reader of each dataset format, used by evaluation (``segany.evaluate``) and training
(``segany.train.datasets``) alike. Every reader is a sequence of `Sample`s: an image path and
its object masks held as compressed COCO RLEs, decoded only when asked for. Reading a sample
touches only that sample's files (the COCO JSON is the exception: it is one file, read once).
Files are parsed by ``formats.coco.read_coco`` and ``formats.sa1b.read_sa1b``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from segany.errors import InputError
from segany.formats.coco import read_coco
from segany.formats.images import IMAGE_SUFFIXES
from segany.formats.sa1b import read_sa1b
from segany.masks import encode_rle

LABEL_DIR_NAMES = ("labels", "masks", "annotations")


@dataclass(frozen=True)
class EvalObject:
    """One annotated object: its id in the source and its mask as a compressed COCO RLE."""

    object_id: int | str
    rle: dict[str, Any]  # {"size": [H, W], "counts": bytes | str}
    area: int
    iscrowd: bool = False

    def mask(self) -> np.ndarray:
        """The mask, H×W bool."""
        return mask_utils.decode(self.rle).astype(bool)


@dataclass(frozen=True)
class Sample:
    """One image of a dataset and its ground-truth objects (the image read from `path`, or
    held in memory: see `from_arrays`)."""

    image_id: int | str
    path: Path | None
    height: int
    width: int
    objects: tuple[EvalObject, ...]
    image: np.ndarray | None = field(default=None, repr=False, compare=False)

    def load_image(self) -> np.ndarray:
        """The image as H×W×3 uint8 RGB."""
        if self.image is not None:
            return self.image
        if self.path is None:
            raise InputError(f"sample {self.image_id!r} has neither an image nor a path")
        return load_rgb(self.path)

    @classmethod
    def from_arrays(
        cls, image: np.ndarray, masks: Sequence[np.ndarray], image_id: int | str = 0
    ) -> Sample:
        """An in-memory sample: image H×W×3 uint8 RGB and object masks H×W bool (object ids
        are their indices), e.g. for validation during training or generated scenes."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputError(f"expected an H×W×3 uint8 image, got {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        objects = []
        for i, m in enumerate(masks):
            m = np.asarray(m, dtype=bool)
            if m.shape != (h, w):
                raise InputError(f"mask {i} is {m.shape}, the image is {(h, w)}")
            objects.append(EvalObject(i, encode_rle(m), int(m.sum())))
        return cls(image_id, None, h, w, tuple(objects), image)


def load_rgb(path: Path) -> np.ndarray:
    """Read an image file as H×W×3 uint8 RGB (16-bit and float grey images are rescaled)."""
    try:
        with Image.open(path) as im:
            if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                # Deep grey images: stretch to 8 bits, as a viewer would show them.
                arr = np.asarray(im, dtype=np.float64)
                top = float(arr.max()) or 1.0
                grey = np.clip(arr / top * 255.0, 0, 255).astype(np.uint8)
                return np.repeat(grey[:, :, None], 3, axis=2)
            return np.asarray(im.convert("RGB"))
    except OSError as exc:
        raise InputError(f"cannot read image {path}: {exc}") from exc


def segmentation_to_rle(seg: Any, height: int, width: int) -> dict[str, Any]:
    """COCO polygons, uncompressed RLE or compressed RLE -> one compressed RLE."""
    if isinstance(seg, list):  # polygons: a list of flat [x0, y0, x1, y1, ...] rings
        rings = [p for p in seg if len(p) >= 6]
        if not rings:
            return encode_rle(np.zeros((height, width), bool))
        return mask_utils.merge(mask_utils.frPyObjects(rings, height, width))
    if isinstance(seg, dict) and "counts" in seg:
        if isinstance(seg["counts"], list):  # uncompressed RLE (crowd regions)
            return mask_utils.frPyObjects(seg, height, width)
        size = [int(s) for s in seg.get("size", (height, width))]
        return {"size": size, "counts": seg["counts"]}
    raise InputError(f"unsupported segmentation {type(seg).__name__}: expected polygons or RLE")


class EvalDataset(Sequence[Sample]):
    """Base of the readers (a sequence of `Sample`s): `kind` and `source` describe it."""

    kind = "dataset"
    source = ""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def _read(self, index: int) -> Sample: ...

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        return self._read(index % len(self))

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self._read(i)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "source": self.source, "num_images": len(self)}


class CocoDataset(EvalDataset):
    """A COCO instances JSON and the folder holding its images."""

    kind = "coco"

    def __init__(self, annotations: str | Path, images: str | Path | None = None) -> None:
        path = Path(annotations)
        self.source = str(path)
        try:
            data = read_coco(path)
        except OSError as exc:
            raise InputError(f"cannot read COCO annotations {path}: {exc}") from exc
        self._images = sorted(data["images"], key=lambda im: im["id"])
        self._anns: dict[Any, list[dict]] = {}
        for ann in data["annotations"]:
            self._anns.setdefault(ann["image_id"], []).append(ann)
        candidates = [Path(images)] if images else [path.parent / "images", path.parent]
        self.images_dir = self._find_images_dir(candidates)

    def _find_images_dir(self, candidates: list[Path]) -> Path:
        if not self._images:
            return candidates[0]
        name = self._images[0]["file_name"]
        for folder in candidates:
            if (folder / name).is_file():
                return folder
        tried = ", ".join(str(c) for c in candidates)
        raise InputError(f"image {name!r} of {self.source} not found in {tried} (use --images)")

    def __len__(self) -> int:
        return len(self._images)

    def object_count(self, index: int, crowd: bool = False) -> int:
        """How many objects image ``index`` has (crowd regions counted only if ``crowd``),
        without decoding any mask."""
        anns = self._anns.get(self._images[index]["id"], [])
        return sum(1 for a in anns if crowd or not a.get("iscrowd", 0))

    def _read(self, index: int) -> Sample:
        info = self._images[index]
        h, w = int(info["height"]), int(info["width"])
        objects = []
        for ann in self._anns.get(info["id"], []):
            rle = segmentation_to_rle(ann["segmentation"], h, w)
            area = int(mask_utils.area(rle))
            objects.append(EvalObject(ann["id"], rle, area, bool(ann.get("iscrowd", 0))))
        path = self.images_dir / info["file_name"]
        return Sample(info["id"], path, h, w, tuple(objects))


def _images_by_stem(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
            found.setdefault(p.stem, p)
    return found


class Sa1bDataset(EvalDataset):
    """An SA-1B-style folder: `name.jpg` beside `name.json` ({"image": ..., "annotations": ...})."""

    kind = "sa1b"

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.source = str(self.folder)
        if not self.folder.is_dir():
            raise InputError(f"{self.folder} is not a folder (SA-1B layout: image + JSON pairs)")
        images = _images_by_stem(self.folder)
        self._pairs = [
            (j, images[j.stem]) for j in sorted(self.folder.glob("*.json")) if j.stem in images
        ]
        if not self._pairs:
            raise InputError(f"{self.folder} holds no image + JSON pairs (SA-1B layout)")

    def __len__(self) -> int:
        return len(self._pairs)

    def _read(self, index: int) -> Sample:
        json_path, image_path = self._pairs[index]
        try:
            doc = read_sa1b(json_path)
            info = doc.image
            h, w = doc.size
        except (OSError, ValueError, TypeError) as exc:  # InputError is a ValueError
            raise InputError(f"{json_path} is not an SA-1B annotation file: {exc}") from exc
        named = self.folder / str(info.get("file_name", ""))
        path = named if info.get("file_name") and named.is_file() else image_path
        objects = []
        for i, ann in enumerate(doc.annotations):
            rle = segmentation_to_rle(ann["segmentation"], h, w)
            objects.append(EvalObject(ann.get("id", i), rle, int(mask_utils.area(rle))))
        return Sample(info.get("image_id", json_path.stem), path, h, w, tuple(objects))


class LabelMapDataset(EvalDataset):
    """Images with instance label-map PNGs (0 = background, every other value one object).

    Layout: `FOLDER/images/NAME.*` with `FOLDER/labels/NAME.png` (or `masks/`, `annotations/`),
    or explicit `images` and `labels` folders. Grey, palette and 16-bit maps are read as values;
    RGB maps as colours (black = background).
    """

    kind = "labelmap"

    def __init__(
        self,
        folder: str | Path | None = None,
        *,
        images: str | Path | None = None,
        labels: str | Path | None = None,
        ignore_value: int | None = None,
    ) -> None:
        root = Path(folder) if folder is not None else None
        images_dir = Path(images) if images else (root / "images" if root else None)
        labels_dir = Path(labels) if labels else _find_label_dir(root)
        if images_dir is None or labels_dir is None or not images_dir.is_dir():
            raise InputError(f"{root}: expected images/ and labels/ (or masks/) folders")
        self.source = str(root or images_dir)
        self.ignore_value = ignore_value
        maps = {p.stem: p for p in sorted(labels_dir.glob("*.png"))}
        found = _images_by_stem(images_dir)
        self._pairs = [(img, maps[stem]) for stem, img in found.items() if stem in maps]
        if not self._pairs:
            raise InputError(f"no image in {images_dir} has a label map in {labels_dir}")

    def __len__(self) -> int:
        return len(self._pairs)

    def _read(self, index: int) -> Sample:
        image_path, label_path = self._pairs[index]
        with Image.open(image_path) as im:
            w, h = im.size
        labels = read_instance_map(label_path)
        if labels.shape != (h, w):
            raise InputError(f"label map {label_path} is {labels.shape}, its image is {(h, w)}")
        objects = []
        for value in np.unique(labels):
            if value == 0 or value == self.ignore_value:
                continue
            mask = labels == value
            objects.append(EvalObject(int(value), encode_rle(mask), int(mask.sum())))
        return Sample(image_path.stem, image_path, h, w, tuple(objects))


def read_instance_map(path: Path) -> np.ndarray:
    """A third-party instance-map image as H×W int64: grey, 16-bit and palette maps as their
    values (palette indices, not colours), RGB maps as colours packed 0xRRGGBB. (segany's own
    uint16 label maps are read by ``formats.png.read_label_map``.)"""
    with Image.open(path) as im:
        arr = np.asarray(im)
    if arr.ndim == 3:  # colour-coded instances
        rgb = arr[:, :, :3].astype(np.int64)
        return (rgb[:, :, 0] << 16) | (rgb[:, :, 1] << 8) | rgb[:, :, 2]
    return arr.astype(np.int64)


def _find_label_dir(root: Path | None) -> Path | None:
    if root is None:
        return None
    for name in LABEL_DIR_NAMES:
        if (root / name).is_dir():
            return root / name
    return None


def open_dataset(
    path: str | Path,
    *,
    images: str | Path | None = None,
    labels: str | Path | None = None,
) -> EvalDataset:
    """Pick the reader from what is on disk: a .json file is COCO; a folder with images/ and
    labels/ (or masks/) holds label maps; a folder of image + JSON pairs is SA-1B."""
    p = Path(path)
    if p.is_file() and p.suffix.lower() == ".json":
        return CocoDataset(p, images)
    if not p.is_dir():
        raise InputError(f"dataset {p} is neither a COCO .json file nor a folder")
    if labels or (_find_label_dir(p) is not None and (p / "images").is_dir()):
        return LabelMapDataset(p, images=images, labels=labels)
    return Sa1bDataset(p)
