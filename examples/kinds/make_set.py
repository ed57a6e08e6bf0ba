"""Build the per-kind evaluation set (issue 38): kinds of images, each with model-free labels.

Six kinds, one folder each (``OUT/KIND/images/NAME.png`` and ``OUT/KIND/labels/NAME.png``,
instance label maps, 0 = background: the label-map layout ``segany eval`` reads):

- ``silhouettes``: flat-filled shapes (ellipses, rotated boxes, stars, polygons) in one flat
  colour on a flat background, dark on light and light on dark (every other image).
- ``text``: printed glyphs (upper-case letters and digits, matplotlib's bundled DejaVu fonts),
  each glyph one object, dark on a light page or light on a dark one.
- ``tiles``: line art and tilings: a Voronoi diagram's cells drawn as dark lines, left white
  (line art) or filled with flat colours (tiling); each cell one object.
- ``phantoms``: grey medical-style phantoms: a body ellipse with inner ellipses a few grey
  levels apart, blurred and noisy; each inner ellipse one object (the body is not an object:
  it holds the others, and a label map cannot nest them).
- ``lowcontrast``: textured scenes: shapes filled with one smoothed-noise texture on another,
  their mean brightness a few levels apart.
- ``photos``: the real set's photos and labels (``examples/eval``: coins, china, flower),
  copied; scikit-image's other photos stay reserved for the independent check.

Every synthetic object is drawn into its own mask first, and the pixels of a drawn image are
a function of those masks, so the labels are exact by construction; objects never overlap
(each is placed only where a margin around it is free). Everything follows from ``--seed``.
``--part reserved`` builds the same kinds from another seed (photos excluded): kept for a
later check, never measured or used for choosing. Run from the repository root:

    python examples/kinds/make_set.py out/kinds
    for k in silhouettes text tiles phantoms lowcontrast photos; do
        segany eval out/kinds/$k --protocol all --baseline all; done
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage as ndi

HERE = Path(__file__).resolve().parent
KINDS = ("silhouettes", "text", "tiles", "phantoms", "lowcontrast", "photos")
RESERVED_OFFSET = 1_000_003  # the reserved part's seed is --seed plus this

Scene = tuple[np.ndarray, list[np.ndarray]]  # (H×W×3 uint8 image, disjoint H×W bool masks)


def _place(rng: np.random.Generator, taken: np.ndarray, mask: np.ndarray, margin: int) -> bool:
    """Accept ``mask`` if it is non-empty and ``margin`` px around it are free; mark it."""
    if not mask.any():
        return False
    grown = cv2.dilate(mask.astype(np.uint8), np.ones((2 * margin + 1,) * 2, np.uint8)) > 0
    if (grown & taken).any():
        return False
    taken |= mask
    return True


def _shape(rng: np.random.Generator, size: int) -> np.ndarray:
    """One random filled shape (ellipse, rotated box, star or polygon) as an H×W bool mask."""
    m = np.zeros((size, size), np.uint8)
    r = rng.uniform(0.05, 0.14) * size
    cx, cy = rng.uniform(r, size - r, 2)
    kind = rng.integers(4)
    if kind == 0:
        axes = (int(r), int(r * rng.uniform(0.4, 1.0)))
        cv2.ellipse(m, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    elif kind == 1:
        box = ((float(cx), float(cy)), (2 * r, 2 * r * rng.uniform(0.3, 1.0)), rng.uniform(0, 90))
        cv2.fillPoly(m, [cv2.boxPoints(box).astype(np.int32)], 1)
    else:
        n = int(rng.integers(5, 9))
        t = np.sort(rng.uniform(0, 2 * np.pi, n)) if kind == 3 else np.linspace(0, 2 * np.pi, n)
        if kind == 2:  # a star: alternating outer and inner radii
            t = np.linspace(0, 2 * np.pi, 2 * n, endpoint=False) + rng.uniform(0, np.pi)
            rad = np.where(np.arange(2 * n) % 2 == 0, r, r * rng.uniform(0.4, 0.6))
        else:
            rad = r * rng.uniform(0.5, 1.0, n)
        pts = np.stack([cx + rad * np.cos(t), cy + rad * np.sin(t)], 1).astype(np.int32)
        cv2.fillPoly(m, [pts], 1)
    return m > 0


def _shapes(rng: np.random.Generator, size: int, count: int, margin: int) -> list[np.ndarray]:
    taken = np.zeros((size, size), bool)
    out: list[np.ndarray] = []
    for _ in range(count * 20):
        if len(out) == count:
            break
        m = _shape(rng, size)
        if m.sum() >= 60 and _place(rng, taken, m, margin):
            out.append(m)
    return out


def silhouettes(rng: np.random.Generator, size: int, index: int) -> Scene:
    masks = _shapes(rng, size, 9, 4)
    light, dark = rng.integers(190, 250, 3), rng.integers(5, 70, 3)
    bg, fg = (light, dark) if index % 2 == 0 else (dark, light)
    img = np.empty((size, size, 3), np.uint8)
    img[:] = bg
    for m in masks:
        img[m] = fg
    return img, masks


def _font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


GLYPHS = "ABCDEFGHKLMNPRSTUVWXYZ0123456789"  # one connected piece each in DejaVu


def text(rng: np.random.Generator, size: int, index: int) -> Scene:
    fonts = sorted(p for p in _font_dir().glob("DejaVu*.ttf") if "Display" not in p.name)
    paper, ink = (245, 20) if index % 2 == 0 else (25, 235)
    grey = np.full((size, size), float(paper))
    taken = np.zeros((size, size), bool)
    masks: list[np.ndarray] = []
    for _ in range(200):
        if len(masks) == 12:
            break
        font = ImageFont.truetype(
            str(fonts[rng.integers(len(fonts))]), int(size * rng.uniform(0.08, 0.16))
        )
        layer = Image.new("L", (size, size), 0)
        xy = (float(rng.uniform(0, size * 0.85)), float(rng.uniform(0, size * 0.85)))
        ImageDraw.Draw(layer).text(xy, GLYPHS[rng.integers(len(GLYPHS))], fill=255, font=font)
        cover = np.asarray(layer, np.float64) / 255.0
        m = cover >= 0.5
        edge = (cover > 0) & ~m
        if m.sum() < 40 or edge[[0, -1], :].any() or edge[:, [0, -1]].any():
            continue
        if ndi.label(m)[1] != 1 or not _place(rng, taken, cover > 0, 3):
            continue
        masks.append(m)
        grey = grey * (1 - cover) + ink * cover  # anti-aliased edges; the label is coverage >= 1/2
    img = np.repeat(grey.round().astype(np.uint8)[..., None], 3, 2)
    return img, masks


def tiles(rng: np.random.Generator, size: int, index: int) -> Scene:
    n = int(rng.integers(14, 24))
    pts = rng.uniform(0, size, (n, 2))
    yy, xx = np.mgrid[0:size, 0:size]
    d = (xx[..., None] - pts[:, 0]) ** 2 + (yy[..., None] - pts[:, 1]) ** 2
    cell = d.argmin(-1)
    width = int(rng.integers(2, 4))
    lines = np.zeros((size, size), bool)
    lines[:, 1:] |= cell[:, 1:] != cell[:, :-1]
    lines[1:, :] |= cell[1:, :] != cell[:-1, :]
    lines = cv2.dilate(lines.astype(np.uint8), np.ones((width, width), np.uint8)) > 0
    masks = [(cell == i) & ~lines for i in range(n)]
    masks = [m for m in masks if m.sum() >= 80 and ndi.label(m)[1] == 1]
    img = np.full((size, size, 3), 255, np.uint8)
    if index % 2 == 1:  # a tiling: flat pastel colours
        for m in masks:
            img[m] = rng.integers(120, 256, 3)
    img[lines] = rng.integers(0, 50)
    return img, masks


def phantoms(rng: np.random.Generator, size: int, index: int) -> Scene:
    body = np.zeros((size, size), np.uint8)
    c = size // 2
    cv2.ellipse(
        body,
        (c, c),
        (int(size * 0.46), int(size * 0.40)),
        float(rng.uniform(-15, 15)),
        0,
        360,
        1,
        -1,
    )
    base = rng.uniform(90, 140)
    grey = np.where(body > 0, base, 10.0)
    inner = body > 0
    inner = cv2.erode(inner.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    taken = ~inner
    masks: list[np.ndarray] = []
    for _ in range(300):
        if len(masks) == 8:
            break
        m = np.zeros((size, size), np.uint8)
        r = rng.uniform(0.03, 0.11) * size
        ctr = (int(rng.uniform(0, size)), int(rng.uniform(0, size)))
        cv2.ellipse(
            m,
            ctr,
            (int(r), int(r * rng.uniform(0.5, 1))),
            float(rng.uniform(0, 180)),
            0,
            360,
            1,
            -1,
        )
        ell = m > 0
        if ell.sum() >= 40 and not (ell & taken).any() and _place(rng, taken, ell, 4):
            masks.append(ell)
            grey[ell] = base + rng.choice([-1, 1]) * rng.uniform(20, 60)
    grey = cv2.GaussianBlur(grey, (0, 0), 1.0) + rng.normal(0, 6, grey.shape)
    img = np.repeat(np.clip(grey, 0, 255).round().astype(np.uint8)[..., None], 3, 2)
    return img, masks


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smoothed noise with a random scale and orientation, zero mean and unit spread."""
    t = cv2.GaussianBlur(rng.normal(0, 1, (size, size)), (0, 0), float(rng.uniform(1, 4)))
    if rng.random() < 0.5:  # oriented: stretched along a random direction
        k = np.zeros((15, 15), np.float64)
        k[7] = 1
        rot = cv2.getRotationMatrix2D((7, 7), float(rng.uniform(0, 180)), 1.0)
        line = cv2.warpAffine(k, rot, (15, 15))
        t = cv2.filter2D(t, -1, line / line.sum())
    return (t - t.mean()) / (t.std() + 1e-9)


