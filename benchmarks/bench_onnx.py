"""Time the onnxruntime backend (fp32 and int8) against segany's torch Predictor and the reference.

    python benchmarks/bench_onnx.py [--variant tiny|vit_b|...] [--repeats 3] [--threads 2]

``tiny`` is the bundled model; other variants get seeded weights (same sizes as the official
ones, so the timings hold for the real checkpoints). All backends run in this process with the
same thread count, alternating; each figure is the fastest of ``--repeats`` runs. Ratios are
reference time / backend time (> 1: faster). Accuracy is against segany's torch fp32: embedding
cosine similarity and the IoU of the best mask for the point prompt. Note the CPU's flags
(``grep -m1 flags /proc/cpuinfo``): int8 speed depends on AVX-512 VNNI / AMX.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "stubs")]

from helpers import reference_model, seeded_model  # noqa: E402

from segany.checkpoints import load_model  # noqa: E402
from segany.export import OnnxPredictor, export_pair  # noqa: E402
from segany.inference.predictor import Predictor  # noqa: E402
from segany.models import get_config  # noqa: E402


def fastest(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def cpu_flags() -> str:
    try:
        line = next(x for x in open("/proc/cpuinfo") if x.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    return " ".join(f for f in wanted if f in line.split())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="tiny")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from segment_anything import SamPredictor
    from skimage import data

    if args.variant == "tiny":
        model = load_model()
    else:
        model = seeded_model(get_config(args.variant), seed=0)
    reference = SamPredictor(reference_model(model.config, model.state_dict()))
    image = data.astronaut()[:480, :, :]  # 480×512, not square
    point = dict(point_coords=np.array([[200.0, 150.0]]), point_labels=np.array([1]))

    backends: dict[str, object] = {"torch fp32": Predictor(model)}
    with tempfile.TemporaryDirectory() as tmp:
        for name, quantize in (("onnx fp32", False), ("onnx int8", True)):
            t = time.perf_counter()
            export_pair(model, Path(tmp) / name.replace(" ", "_"), quantize=quantize)
            print(f"export {name}: {time.perf_counter() - t:.1f} s", file=sys.stderr)
            backends[name] = OnnxPredictor.from_dir(
                Path(tmp) / name.replace(" ", "_"), threads=args.threads
            )

    t_ref_set = fastest(lambda: reference.set_image(image), args.repeats)
    t_ref_pt = fastest(lambda: reference.predict(**point), args.repeats * 5)
    base_emb = None
    base_mask = None
    print(f"variant {args.variant}, {args.threads} threads, cpu flags: {cpu_flags()}")
    print(
        f"{'backend':<12} {'set_image s':>12} {'x ref':>6} {'point ms':>9} {'x ref':>6} "
        f"{'emb cos':>8} {'mask IoU':>8}"
    )
    print(f"{'reference':<12} {t_ref_set:>12.3f} {1:>6.2f} {t_ref_pt * 1e3:>9.1f} {1:>6.2f}")
    for name, predictor in backends.items():
        p: Any = predictor
        t_set = fastest(lambda p=p: p.set_image(image), args.repeats)
        t_pt = fastest(lambda p=p: p.predict(**point), args.repeats * 5)
        emb = np.asarray(p.get_image_embedding()).ravel()
        pred = p.predict(**point)
        mask = pred.masks[int(np.argmax(pred.scores))]
        if base_emb is None:
            base_emb, base_mask = emb, mask
        cos = float(emb @ base_emb / np.linalg.norm(emb) / np.linalg.norm(base_emb))
        iou = float((mask & base_mask).sum() / max((mask | base_mask).sum(), 1))
        print(
            f"{name:<12} {t_set:>12.3f} {t_ref_set / t_set:>6.2f} {t_pt * 1e3:>9.1f} "
            f"{t_ref_pt / t_pt:>6.2f} {cos:>8.5f} {iou:>8.4f}"
        )


if __name__ == "__main__":
    main()
