"""Synthetic segmentation scenes: overlapping shapes filled with textures cut from real photos.

Each scene is a textured background with a stack of polygons, ellipses and smooth blobs painted
back to front; every shape's *visible* region (what later shapes leave of it) is one mask. Fills
are crops of the photographs scikit-image ships, recoloured, rescaled and shaded, so edges must be
found from texture and colour rather than from flat fills. Scenes are written in SA-1B form
(``name.jpg`` + ``name.json`` with COCO RLE masks) so the trainer reads them like any dataset.

Besides textured fills there are flat and gradient ones, thin strokes, small objects, holes,
parts nested in wholes (both are masks), objects cut in two that touch, soft edges, spotlights,
gamma, noise and JPEG re-encoding (`synth_parts`). Textures also come from matplotlib's two
sample photos.

``skimage.data.coins`` is never used as a texture: it is kept for the real-photo evaluation, as
are scikit-learn's two sample photos (china, flower: `segany.evaluate.realset`) and every other
scikit-image photo not listed in ``TEXTURE_SOURCES`` (reserved for an independent check).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from segany.errors import InputError, MissingExtraError
from segany.train import synth_parts as sp

# Photos (and a few textures) used as fills. Held out for evaluation: coins.
TEXTURE_SOURCES = (
    "astronaut",
    "brick",
    "camera",
    "chelsea",
    "coffee",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "retina",
    "rocket",
    "colorwheel",
    "cell",
    "clock",
    "page",
)
MATPLOTLIB_TEXTURES = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png")
HELD_OUT_SOURCES = ("coins",)


@dataclass(frozen=True)
class SynthConfig:
    """Knobs of the scene generator. Sizes are in pixels of the written image."""

    long_side: int = 256
    min_short_side: int = 192
    min_objects: int = 3
    max_objects: int = 10
    min_diameter: float = 0.1  # fraction of the short side
    max_diameter: float = 0.6
    min_area: int = 40  # visible pixels a mask needs to be kept
    jpeg_quality: int = 92
    # Share of each fill kind (the rest: photo textures) and of each extra shape kind.
    flat_prob: float = 0.25
    gradient_prob: float = 0.2
    stroke_prob: float = 0.12
    small_prob: float = 0.15
    hole_prob: float = 0.12
    part_prob: float = 0.15
    split_prob: float = 0.1
    # Share of scenes turned to grey (scans, microscopy, old photos). 0 by default: a scene then
    # draws no extra random number, so the scenes of every earlier seed stay what they were.
    gray_prob: float = 0.0


@lru_cache(maxsize=1)
def _textures() -> tuple[np.ndarray, ...]:
    try:
        import skimage.data as data
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise MissingExtraError("the synthetic data generator", "dev", "scikit-image") from err
    out = []
    for name in TEXTURE_SOURCES:
        img = np.asarray(getattr(data, name)())
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        out.append(np.ascontiguousarray(img[..., :3]).astype(np.uint8))
    out.extend(_matplotlib_photos())
    return tuple(out)


def _matplotlib_photos() -> list[np.ndarray]:
    try:
        import matplotlib.cbook as cbook
        from PIL import Image
    except ImportError as err:  # pragma: no cover - matplotlib is in the dev extra
        raise MissingExtraError("the synthetic data generator", "dev", "matplotlib") from err
    photos = []
    for name in MATPLOTLIB_TEXTURES:
        with Image.open(cbook.get_sample_data(name, asfileobj=False)) as im:
            photos.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
    return photos


def _fill(rng: np.random.Generator, h: int, w: int, cfg: SynthConfig) -> np.ndarray:
    """A flat, gradient or photo-texture fill, ``h×w×3`` float32."""
    u = rng.random()
    if u < cfg.flat_prob:
        return sp.flat_fill(rng, h, w)
    if u < cfg.flat_prob + cfg.gradient_prob:
        return sp.gradient_fill(rng, h, w)
    return _texture_patch(rng, h, w)


def _texture_patch(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A recoloured, rescaled crop of a random photo, ``h×w×3`` float32 in [0, 255]."""
    src = _textures()[rng.integers(len(_textures()))]
    scale = math.exp(rng.uniform(math.log(0.35), math.log(1.6)))
    ch, cw = max(4, int(h / scale)), max(4, int(w / scale))
    ch, cw = min(ch, src.shape[0]), min(cw, src.shape[1])
    y, x = rng.integers(0, src.shape[0] - ch + 1), rng.integers(0, src.shape[1] - cw + 1)
    crop = cv2.resize(src[y : y + ch, x : x + cw], (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    tex = crop.astype(np.float32)
    # Colour: a random channel mix plus a tint, so one photo yields many distinct fills.
    mix: np.ndarray = np.eye(3, dtype=np.float32) * rng.uniform(0.4, 1.0) + rng.uniform(
        -0.3, 0.6, (3, 3)
    )
    mix /= np.abs(mix).sum(axis=1, keepdims=True).clip(min=1e-3)
    tex = tex @ mix.T
    contrast = rng.uniform(0.5, 1.3)
    tex = (tex - tex.mean()) * contrast + rng.uniform(30, 225, 3).astype(np.float32)
    if rng.random() < 0.2:  # a near-flat fill now and then
        tex = tex * 0.25 + rng.uniform(0, 255, 3).astype(np.float32) * 0.75
    return tex


def _shape_mask(rng: np.random.Generator, h: int, w: int, cfg: SynthConfig) -> np.ndarray:
    """One random polygon, ellipse or smooth blob as an ``h×w`` bool mask (may cross borders)."""
    short = min(h, w)
    low, high = cfg.min_diameter, cfg.max_diameter
    if rng.random() < cfg.small_prob:  # a small object: 3-8 % of the short side
        low, high = 0.03, 0.08
    diameter = short * math.exp(rng.uniform(math.log(low), math.log(high)))
    r = diameter / 2
    cx, cy = rng.uniform(-0.1 * w, 1.1 * w), rng.uniform(-0.1 * h, 1.1 * h)
    canvas = np.zeros((h, w), np.uint8)
    kind = rng.integers(3)
    if kind == 0:  # polygon: convex-ish or star-like
        k = int(rng.integers(3, 9))
        ang = np.sort(rng.uniform(0, 2 * math.pi, k))
        rad = r * rng.uniform(0.45 if rng.random() < 0.3 else 0.8, 1.0, k)
        pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1)
        cv2.fillPoly(canvas, [np.round(pts * 4).astype(np.int32)], 1, cv2.LINE_8, shift=2)
    elif kind == 1:  # ellipse
        axes = (max(1, int(r)), max(1, int(r * rng.uniform(0.3, 1.0))))
        center = (int(round(cx)), int(round(cy)))
        cv2.ellipse(canvas, center, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    else:  # smooth blob: radius as a short Fourier series of the angle
        ang = np.linspace(0, 2 * math.pi, 96, endpoint=False)
        rad = np.ones_like(ang)
        for f in range(2, 6):
            rad += rng.uniform(0, 0.35 / f * 2) * np.cos(f * ang + rng.uniform(0, 2 * math.pi))
        rad = r * rad / rad.max()
        pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1)
        cv2.fillPoly(canvas, [np.round(pts * 4).astype(np.int32)], 1, cv2.LINE_8, shift=2)
    return canvas.astype(bool)


def _lighting(rng: np.random.Generator, h: int, w: int, strength: float) -> np.ndarray:
    """A smooth multiplicative light field ``h×w×1`` around 1."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = rng.uniform(0, 2 * math.pi)
    ramp = (np.cos(a) * xx / w + np.sin(a) * yy / h) - 0.5
    return (1.0 + strength * ramp)[..., None]


def make_scene(
    rng: np.random.Generator, cfg: SynthConfig | None = None
) -> tuple[np.ndarray, list[np.ndarray]]:
    """One scene: image ``H×W×3`` uint8 and its visible-object masks (each ``H×W`` bool).

    Shapes are painted back to front; a later shape hides what it covers of earlier ones,
    except a nested part, which leaves its whole intact (the whole and the part are both masks).
    """
    cfg = cfg or SynthConfig()
    long, short = cfg.long_side, int(rng.integers(cfg.min_short_side, cfg.long_side + 1))
    h, w = (long, short) if rng.random() < 0.5 else (short, long)
    image = _fill(rng, h, w, cfg) * _lighting(rng, h, w, rng.uniform(0, 0.6))
    visible: list[np.ndarray] = []

    def paint(m: np.ndarray, carve: bool = True) -> None:
        nonlocal image
        fill = _fill(rng, h, w, cfg) * _lighting(rng, h, w, rng.uniform(0, 0.8))
        alpha = sp.soft_alpha(rng, m)
        image = image * (1 - alpha) + fill * alpha
        if carve:
            for v in visible:
                v &= ~m
        visible.append(m.copy())

    for _ in range(int(rng.integers(cfg.min_objects, cfg.max_objects + 1))):
        if rng.random() < cfg.stroke_prob:
            m = sp.stroke_mask(rng, h, w)
        else:
            m = _shape_mask(rng, h, w, cfg)
            if rng.random() < cfg.hole_prob:
                m = sp.punch_hole(rng, m)
        if not m.any():
            continue
        if rng.random() < 0.3:  # a soft drop shadow under the new shape
            dx, dy = rng.integers(-6, 7, 2)
            rolled = np.roll(np.roll(m, dy, 0), dx, 1).astype(np.float32)
            shadow = cv2.GaussianBlur(rolled, (0, 0), 2.0)[..., None]
            image = image * (1 - 0.45 * shadow)
        if rng.random() < cfg.split_prob and m.sum() > 200:
            a, b = sp.split_mask(rng, m)
            paint(a)
            paint(b)
            continue
        paint(m)
        if rng.random() < cfg.part_prob:
            part = sp.inner_part(rng, m)
            if part is not None:
                for v in visible[:-1]:  # the whole (last entry) keeps the part
                    v &= ~part
                paint(part, carve=False)
    if rng.random() < 0.3:
        image = image * sp.spotlight(rng, h, w)
    out = sp.camera(rng, image)
    if cfg.gray_prob > 0 and rng.random() < cfg.gray_prob:
        out = sp.to_gray(out)
    masks = [v for v in visible if int(v.sum()) >= cfg.min_area]
    return out, masks


def iter_scenes(
    seed: int, count: int, cfg: SynthConfig | None = None
) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
    """``count`` scenes from one seed; scene ``i`` depends only on ``(seed, i)``."""
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        yield make_scene(rng, cfg)


def sa1b_record(index: int, file_name: str, image: np.ndarray, masks: list[np.ndarray]) -> dict:
    """The SA-1B JSON of one generated image whose objects are ``masks`` (h×w bool, each
    non-empty): the image entry and one annotation per mask (COCO RLE, XYWH box, a point inside,
    scores 1.0 as for ground truth). Shared by the scene generators (``synth_kinds`` too)."""
    from segany.masks import encode_rle

    h, w = image.shape[:2]
    anns = []
    for j, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        anns.append(
            {
                "id": index * 1000 + j,
                "segmentation": encode_rle(m),
                "area": int(m.sum()),
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "predicted_iou": 1.0,
                "point_coords": [[float(xs[len(xs) // 2]), float(ys[len(ys) // 2])]],
                "stability_score": 1.0,
                "crop_box": [0, 0, w, h],
            }
        )
    return {
        "image": {"image_id": index, "width": w, "height": h, "file_name": file_name},
        "annotations": anns,
    }


def write_sa1b(
    out_dir: str | Path,
    count: int,
    seed: int,
    cfg: SynthConfig | None = None,
    progress: bool = False,
) -> Path:
    """Write ``count`` scenes to ``out_dir`` as ``sa_<i>.jpg`` + ``sa_<i>.json``; return it."""
    if count < 1:
        raise InputError(f"count must be at least 1, got {count}")
    cfg = cfg or SynthConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scenes = iter_scenes(seed, count, cfg)
    if progress:
        from tqdm import tqdm

        scenes = tqdm(scenes, total=count, desc="synth", unit="img")
    for i, (image, masks) in enumerate(scenes):
        name = f"sa_{i:07d}"
        bgr = np.ascontiguousarray(image[..., ::-1])
        cv2.imwrite(str(out / f"{name}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality])
        rec = sa1b_record(i, f"{name}.jpg", image, masks)
        (out / f"{name}.json").write_text(json.dumps(rec))
    (out / "synth.json").write_text(
        json.dumps({"seed": seed, "count": count, "config": cfg.__dict__}, indent=1)
    )
    return out
