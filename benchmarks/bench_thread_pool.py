"""A/B of side-by-side decoding (``segany.inference.thread_pool``): the same call with the decoder
chunks on worker threads (one torch thread each) and in one loop on the calling thread.

The two variants alternate in one process, so the host's drift hits both alike; the medians
and minima of the rounds are printed. Case: the automatic generator (vit_b, seeded weights, a
random embedding, default thresholds). (The Predictor keeps the plain loop: at 365d411 it ran
its chunks side by side, and 16 boxes with three masks each measured no faster.)

    python benchmarks/bench_thread_pool.py --threads 2 --rounds 10
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "stubs")]

from helpers import seeded_model  # noqa: E402

import segany.automatic.generator as G  # noqa: E402
from segany.automatic import MaskGenerator  # noqa: E402
from segany.inference.predictor import Predictor  # noqa: E402
from segany.inference.thread_pool import map_ordered  # noqa: E402
from segany.models import get_config  # noqa: E402


def plain(fn: Callable[[Any], Any], items: Any) -> list[Any]:
    return [fn(x) for x in items]


def race(run: Callable[[], Any], module: Any, rounds: int) -> dict[str, list[float]]:
    """Seconds per round of ``run`` with ``module.map_ordered`` plain and side by side."""
    variants = {"plain": plain, "side by side": map_ordered}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(rounds):
        order = list(variants) if r % 2 == 0 else list(variants)[::-1]
        for name in order:
            module.map_ordered = variants[name]
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def report(title: str, times: dict[str, list[float]], per: float, unit: str) -> None:
    cells = [
        f"{name} median {statistics.median(v) * per:.1f} min {min(v) * per:.1f} {unit}"
        for name, v in times.items()
    ]
    print(f"{title}: " + "; ".join(cells), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--points-per-side", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = seeded_model(get_config("vit_b"), seed=0)
    emb = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(0))
    gen = MaskGenerator(Predictor(model, cache=False), points_per_side=args.points_per_side)
    prompts = args.points_per_side**2
    times = race(lambda: gen.generate(embedding=emb, original_size=(480, 512)), G, args.rounds)
    report(f"automatic, {prompts} prompts", times, 1e3 / prompts, "ms/prompt")


if __name__ == "__main__":
    main()
