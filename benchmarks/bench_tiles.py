"""Tiled inference on a large image: ``TiledPredictor`` against the whole image shrunk to the
model's input, on the same box prompts, in one run: quality (IoU with the known objects) and
seconds (each side from a fresh image: its encoder passes plus the decoding).

    python benchmarks/bench_tiles.py [--model NAME_OR_PATH] [--size 2000x3000] [--objects 8]

The scene: a noisy 2000×3000 background with seeded small rectangles and disks (20-60 px)
placed anywhere, seams included. The CPU and the load average are printed beside the figures.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks")]

from bench_speed import cpu_model  # noqa: E402

from segany import Predictor, load_model  # noqa: E402
from segany.tasks import TiledPredictor  # noqa: E402


def scene(h: int, w: int, n: int, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 40, (h, w, 3), dtype=np.uint8)
    yy, xx = np.ogrid[:h, :w]
    objects = []
    for _ in range(n):
        r = int(rng.integers(10, 30))
        cx, cy = int(rng.integers(r, w - 2 * r)), int(rng.integers(r, h - 2 * r))
        if rng.random() < 0.5:
            m = (abs(yy - cy) <= r) & (abs(xx - cx) <= int(r * 1.5))
        else:
            m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        image[m] = rng.integers(80, 255, 3, dtype=np.uint8)
        objects.append(m)
    return image, objects


def box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    return np.array([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], np.float64)


def run(predictor, image, objects) -> tuple[list[float], float]:
    t = time.perf_counter()
    predictor.set_image(image)
    ious = []
    for m in objects:
        got = predictor.predict(box=box(m), multimask_output=False).masks[0]
        ious.append(float((got & m).sum() / (got | m).sum()))
    return ious, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--size", default="2000x3000", help="HxW")
    ap.add_argument("--objects", type=int, default=8)
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    model = load_model(args.model) if args.model else load_model()
    image, objects = scene(h, w, args.objects)
    whole_iou, whole_s = run(Predictor(model, cache=False), image, objects)
    tiled = TiledPredictor(Predictor(model, cache=False))
    tiled_iou, tiled_s = run(tiled, image, objects)
    print(f"{cpu_model()}; load average {os.getloadavg()[0]:.2f} (1 min)")
    print(f"image {w}×{h}, model input {model.image_size}, {len(objects)} box prompts")
    print(
        f"whole image shrunk: mIoU {np.mean(whole_iou):.3f} (min {min(whole_iou):.3f}), "
        f"{whole_s:.1f} s"
    )
    print(
        f"tiles ({tiled.tile} px, overlap {tiled.overlap}; {tiled.encoded} encoded of "
        f"{len(tiled.frames)}): mIoU {np.mean(tiled_iou):.3f} (min {min(tiled_iou):.3f}), "
        f"{tiled_s:.1f} s (x{tiled_s / whole_s:.2f})"
    )


if __name__ == "__main__":
    main()
