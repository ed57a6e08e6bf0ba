"""Resize-longest-side transforms for images, points and boxes.

Conventions: images are H×W×C uint8 arrays (numpy) or B×C×H×W tensors; coordinates are XY
pixels; boxes are XYXY. ``original_size`` is (H, W) of the image the coordinates refer to.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F


def preprocess_shape(h: int, w: int, long_side: int) -> tuple[int, int]:
    """(h, w) after scaling the longest side to ``long_side``, rounded half up (the official
    rounding). The one definition: the predictor, training data and the transforms use it.
    At least 1 pixel per side, so very thin images (aspect ratio above ~2·long_side : 1) work."""
    scale = long_side * 1.0 / max(h, w)
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))


class ResizeLongestSide:
    """Scale so the longest side equals ``target_length``, keeping the aspect ratio."""

    def __init__(self, target_length: int) -> None:
        self.target_length = target_length

    @staticmethod
    def get_preprocess_shape(oldh: int, oldw: int, long_side_length: int) -> tuple[int, int]:
        """``preprocess_shape`` under the official method name."""
        return preprocess_shape(oldh, oldw, long_side_length)

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """H×W×3 uint8 -> h×w×3 uint8 (bilinear, through PIL like the official predictor)."""
        h, w = self.get_preprocess_shape(image.shape[0], image.shape[1], self.target_length)
        return np.array(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR))

    def apply_coords(self, coords: np.ndarray, original_size: tuple[int, ...]) -> np.ndarray:
        """...×2 XY in the original image -> ...×2 XY in the resized image (float64)."""
        old_h, old_w = original_size
        new_h, new_w = self.get_preprocess_shape(old_h, old_w, self.target_length)
        out = np.array(coords, dtype=np.float64, copy=True)
        out[..., 0] *= new_w / old_w
        out[..., 1] *= new_h / old_h
        return out

    def apply_boxes(self, boxes: np.ndarray, original_size: tuple[int, ...]) -> np.ndarray:
        """B×4 (or 4) XYXY -> B×4 XYXY in the resized image."""
        return self.apply_coords(np.asarray(boxes).reshape(-1, 2, 2), original_size).reshape(-1, 4)

    def apply_image_torch(self, image: torch.Tensor) -> torch.Tensor:
        """B×C×H×W float -> B×C×h×w (bilinear with antialiasing); the official method name, for
        code written against ``segment_anything`` (sizes from H×W, see the README)."""
        h, w = self.get_preprocess_shape(image.shape[2], image.shape[3], self.target_length)
        return F.interpolate(image, (h, w), mode="bilinear", align_corners=False, antialias=True)

    def apply_coords_torch(
        self, coords: torch.Tensor, original_size: tuple[int, ...]
    ) -> torch.Tensor:
        """...×2 XY tensor in the original image -> float tensor in the resized image."""
        old_h, old_w = original_size
        new_h, new_w = self.get_preprocess_shape(old_h, old_w, self.target_length)
        out = coords.to(torch.float32).clone()
        out[..., 0] = out[..., 0] * (new_w / old_w)
        out[..., 1] = out[..., 1] * (new_h / old_h)
        return out

    def apply_boxes_torch(
        self, boxes: torch.Tensor, original_size: tuple[int, ...]
    ) -> torch.Tensor:
        """B×4 XYXY tensor -> B×4 in the resized image."""
        return self.apply_coords_torch(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)


class ResizeSquare(ResizeLongestSide):
    """SAM 2's geometry: the image is stretched to ``target_length`` × ``target_length`` (its
    aspect ratio is not kept), so X scales by S/W and Y by S/H. Coordinates are computed in
    float32 in the official order (divide by the side, then multiply by S)."""

    @staticmethod
    def get_preprocess_shape(oldh: int, oldw: int, long_side_length: int) -> tuple[int, int]:
        return long_side_length, long_side_length

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """H×W×3 uint8 -> S×S×3 uint8 (bilinear through PIL; SAM 2's own predictor resizes the
        float image with antialiasing instead: ``Sam2.prepare_image``)."""
        s = self.target_length
        return np.array(Image.fromarray(image).resize((s, s), Image.Resampling.BILINEAR))

    def apply_coords(self, coords: np.ndarray, original_size: tuple[int, ...]) -> np.ndarray:
        """...×2 XY in the original image -> ...×2 XY in the S×S frame (float32 values)."""
        old_h, old_w = original_size
        out = np.array(coords, dtype=np.float32, copy=True)
        out[..., 0] = out[..., 0] / np.float32(old_w)
        out[..., 1] = out[..., 1] / np.float32(old_h)
        return out * np.float32(self.target_length)

    def apply_image_torch(self, image: torch.Tensor) -> torch.Tensor:
        s = self.target_length
        return F.interpolate(image, (s, s), mode="bilinear", align_corners=False, antialias=True)

    def apply_coords_torch(
        self, coords: torch.Tensor, original_size: tuple[int, ...]
    ) -> torch.Tensor:
        old_h, old_w = original_size
        out = coords.to(torch.float32).clone()
        out[..., 0] = out[..., 0] / old_w
        out[..., 1] = out[..., 1] / old_h
        return out * self.target_length
