"""Synthetic training scenes of the kinds the photo-texture scenes lack (issue 38).

`synth` paints textured shapes; a model trained only on those answers a click on a flat
region with a lattice of dots and a box around a big object with a blob in a corner. These
generators draw what it never saw, each object's mask drawn first and the image made from the
masks (exact labels):

- ``flat``: flat-filled shapes in flat colours, both polarities, sizes from small to most of
  the image, some cut by the image border, some with holes, overlapping (the visible part of
  each is its mask).
- ``glyphs``: printed characters in matplotlib's DejaVu fonts (upper and lower case, digits,
  punctuation), small to large, each character one mask, on flat or coloured paper.
- ``tilings``: regular grids of flat squares or rectangles (with or without grout lines),
  Voronoi cells drawn as lines (line art) or filled flat, brick bonds; each cell one mask.
- ``outlines``: shapes drawn as outlines only (line art); the mask is the outline and what it
  encloses, the inside the same colour as the page.
- ``grey``: grey scientific images: a body with inner regions a few grey levels apart,
  blurred and noisy; the inner regions and the body (the whole, holding them) are masks.

Every kind then goes through a mild camera (noise, blur, JPEG) one time in two. Written in the
same SA-1B form as `synth.write_sa1b` (PNG images, so flat regions stay flat).

The per-kind evaluation set (``examples/kinds``) is drawn by its own script from its own seeds;
these generators share its idea (render the kind, label exactly) but not its code or its
parameters, and their seeds never meet it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from segany.errors import InputError
from segany.train import synth_parts as sp
from segany.train.synth import sa1b_record

Scene = tuple[np.ndarray, list[np.ndarray]]  # H×W×3 uint8, masks H×W bool
MIN_AREA = 30
GLYPHS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghkmnopqrstuvwxyz0123456789&@#%?"  # mostly one piece


def _colour_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two flat colours at least ~40 grey levels apart, either polarity."""
    while True:
        a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        if abs(int(a.mean()) - int(b.mean())) >= 40 or np.abs(a - b).max() >= 90:
            return a, b


