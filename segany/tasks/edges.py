"""Zero-shot edge maps, the paper's §7.2 recipe: prompt a regular grid of foreground points
(16×16, three masks each), drop redundant masks by box NMS, take the Sobel gradient of each
kept mask's unthresholded probability map, keep the strongest response per pixel, and thin it
by edge non-maximum suppression along the gradient's normal.

The probability maps are never all held at full size: a first pass keeps each mask's low-res
logits, box and predicted IoU; after NMS a second pass upscales the kept ones a few at a time.

``EdgeOptions(refine=True)`` (beyond the paper) first snaps each kept mask's probabilities to
the image's edges with ``segany.refine``'s guided filter, so a mask that spills a few pixels
over a hard edge puts its gradient on that edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from segany.errors import InputError
from segany.images import ImageLike, to_rgb_uint8
from segany.inference.predictor import Predictor
from segany.limits import prompts_per_call
from segany.masks import batched_mask_to_box, build_point_grid, nms
from segany.modeling.sam_upscale import upscale_logits

__all__ = ["EdgeOptions", "edge_map", "thin_edges"]


@dataclass(frozen=True)
class EdgeOptions:
    """The recipe's settings (the paper's: 16 points per side, box NMS at IoU 0.7)."""

    points_per_side: int = 16
    nms_thresh: float = 0.7
    points_per_batch: int = 64  # at most: fewer on a large image (segany.limits.prompts_per_call)
    thin: bool = True
    refine: bool = False  # snap each mask to the image's edges first (segany.refine)
    refine_radius: int | None = None  # px; None: segany.refine.default_radius

    def __post_init__(self) -> None:
        if not 1 <= self.points_per_side <= 256:
            raise InputError(f"points_per_side must be 1..256, got {self.points_per_side}")
        if not 0.0 < self.nms_thresh <= 1.0:
            raise InputError(f"nms_thresh must be in (0, 1], got {self.nms_thresh}")
        if self.points_per_batch < 1:
            raise InputError(f"points_per_batch must be >= 1, got {self.points_per_batch}")
        if self.refine_radius is not None and self.refine_radius < 1:
            raise InputError(f"refine_radius must be >= 1 px, got {self.refine_radius}")


@torch.inference_mode()
def edge_map(
    predictor: Predictor, image: ImageLike, options: EdgeOptions | None = None
) -> np.ndarray:
    """H×W float32 edge strength in [0, 1] for ``image`` (any form ``set_image`` takes)."""
    opt = options or EdgeOptions()
    rgb = to_rgb_uint8(image)
    h, w = rgb.shape[:2]
    predictor.set_image(rgb)
    assert predictor.input_size is not None  # set just above
    model = predictor.model
    points = build_point_grid(opt.points_per_side) * np.array([[w, h]])  # N×2 XY pixels
    # (on a large photo fewer points a call: each makes three full-size masks for its boxes)
    per_call = prompts_per_call(3, h, w, most=opt.points_per_batch)
    lows, boxes, scores = [], [], []
    for start in range(0, len(points), per_call):
        pts = points[start : start + per_call]
        coords = torch.as_tensor(predictor.transform.apply_coords(pts, (h, w)), dtype=torch.float)
        labels = torch.ones(len(pts), 1, dtype=torch.int)
        masks, iou, low = predictor.predict_torch(
            coords[:, None].to(predictor.device), labels.to(predictor.device), None, None, True
        )
        lows.append(low.flatten(0, 1).cpu())
        boxes.append(batched_mask_to_box(masks.flatten(0, 1)).float().cpu())
        scores.append(iou.flatten().float().cpu())
    low_all, box_all, score_all = torch.cat(lows), torch.cat(boxes), torch.cat(scores)
    nonempty = (box_all[:, 2] > box_all[:, 0]) | (box_all[:, 3] > box_all[:, 1])
    idx = torch.nonzero(nonempty)[:, 0]
    keep = idx[nms(box_all[idx], score_all[idx], opt.nms_thresh)]
    edges = np.zeros((h, w), np.float32)
    per_chunk = prompts_per_call(1, h, w, most=16)  # full-size float maps at a time
    for start in range(0, len(keep), per_chunk):
        chunk = low_all[keep[start : start + per_chunk]]
        logits = upscale_logits(chunk, predictor.input_size, (h, w), model.image_size)
        if opt.refine:  # C×H×W logits snapped to the image's edges
            from segany.refine import refine_logits

            logits = torch.from_numpy(refine_logits(rgb, logits.float().numpy(), opt.refine_radius))
        for prob in torch.sigmoid(logits).numpy():
            gx = cv2.Sobel(prob, cv2.CV_32F, 1, 0, ksize=3)
            gy = cv2.Sobel(prob, cv2.CV_32F, 0, 1, ksize=3)
            # (cv2.magnitude: sqrt(gx² + gy²) as np.hypot, ~10x faster on large images)
            np.maximum(edges, cv2.magnitude(gx, gy), out=edges)
    top = float(edges.max())
    if top > 0:
        edges /= top
    return thin_edges(edges) if opt.thin else edges


def thin_edges(edges: np.ndarray) -> np.ndarray:
    """Edge non-maximum suppression: a pixel is kept when it is stronger than its neighbour
    ahead and at least as strong as the one behind, across the edge (the direction of the
    smoothed map's gradient), else zeroed."""
    if edges.ndim != 2:
        raise InputError(f"edges must be H×W, got shape {edges.shape}")
    e = edges.astype(np.float32, copy=False)
    smooth = cv2.GaussianBlur(e, (0, 0), 1.0)
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)
    angle = np.mod(np.arctan2(gy, gx), np.pi)  # the normal to the edge, in [0, pi)
    # the two neighbours along the normal, quantised to the 8-neighbourhood
    sector = np.round(angle / (np.pi / 4)).astype(np.int64) % 4
    offsets = [(0, 1), (1, 1), (1, 0), (1, -1)]  # (dy, dx) for 0°, 45°, 90°, 135°
    padded = np.pad(e, 1)
    h, w = e.shape
    keep = np.zeros((h, w), bool)
    for s, (dy, dx) in enumerate(offsets):
        ahead = padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
        behind = padded[1 - dy : 1 - dy + h, 1 - dx : 1 - dx + w]
        # strict on one side: a two-pixel plateau (a step's Sobel response) keeps one pixel
        keep |= (sector == s) & (e > ahead) & (e >= behind)
    return np.where(keep, e, 0.0).astype(np.float32)
