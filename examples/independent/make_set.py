"""Build the independent check set (issue 9) from scikit-image's motorcycle photo, without a model.

scikit-image's bundled photos that are not training textures (``segany.train.synth``) were
reserved for one independent check of the finished model, never for training, tuning or
choosing between runs. Of those that load offline, one is a photograph with objects whose
outlines colour alone gives: the left view of ``skimage.data.stereo_motorcycle()`` (Middlebury
2014 stereo benchmark, Scharstein et al.; the image is not copied into this repository, it is
read from scikit-image when the set is built). Its rear indicator lens was left out (the
threshold takes only part of it), and ``data.text()`` (handwriting on ruled paper) was
looked at and left out: its strokes blur into the paper, so no threshold gives whole strokes.

Every object is the connected component of a colour threshold that holds a named pixel (what
the object is is written beside it), cleaned by a small opening/closing and hole filling, and
checked by eye on the overlay the script writes. Run from the repository root with
scikit-image installed, then evaluate:

    python examples/independent/make_set.py out/independent
    segany eval out/independent --baseline all
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from scipy import ndimage as ndi

# (name, threshold, seed pixels (x, y) -- the object is every component holding one of them)
RED, YELLOW, WHITE, ORANGE = "red", "yellow", "white", "orange"
OBJECTS = (
    ("tank, side cover and rear fender (one red piece)", RED, [(400, 200)]),
    ("red storage box behind the fork (two parts)", RED, [(590, 215), (535, 230)]),
    ("front fender", RED, [(590, 285)]),
    ("yellow bottle on the shelf", YELLOW, [(410, 75)]),
    ("sheet of paper on the wall", WHITE, [(235, 45)]),
    ("front indicator lens", ORANGE, [(475, 187)]),
    ("right indicator lens", ORANGE, [(573, 131)]),
)


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _clean(fg: np.ndarray, open_px: int, close_px: int) -> np.ndarray:
    out = fg.astype(np.uint8)
    if open_px:
        out = cv2.morphologyEx(out, cv2.MORPH_OPEN, _disk(open_px))
    if close_px:
        out = cv2.morphologyEx(out, cv2.MORPH_CLOSE, _disk(close_px))
    return ndi.binary_fill_holes(out > 0)


def thresholds(rgb: np.ndarray) -> dict[str, np.ndarray]:
    """Foreground per colour: OpenCV HSV (hue 0-180, saturation and value 0-255)."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    h, s, v = (hsv[..., i].astype(np.int32) for i in range(3))
    return {
        RED: _clean(((h <= 5) | (h >= 170)) & (s > 120) & (v > 50), 1, 3),
        YELLOW: _clean((h >= 17) & (h <= 27) & (s > 70) & (v > 140), 1, 2),
        WHITE: _clean((s < 40) & (v > 200), 2, 3),
        ORANGE: _clean((h >= 6) & (h <= 18) & (s > 190) & (v > 100), 0, 2),
    }


def objects(rgb: np.ndarray) -> list[np.ndarray]:
    """The objects' masks (H×W bool, disjoint) in the order of ``OBJECTS``."""
    fg = thresholds(rgb)
    labels = {name: ndi.label(mask)[0] for name, mask in fg.items()}
    out = []
    taken = np.zeros(rgb.shape[:2], bool)
    for what, colour, seeds in OBJECTS:
        ids = {int(labels[colour][y, x]) for x, y in seeds}
        if 0 in ids:
            raise RuntimeError(f"{what}: a seed pixel is not {colour}; the thresholds changed")
        mask = np.isin(labels[colour], list(ids)) & ~taken  # a pixel is the first object's
        taken |= mask
        out.append(mask)
    return out


def main() -> None:
    import skimage.data

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for images/, labels/ and overlays/")
    out = parser.parse_args().out
    rgb = skimage.data.stereo_motorcycle()[0]
    masks = objects(rgb)
    label_map = np.zeros(rgb.shape[:2], np.uint8)
    for i, m in enumerate(masks, start=1):
        label_map[m] = i
    for sub in ("images", "labels", "overlays"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(out / "images" / "motorcycle.png")
    Image.fromarray(label_map).save(out / "labels" / "motorcycle.png")
    overlay = rgb.astype(np.float32)
    for i in range(1, len(masks) + 1):
        m = label_map == i
        overlay[m] = overlay[m] * 0.5 + np.array([0, 90, 255]) * 0.5
        overlay[m ^ ndi.binary_erosion(m)] = (255, 255, 0)
    Image.fromarray(overlay.astype(np.uint8)).save(out / "overlays" / "motorcycle.png")
    for (what, _, _), m in zip(OBJECTS, masks, strict=True):
        print(f"{int(m.sum()):6d} px  {what}")


if __name__ == "__main__":
    main()
