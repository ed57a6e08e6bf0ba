"""Measure a model with the evaluation protocols on held-out synthetic scenes and real coins.

Used for the model card's figures and by the test that checks the bundled model still reaches
them. Synthetic scenes come from a seed the training set never used; the coins photo is never a
training texture.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from segany.modeling import Sam

HELD_OUT_SEED = 20261121  # training data: seed 0; in-training validation: seed 1001


def synthetic_samples(count: int, seed: int = HELD_OUT_SEED) -> list:
    """``count`` fresh synthetic scenes as in-memory evaluation samples."""
    from segany.formats.datasets import Sample
    from segany.train.synth import iter_scenes

    return [
        Sample.from_arrays(image, masks, image_id=i)
        for i, (image, masks) in enumerate(iter_scenes(seed, count))
        if masks
    ]


def coins_samples() -> list:
    """The labelled coins photo as one evaluation sample."""
    from segany.formats.datasets import Sample
    from segany.train.realdata import coins

    image, masks = coins()
    return [Sample.from_arrays(image, masks, image_id="coins")]


@torch.no_grad()
def measure(
    model: Sam, samples: list, precision: str = "fp32", max_clicks: int = 0, **options: Any
) -> dict[str, float]:
    """Single-point (centre click, top-scored of 3) and tight-box mIoU of ``model`` with the
    evaluation protocols (``options`` go to ``evaluate_prompts``); with ``max_clicks`` >= 3 also
    the clicks protocol (previous logits fed back): mIoU after 1 and 3 clicks and NoC@85
    (capped at max_clicks). The model is left in the train/eval mode it came in."""
    from segany.evaluate import evaluate_prompts
    from segany.inference.predictor import Predictor

    protocols = ("point", "box", "clicks") if max_clicks >= 3 else ("point", "box")
    options.setdefault("max_clicks", max(max_clicks, 1))
    was_training = model.training
    try:
        predictor = Predictor(model.eval(), precision=precision)
        res = evaluate_prompts(predictor, samples, protocols, bootstrap=0, **options)
    finally:
        model.train(was_training)
    out = {
        "point_miou": float(res["point"].miou),
        "point_oracle_miou": float(res["point"].metrics["oracle_miou"].value),
        "box_miou": float(res["box"].miou),
        "objects": len(res["box"].per_object),
    }
    if "clicks" in res:
        metrics = res["clicks"].metrics
        out |= {
            "clicks1_miou": float(metrics["miou@1"].value),
            "clicks3_miou": float(metrics["miou@3"].value),
            "noc85": float(metrics["noc@85"].value),
        }
    return out
