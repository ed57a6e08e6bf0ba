"""The official ``segment_anything.utils.amg`` helpers, over ``segany.masks``.

Same names, arguments and return values: uncompressed RLE dicts (``{"size": [H, W],
"counts": [run lengths]}``, column-major, starting with a run of zeros), XYXY boxes, XYWH where
the name says so. ``MaskData`` is the official generator's column store of per-mask values.
"""

from __future__ import annotations

import copy
from collections.abc import Generator, ItemsView
from typing import Any

import numpy as np
import torch

from segany import masks as M
from segany.errors import InputError
from segany.masks import (
    batched_mask_to_box,
    box_xyxy_to_xywh,
    build_all_layer_point_grids,
    build_point_grid,
    generate_crop_boxes,
    is_box_near_crop_edge,
    remove_small_regions,
    uncrop_boxes_xyxy,
    uncrop_masks,
    uncrop_points,
)

__all__ = [
    "MaskData",
    "area_from_rle",
    "batch_iterator",
    "batched_mask_to_box",
    "box_xyxy_to_xywh",
    "build_all_layer_point_grids",
    "build_point_grid",
    "calculate_stability_score",
    "coco_encode_rle",
    "generate_crop_boxes",
    "is_box_near_crop_edge",
    "mask_to_rle_pytorch",
    "remove_small_regions",
    "rle_to_mask",
    "uncrop_boxes_xyxy",
    "uncrop_masks",
    "uncrop_points",
]

_COLUMN_TYPES = (list, np.ndarray, torch.Tensor)


class MaskData:
    """Named columns of equal length (lists, numpy arrays or tensors) filtered and
    concatenated together, as the official generator keeps its per-mask values."""

    def __init__(self, **kwargs: Any) -> None:
        self._stats: dict[str, Any] = {}
        for key, value in kwargs.items():
            self[key] = value

    def __setitem__(self, key: str, item: Any) -> None:
        if item is not None and not isinstance(item, _COLUMN_TYPES):
            raise InputError(
                f"MaskData column {key!r} must be a list, numpy array or tensor, "
                f"got {type(item).__name__}"
            )
        self._stats[key] = item

    def __delitem__(self, key: str) -> None:
        del self._stats[key]

    def __getitem__(self, key: str) -> Any:
        return self._stats[key]

    def items(self) -> ItemsView[str, Any]:
        return self._stats.items()

    def filter(self, keep: torch.Tensor) -> None:
        """Keep the rows selected by ``keep`` (a bool mask or indices) in every column."""
        keep = torch.as_tensor(keep)
        for key, value in self._stats.items():
            if value is None:
                continue
            if isinstance(value, torch.Tensor):
                self._stats[key] = value[keep.to(value.device)]
            elif isinstance(value, np.ndarray):
                self._stats[key] = value[keep.detach().cpu().numpy()]
            elif keep.dtype == torch.bool:
                self._stats[key] = [v for v, k in zip(value, keep.tolist(), strict=True) if k]
            else:
                self._stats[key] = [value[i] for i in keep.tolist()]

    def cat(self, new_stats: MaskData) -> None:
        """Append the rows of ``new_stats`` to every column (columns it adds are copied)."""
        for key, value in new_stats.items():
            mine = self._stats.get(key)
            if mine is None:
                self._stats[key] = copy.deepcopy(value)
            elif isinstance(mine, torch.Tensor):
                self._stats[key] = torch.cat([mine, value])
            elif isinstance(mine, np.ndarray):
                self._stats[key] = np.concatenate([mine, value])
            else:
                self._stats[key] = mine + copy.deepcopy(value)

    def to_numpy(self) -> None:
        """Turn every tensor column into a numpy array (on the CPU)."""
        for key, value in self._stats.items():
            if isinstance(value, torch.Tensor):
                self._stats[key] = value.detach().cpu().numpy()


def batch_iterator(batch_size: int, *args: Any) -> Generator[list[Any], None, None]:
    """Yield ``[a[i:i+batch_size] for a in args]`` over sequences of one length."""
    if not args or any(len(a) != len(args[0]) for a in args):
        raise InputError("batch_iterator needs one or more sequences of the same length")
    for start in range(0, len(args[0]), batch_size):
        yield [a[start : start + batch_size] for a in args]


def mask_to_rle_pytorch(tensor: torch.Tensor) -> list[dict[str, Any]]:
    """B×H×W bool masks -> uncompressed RLEs."""
    return M.mask_to_uncompressed_rle(tensor)


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """An uncompressed RLE -> H×W bool mask."""
    return M.uncompressed_rle_to_mask(rle)


def area_from_rle(rle: dict[str, Any]) -> int:
    return M.rle_area(rle)


def calculate_stability_score(
    masks: torch.Tensor, mask_threshold: float, threshold_offset: float
) -> torch.Tensor:
    """...×H×W logits -> ... IoU of the masks thresholded at ``mask_threshold ± offset``."""
    return M.stability_score(masks, mask_threshold, threshold_offset)


def coco_encode_rle(uncompressed_rle: dict[str, Any]) -> dict[str, Any]:
    """An uncompressed RLE -> COCO RLE ``{"size": [H, W], "counts": str}``."""
    return M.encode_rle(M.decode_rle(uncompressed_rle))
