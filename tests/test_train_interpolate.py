"""segany.train.interpolate: weight-space interpolation of a model and its fine-tuned copy."""

from __future__ import annotations

import pytest
import torch
from helpers import SMALL, reference_model, seeded_model

from segany.config import replace_encoder
from segany.errors import InputError
from segany.train.interpolate import interpolate_weights


def test_ends_and_midpoint():
    start, tuned = seeded_model(SMALL, seed=1), seeded_model(SMALL, seed=2)
    zero = interpolate_weights(start, tuned, 0.0).state_dict()
    one = interpolate_weights(start, tuned, 1.0).state_dict()
    half = interpolate_weights(start, tuned, 0.5).state_dict()
    a, b = start.state_dict(), tuned.state_dict()
    for key in a:
        assert torch.equal(zero[key], a[key]), key
        assert torch.equal(one[key], b[key]), key
        torch.testing.assert_close(half[key], (a[key] + b[key]) / 2, rtol=0, atol=1e-6)
    # the result is an ordinary model of the same config: strict load into the official modules
    reference_model(SMALL, half)


def test_the_merged_model_is_new_and_leaves_the_inputs_alone():
    start, tuned = seeded_model(SMALL, seed=3), seeded_model(SMALL, seed=4)
    before = {k: v.clone() for k, v in start.state_dict().items()}
    merged = interpolate_weights(start, tuned, 0.25)
    with torch.no_grad():
        next(merged.parameters()).add_(1.0)
    for key, value in start.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not merged.training


def test_half_precision_inputs_are_mixed_in_fp32():
    start, tuned = seeded_model(SMALL, seed=5), seeded_model(SMALL, seed=6)
    merged = interpolate_weights(start.half(), tuned.half(), 0.5)
    assert all(p.dtype == torch.float32 for p in merged.parameters())


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan"), "0.5"])
def test_alpha_outside_the_unit_interval_is_refused(alpha):
    model = seeded_model(SMALL, seed=7)
    with pytest.raises(InputError, match="alpha"):
        interpolate_weights(model, model, alpha)


def test_models_of_different_sizes_are_refused():
    start = seeded_model(SMALL, seed=8)
    other = seeded_model(replace_encoder(SMALL, depth=3, global_attn_indexes=(2,)), seed=8)
    with pytest.raises(InputError, match="differ"):
        interpolate_weights(start, other, 0.5)


def test_the_start_models_generator_thresholds_are_not_carried_over():
    own = {"pred_iou_thresh": 0.6, "stability_score_thresh": 0.8}
    start = seeded_model(SMALL, seed=9)
    start.generator_defaults = dict(own)
    merged = interpolate_weights(start, seeded_model(SMALL, seed=10), 0.5)
    assert start.generator_defaults == own and merged.generator_defaults == {}
