"""Building blocks of the synthetic scenes: fills, extra shape kinds, camera effects.

Real photos have flat and gradient regions as well as textured ones, thin structures, small
objects, soft and hard edges, holes, and JPEG artefacts; each helper here adds one of those to
`synth.make_scene`. Images are float32 ``H×W×3`` in [0, 255] until the scene is finished;
masks are ``H×W`` bool.
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def flat_fill(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """One colour with a little grain: ``h×w×3`` float32."""
    colour = rng.uniform(0, 255, 3).astype(np.float32)
    grain = rng.normal(0, rng.uniform(0, 3), (h, w, 1)).astype(np.float32)
    return np.broadcast_to(colour, (h, w, 3)) + grain


def gradient_fill(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A linear (or, one time in three, radial) blend between two colours: ``h×w×3``."""
    a, b = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if rng.random() < 1 / 3:
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        t = np.hypot(yy - cy, xx - cx) / max(h, w)
    else:
        angle = rng.uniform(0, 2 * math.pi)
        t = (math.cos(angle) * xx + math.sin(angle) * yy) / max(h, w)
        t -= t.min()
    t = np.clip(t / max(float(t.max()), 1e-6), 0, 1)[..., None]
    return a * (1 - t) + b * t


def stroke_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A thin curved stroke (a wire, a branch, a line of text): 1–6 px wide, ``h×w`` bool."""
    canvas = np.zeros((h, w), np.uint8)
    n = int(rng.integers(3, 7))
    start = rng.uniform([0, 0], [w, h])
    steps = rng.normal(0, 0.25 * min(h, w), (n - 1, 2)).cumsum(0)
    pts = np.vstack([start, start + steps])
    # Smooth the polyline through a few Chaikin passes so it bends like a curve.
    for _ in range(3):
        q = 0.75 * pts[:-1] + 0.25 * pts[1:]
        r = 0.25 * pts[:-1] + 0.75 * pts[1:]
        pts = np.vstack([pts[:1], np.stack([q, r], 1).reshape(-1, 2), pts[-1:]])
    thickness = int(rng.integers(1, 7))
    poly = np.round(pts * 4).astype(np.int32)
    cv2.polylines(canvas, [poly], False, 1, thickness, cv2.LINE_8, 2)
    return canvas.astype(bool)


def punch_hole(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """The mask with an ellipse cut out of its interior (a ring, a handle): the background
    shows through the hole. Returns the mask unchanged when it is too thin to hold one."""
    dist = cv2.distanceTransform(np.pad(mask.astype(np.uint8), 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
    depth = float(dist.max())
    if depth < 6:
        return mask
    ys, xs = np.nonzero(dist >= depth * 0.8)
    k = int(rng.integers(len(ys)))
    hole = np.zeros(mask.shape, np.uint8)
    axes = (max(2, int(depth * rng.uniform(0.3, 0.7))), max(2, int(depth * rng.uniform(0.3, 0.7))))
    cv2.ellipse(hole, (int(xs[k]), int(ys[k])), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return mask & ~hole.astype(bool)


def inner_part(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray | None:
    """An ellipse well inside `mask` (a part of a whole: a label on a bottle, a window in a
    wall), or None when the mask is too small to hold one."""
    dist = cv2.distanceTransform(np.pad(mask.astype(np.uint8), 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
    depth = float(dist.max())
    if depth < 8:
        return None
    ys, xs = np.nonzero(dist >= depth * 0.6)
    k = int(rng.integers(len(ys)))
    part = np.zeros(mask.shape, np.uint8)
    a = max(3, int(depth * rng.uniform(0.35, 0.8)))
    b = max(3, int(a * rng.uniform(0.4, 1.0)))
    cv2.ellipse(part, (int(xs[k]), int(ys[k])), (a, b), float(rng.uniform(0, 180)), 0, 360, 1, -1)
    out = part.astype(bool) & mask
    return out if out.sum() >= 30 else None


def split_mask(rng: np.random.Generator, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cut a mask in two along a random line through its centroid: two touching objects."""
    ys, xs = np.nonzero(mask)
    cy, cx = ys.mean(), xs.mean()
    angle = rng.uniform(0, math.pi)
    yy, xx = np.mgrid[0 : mask.shape[0], 0 : mask.shape[1]]
    side = (xx - cx) * math.cos(angle) + (yy - cy) * math.sin(angle) > 0
    return mask & side, mask & ~side


def soft_alpha(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """Paint opacity ``h×w×1``: the hard mask, or (one time in three) blurred by 0.7–2.5 px so
    the edge is soft (defocus, fur); the mask itself stays the hard region (alpha ≥ 0.5)."""
    alpha = mask.astype(np.float32)
    if rng.random() < 1 / 3:
        alpha = np.asarray(cv2.GaussianBlur(alpha, (0, 0), rng.uniform(0.7, 2.5)), np.float32)
    return alpha[..., None]


def spotlight(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A multiplicative radial light (a lamp, a vignette): ``h×w×1`` between ~0.35 and ~1.3."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    r = np.hypot(yy - cy, xx - cx) / (max(h, w) * rng.uniform(0.4, 1.2))
    low, high = rng.uniform(0.35, 0.8), rng.uniform(1.0, 1.3)
    return (low + (high - low) * np.exp(-(r**2)))[..., None]


def camera(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Sensor and codec: exposure, gamma, noise, blur and JPEG re-encoding (quality 25–90)
    in varying amounts; float32 in, uint8 ``H×W×3`` out."""
    img = image * rng.uniform(0.7, 1.25)
    if rng.random() < 0.5:  # gamma: the same scene darker or washed out
        img = 255.0 * (np.clip(img, 0, 255) / 255.0) ** rng.uniform(0.6, 1.6)
    img = img + rng.normal(0, rng.uniform(0, 8), img.shape)
    if rng.random() < 0.5:
        img = np.asarray(cv2.GaussianBlur(img.astype(np.float32), (0, 0), rng.uniform(0.3, 0.9)))
    out = np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        quality = int(rng.integers(25, 91))
        bgr = np.ascontiguousarray(out[..., ::-1])  # OpenCV's codec expects BGR
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
        decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else None
        if decoded is not None:
            out = np.ascontiguousarray(decoded[..., ::-1])
    return out


def to_gray(image: np.ndarray) -> np.ndarray:
    """The luminance of an ``H×W×3`` uint8 image, repeated in three channels (uint8)."""
    gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    return np.repeat(gray[..., None], 3, axis=2)
