"""Training datasets: SA-1B-style folders and COCO instances JSON.

Every sample is one image resized so its longest side is the model's input size, normalised and
zero-padded to a square (what the model's ``preprocess`` does), with up to ``masks_per_image`` of
its masks in the same padded frame, so one encoder pass serves several masks.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from segany.errors import InputError
from segany.models import PIXEL_MEAN, PIXEL_STD


@dataclass
class Sample:
    """One training image: ``image`` 3×S×S normalised + padded, ``masks`` M×S×S bool,
    ``input_size`` (h, w) of the resized image inside the padded square."""

    image: torch.Tensor
    masks: torch.Tensor
    input_size: tuple[int, int]


def preprocess_shape(h: int, w: int, long_side: int) -> tuple[int, int]:
    """(h, w) after resizing the longest side to ``long_side`` (the official rounding)."""
    scale = long_side / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def prepare(
    image: np.ndarray,
    masks: list[np.ndarray],
    size: int,
    flip: bool = False,
    pixel_mean: tuple[float, float, float] = PIXEL_MEAN,
    pixel_std: tuple[float, float, float] = PIXEL_STD,
) -> Sample:
    """Resize ``image`` H×W×3 uint8 and its ``masks`` (each H×W bool) into a padded S×S frame."""
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
    return Sample(out, mt, (h, w))


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

    def get(self, index: int, rng: np.random.Generator | None = None) -> Sample:
        """Sample ``index``; ``rng`` picks which masks and whether to flip (None: first ones)."""
        image, masks = self.load(index)
        if rng is not None and len(masks) > self.masks_per_image:
            keep = rng.choice(len(masks), self.masks_per_image, replace=False)
            masks = [masks[k] for k in sorted(keep)]
        else:
            masks = masks[: self.masks_per_image]
        flip = bool(self.flip and rng is not None and rng.random() < 0.5)
        s = prepare(image, masks, self.image_size, flip, self.pixel_mean, self.pixel_std)
        keep_t = s.masks.flatten(1).sum(1) >= self.min_mask_area
        return Sample(s.image, s.masks[keep_t], s.input_size)


def _read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f"cannot read image {path}")
    return np.ascontiguousarray(bgr[..., ::-1])


class SA1BDataset(MaskDataset):
    """A folder of ``name.jpg`` + ``name.json`` pairs in the SA-1B annotation format."""

    def __init__(self, root: str | Path, image_size: int, **kwargs) -> None:
        super().__init__(image_size, **kwargs)
        self.root = Path(root)
        jsons = sorted(p for p in self.root.glob("*.json") if p.name != "synth.json")
        self.items = [p for p in jsons if p.with_suffix(".jpg").exists() or _image_of(p)]
        if not self.items:
            raise InputError(f"no SA-1B image/JSON pairs found in {self.root}")

    def load(self, index: int) -> tuple[np.ndarray, list[np.ndarray]]:
        from segany.masks import decode_rle

        rec = json.loads(self.items[index].read_text())
        image = _read_rgb(self.root / rec["image"]["file_name"])
        masks = [decode_rle(a["segmentation"]) for a in rec["annotations"]]
        return image, masks


def _image_of(json_path: Path) -> bool:
    try:
        name = json.loads(json_path.read_text())["image"]["file_name"]
    except (KeyError, ValueError):
        return False
    return (json_path.parent / name).exists()


class COCODataset(MaskDataset):
    """COCO instances JSON (polygons or RLE); crowd annotations are skipped."""

    def __init__(self, annotations: str | Path, images: str | Path, image_size: int, **kw) -> None:
        super().__init__(image_size, **kw)
        data = json.loads(Path(annotations).read_text())
        self.images_dir = Path(images)
        by_image: dict[int, list[dict]] = {}
        for a in data.get("annotations", []):
            if not a.get("iscrowd", 0):
                by_image.setdefault(a["image_id"], []).append(a)
        self.items = [im for im in data.get("images", []) if by_image.get(im["id"])]
        self._anns = by_image
        if not self.items:
            raise InputError(f"no annotated images in {annotations}")

    def load(self, index: int) -> tuple[np.ndarray, list[np.ndarray]]:
        from pycocotools import mask as coco_mask

        im = self.items[index]
        image = _read_rgb(self.images_dir / im["file_name"])
        h, w = image.shape[:2]
        masks = []
        for a in self._anns[im["id"]]:
            seg = a["segmentation"]
            if isinstance(seg, list):  # polygons -> one merged RLE
                rle = coco_mask.merge(coco_mask.frPyObjects(seg, h, w))
            elif isinstance(seg.get("counts"), list):  # uncompressed RLE
                rle = coco_mask.frPyObjects(seg, h, w)
            else:
                rle = seg
            masks.append(coco_mask.decode(rle).astype(bool))
        return image, masks


def open_dataset(spec: str | Path, image_size: int, **kwargs) -> MaskDataset:
    """A dataset from a path: an SA-1B folder, or ``annotations.json:images_dir`` for COCO."""
    text = str(spec)
    if text.endswith(".json") or ".json:" in text:
        ann, _, images = text.partition(".json")
        ann += ".json"
        images = images.lstrip(":") or str(Path(ann).parent)
        return COCODataset(ann, images, image_size, **kwargs)
    return SA1BDataset(spec, image_size, **kwargs)


def collate(samples: list[Sample]) -> tuple[torch.Tensor, list[torch.Tensor], list]:
    """Images B×3×S×S, per-image masks (M_i×S×S bool) and input sizes."""
    return (
        torch.stack([s.image for s in samples]),
        [s.masks for s in samples],
        [s.input_size for s in samples],
    )
