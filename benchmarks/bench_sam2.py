"""SAM 2.1 for images: the official ``sam2`` 1.1.0 package vs segany on the same weights, in one
run (issue 35).

    python benchmarks/bench_sam2.py [--model sam2.1_hiera_tiny] [--repeats 2] [--threads 2]
        [--points-per-side 8 | --defaults] [--fast int8|bf16|auto]

Rows: ``set_image`` fp32 (and segany's fast mode, int8 unless ``--fast`` names bf16 or auto, the
latter what ``precision="auto"`` resolves to on this CPU: bf16 where it runs bf16 natively,
AMX or ``avx512_bf16``; with its embedding cosine against the official fp32), one point
prompt end to end (three masks at full resolution), a batch of 16 boxes, and the automatic
generator (``--points-per-side``; the official default grid is 32, 1024 prompts) with identical
records checked. Seeded weights give faint masks that the official thresholds drop, so by
default the generator row lowers them; ``--defaults`` runs both generators with their default
settings instead (32×32 grid, predicted IoU 0.8, stability 0.95 at offset 1.0, box NMS 0.7) on
weights made confident (``confident_``: the IoU head's output bias raised, the mask
hypernetworks' output scaled; a quarter of the candidates then pass the thresholds, 749 of
3072 at 32×32). The official model is built from its config with seeded weights and
saved as the released files are; segany loads that file. Each timed pair alternates and keeps
the fastest of ``--repeats`` after an untimed first call; "peak MB" is the largest resident
memory above the process's level before the call (``bench_speed.PeakRSS``). The CPU and the
load average are printed with the table: on a shared machine, compare ratios, not seconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests"), str(ROOT / "tests" / "stubs")]

from bench_speed import cpu_model, race  # noqa: E402
from helpers import perturb_  # noqa: E402

from segany.automatic.generator import MaskGenerator  # noqa: E402
from segany.checkpoints import load_model  # noqa: E402
from segany.inference.predictor import Predictor  # noqa: E402

CONFIGS = {
    "sam2.1_hiera_tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_base_plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_large": "configs/sam2.1/sam2.1_hiera_l.yaml",
}


def confident_(sam2_model: torch.nn.Module, iou_bias: float = 1.5, mask_scale: float = 60.0):
    """Seeded SAM 2 weights whose masks pass the official generator's default thresholds: the
    decoder's predicted-IoU logits raised by ``iou_bias`` (sigmoid ~0.9) and its mask
    hypernetworks' output layers scaled by ``mask_scale`` (sharper logits, higher stability)."""
    dec = sam2_model.sam_mask_decoder
    with torch.no_grad():
        dec.iou_prediction_head.layers[-1].bias += iou_bias
        for mlp in dec.output_hypernetworks_mlps:
            mlp.layers[-1].weight *= mask_scale
            mlp.layers[-1].bias *= mask_scale
    return sam2_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="sam2.1_hiera_tiny", choices=sorted(CONFIGS))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    grid = parser.add_mutually_exclusive_group()
    grid.add_argument("--points-per-side", type=int, default=8)
    grid.add_argument(
        "--defaults",
        action="store_true",
        help="generator with both packages' default settings (32×32 grid), confident weights",
    )
    parser.add_argument("--fast", default="int8", choices=["int8", "bf16", "fp16", "auto"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from PIL import Image
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
    from sam2.build_sam import build_sam2
    from sam2.sam2_image_predictor import SAM2ImagePredictor
    from skimage import data

    torch.manual_seed(0)
    official = perturb_(build_sam2(CONFIGS[args.model], None, device="cpu"), 0).eval()
    if args.defaults:
        confident_(official)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{args.model}.pt")
        torch.save({"model": official.state_dict()}, path)
        model = load_model(path)
    image = np.asarray(Image.fromarray(data.astronaut()).resize((512, 480), Image.BILINEAR))
    theirs, ours = SAM2ImagePredictor(official), Predictor(model)
    fast_predictor = Predictor(model, precision=args.fast)
    fast_name = args.fast
    if args.fast == "auto":
        fast_name = f"auto={fast_predictor.precision}"
    rows = []

    def row(step: str, ref: tuple[float, float] | None, got: tuple[float, float], note: str):
        ratio = f"{ref[0] / got[0]:.2f}x" if ref else "-"
        ref_cells = f"{ref[0]:.3f} | {ref[1]:.0f}" if ref else "- | -"
        rows.append(f"| {step} | {ref_cells} | {got[0]:.3f} | {got[1]:.0f} | {ratio} | {note} |")

    with torch.inference_mode():
        ref, got, fast = race(
            [
                lambda: theirs.set_image(image),
                lambda: ours.set_image(image),
                lambda: fast_predictor.set_image(image),
            ],
            args.repeats,
            warm_up=True,
        )
    emb = theirs._features["image_embed"]
    err = float((ours.get_image_embedding() - emb).abs().max() / emb.abs().max())
    row("set_image fp32", ref, got, f"embedding max rel err {err:.1e}")
    cos = torch.nn.functional.cosine_similarity(
        fast_predictor.get_image_embedding().float().flatten().double(),
        emb.flatten().double(),
        dim=0,
    )
    row(f"set_image {fast_name}", ref, fast, f"embedding cosine {float(cos):.5f}")

    point = dict(point_coords=np.array([[200.0, 150.0]]), point_labels=np.array([1]))
    ref, got = race([lambda: theirs.predict(**point), lambda: ours.predict(**point)], 5, True)
    row("one point (3 masks)", ref, got, "")
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 240, (16, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(20, 240, (16, 2))], axis=1)
    ref, got = race(
        [
            lambda: theirs.predict(box=boxes, multimask_output=False),
            lambda: ours.predict(box=boxes, multimask_output=False),
        ],
        args.repeats,
        True,
    )
    row("16 boxes, one call", ref, got, "")

    options = (
        {}
        if args.defaults
        else dict(
            points_per_side=args.points_per_side,
            pred_iou_thresh=0.55,
            stability_score_thresh=0.3,
            stability_score_offset=0.2,
            box_nms_thresh=1.0,
        )
    )
    out: dict[str, list] = {}

    def gen(who: str) -> None:
        if who == "ref":
            out[who] = SAM2AutomaticMaskGenerator(official, **options).generate(image)
        else:
            out[who] = MaskGenerator(model, **options).generate(image)

    ref, got = race([lambda: gen("ref"), lambda: gen("ours")], 1)
    count = len(out["ref"]) == len(out["ours"])
    differ = sum(
        int((a["segmentation"] != b["segmentation"]).sum())
        for a, b in zip(out["ref"], out["ours"], strict=False)
    )
    assert count, "the generators kept different numbers of masks"
    row(
        "generator, default settings (32×32)"
        if args.defaults
        else f"generator {args.points_per_side}×{args.points_per_side}",
        ref,
        got,
        f"{len(out['ours'])} masks (official {len(out['ref'])}), {differ} pixels differ",
    )
    print(
        f"CPU: {cpu_model()}\n"
        f"{args.model}, 480×512 image, {args.threads} threads, best of {args.repeats}; "
        f"torch {torch.__version__}; load average {os.getloadavg()[0]:.1f} at "
        f"{time.strftime('%H:%M UTC', time.gmtime())}\n"
    )
    print("| step | official s | official peak MB | segany s | segany peak MB | ratio | note |")
    print("|---|---:|---:|---:|---:|---:|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
