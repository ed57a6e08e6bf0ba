"""The encoder's chunked inference path (segany.modeling.vit.chunked) against the reference
encoder and against ``ImageEncoderViT.forward``, with chunks small enough that every loop runs
several times and the windows need padding."""

from __future__ import annotations

import pytest
import torch
from helpers import SMALL, max_rel_err, reference_model, seeded_model

from segany.config import replace_encoder
from segany.inference import precision as P
from segany.modeling.vit import chunked as encoding
from segany.modeling.vit.encoder import Attention

# window 5 on the 16×16 grid pads it to 20×20: the padding path of every windowed block
PADDED = replace_encoder(SMALL, window_size=5, depth=3, global_attn_indexes=(1,))


@pytest.fixture
def small_chunks(monkeypatch):
    # 48 tokens a chunk (does not divide 256) and 4 KB bias blocks (16 query rows of 64 keys)
    monkeypatch.setattr(encoding, "ROWS", 48)
    monkeypatch.setattr(Attention, "bias_block_bytes", 4096)
    monkeypatch.setattr(encoding, "CHUNK_ABOVE_BYTES", 0)  # chunked even at this small size


@pytest.mark.parametrize("config", [SMALL, PADDED], ids=["unpadded", "padded"])
def test_chunked_encoder_matches_reference(config, small_chunks):
    model = seeded_model(config, seed=3)
    ref = reference_model(config, model.state_dict()).image_encoder.eval()
    size = config.image_size
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        want = ref(images)
        got = encoding.encode_image(model.image_encoder, images)
        plain = model.image_encoder(images)
    assert got.shape == want.shape == (2, config.prompt.embed_dim, 16, 16)
    assert max_rel_err(got, want) < 1e-5
    assert max_rel_err(plain, want) < 1e-5


def test_chunked_encoder_batch_rows_independent(small_chunks):
    """Each image of a batch gets what it gets alone (no chunk mixes images)."""
    model = seeded_model(PADDED, seed=4)
    images = torch.randn(3, 3, 256, 256, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        together = encoding.encode_image(model.image_encoder, images)
        alone = torch.cat([encoding.encode_image(model.image_encoder, im[None]) for im in images])
    assert max_rel_err(together, alone) < 1e-5


def test_chunked_int8_encoder_close_to_fp32(small_chunks):
    model = seeded_model(PADDED, seed=5)
    images = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        exact = model.image_encoder(images)
        q = encoding.encode_image(P.int8_encoder(model), images)
    cos = torch.nn.functional.cosine_similarity(q.flatten(), exact.flatten(), dim=0)
    assert cos > 0.999


def test_with_autograd_it_is_forward():
    """Training keeps gradients: with autograd on, encode_image is the plain forward."""
    model = seeded_model(SMALL, seed=6).train()
    images = torch.randn(1, 3, 256, 256)
    out = encoding.encode_image(model.image_encoder, images)
    out.sum().backward()
    grad = model.image_encoder.blocks[0].attn.qkv.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_hooks_on_the_encoder_still_fire():
    model = seeded_model(SMALL, seed=7)
    calls = []
    hook = model.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        with torch.inference_mode():
            encoding.encode_image(model.image_encoder, torch.randn(1, 3, 256, 256))
    finally:
        hook.remove()
    assert calls == [1]


def test_training_gradients_match_reference(small_chunks, monkeypatch):
    """With autograd on, every attention is one fused call (blocks would make the backward
    quadratic) and the encoder's gradients equal the reference's."""
    model = seeded_model(PADDED, seed=8).train()
    ref = reference_model(PADDED, model.state_dict()).image_encoder.train()
    images = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(4))
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(
        torch.nn.functional,
        "scaled_dot_product_attention",
        lambda *a, **k: calls.append(1) or sdpa(*a, **k),
    )
    weights = torch.randn(
        2, PADDED.prompt.embed_dim, 16, 16, generator=torch.Generator().manual_seed(5)
    )
    (model.image_encoder(images) * weights).sum().backward()
    assert len(calls) == PADDED.encoder.depth  # one call per block, blocks of 4 KB or not
    (ref(images) * weights).sum().backward()
    mine = dict(model.image_encoder.named_parameters())
    for name, p in ref.named_parameters():
        assert max_rel_err(mine[name].grad, p.grad) < 1e-4, name


@pytest.mark.parametrize("limit, chunked", [(0, True), (1 << 40, False)])
def test_chunking_only_above_the_activation_size(monkeypatch, limit, chunked):
    model = seeded_model(SMALL, seed=6)
    images = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(4))
    calls = []
    mlp = encoding._mlp_
    monkeypatch.setattr(encoding, "_mlp_", lambda block, x: calls.append(1) or mlp(block, x))
    monkeypatch.setattr(encoding, "CHUNK_ABOVE_BYTES", limit)
    with torch.inference_mode():
        got = encoding.encode_image(model.image_encoder, images)
        plain = model.image_encoder(images)
    assert bool(calls) == chunked
    assert max_rel_err(got, plain) < 1e-5
