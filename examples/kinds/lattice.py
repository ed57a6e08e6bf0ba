"""Measure the dot lattice (issue 38): holes in a mask clicked inside a flat object.

For every object of the per-kind set, one click at the object's innermost pixel (the centre of
its distance transform) and the mask of highest predicted IoU. Inside the object (eroded by
two low-res pixels) it reports the share of low-resolution logits below zero, the mean logit,
and how strongly the logits follow the 4×4 period of the decoder's two stride-2 transposed
convolutions (the spread of the sixteen phase means): a mean near zero with a periodic
pattern on top is what shows as a lattice of dots about 8 px apart at the input size.

    python examples/kinds/lattice.py out/kinds --model segany/weights/segany_tiny.safetensors
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi


def measure(predictor, image: np.ndarray, labels: np.ndarray) -> list[tuple[float, float, float]]:
    """(share of interior logits < 0, interior mean logit, 4×4 phase spread) per object."""
    predictor.set_image(image)
    out = []
    for i in np.unique(labels[labels > 0]):
        obj = labels == i
        dist = ndi.distance_transform_edt(obj)
        y, x = np.unravel_index(int(np.argmax(dist)), obj.shape)
        _, scores, low = predictor.predict(
            point_coords=np.array([[x, y]]), point_labels=np.array([1])
        )
        logits = low[int(np.argmax(scores))]  # S/4 × S/4 over the padded model input
        scale = logits.shape[0] / max(obj.shape)
        h, w = round(obj.shape[0] * scale), round(obj.shape[1] * scale)
        small = np.asarray(Image.fromarray(obj.astype(np.uint8)).resize((w, h), Image.NEAREST))
        inner = np.zeros(logits.shape, bool)
        inner[:h, :w] = ndi.binary_erosion(small > 0, iterations=2)
        if inner.sum() < 16:
            continue
        yy, xx = np.nonzero(inner)
        phases = [
            logits[yy[s], xx[s]].mean()
            for a in range(4)
            for b in range(4)
            if (s := (yy % 4 == a) & (xx % 4 == b)).any()
        ]
        vals = logits[inner]
        out.append((float((vals < 0).mean()), float(vals.mean()), float(np.ptp(phases))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="the per-kind set (make_set.py's output)")
    parser.add_argument("--model", default=None, help="weights (default: the bundled model)")
    parser.add_argument("--kinds", default="silhouettes,text,tiles,phantoms,lowcontrast,photos")
    args = parser.parse_args()
    import segany

    predictor = segany.Predictor(segany.load_model(args.model))
    print("| kind | objects | interior logits < 0 | objects with > 2 % | mean logit | 4×4 spread |")
    print("|---|---:|---:|---:|---:|---:|")
    for kind in args.kinds.split(","):
        rows = []
        for path in sorted((args.root / kind / "images").glob("*.png")):
            image = np.asarray(Image.open(path).convert("RGB"))
            labels = np.asarray(Image.open(args.root / kind / "labels" / path.name))
            rows += measure(predictor, image, labels)
        a = np.array(rows).reshape(-1, 3)
        if not len(a):
            print(f"| {kind} | 0 (all too small) | | | | |")
            continue
        print(
            f"| {kind} | {len(a)} | {a[:, 0].mean():.3f} | {(a[:, 0] > 0.02).mean():.2f} "
            f"| {np.median(a[:, 1]):.2f} | {np.median(a[:, 2]):.2f} |"
        )


if __name__ == "__main__":
    main()
