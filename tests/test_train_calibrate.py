"""A model's own generator thresholds: stored in its config, applied by ``for_model``, chosen
by a sweep whose figures equal the generator's own; and the logit-temperature fit."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import SMALL

from segany.automatic import PRESETS, MaskGenerator
from segany.checkpoints import load_model, save_model
from segany.errors import InputError
from segany.inference.predictor import Predictor
from segany.models import build_sam
from segany.train.calibrate import (
    ThresholdRow,
    fit_logit_scale,
    pick_thresholds,
    sweep_generator_thresholds,
)

OWN = {"pred_iou_thresh": 0.7, "stability_score_thresh": 0.9, "stability_score_offset": 0.5}


def _own(config=SMALL):
    model = build_sam(config).eval()
    model.generator_defaults = dict(OWN)
    return model


def test_generator_defaults_are_checked_and_saved_with_the_weights(tmp_path):
    bad = build_sam(SMALL)
    bad.generator_defaults = {"points_per_side": 8}
    with pytest.raises(InputError, match="generator_defaults may set"):
        save_model(bad, tmp_path / "bad.safetensors")
    bad.generator_defaults = {"pred_iou_thresh": "high"}  # type: ignore[dict-item]
    with pytest.raises(InputError, match="must be a number"):
        save_model(bad, tmp_path / "bad.safetensors")
    assert not (tmp_path / "bad.safetensors").exists()
    path = save_model(_own(), tmp_path / "own.safetensors")
    assert load_model(path).generator_defaults == OWN
    assert load_model(save_model(build_sam(SMALL), tmp_path / "plain")).generator_defaults == {}
    # policy, not size: the config's JSON does not carry them
    assert "pred_iou_thresh" not in _own().config.to_json()


def test_for_model_layers_the_models_defaults_the_preset_and_the_callers():
    plain = build_sam(SMALL).eval()
    official = MaskGenerator.for_model(plain)
    assert (official.pred_iou_thresh, official.stability_score_thresh) == (0.88, 0.95)
    assert official.stability_score_offset == 1.0
    own = _own()
    gen = MaskGenerator.for_model(Predictor(own), points_per_side=4)  # a Predictor too
    assert (gen.pred_iou_thresh, gen.stability_score_thresh) == (0.7, 0.9)
    assert gen.stability_score_offset == 0.5 and len(gen.point_grids[0]) == 16
    gen = MaskGenerator.for_model(own, "sa1b", points_per_side=4, pred_iou_thresh=0.8)
    assert gen.crop_n_layers == PRESETS["sa1b"]["crop_n_layers"]
    assert (gen.pred_iou_thresh, gen.stability_score_thresh) == (0.8, 0.9)
    assert MaskGenerator(own).pred_iou_thresh == 0.88  # the constructor stays official


def test_a_preset_that_sets_a_threshold_beats_the_models_own(monkeypatch):
    import segany.automatic.generator as generator_module

    strict = {"pred_iou_thresh": 0.95, "points_per_side": 4}
    monkeypatch.setitem(generator_module.PRESETS, "strict", strict)
    own = _own()
    gen = MaskGenerator.for_model(own, "strict")
    assert gen.pred_iou_thresh == 0.95  # the preset's, not the model's 0.7
    assert (gen.stability_score_thresh, gen.stability_score_offset) == (0.9, 0.5)  # the model's
    assert MaskGenerator.for_model(own, "strict", pred_iou_thresh=0.6).pred_iou_thresh == 0.6


def test_pick_thresholds_takes_the_best_recall_above_the_precision_floor():
    rows = [
        ThresholdRow(1.0, 0.5, 0.8, ar100=0.55, precision50=0.60, masks_per_image=30),
        ThresholdRow(1.0, 0.7, 0.8, ar100=0.405, precision50=0.76, masks_per_image=8),
        ThresholdRow(0.5, 0.7, 0.9, ar100=0.40, precision50=0.80, masks_per_image=7),
        ThresholdRow(0.5, 0.8, 0.9, ar100=0.40, precision50=0.80, masks_per_image=6),
        ThresholdRow(1.0, 0.88, 0.95, ar100=0.10, precision50=1.00, masks_per_image=1),
    ]
    # 0.405 and 0.40 are within the tolerance: the more precise, then the stricter, wins.
    assert pick_thresholds(rows, 0.75) == rows[3]
    assert pick_thresholds(rows, 0.75, tolerance=0.001) == rows[1]
    assert pick_thresholds(rows, 0.5) == rows[0]
    with pytest.raises(InputError, match="precision"):
        pick_thresholds(rows, 1.01)


@pytest.fixture(scope="module")
def scenes():
    from segany.train.quality import synthetic_samples

    return synthetic_samples(2, seed=4242)


def test_sweep_figures_equal_the_generator_run_at_those_thresholds(scenes):
    from segany.evaluate import evaluate_auto

    model = load_model()
    rows = sweep_generator_thresholds(
        model,
        scenes,
        offsets=(1.0,),
        pred_iou=(0.5, 0.88),
        stability=(0.6, 0.95),
        points_per_side=8,
    )
    assert [(r.pred_iou_thresh, r.stability_score_thresh) for r in rows] == [
        (0.5, 0.6),
        (0.5, 0.95),
        (0.88, 0.6),
        (0.88, 0.95),
    ]
    loose, strict = rows[0], rows[-1]
    assert loose.masks_per_image > strict.masks_per_image and loose.ar100 > 0
    gen = MaskGenerator(model, points_per_side=8, pred_iou_thresh=0.5, stability_score_thresh=0.6)
    direct = evaluate_auto(gen, scenes, max_dets=[100], bootstrap=0)
    assert loose.ar100 == pytest.approx(float(direct.metrics["ar@100"].value), abs=1e-9)
    count = sum(len(gen.generate(s.load_image())) for s in scenes) / len(scenes)
    assert loose.masks_per_image == count


def test_fit_logit_scale_finds_the_temperature_of_scaled_logits(scenes):
    """Doubling every mask logit (the hypernetworks' last layers × 2) halves the fitted k."""
    model = load_model()
    k, info = fit_logit_scale(model, scenes)
    assert 0.1 < k < 100 and info["bce"] <= info["bce_at_1"]
    doubled = copy.deepcopy(model)
    with torch.no_grad():
        for mlp in doubled.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(2)
            mlp.layers[-1].bias.mul_(2)
    k2, _ = fit_logit_scale(doubled, scenes)
    assert k2 == pytest.approx(k / 2, rel=0.01)
