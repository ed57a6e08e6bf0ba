"""Time segany's MaskGenerator against the reference SamAutomaticMaskGenerator.

    python benchmarks/bench_automatic.py [--variant vit_b] [--points-per-side 32] [--threads 2]
        [--size 512] [--repeats 1] [--pred-iou-thresh 0.88] [--stability-score-thresh 0.95]

Same seeded weights, same photograph (scikit-image's astronaut), official options unless
given; both whole ``generate`` calls run in this process, alternating, and the fastest of
``--repeats`` counts (load on a shared machine only ever adds time). Prints the ratio of
whole-call times (reference / segany; > 1 means segany is faster) and checks the outputs
match: same count, each mask matched at IoU >= 0.99 with scores equal to 1e-4.

Random weights pass few masks at the official thresholds, which flatters a generator that
skips the masks it filters; ``--pred-iou-thresh 0`` (every mask upscaled and scored) is the
worst case for segany and is worth quoting too. ``--variant small`` uses the tests' config.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "stubs")]

from helpers import SMALL, perturb_, reference_model  # noqa: E402

from segany.automatic import MaskGenerator  # noqa: E402
from segany.masks import decode_rle  # noqa: E402
from segany.models import build_sam, get_config  # noqa: E402


def _mask(seg) -> np.ndarray:
    return seg if isinstance(seg, np.ndarray) else decode_rle(seg)


def compare(ours: list, theirs: list[dict]) -> str:
    """'' when the outputs match (count, mask IoU >= 0.99, scores to 1e-4), else why not."""
    if len(ours) != len(theirs):
        return f"count differs: {len(ours)} vs {len(theirs)}"
    free = list(range(len(theirs)))
    for rec in ours:
        a = rec.mask()
        for j in free:
            r = theirs[j]
            b = _mask(r["segmentation"])
            union = (a | b).sum()
            iou = 1.0 if union == 0 else (a & b).sum() / union
            same_iou = abs(rec.predicted_iou - r["predicted_iou"]) <= 1e-4
            s, t = rec.stability_score, r["stability_score"]
            same_stab = (np.isnan(s) and np.isnan(t)) or abs(s - t) <= 1e-4
            if iou >= 0.99 and same_iou and same_stab:
                free.remove(j)
                break
        else:
            return f"no reference mask matches the mask at {rec.bbox}"
    return ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="vit_b", help="vit_b, vit_l, vit_h or small")
    ap.add_argument("--points-per-side", type=int, default=32)
    ap.add_argument("--pred-iou-thresh", type=float, default=0.88)
    ap.add_argument("--stability-score-thresh", type=float, default=0.95)
    ap.add_argument("--crop-n-layers", type=int, default=0)
    ap.add_argument("--size", type=int, default=512, help="longest image side in pixels")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from PIL import Image
    from segment_anything import SamAutomaticMaskGenerator
    from skimage import data

    config = SMALL if args.variant == "small" else get_config(args.variant)
    torch.manual_seed(0)
    model = perturb_(build_sam(config), seed=0).eval()
    ref_model = reference_model(config, model.state_dict())
    photo = Image.fromarray(data.astronaut())
    scale = args.size / max(photo.size)
    image = np.asarray(photo.resize((round(photo.width * scale), round(photo.height * scale))))
    opts = dict(
        points_per_side=args.points_per_side,
        pred_iou_thresh=args.pred_iou_thresh,
        stability_score_thresh=args.stability_score_thresh,
        crop_n_layers=args.crop_n_layers,
    )
    ours = MaskGenerator(model, **opts)
    ref = SamAutomaticMaskGenerator(ref_model, **opts)

    best = {"reference": float("inf"), "segany": float("inf")}
    out: dict[str, list] = {}
    for _ in range(args.repeats):
        for name, gen in (("reference", ref), ("segany", ours)):
            t = time.perf_counter()
            out[name] = gen.generate(image)
            best[name] = min(best[name], time.perf_counter() - t)
            print(f"  {name:9s} {best[name]:8.2f} s  {len(out[name])} masks", flush=True)
    problem = compare(out["segany"], out["reference"])
    print(
        f"{args.variant}, {image.shape[1]}×{image.shape[0]} image, {args.points_per_side}² points, "
        f"{args.threads} threads, options {opts}"
    )
    print(f"reference {best['reference']:.2f} s, segany {best['segany']:.2f} s")
    print(f"ratio (reference / segany): {best['reference'] / best['segany']:.2f}x")
    print("outputs: identical" if not problem else f"outputs DIFFER: {problem}")
    if problem:
        sys.exit(1)


if __name__ == "__main__":
    main()
