"""A small generated evaluation dataset and hand-made predictors for the evaluation tests.

Scenes are noisy images with non-overlapping shapes (rectangles, disks, a ring, a triangle), so
the same objects can be written as COCO JSON (RLE, polygons, a crowd region), SA-1B folders and
instance label maps.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from segany.config import DecoderConfig, PromptConfig
from segany.modeling.vit import ViTConfig
from segany.models import SamConfig, build_sam

# Narrower than helpers.SMALL (prompt width 32 instead of 256): the protocols make hundreds of
# decoder calls, and nothing in them may assume the official 256-wide, 256×256-logit sizes.
TINY = SamConfig(
    "eval-tiny",
    ViTConfig(32, 2, 2, (1,), image_size=128, patch_size=16, window_size=4),
    prompt=PromptConfig(embed_dim=32),
    decoder=DecoderConfig(num_heads=2, mlp_dim=64, iou_head_hidden_dim=32),
)


def tiny_model():
    """TINY with every parameter perturbed by a seeded generator; this seed and scale give
    mixed positive/negative corrective clicks and a top-scoring mask that is not always the
    best of the three."""
    from helpers import perturb_

    with torch.random.fork_rng():  # the initial weights come from the global generator
        torch.manual_seed(0)
        model = build_sam(TINY)
    return perturb_(model, seed=0, scale=1.0).eval()


def make_scenes(n: int = 3, size: tuple[int, int] = (72, 96), seed: int = 0):
    """n (image H×W×3 uint8, [object masks H×W bool]) pairs."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    scenes = []
    for _ in range(n):
        image = rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8)
        masks = []
        # Four cells, one shape each, so shapes never overlap.
        for cell, kind in enumerate(rng.permutation(["rect", "disk", "ring", "tri"])):
            cy, cx = (cell // 2) * h // 2 + h // 4, (cell % 2) * w // 2 + w // 4
            r = int(rng.integers(8, min(h, w) // 4 - 1))
            if kind == "rect":
                m = (abs(yy - cy) <= r - 2) & (abs(xx - cx) <= r)
            elif kind == "disk":
                m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            elif kind == "ring":
                d2 = (yy - cy) ** 2 + (xx - cx) ** 2
                m = (d2 <= r * r) & (d2 >= (r - 4) ** 2)
            else:
                tri = np.array([[cx - r, cy + r - 1], [cx + r, cy + r - 1], [cx, cy - r]], np.int32)
                m = cv2.fillPoly(np.zeros((h, w), np.uint8), [tri], 1).astype(bool)
            image[m] = rng.integers(80, 255, size=3, dtype=np.uint8)
            masks.append(m)
        scenes.append((image, masks))
    return scenes


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode()}


def write_images(folder: Path, scenes, suffix: str = ".png") -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, (image, _) in enumerate(scenes):
        names.append(f"img_{i}{suffix}")
        Image.fromarray(image).save(folder / names[-1])
    return names


def write_coco(root: Path, scenes, *, polygons: bool = True, crowd: bool = True) -> Path:
    """root/images/*.png + root/annotations.json. The rectangle of each image is written as a
    polygon (when `polygons`), the rest as RLE; the first image gets a crowd region."""
    names = write_images(root / "images", scenes)
    images, anns = [], []
    for i, ((image, masks), name) in enumerate(zip(scenes, names, strict=True)):
        h, w = image.shape[:2]
        images.append({"id": 100 + i, "file_name": name, "height": h, "width": w})
        for mask in masks:
            ys, xs = np.nonzero(mask)
            x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            seg: object = _rle(mask)
            if polygons and mask.sum() == (x1 - x0) * (y1 - y0):  # a rectangle
                seg = [[float(v) for v in (x0, y0, x1, y0, x1, y1, x0, y1)]]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": 100 + i,
                    "category_id": 1,
                    "segmentation": seg,
                    "area": int(mask.sum()),
                    "iscrowd": 0,
                    "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                }
            )
        if crowd and i == 0:
            m = np.zeros((h, w), bool)
            m[:4, :8] = True
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": 100 + i,
                    "category_id": 1,
                    "segmentation": {"size": [h, w], "counts": _uncompressed(m)},
                    "area": int(m.sum()),
                    "iscrowd": 1,
                    "bbox": [0.0, 0.0, 8.0, 4.0],
                }
            )
    data = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "shape"}]}
    path = root / "annotations.json"
    path.write_text(json.dumps(data))
    return path