def lowcontrast(rng: np.random.Generator, size: int, index: int) -> Scene:
    masks = _shapes(rng, size, 8, 5)
    base = rng.uniform(90, 160)
    grey = base + 14 * _texture(rng, size)
    for m in masks:
        grey[m] = (base + rng.choice([-1, 1]) * rng.uniform(8, 18) + 14 * _texture(rng, size))[m]
    tint = rng.uniform(0.85, 1.15, 3)
    img = np.clip(grey[..., None] * tint, 0, 255).round().astype(np.uint8)
    return img, masks


SYNTHETIC: dict[str, Callable[[np.random.Generator, int, int], Scene]] = {
    "silhouettes": silhouettes,
    "text": text,
    "tiles": tiles,
    "phantoms": phantoms,
    "lowcontrast": lowcontrast,
}


def _to_labels(masks: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    label_map = np.zeros(shape, np.uint16 if len(masks) > 255 else np.uint8)
    for i, m in enumerate(masks, start=1):
        label_map[m] = i
    return label_map


def build(
    kind: str, seed: int, size: int = 320, images: int = 4
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``kind``'s scenes as (name, H×W×3 uint8 image, H×W instance label map), from ``seed``.

    The photos kind reads the real set (examples/eval) and ignores seed, size and images.
    """
    if kind == "photos":
        out = []
        for label_path in sorted((HERE.parent / "eval" / "labels").glob("*.png")):
            image_path = next((HERE.parent / "eval" / "images").glob(label_path.stem + ".*"))
            rgb = np.asarray(Image.open(image_path).convert("RGB"))
            out.append((label_path.stem, rgb, np.asarray(Image.open(label_path))))
        return out
    if kind not in SYNTHETIC:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    draw = SYNTHETIC[kind]
    rng = np.random.default_rng([seed, KINDS.index(kind)])
    out = []
    for i in range(images):
        img, masks = draw(rng, size, i)
        out.append((f"{kind}_{seed}_{i}", img, _to_labels(masks, img.shape[:2])))
    return out


def overlay(rgb: np.ndarray, label_map: np.ndarray, max_side: int = 256) -> np.ndarray:
    """Objects tinted blue with yellow outlines, scaled down to ``max_side``."""
    out = rgb.astype(np.float32)
    for i in np.unique(label_map[label_map > 0]):
        m = label_map == i
        out[m] = out[m] * 0.6 + np.array([0, 90, 255]) * 0.4
        out[m ^ ndi.binary_erosion(m)] = (255, 255, 0)
    scale = max_side / max(rgb.shape[:2])
    img = Image.fromarray(out.astype(np.uint8))
    if scale < 1:
        img = img.resize(
            (round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS
        )
    return np.asarray(img)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for one KIND/images + KIND/labels per kind")
    parser.add_argument("--seed", type=int, default=38)
    parser.add_argument("--part", choices=("main", "reserved"), default="main")
    parser.add_argument("--size", type=int, default=320, help="side of a synthetic image (px)")
    parser.add_argument("--images", type=int, default=4, help="synthetic images per kind")
    parser.add_argument("--overlays", type=Path, help="write one small overlay per kind here")
    args = parser.parse_args()
    seed = args.seed + (RESERVED_OFFSET if args.part == "reserved" else 0)
    total = 0
    for kind in KINDS:
        if kind == "photos" and args.part == "reserved":
            continue
        scenes = build(kind, seed, args.size, args.images)
        folder = args.out / kind
        shutil.rmtree(folder, ignore_errors=True)
        (folder / "images").mkdir(parents=True)
        (folder / "labels").mkdir(parents=True)
        for name, img, labels in scenes:
            Image.fromarray(img).save(folder / "images" / f"{name}.png")
            Image.fromarray(labels).save(folder / "labels" / f"{name}.png")
        if args.overlays:
            args.overlays.mkdir(parents=True, exist_ok=True)
            # the first two scenes side by side (both polarities; line art and tiling)
            shown = scenes[-1:] if kind == "photos" else scenes[:2]
            row = [
                overlay(img, labels, 256 if kind == "photos" else 192) for _, img, labels in shown
            ]
            picture = Image.fromarray(np.concatenate(row, axis=1)).quantize(64)  # small file
            picture.save(args.overlays / f"{kind}.png", optimize=True)
        n = sum(int(len(np.unique(lab)) - 1) for _, _, lab in scenes)
        total += n
        print(f"{kind:12s} {len(scenes)} images {n:4d} objects")
    print(f"{'all':12s} {total:4d} objects ({args.part} part, seed {seed})")


if __name__ == "__main__":
    main()
