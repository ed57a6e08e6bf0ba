"""Every figure of MODEL_CARD.md's machine-readable quality line, for one model file, with the
calls tests/test_train_bundled.py makes (plus the seed-777/778 scenes and segment everything on
20 scenes of seed 1003 at the model's own thresholds).

    python examples/eval/card_figures.py MODEL OUT.json [--independent]

``--independent`` also measures the reserved motorcycle photo (examples/independent): do that
once, after a model has been chosen, never to choose one.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import torch

from segany.automatic import MaskGenerator
from segany.checkpoints import load_model
from segany.evaluate import evaluate_clicks, evaluate_prompts, open_dataset
from segany.evaluate.auto import evaluate_auto
from segany.inference.predictor import Predictor
from segany.refine import RefinedPredictor
from segany.train.calibrate import sweep_generator_thresholds
from segany.train.quality import measure, synthetic_samples
from segany.zoom import DEFAULT_CLICK_MARGIN, ZoomPredictor

ROOT = Path(__file__).resolve().parents[2]


def zoomed_clicks3(model, samples: list, prefix: str) -> dict[str, float]:
    """mIoU after 3 clicks with corrections answered on crops (``click_margin``), plain and
    refined (also used by tests/test_train_bundled.py)."""
    out = {}
    for name, wrap in (("zoom", lambda p: p), ("zoom_refined", RefinedPredictor)):
        zoom = ZoomPredictor(Predictor(model, cache=False), None, click_margin=DEFAULT_CLICK_MARGIN)
        res = evaluate_clicks(wrap(zoom), samples, max_clicks=3, bootstrap=0)
        out[f"{prefix}_{name}_clicks3_miou"] = res.metrics["miou@3"].value
    return out


def independent_samples() -> list:
    """The reserved motorcycle photo's 7 objects (examples/independent), one sample."""
    from skimage import data

    from segany.formats.datasets import Sample

    path = ROOT / "examples" / "independent" / "make_set.py"
    spec = importlib.util.spec_from_file_location("make_set", path)
    assert spec is not None and spec.loader is not None
    make_set = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_set)
    image = data.stereo_motorcycle()[0]
    return [Sample.from_arrays(image, make_set.objects(image), image_id="motorcycle")]


def figures(model, independent: bool = False) -> dict[str, float]:
    got: dict[str, float] = {}
    for prefix, samples, clicks in (
        ("synthetic", synthetic_samples(60), 3),  # the held-out seed, 367 objects
        ("seed778", synthetic_samples(20, seed=778), 3),
        ("seed777", synthetic_samples(30, seed=777), 0),
    ):
        torch.manual_seed(0)
        got |= {f"{prefix}_{k}": v for k, v in measure(model, samples, max_clicks=clicks).items()}
    own = MaskGenerator.for_model(model)
    rows = sweep_generator_thresholds(
        model,
        synthetic_samples(20, seed=1003),
        offsets=(own.stability_score_offset,),
        pred_iou=(own.pred_iou_thresh,),
        stability=(own.stability_score_thresh,),
    )
    got["synthetic_auto_ar100"] = rows[0].ar100
    got["synthetic_auto_masks_per_image"] = rows[0].masks_per_image

    real = list(open_dataset(str(ROOT / "examples" / "eval")))
    got |= {f"real_{k}": v for k, v in measure(model, real, max_clicks=3).items()}
    refined = RefinedPredictor(Predictor(model, cache=False))
    res = evaluate_prompts(refined, real, ("point", "clicks"), max_clicks=3, bootstrap=0)
    got["real_refined_point_miou"] = res["point"].miou
    got["real_refined_clicks3_miou"] = res["clicks"].metrics["miou@3"].value
    zoomed = RefinedPredictor(ZoomPredictor(Predictor(model, cache=False)))
    box = evaluate_prompts(zoomed, real, ("box",), max_clicks=3, bootstrap=0)["box"]
    got["real_zoom_refined_box_miou"] = box.miou
    got |= zoomed_clicks3(model, real, "real")
    generator = MaskGenerator.for_model(model, output_mode="coco_rle")
    auto = evaluate_auto(generator, open_dataset(str(ROOT / "examples" / "eval")), bootstrap=0)
    got["real_auto_ar100"] = auto.metrics["ar@100"].value

    if independent:
        samples = independent_samples()
        got |= {f"independent_{k}": v for k, v in measure(model, samples, max_clicks=3).items()}
        zoomed = RefinedPredictor(ZoomPredictor(Predictor(model, cache=False)))
        box = evaluate_prompts(zoomed, samples, ("box",), bootstrap=0)["box"]
        got["independent_zoom_refined_box_miou"] = box.miou
        got |= zoomed_clicks3(model, samples, "independent")
    return got


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    start = time.time()
    got = figures(load_model(sys.argv[1]).eval(), "--independent" in sys.argv[3:])
    Path(sys.argv[2]).write_text(json.dumps({k: round(v, 4) for k, v in got.items()}, indent=1))
    print(json.dumps({k: round(v, 3) for k, v in got.items()}))
    print(f"{time.time() - start:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
