"""The Hiera encoder's inference path (segany.modeling.hiera.fast) against
``ImageEncoderHiera.forward`` / ``forward_with_early``: Hiera-T at 1024 px (whole windows in
stages 1-2, padded windows in stages 3-4) and at 256 px with bands of one window row and a
batch of two, on seeded weights."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import max_rel_err, seeded_model

from segany.modeling.hiera import fast
from segany.models import VARIANTS


def _encoder(size: int):
    cfg = VARIANTS["sam2.1_hiera_tiny"]
    cfg = dataclasses.replace(cfg, encoder=dataclasses.replace(cfg.encoder, image_size=size))
    return seeded_model(cfg, seed=2).image_encoder


def _check(encoder, images: torch.Tensor) -> None:
    with torch.inference_mode():
        want, want_high = encoder.forward_with_early(images)
        got, got_high = fast.encode_image_with_early(encoder, images)
        plain = fast.encode_image(encoder, images)
    assert got.shape == want.shape and got_high.shape == want_high.shape
    assert got.stride() == want.stride() and got_high.stride() == want_high.stride()
    assert max_rel_err(got, want) < 1e-5
    assert max_rel_err(got_high, want_high) < 1e-5
    assert max_rel_err(plain, want) < 1e-5


def test_fast_matches_module_tiny_1024():
    images = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(1))
    _check(_encoder(1024), images)


@pytest.mark.parametrize("rows", [1, 100000], ids=["one_window_row_bands", "one_band"])
def test_fast_matches_module_256_batch(monkeypatch, rows):
    monkeypatch.setattr(fast, "ROWS", rows)
    images = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(2))
    _check(_encoder(256), images)


def test_position_table_follows_the_parameters():
    encoder = _encoder(256).eval()
    trunk = encoder.trunk
    with torch.inference_mode():
        first = fast.position_table(trunk, 64, 64)
        assert fast.position_table(trunk, 64, 64) is first  # kept
        assert torch.equal(first, trunk.position_table(64, 64))
    with torch.no_grad():
        trunk.pos_embed.add_(1.0)
    with torch.inference_mode():
        assert torch.equal(fast.position_table(trunk, 64, 64), trunk.position_table(64, 64))
        assert fast.position_table(trunk, 32, 32).shape == (1, 32, 32, trunk.pos_embed.shape[1])
    # a precision copy's tables are inference tensors (no version counter): kept all the same,
    # and made anew when their values change
    with torch.inference_mode():
        trunk = _encoder(256).eval().to(torch.bfloat16).trunk
        assert trunk.pos_embed.is_inference()
        first = fast.position_table(trunk, 64, 64)
        assert fast.position_table(trunk, 64, 64) is first
        trunk.pos_embed_window.add_(1.0)
        again = fast.position_table(trunk, 64, 64)
        assert again is not first and torch.equal(again, trunk.position_table(64, 64))


def test_autograd_and_training_get_the_module_forward():
    encoder = _encoder(256)
    images = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(3))
    emb, high = fast.encode_image_with_early(encoder, images)  # grad on: the module's forward
    assert emb.requires_grad and high.requires_grad
    encoder.train()
    with torch.no_grad():
        assert not fast._applies(encoder)