def _uncompressed(mask: np.ndarray) -> list[int]:
    """COCO uncompressed RLE counts: column-major runs, starting with a run of zeros."""
    counts, current, run = [], False, 0
    for v in mask.T.ravel():
        if v == current:
            run += 1
        else:
            counts.append(run)
            current, run = v, 1
    return counts + [run]


def write_sa1b(folder: Path, scenes, suffix: str = ".jpg") -> Path:
    names = write_images(folder, scenes, suffix)
    for i, ((image, masks), name) in enumerate(zip(scenes, names, strict=True)):
        h, w = image.shape[:2]
        doc = {
            "image": {"image_id": i, "width": w, "height": h, "file_name": name},
            "annotations": [
                {"id": k, "segmentation": _rle(m), "area": int(m.sum())}
                for k, m in enumerate(masks)
            ],
        }
        (folder / f"img_{i}.json").write_text(json.dumps(doc))
    return folder


def write_label_maps(root: Path, scenes) -> Path:
    write_images(root / "images", scenes)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for i, (image, masks) in enumerate(scenes):
        labels = np.zeros(image.shape[:2], np.uint16)
        for k, m in enumerate(masks):
            labels[m] = k + 1
        cv2.imwrite(str(root / "labels" / f"img_{i}.png"), labels)  # 16-bit grey PNG
    return root


def find_scene(scenes, image):
    """The masks of the scene whose image is nearest (JPEG files do not read back exactly)."""
    image = np.asarray(image, dtype=np.float32)
    diffs = [
        np.abs(image - img).mean() if img.shape == image.shape else np.inf for img, _ in scenes
    ]
    return scenes[int(np.argmin(diffs))][1]


class OraclePredictor:
    """Answers every prompt with the ground-truth object it points at (index 0, top score),
    plus empty masks: mIoU 1, oracle 1, NoC 1. With `wrong_top`, the right mask gets the
    lowest score instead (top-scoring mIoU 0, oracle 1)."""

    def __init__(self, scenes, wrong_top: bool = False, low_res: int = 16) -> None:
        self.scenes = scenes
        self.wrong_top = wrong_top
        self.low_res = low_res
        self.calls: list[dict] = []

    def set_image(self, image):
        self.masks = find_scene(self.scenes, image)

    def predict(
        self, point_coords=None, point_labels=None, box=None, mask_input=None, multimask_output=True
    ):
        self.calls.append(
            {
                "points": point_coords,
                "labels": point_labels,
                "box": box,
                "mask_input": mask_input,
                "multimask": multimask_output,
            }
        )
        if box is not None:
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            target = max(self.masks, key=lambda m: m[y0 : y1 + 1, x0 : x1 + 1].sum() / m.sum())
        else:
            x, y = (int(v) for v in point_coords[0])
            target = next(m for m in self.masks if m[y, x])
        n = 3 if multimask_output else 1
        masks = np.zeros((n, *target.shape), bool)
        scores = np.linspace(0.9, 0.5, n)
        masks[n - 1 if self.wrong_top else 0] = target
        logits = np.zeros((n, self.low_res, self.low_res), np.float32)
        return masks, scores, logits


class EmptyPredictor:
    """Always the empty mask."""

    def set_image(self, image):
        self.shape = np.asarray(image).shape[:2]

    def predict(
        self, point_coords=None, point_labels=None, box=None, mask_input=None, multimask_output=True
    ):
        n = 3 if multimask_output else 1
        return np.zeros((n, *self.shape), bool), np.full(n, 0.5), np.zeros((n, 8, 8), np.float32)
