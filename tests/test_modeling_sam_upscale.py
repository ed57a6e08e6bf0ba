"""segany.modeling.sam_upscale: one banded operator per axis equals the official two bilinear
resizes.

Tolerance: 1e-6 of the largest logit (float32 rounding of a different summation order);
thresholded masks equal except where the official logit lies within that of the threshold.
"""

from __future__ import annotations

import pytest
import torch
from helpers import SMALL, seeded_model

from segany.masks import stability_score
from segany.modeling.sam_upscale import axis_operator, upscale_logits, upscale_with_stability

TOL = 1e-6

# (original H, W), (input h, w) inside the padded square: upscaling, downscaling, square,
# one-pixel-wide, and sizes whose scale factors are not exact in binary.
CASES = [
    ((480, 512), (960, 1024), 1024),
    ((1500, 2000), (768, 1024), 1024),
    ((100, 37), (1024, 379), 1024),
    ((1024, 1024), (1024, 1024), 1024),
    ((300, 97), (1024, 331), 1024),
    ((1, 7), (37, 256), 256),
    ((173, 301), (147, 256), 256),
]


def official(low: torch.Tensor, inp, orig, size: int) -> torch.Tensor:
    model = seeded_model(SMALL)
    # postprocess_masks upscales to the prompt frame (the prompt encoder's input size)
    model.image_encoder.img_size = size
    model.prompt_encoder.input_image_size = (size, size)
    return model.postprocess_masks(low, inp, orig)


@pytest.mark.parametrize("orig,inp,size", CASES)
def test_equals_two_resizes(orig, inp, size):
    gen = torch.Generator().manual_seed(0)
    s = size // 4
    low = torch.randn(2, 3, s, s, generator=gen) * 8
    want = official(low, inp, orig, size)
    got = upscale_logits(low, inp, orig, size)
    assert got.shape == want.shape == (2, 3, *orig)
    scale = want.abs().max()
    assert float((got - want).abs().max() / scale) < TOL
    binary = upscale_logits(low, inp, orig, size, threshold=0.0)
    assert binary.dtype == torch.bool and binary.shape == want.shape
    near = want.abs() <= TOL * scale
    assert not ((binary != (want > 0)) & ~near).any()


def test_operator_is_banded_and_rows_sum_to_one():
    op = axis_operator(256, 1024, 960, 480)
    assert op.n_in == 256 and op.n_out == 480
    covered = 0
    for r0, r1, lo, hi, block in op.blocks:
        assert r0 == covered and hi - lo <= 48  # a band, not a dense 64×256 block
        torch.testing.assert_close(block.double().sum(1), torch.ones(r1 - r0, dtype=torch.float64))
        covered = r1
    assert covered == 480


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="bad sizes"):
        axis_operator(256, 1024, 2000, 480)


@pytest.mark.parametrize("orig,inp,size", CASES[:3] + CASES[-2:])
def test_upscale_with_stability_equals_logits_then_score(orig, inp, size):
    # Bit for bit what the generator computed before from full-size float logits.
    gen = torch.Generator().manual_seed(1)
    s = size // 4
    low = torch.randn(5, s, s, generator=gen) * 4
    low[3] = -50.0  # nothing above either threshold: 0/0, NaN, as stability_score gives
    logits = upscale_logits(low, inp, orig, size)
    masks, stab = upscale_with_stability(low, inp, orig, size, 0.25, 1.5)
    assert masks.dtype == torch.bool and masks.shape == (5, *orig)
    assert torch.equal(masks, logits > 0.25)
    want = stability_score(logits, 0.25, 1.5)
    assert torch.isnan(stab[3]) and torch.isnan(want[3])
    keep = ~torch.isnan(want)
    assert torch.equal(stab[keep], want[keep])
