"""Rebuild the ground truth of the real evaluation set (examples/eval) without any model.

Images: scikit-image's coins (public domain; also examples/coins.png) and scikit-learn's two
sample photos, china.jpg and flower.jpg (CC BY 2.0, see README.md), copied unchanged. None of
them is ever a training texture (segany.train.synth keeps them out).

Every object comes from thresholds on colour or brightness, morphology and connected
components, checked by eye on overlays (examples/eval/overlays/). Run from the repository root
with scikit-image and scikit-learn installed:

    python examples/eval/make_labels.py
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from scipy import ndimage as ndi

HERE = Path(__file__).resolve().parent


def _components(fg: np.ndarray, min_area: int) -> list[np.ndarray]:
    labels, n = ndi.label(fg)
    sizes = ndi.sum(fg, labels, range(1, n + 1))
    return [labels == i + 1 for i in np.argsort(-sizes) if sizes[i] >= min_area]


def _clean(fg: np.ndarray, open_px: int, close_px: int) -> np.ndarray:
    disk = lambda r: cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))  # noqa: E731
    out = fg.astype(np.uint8)
    if open_px:
        out = cv2.morphologyEx(out, cv2.MORPH_OPEN, disk(open_px))
    if close_px:
        out = cv2.morphologyEx(out, cv2.MORPH_CLOSE, disk(close_px))
    return ndi.binary_fill_holes(out > 0)


def coins() -> tuple[np.ndarray, list[np.ndarray]]:
    """Local threshold + Otsu, opening, closing, hole filling; whole coins only (not cut by
    the frame); segany.train.realdata.coins is the same recipe."""
    from segany.train.realdata import coins as labelled_coins

    return labelled_coins()


def flower(rgb: np.ndarray) -> list[np.ndarray]:
    """Orange petals against the blue-green background: hue 4-30 (OpenCV's 0-180 scale),
    saturation > 80, value > 90. The stem joins the dahlia to the flower cut by the bottom
    edge: an opening of radius 20 separates them, and each part takes back the thresholded
    pixels within 20 px of it (so the dahlia's petal tips stay sharp)."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    fg = _clean((h >= 4) & (h <= 30) & (s > 80) & (v > 90), 2, 6)
    cores = _components(_clean(fg, 20, 0), 2000)[:2]
    return [ndi.binary_dilation(c, iterations=20) & fg for c in cores]


def china(rgb: np.ndarray) -> list[np.ndarray]:
    """The pagoda's top and bottom orange tile roofs (hue 5-20, saturation > 100, value > 60,
    closed over the dark tile lines, connected components) and the sky (value > 225,
    saturation < 70, connected to the top edge; the hazier lake below stays out)."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    roof = (h >= 5) & (h <= 20) & (s > 100) & (v > 60)
    found = _components(_clean(_clean(roof, 0, 3), 3, 0), 1500)[:4]
    # Checked by eye: the topmost and bottommost components are the top and bottom roofs;
    # the middle tiers merge with the red walls and balcony, so they are left out.
    found.sort(key=lambda m: float(np.nonzero(m)[0].mean()))
    roofs = [found[0], found[-1]]
    sky = _clean((v > 225) & (s < 70), 2, 0)
    labels, _ = ndi.label(sky)
    top = set(np.unique(labels[0])) - {0}
    sky = ndi.binary_fill_holes(np.isin(labels, list(top)))
    return [*roofs, sky]


def write(name: str, rgb: np.ndarray, masks: list[np.ndarray]) -> None:
    labels = np.zeros(rgb.shape[:2], np.uint8)
    for i, m in enumerate(masks, start=1):
        labels[m & (labels == 0)] = i
    (HERE / "labels").mkdir(exist_ok=True)
    Image.fromarray(labels).save(HERE / "labels" / f"{name}.png", optimize=True)
    overlay = rgb.astype(np.float32)
    rng = np.random.default_rng(0)
    for i in range(1, len(masks) + 1):
        m = labels == i
        overlay[m] = overlay[m] * 0.45 + rng.uniform(60, 255, 3) * 0.55
        edge = m ^ ndi.binary_erosion(m)
        overlay[edge] = (255, 255, 0)
    (HERE / "overlays").mkdir(exist_ok=True)
    Image.fromarray(overlay.astype(np.uint8)).save(HERE / "overlays" / f"{name}.png", optimize=True)
    print(name, len(masks), "objects, areas", [int(m.sum()) for m in masks])


def main() -> None:
    from sklearn.datasets import load_sample_images

    (HERE / "images").mkdir(exist_ok=True)
    rgb, masks = coins()
    Image.fromarray(rgb[..., 0]).save(HERE / "images" / "coins.png", optimize=True)
    write("coins", rgb, masks)
    photos = load_sample_images()
    for path, image in zip(photos.filenames, photos.images, strict=True):
        name = Path(path).stem
        shutil.copyfile(path, HERE / "images" / f"{name}.jpg")
        write(name, image, flower(image) if name == "flower" else china(image))


if __name__ == "__main__":
    main()
