"""Training datasets: SA-1B-style folders and COCO instances JSON, read by the same readers as
evaluation (``segany.formats.datasets``).

Every sample is one image resized so its longest side is the model's input size, normalised and
zero-padded to a square (what the model's ``preprocess`` does), with up to ``masks_per_image`` of
its masks in the same padded frame, so one encoder pass serves several masks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from segany.errors import InputError
from segany.formats.datasets import CocoDataset, Sa1bDataset, Sample
from segany.models import PIXEL_MEAN, PIXEL_STD
from segany.transforms import preprocess_shape


@dataclass
class TrainSample:
    """One training image: ``image`` 3×S×S normalised + padded, ``masks`` M×S×S bool,
    ``input_size`` (h, w) of the resized image inside the padded square."""

    image: torch.Tensor
    masks: torch.Tensor
    input_size: tuple[int, int]


def prepare(
    image: np.ndarray,
    masks: list[np.ndarray],
    size: int,
    flip: bool = False,
    pixel_mean: tuple[float, float, float] = PIXEL_MEAN,
    pixel_std: tuple[float, float, float] = PIXEL_STD,
    stretch: bool = False,
) -> TrainSample:
    """Resize ``image`` H×W×3 uint8 and its ``masks`` (each H×W bool) into a padded S×S frame
    (longest side S, as SAM reads an image), or with ``stretch`` to fill the S×S frame without
    keeping the aspect ratio (as SAM 2 reads one; ``input_size`` is then (S, S))."""
    if stretch:
        h, w = size, size
    else:
        h, w = preprocess_shape(image.shape[0], image.shape[1], size)
    img = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    if flip:
        img = img[:, ::-1]
    norm = (img - np.asarray(pixel_mean, np.float32)) / np.asarray(pixel_std, np.float32)
    out = torch.zeros(3, size, size)
    out[:, :h, :w] = torch.from_numpy(np.ascontiguousarray(norm)).permute(2, 0, 1)  # HWC -> CHW
    mt = torch.zeros(len(masks), size, size, dtype=torch.bool)
    for i, m in enumerate(masks):
        r = cv2.resize(m.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) >= 0.5
        if flip:
            r = r[:, ::-1]
        mt[i, :h, :w] = torch.from_numpy(np.ascontiguousarray(r))
    return TrainSample(out, mt, (h, w))


class MaskDataset(ABC):
    """Base: subclasses list ``items`` and implement ``load(i) -> (image, masks)``."""

    def __init__(
        self,
        image_size: int,
        masks_per_image: int = 8,
        min_mask_area: int = 16,
        flip: bool = False,
        pixel_mean: tuple[float, float, float] = PIXEL_MEAN,
        pixel_std: tuple[float, float, float] = PIXEL_STD,
    ) -> None:
        self.image_size = image_size
        self.masks_per_image = masks_per_image
        self.min_mask_area = min_mask_area
        self.flip = flip
        self.pixel_mean, self.pixel_std = pixel_mean, pixel_std
        self.items: list = []

    def __len__(self) -> int:
        return len(self.items)

    @abstractmethod
    def load(self, index: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """Image ``index`` as H×W×3 uint8 RGB and its masks (each H×W bool)."""

    def get(
        self, index: int, rng: np.random.Generator | None = None, *, stretch: bool = False
    ) -> TrainSample:
        """Sample ``index``; ``rng`` picks which masks and whether to flip (None: first ones);
        ``stretch``: the frame SAM 2 reads (``prepare``)."""
        image, masks = self.load(index)
        if rng is not None and len(masks) > self.masks_per_image:
            keep = rng.choice(len(masks), self.masks_per_image, replace=False)
            masks = [masks[k] for k in sorted(keep)]
        else:
            masks = masks[: self.masks_per_image]
        flip = bool(self.flip and rng is not None and rng.random() < 0.5)
        s = prepare(image, masks, self.image_size, flip, self.pixel_mean, self.pixel_std, stretch)
        keep_t = s.masks.flatten(1).sum(1) >= self.min_mask_area
        return TrainSample(s.image, s.masks[keep_t], s.input_size)


class SA1BDataset(MaskDataset):
    """A folder of ``name.jpg`` + ``name.json`` pairs in the SA-1B annotation format
    (read by ``segany.formats.datasets.Sa1bDataset``)."""

    def __init__(self, root: str | Path, image_size: int, **kwargs) -> None:
        super().__init__(image_size, **kwargs)
        self.root = Path(root)
        self.reader = Sa1bDataset(self.root)
        self.items = list(range(len(self.reader)))

    def load(self, index: int) -> tuple[np.ndarray, list[np.ndarray]]:
        return _image_and_masks(self.reader[self.items[index]])


class COCODataset(MaskDataset):
    """COCO instances JSON (polygons or RLE; read by ``segany.formats.datasets.CocoDataset``);
    crowd regions are skipped, and so are images without any other object."""

    def __init__(
        self, annotations: str | Path, images: str | Path | None, image_size: int, **kw
    ) -> None:
        super().__init__(image_size, **kw)
        self.reader = CocoDataset(annotations, images)
        self.items = [i for i in range(len(self.reader)) if self.reader.object_count(i)]
        if not self.items:
            raise InputError(f"no annotated images in {annotations}")

    def load(self, index: int) -> tuple[np.ndarray, list[np.ndarray]]:
        return _image_and_masks(self.reader[self.items[index]])


def _image_and_masks(sample: Sample) -> tuple[np.ndarray, list[np.ndarray]]:
    image = sample.load_image()
    return image, [o.mask() for o in sample.objects if not o.iscrowd]


class ConcatDataset(MaskDataset):
    """Several datasets read as one, in order (e.g. two synthetic scene styles)."""

    def __init__(self, parts: list[MaskDataset], image_size: int, **kwargs) -> None:
        super().__init__(image_size, **kwargs)
        if not parts:
            raise InputError("ConcatDataset needs at least one dataset")
        self.parts = parts
        self.items = [(k, j) for k, part in enumerate(parts) for j in range(len(part))]

    def load(self, index: int) -> tuple[np.ndarray, list[np.ndarray]]:
        k, j = self.items[index]
        return self.parts[k].load(j)


def open_datasets(specs: list[str], image_size: int, **kwargs) -> MaskDataset:
    """One dataset from one or more ``open_dataset`` paths (concatenated in order)."""
    if len(specs) == 1:
        return open_dataset(specs[0], image_size, **kwargs)
    parts = [open_dataset(s, image_size, **kwargs) for s in specs]
    return ConcatDataset(parts, image_size, **kwargs)


def open_dataset(spec: str | Path, image_size: int, **kwargs) -> MaskDataset:
    """A dataset from a path: an SA-1B folder, or ``annotations.json[:images_dir]`` for COCO
    (images found beside the JSON, or in ``images/`` next to it, when no folder is given)."""
    text = str(spec)
    if text.endswith(".json") or ".json:" in text:
        ann, _, images = text.partition(".json")
        ann += ".json"
        return COCODataset(ann, images.lstrip(":") or None, image_size, **kwargs)
    return SA1BDataset(spec, image_size, **kwargs)


def collate(samples: list[TrainSample]) -> tuple[torch.Tensor, list[torch.Tensor], list]:
    """Images B×3×S×S, per-image masks (M_i×S×S bool) and input sizes."""
    return (
        torch.stack([s.image for s in samples]),
        [s.masks for s in samples],
        [s.input_size for s in samples],
    )