def _blob(rng: np.random.Generator, h: int, w: int, big: bool) -> np.ndarray:
    """A filled ellipse, rotated box, star or polygon; ``big`` ones span 0.35-1.1 of the side
    and may cross the border."""
    m = np.zeros((h, w), np.uint8)
    side = min(h, w)
    r = rng.uniform(0.18, 0.55) * side if big else rng.uniform(0.03, 0.18) * side
    lo = -0.2 * r if big else 0.0
    cx, cy = rng.uniform(lo, w - lo), rng.uniform(lo, h - lo)
    kind = int(rng.integers(4))
    if kind == 0:
        axes = (max(2, int(r)), max(2, int(r * rng.uniform(0.35, 1.0))))
        cv2.ellipse(m, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    elif kind == 1:
        box = ((float(cx), float(cy)), (2 * r, 2 * r * rng.uniform(0.25, 1.0)), rng.uniform(0, 90))
        cv2.fillPoly(m, [cv2.boxPoints(box).astype(np.int32)], 1)
    else:
        n = int(rng.integers(3, 10))
        if kind == 2:  # star
            t = np.linspace(0, 2 * np.pi, 2 * n, endpoint=False) + rng.uniform(0, np.pi)
            rad = np.where(np.arange(2 * n) % 2 == 0, r, r * rng.uniform(0.35, 0.7))
        else:
            t = np.sort(rng.uniform(0, 2 * np.pi, n))
            rad = r * rng.uniform(0.45, 1.0, n)
        pts = np.stack([cx + rad * np.cos(t), cy + rad * np.sin(t)], 1).astype(np.int32)
        cv2.fillPoly(m, [pts], 1)
    return m > 0


def _paint(h: int, w: int, shapes: list[np.ndarray], colours: list) -> Scene:
    """Paint ``shapes`` back to front on colour ``colours[0]``; masks are the visible parts."""
    img = np.empty((h, w, 3), np.float32)
    img[:] = colours[0]
    visible: list[np.ndarray] = []
    for m, c in zip(shapes, colours[1:], strict=True):
        visible = [v & ~m for v in visible]
        visible.append(m.copy())
        img[m] = c
    return img, [v for v in visible if int(v.sum()) >= MIN_AREA]


def flat(rng: np.random.Generator, h: int, w: int) -> Scene:
    bg, fg = _colour_pair(rng)
    one_ink = rng.random() < 0.5  # silhouettes: one ink, shapes apart; else flat graphics
    shapes, colours = [], [bg]
    taken = np.zeros((h, w), np.uint8)
    for i in range(int(rng.integers(1, 9))):
        m = _blob(rng, h, w, big=i == 0 and rng.random() < 0.6)
        if rng.random() < 0.15:
            m = sp.punch_hole(rng, m)
        if one_ink:  # same-coloured shapes must not touch, or their masks could not be told
            grown = np.asarray(cv2.dilate(m.astype(np.uint8), np.ones((5, 5), np.uint8)), np.uint8)
            if (grown & taken).any():
                continue
            taken |= m.astype(np.uint8)
        shapes.append(m)
        colours.append(fg if one_ink else _colour_pair(rng)[0])
    return _paint(h, w, shapes, colours)


@lru_cache(maxsize=1)
def _fonts() -> tuple[str, ...]:
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return tuple(str(p) for p in sorted(folder.glob("DejaVu*.ttf")))


def glyphs(rng: np.random.Generator, h: int, w: int) -> Scene:
    from PIL import Image, ImageDraw, ImageFont

    paper, ink = _colour_pair(rng)
    fonts = _fonts()
    cover_all = np.zeros((h, w), np.float32)
    masks: list[np.ndarray] = []
    size_hi = 0.45 if rng.random() < 0.3 else 0.18
    for _ in range(int(rng.integers(3, 25))):
        font = ImageFont.truetype(
            fonts[rng.integers(len(fonts))], int(min(h, w) * rng.uniform(0.05, size_hi))
        )
        layer = Image.new("L", (w, h), 0)
        xy = (float(rng.uniform(-0.05 * w, 0.95 * w)), float(rng.uniform(-0.1 * h, 0.9 * h)))
        ImageDraw.Draw(layer).text(xy, GLYPHS[rng.integers(len(GLYPHS))], fill=255, font=font)
        cover = np.asarray(layer, np.float32) / 255.0
        m = cover >= 0.5
        if int(m.sum()) < MIN_AREA or (m & (cover_all > 0)).any():
            continue  # glyphs never overlap: each one is one mask
        masks.append(m)
        cover_all = np.maximum(cover_all, cover)
    img = paper * (1 - cover_all[..., None]) + ink * cover_all[..., None]
    return img.astype(np.float32), masks


def _voronoi(rng: np.random.Generator, h: int, w: int, n: int) -> np.ndarray:
    pts = rng.uniform(0, 1, (n, 2)) * (w, h)
    yy, xx = np.mgrid[0:h, 0:w]
    d = (xx[..., None] - pts[:, 0]) ** 2 + (yy[..., None] - pts[:, 1]) ** 2
    return d.argmin(-1)


def _grid(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Cell ids of a regular grid (squares or rectangles), every other row shifted half a
    cell one time in three (brick bond)."""
    cw = int(rng.integers(max(8, w // 16), max(9, w // 3)))
    ch = cw if rng.random() < 0.6 else int(rng.integers(max(8, h // 16), max(9, h // 3)))
    ox, oy = int(rng.integers(cw)), int(rng.integers(ch))
    yy, xx = np.mgrid[0:h, 0:w]
    row = (yy + oy) // ch
    shift = (row % 2) * (cw // 2) if rng.random() < 1 / 3 else 0
    col = (xx + ox + shift) // cw
    return row * 10_000 + col


def tilings(rng: np.random.Generator, h: int, w: int) -> Scene:
    cell = _grid(rng, h, w) if rng.random() < 0.5 else _voronoi(rng, h, w, int(rng.integers(6, 40)))
    width = int(rng.integers(0, 5))
    if width == 0 and rng.random() < 0.5:
        width = 1  # a hairline between same-coloured cells
    lines = np.zeros((h, w), bool)
    lines[:, 1:] |= cell[:, 1:] != cell[:, :-1]
    lines[1:, :] |= cell[1:, :] != cell[:-1, :]
    lines = (
        cv2.dilate(lines.astype(np.uint8), np.ones((width, width), np.uint8)) > 0
        if width
        else np.zeros_like(lines)
    )
    ids = np.unique(cell)
    masks = [(cell == i) & ~lines for i in ids]
    page, line_colour = _colour_pair(rng)
    img = np.empty((h, w, 3), np.float32)
    img[:] = page
    fill = rng.random()
    if fill < 0.35 and width:  # line art: every cell the page colour
        pass
    elif fill < 0.6:  # two colours (checkerboards, two-tone tiles)
        a, b = _colour_pair(rng)
        for k, m in enumerate(masks):
            img[m] = a if (k + (k // max(1, int(np.sqrt(len(masks)))))) % 2 else b
    else:
        for m in masks:
            img[m] = rng.integers(0, 256, 3)
    img[lines] = line_colour
    return img, [m for m in masks if int(m.sum()) >= MIN_AREA]


def outlines(rng: np.random.Generator, h: int, w: int) -> Scene:
    page, ink = _colour_pair(rng)
    img = np.empty((h, w, 3), np.float32)
    img[:] = page
    taken = np.zeros((h, w), bool)
    masks: list[np.ndarray] = []
    for _ in range(int(rng.integers(2, 10)) * 4):
        m = _blob(rng, h, w, big=rng.random() < 0.2)
        t = int(rng.integers(1, 5))
        edge = m & ~(cv2.erode(m.astype(np.uint8), np.ones((2 * t + 1,) * 2, np.uint8)) > 0)
        grown = cv2.dilate(m.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        if int(m.sum()) < MIN_AREA or (grown & taken).any():
            continue
        taken |= m
        img[edge] = ink
        masks.append(m)
        if len(masks) >= 10:
            break
    return img, masks


def grey(rng: np.random.Generator, h: int, w: int) -> Scene:
    body = np.zeros((h, w), np.uint8)
    axes = (int(w * rng.uniform(0.3, 0.52)), int(h * rng.uniform(0.3, 0.52)))
    centre = (int(w * rng.uniform(0.4, 0.6)), int(h * rng.uniform(0.4, 0.6)))
    cv2.ellipse(body, centre, axes, float(rng.uniform(-30, 30)), 0, 360, 1, -1)
    outside, base = rng.uniform(0, 60), rng.uniform(70, 200)
    img = np.where(body > 0, base, outside).astype(np.float32)
    masks = [body > 0]
    inside = cv2.erode(body, np.ones((7, 7), np.uint8)) > 0
    for _ in range(int(rng.integers(2, 12))):
        m = _blob(rng, h, w, big=False) & inside
        if int(m.sum()) < MIN_AREA:
            continue
        img[m] = base + rng.choice([-1, 1]) * rng.uniform(15, 70)
        masks = [v & ~m for v in masks]
        masks.append(m)
    img = np.asarray(cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.5, 2.0))), np.float32)
    img = img + rng.normal(0, rng.uniform(0, 8), img.shape).astype(np.float32)
    masks[0] = body > 0  # the body is the whole, holding its parts (a mask of its own)
    return np.repeat(img[..., None], 3, 2), [m for m in masks if int(m.sum()) >= MIN_AREA]


KINDS: dict[str, Callable[[np.random.Generator, int, int], Scene]] = {
    "flat": flat,
    "glyphs": glyphs,
    "tilings": tilings,
    "outlines": outlines,
    "grey": grey,
}


def make_scene(rng: np.random.Generator, kind: str, long_side: int = 384) -> Scene:
    """One scene of ``kind`` with a random aspect (short side 0.6-1 of ``long_side``)."""
    if kind not in KINDS:
        raise InputError(f"unknown scene kind {kind!r}; expected one of {', '.join(KINDS)}")
    short = int(long_side * rng.uniform(0.6, 1.0))
    h, w = (short, long_side) if rng.random() < 0.5 else (long_side, short)
    img, masks = KINDS[kind](rng, h, w)
    if rng.random() < 0.5:
        out = sp.camera(rng, img)
    else:
        out = np.clip(img, 0, 255).round().astype(np.uint8)
    return out, masks


def write_kinds(
    out_dir: str | Path,
    count: int,
    seed: int,
    kinds: tuple[str, ...] = tuple(KINDS),
    long_side: int = 384,
) -> Path:
    """Write ``count`` scenes, the kinds in turn, as ``sa_<i>.png`` + ``sa_<i>.json``.

    Scene ``i`` depends only on ``(seed, i)``; scenes with no mask are drawn again from the
    next sub-seed so that every file holds at least one mask.
    """
    if count < 1:
        raise InputError(f"count must be at least 1, got {count}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        kind = kinds[i % len(kinds)]
        for attempt in range(100):
            img, masks = make_scene(np.random.default_rng([seed, i, attempt]), kind, long_side)
            if masks:
                break
        else:
            raise InputError(f"{kind} scenes at {long_side} px hold no mask; try a larger side")
        name = f"sa_{i:07d}"
        cv2.imwrite(str(out / f"{name}.png"), np.ascontiguousarray(img[..., ::-1]))
        (out / f"{name}.json").write_text(json.dumps(sa1b_record(i, f"{name}.png", img, masks)))
    (out / "synth.json").write_text(
        json.dumps({"seed": seed, "count": count, "kinds": list(kinds), "long_side": long_side})
    )
    return out
