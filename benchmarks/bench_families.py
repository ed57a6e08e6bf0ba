"""Each model family beside its official package, on the same seeded weights, in one run.

    python benchmarks/bench_families.py [--repeats 3] [--threads 2] [--families vit_t,...]
                                        [--fast int8|bf16|auto]

MobileSAM (``vit_t``) against the ``mobile_sam`` package, EfficientViT-SAM
(``efficientvit_sam_l0``, ``..._xl0``) against ``efficientsam``'s ``EfficientViTSamPredictor``,
SAM-HQ (``sam_hq_vit_tiny``, ``sam_hq_vit_b``) against ``segment_anything_hq``; the default
runs the three light ones (the ViT-B-sized ones take ~20 s per call on 2 cores).
Rows: ``set_image`` on a 480×512 photo in fp32 and int8 (int8 with its embedding cosine and
mask IoU against fp32 over the parity prompts; SAM-HQ answers one mask per prompt), one point
prompt (masks at full resolution), and one point end to end (``set_image`` + ``predict``).
``--fast`` names the fast mode timed beside fp32 (default int8; ``bf16`` or ``auto`` on a CPU
with bf16 matrix units, e.g. AMX: ``auto`` is what ``precision="auto"`` resolves to here).
Each timed pair alternates and keeps the fastest of ``--repeats`` after one untimed call each
(int8 quantises its copy then). The CPU model and the load average are printed beside the
table: read a ratio with them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "stubs"), str(ROOT / "benchmarks")]

from bench_speed import _cosine, _mask_iou, cpu_model, race  # noqa: E402
from helpers import seeded_model  # noqa: E402

from segany.inference.precision import PRECISIONS, resolve_precision  # noqa: E402
from segany.inference.predictor import Predictor  # noqa: E402
from segany.models import VARIANTS  # noqa: E402


def photo() -> np.ndarray:
    from skimage import data

    return np.asarray(Image.fromarray(data.astronaut()).resize((512, 480), Image.BILINEAR))


def _reference(name: str, state: dict[str, torch.Tensor]):
    """The official package's predictor for variant ``name`` holding ``state``."""
    if name == "vit_t":
        from mobile_sam import SamPredictor
        from test_modeling_tinyvit import reference

        return SamPredictor(reference(VARIANTS[name], state))
    if name.startswith("sam_hq_"):
        from segment_anything_hq import SamPredictor
        from test_modeling_hq import reference as hq_reference

        return SamPredictor(hq_reference(VARIANTS[name], state))
    if name.startswith("efficientvit_sam_"):
        from efficientsam.models.efficientvit.sam import EfficientViTSamPredictor
        from efficientsam.sam_model_zoo import create_efficientvit_sam_model

        short = name.removeprefix("efficientvit_sam_")
        ref = create_efficientvit_sam_model(f"efficientvit-sam-{short}", pretrained=False)
        ref.load_state_dict(state, strict=True)
        return EfficientViTSamPredictor(ref.eval())
    raise SystemExit(f"no official package known for {name!r}")


def bench_family(
    name: str, repeats: int, fast: str = "int8"
) -> list[tuple[str, float, float, str]]:
    model = seeded_model(VARIANTS[name], seed=0)
    ref = _reference(name, model.state_dict())
    fp32, int8 = Predictor(model), Predictor(model, precision=fast)
    mode = resolve_precision(fast, torch.device("cpu"))
    mode = mode if mode == fast else f"{fast}={mode}"
    image = photo()
    point = {"point_coords": np.array([[250, 200]]), "point_labels": np.array([1])}
    rows = []
    t_ref, t_ours, t_int8 = (
        t
        for t, _ in race(
            [
                lambda: ref.set_image(image),
                lambda: fp32.set_image(image),
                lambda: int8.set_image(image),
            ],
            repeats,
            warm_up=True,
        )
    )
    cos = _cosine(fp32.get_image_embedding(), int8.get_image_embedding())
    iou = _mask_iou(fp32, int8, image)
    rows.append(("set_image fp32", t_ref, t_ours, ""))
    rows.append((f"set_image {mode}", t_ref, t_int8, f"cosine {cos:.5f}, mask IoU {iou:.3f}"))
    with torch.inference_mode():
        t_ref, t_ours = (
            t
            for t, _ in race(
                [lambda: ref.predict(**point), lambda: fp32.predict(**point)], repeats, warm_up=True
            )
        )
    rows.append(("one point (full-res masks)", t_ref, t_ours, ""))

    def ours_e2e(p: Predictor) -> None:
        p.set_image(image)
        p.predict(**point)

    def ref_e2e() -> None:
        ref.set_image(image)
        ref.predict(**point)

    t_ref, t_ours, t_int8 = (
        t
        for t, _ in race(
            [ref_e2e, lambda: ours_e2e(fp32), lambda: ours_e2e(int8)], repeats, warm_up=True
        )
    )
    rows.append(("one point end to end fp32", t_ref, t_ours, ""))
    rows.append((f"one point end to end {mode}", t_ref, t_int8, ""))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--families",
        default="vit_t,efficientvit_sam_l0,sam_hq_vit_tiny",
        help="comma-separated variants (vit_t, efficientvit_sam_l0..xl1, sam_hq_vit_b/l/h/tiny)",
    )
    parser.add_argument(
        "--fast",
        default="int8",
        choices=[p for p in PRECISIONS if p != "fp32"],
        help="the fast mode timed beside fp32 (default int8)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_model()}; {args.threads} threads; load before: {os.getloadavg()}")
    print("| model | call | official s | segany s | speed-up | accuracy |")
    print("|---|---|---:|---:|---:|---|")
    for name in args.families.split(","):
        for label, t_ref, t_ours, note in bench_family(name, args.repeats, args.fast):
            ratio = t_ref / t_ours
            print(f"| {name} | {label} | {t_ref:.3f} | {t_ours:.3f} | {ratio:.2f}× | {note} |")
        print(f"load after {name}: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
