"""Segment everything on a very large image with ``segany auto --tile``: peak memory, time, and a
resume after SIGKILL (issue 39's 20 000 × 20 000 target); or, with ``--detections N``, N
detector boxes turned into masks with ``segany segment --tile --detections``.

    python benchmarks/bench_tiles_large.py --size 20000 --tile 2048 --points-per-side 16 \\
        --kill-after 120 --work /tmp/tiles-large
    python benchmarks/bench_tiles_large.py --size 20000 --detections 50

1. writes a SIZE × SIZE uncompressed RGB TIFF (BigTIFF above 4 GB) of seeded disks and
   rectangles (radius 15-400 px) on a noisy gradient, a strip at a time (skipped when it exists);
2. runs ``segany auto IMAGE --tile TILE --max-pixels SIZE² ...`` in a child process; with
   ``--kill-after S`` it is SIGKILLed after S seconds, the tiles it saved are counted, and the
   same command is run again to the end (it resumes from the saved tiles);
3. prints, per run, the wall time, the child's peak resident memory (``os.wait4``'s ru_maxrss)
   and the load average before and after, then the masks written.

``--detections N``: step 2 is ``segany segment IMAGE --tile [TILE] --max-pixels SIZE²
--detections dets.json`` with the boxes of N of the scene's objects (seeded choice) as a COCO
results file; it prints the same figures and the mean IoU of each mask's box with its object's.

The bundled model is used unless ``--model`` says otherwise. Nothing here is a comparison: the
figures are absolute (one machine, its load printed beside them).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def scene_objects(size: int, seed: int = 0) -> tuple[np.random.Generator, list[tuple]]:
    """The scene's objects (cx, cy, r, disk, colour) and the generator that then draws its
    noise."""
    rng = np.random.default_rng(seed)
    n = max(10, size * size // 200_000)  # ~2000 objects at 20000²
    objects = [
        (
            int(rng.integers(0, size)),
            int(rng.integers(0, size)),
            int(rng.integers(15, 400)),
            bool(rng.random() < 0.5),
            rng.integers(60, 255, 3).astype(np.uint8),
        )
        for _ in range(n)
    ]
    return rng, objects


def write_image(path: Path, size: int, seed: int = 0) -> None:
    import tifffile

    rng, objects = scene_objects(size, seed)
    image = tifffile.memmap(
        path,
        shape=(size, size, 3),
        dtype=np.uint8,
        photometric="rgb",
        bigtiff=size * size * 3 > 2**32 - 2**25,
    )
    strip = 500
    xx = np.arange(size)[None, :]
    for y0 in range(0, size, strip):
        y1 = min(size, y0 + strip)
        yy = np.arange(y0, y1)[:, None]
        block = ((xx + yy) * (40 / (2 * size))).astype(np.uint8)[:, :, None].repeat(3, 2)
        block += rng.integers(0, 20, block.shape, dtype=np.uint8)
        for cx, cy, r, disk, colour in objects:
            if cy + r < y0 or cy - r >= y1:
                continue
            a, b = max(0, cx - r), min(size, cx + r + 1)
            sub = block[:, a:b]
            dy, dx = yy - cy, np.arange(a, b)[None, :] - cx
            m = (dy * dy + dx * dx <= r * r) if disk else ((abs(dy) <= r) & (abs(dx) <= r))
            sub[m] = colour
        image[y0:y1] = block
    image.flush()
    del image


def run(argv: list[str], kill_after: float | None) -> dict:
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    child = subprocess.Popen(argv)
    killed = False
    if kill_after is not None:
        deadline = t0 + kill_after
        while time.perf_counter() < deadline and child.poll() is None:
            time.sleep(0.5)
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            killed = True
    _, status, usage = os.wait4(child.pid, 0)
    return {
        "seconds": round(time.perf_counter() - t0, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux: KiB
        "exit": os.waitstatus_to_exitcode(status),
        "killed": killed,
        "load_before": [round(v, 2) for v in load_before],
        "load_after": [round(v, 2) for v in os.getloadavg()],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=20000)
    ap.add_argument("--tile", type=int, default=2048)
    ap.add_argument("--points-per-side", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--kill-after", type=float, default=None, metavar="SECONDS")
    ap.add_argument("--model", default=None)
    ap.add_argument("--work", type=Path, default=Path("/tmp/segany-tiles-large"))
    ap.add_argument(
        "--detections",
        type=int,
        default=None,
        metavar="N",
        help="time segment --tile --detections on N object boxes instead of auto --tile "
        "(--tile 0: tiles of the model's input size)",
    )
    args = ap.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    image = args.work / f"scene_{args.size}.tif"
    if not image.exists():
        t0 = time.perf_counter()
        write_image(image, args.size)
        print(
            f"wrote {image} ({image.stat().st_size / 2**30:.2f} GiB) in "
            f"{time.perf_counter() - t0:.0f} s",
            flush=True,
        )
    if args.detections is not None:
        detections(args, image)
        return
    out = args.work / f"out_{args.size}_{args.tile}"
    argv = [
        sys.executable,
        "-m",
        "segany",
        "auto",
        str(image),
        "-o",
        str(out),
        "--tile",
        str(args.tile),
        "--max-pixels",
        str(args.size * args.size),
        "--points-per-side",
        str(args.points_per_side),
        "--threads",
        str(args.threads),
        "-q",
    ]
    if args.model:
        argv += ["--model", args.model]
    print("command:", " ".join(argv), flush=True)
    progress = out / ".segany" / "tiles" / image.stem
    runs = []
    if args.kill_after is not None:
        first = run(argv, args.kill_after)
        first["tiles_saved"] = len(list(progress.glob("0*.json")))
        runs.append(first)
        print("killed run:", json.dumps(first), flush=True)
    last = run(argv, None)
    runs.append(last)
    print("run to the end:", json.dumps(last), flush=True)
    doc = json.loads((out / f"{image.stem}.json").read_text())
    print(
        f"{len(doc['annotations'])} masks in {out / (image.stem + '.json')}; progress folder "
        f"left: {progress.exists()}; cpu: {os.cpu_count()} cores",
        flush=True,
    )


def detections(args: argparse.Namespace, image: Path) -> None:
    """``segment --tile --detections`` on N of the scene's objects' boxes."""
    _, objects = scene_objects(args.size)
    pick = np.random.default_rng(1).choice(len(objects), args.detections, replace=False)
    boxes = []
    for i in pick:
        cx, cy, r = objects[i][:3]
        x0, y0 = max(0, cx - r), max(0, cy - r)
        x1, y1 = min(args.size, cx + r + 1), min(args.size, cy + r + 1)
        boxes.append([x0, y0, x1 - x0, y1 - y0])
    rows = [{"image_id": image.name, "bbox": b, "score": 0.9, "category_id": 1} for b in boxes]
    dets = args.work / f"dets_{args.size}_{args.detections}.json"
    dets.write_text(json.dumps(rows))
    out = args.work / f"segment_{args.size}_{args.tile}"
    argv = [sys.executable, "-m", "segany", "segment", str(image), "-o", str(out)]
    argv += ["--detections", str(dets), "--max-pixels", str(args.size * args.size)]
    argv += ["--tile", *([str(args.tile)] if args.tile else []), "--threads", str(args.threads)]
    argv += ["-q", *(["--model", args.model] if args.model else [])]
    print("command:", " ".join(argv), flush=True)
    result = run(argv, None)
    print("run:", json.dumps(result), flush=True)
    got = json.loads((out / "results.json").read_text())
    ious = _box_ious(boxes, [mask_box(row["segmentation"]) for row in got])
    print(
        f"{len(got)} masks in {out / 'results.json'}; mean box IoU with the objects "
        f"{np.mean(ious):.3f} (>= 0.8: {sum(v >= 0.8 for v in ious)}); cpu: {os.cpu_count()} "
        "cores",
        flush=True,
    )


def mask_box(rle: dict) -> list[float]:
    from pycocotools import mask as mask_utils

    coded = {"size": rle["size"], "counts": rle["counts"].encode()}
    return [float(v) for v in mask_utils.toBbox(coded)]


def _box_ious(want: list[list[float]], got: list[list[float]]) -> np.ndarray:
    """IoU of each XYWH box in ``want`` with the one at the same place in ``got``."""
    import torch

    from segany.masks import box_iou

    def xyxy(boxes: list[list[float]]) -> torch.Tensor:
        t = torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4)
        return torch.cat([t[:, :2], t[:, :2] + t[:, 2:]], 1)

    return box_iou(xyxy(want), xyxy(got)).diagonal().numpy()


if __name__ == "__main__":
    main()
