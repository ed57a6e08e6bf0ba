"""Latency of corrective clicks answered on crops (``ZoomPredictor(click_margin=...)``) against
clicks answered on the whole image, with the bundled model on the coins photo.

The clicks protocol of ``segany eval`` runs on every coin (center click, then clicks at the
center of the largest error region, previous logits fed back); each predict call is timed and
sorted by what it did: the first click (whole image, embedding already made), a correction
whose crop had to be encoded, a correction that encoded nothing (on the whole image, or on a
crop seen before). Medians and maxima in ms.

    python benchmarks/bench_zoom_clicks.py [--clicks 5] [--threads 2] [--refine]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from segany.checkpoints import load_model
from segany.evaluate import evaluate_clicks
from segany.inference.predictor import Predictor
from segany.refine import RefinedPredictor
from segany.train.quality import coins_samples
from segany.zoom import DEFAULT_CLICK_MARGIN, ZoomPredictor


class Timed:
    """Times each predict call of ``inner`` and files it under what the encoder did meanwhile."""

    def __init__(self, inner: Any, encoder: torch.nn.Module) -> None:
        self.inner, self.model = inner, inner.model
        self.times: dict[str, list[float]] = {
            "first click": [],
            "correction, crop encoded": [],
            "correction, nothing encoded": [],
        }
        self._encoded = 0
        self._hook = encoder.register_forward_hook(lambda *_: self._count())

    def close(self) -> None:
        """Stop counting the encoder's calls (the model is shared between runs)."""
        self._hook.remove()

    def _count(self) -> None:
        self._encoded += 1

    def set_image(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.set_image(*args, **kwargs)

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        before = self._encoded
        start = time.perf_counter()
        out = self.inner.predict(*args, **kwargs)
        took = (time.perf_counter() - start) * 1e3
        if kwargs.get("mask_input") is None:
            kind = "first click"
        else:
            encoded = self._encoded > before
            kind = f"correction, {'crop' if encoded else 'nothing'} encoded"
        self.times[kind].append(took)
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clicks", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--refine", action="store_true", help="masks refined against the image")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model().eval()
    samples = coins_samples()
    for margin in (None, DEFAULT_CLICK_MARGIN):
        pred: Any = ZoomPredictor(Predictor(model, cache=False), click_margin=margin)
        if args.refine:
            pred = RefinedPredictor(pred)
        timed = Timed(pred, model.image_encoder)
        try:
            evaluate_clicks(timed, samples, max_clicks=args.clicks, bootstrap=0)
        finally:
            timed.close()
        name = "whole image" if margin is None else f"zoomed (click margin {margin})"
        parts = [
            f"{kind} {statistics.median(ts):.1f} ms (max {max(ts):.1f}, n={len(ts)})"
            for kind, ts in timed.times.items()
            if ts
        ]
        print(f"{name}{' refined' if args.refine else ''}: " + "; ".join(parts), flush=True)


if __name__ == "__main__":
    main()
