"""The shared-embedding decoder (``segany.modeling.mask_decoder_shared.PointDecoder``) against
the ``MaskDecoder`` it mirrors, on seeded weights: the same masks and IoU to 1e-5 of the largest
value, chunked calls, two threads at once, a decoder without two-way layers."""

from __future__ import annotations

import dataclasses
import threading

import pytest
import torch
from helpers import SMALL, perturb_

from segany.config import SamConfig
from segany.modeling import mask_decoder_shared as decoding
from segany.modeling.mask_decoder_shared import PointDecoder
from segany.models import build_sam


def _decoder_case(cfg: SamConfig, seed: int, prompts: int):
    """A perturbed model, an image embedding and one-point prompts: (model, embedding, sparse
    B×T×C, the official MaskDecoder's masks B×4×s×s and IoU B×4)."""
    model = perturb_(build_sam(cfg), seed, scale=1.0).eval()
    gen = torch.Generator().manual_seed(seed)
    emb = torch.randn(1, 256, 16, 16, generator=gen)
    coords = torch.rand(prompts, 1, 2, generator=gen, dtype=torch.float64) * 256
    labels = torch.ones(prompts, 1, dtype=torch.int)
    with torch.inference_mode():
        sparse, dense = model.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        pe = model.prompt_encoder.get_dense_pe()
        want_masks, want_iou = model.mask_decoder.predict_masks(emb, pe, sparse, dense)
    return model, emb, sparse, want_masks, want_iou


@pytest.mark.parametrize("seed", [0, 1])
def test_point_decoder_matches_mask_decoder(seed):
    model, emb, sparse, want_masks, want_iou = _decoder_case(SMALL, seed, 9)
    with torch.inference_mode():
        dec = PointDecoder(model, emb)
        tokens, keys = dec.transformer(sparse)
        iou = dec.iou_predictions(tokens)
        rows = torch.tensor([0, 4, 8])
        before = keys.clone()
        masks = dec.mask_logits(tokens[rows], keys[rows], range(1, 4))
        all_masks = dec.mask_logits(tokens, keys, range(4))  # norm and GELU work in place
    # The IoU token and the mask tokens come back; the prompt tokens' final attention is skipped.
    assert tokens.shape[:2] == (9, 1 + model.mask_decoder.num_mask_tokens)
    assert torch.equal(keys, before)  # never the caller's image tokens
    assert (all_masks - want_masks).abs().max() <= 1e-5 * want_masks.abs().max()
    scale = want_masks.abs().max()
    assert (iou - want_iou).abs().max() <= 1e-5 * want_iou.abs().max()
    assert (masks - want_masks[rows, 1:]).abs().max() <= 1e-5 * scale


def test_point_decoder_calls_in_chunks_keep_their_results(monkeypatch):
    # The decoder reuses a work buffer between calls and norms the image tokens a few rows at a
    # time: results handed out earlier stay intact, and chunked calls equal one wide call.
    monkeypatch.setattr(decoding, "ROWS", 100)  # 256 tokens: three chunks, the last partial
    model, emb, sparse, want_masks, want_iou = _decoder_case(SMALL, 5, 7)
    with torch.inference_mode():
        dec = PointDecoder(model, emb)
        whole_tokens, whole_keys = dec.transformer(sparse)
        parts = [dec.transformer(sparse[s : s + 3]) for s in (0, 3, 6)]  # sizes 3, 3, 1
        tokens = torch.cat([t for t, _ in parts])
        keys = torch.cat([k for _, k in parts])
        again_tokens, again_keys = dec.transformer(sparse)
    scale = whole_keys.abs().max()
    assert (keys - whole_keys).abs().max() <= 1e-5 * scale
    assert (tokens - whole_tokens).abs().max() <= 1e-5 * whole_tokens.abs().max()
    assert torch.equal(again_keys, whole_keys) and torch.equal(again_tokens, whole_tokens)
    iou = dec.iou_predictions(whole_tokens)
    assert (iou - want_iou).abs().max() <= 1e-5 * want_iou.abs().max()
    with torch.inference_mode():
        masks = dec.mask_logits(tokens, keys, range(4))
    assert (masks - want_masks).abs().max() <= 1e-5 * want_masks.abs().max()


def test_point_decoder_from_two_threads_at_once():
    # Each thread has its own work buffer: chunks decoded side by side equal a serial decode.
    model, emb, sparse, _, _ = _decoder_case(SMALL, 6, 8)
    with torch.inference_mode():
        dec = PointDecoder(model, emb)
        want = [dec.transformer(sparse[s : s + 2]) for s in range(0, 8, 2)]
    both = threading.Barrier(2, timeout=30)
    got: dict[int, list] = {}

    def run(first: int) -> None:
        both.wait()
        with torch.inference_mode():
            got[first] = [dec.transformer(sparse[s : s + 2]) for s in (first, first + 4)] * 50

    threads = [threading.Thread(target=run, args=(first,)) for first in (0, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for first in (0, 2):
        for i, (tokens, keys) in enumerate(got[first]):
            want_tokens, want_keys = want[(first + 4 * (i % 2)) // 2]
            assert torch.equal(tokens, want_tokens) and torch.equal(keys, want_keys)


def test_point_decoder_with_a_depth_0_decoder():
    # No two-way layers: the final attention alone reads the prompt-independent image.
    cfg = dataclasses.replace(
        SMALL, name="depth0", decoder=dataclasses.replace(SMALL.decoder, depth=0)
    )
    model, emb, sparse, want_masks, want_iou = _decoder_case(cfg, 3, 5)
    with torch.inference_mode():
        dec = PointDecoder(model, emb)
        tokens, keys = dec.transformer(sparse)
        iou = dec.iou_predictions(tokens)
        masks = dec.mask_logits(tokens, keys, range(4))
    assert len(model.mask_decoder.transformer.layers) == 0
    assert (iou - want_iou).abs().max() <= 1e-5 * want_iou.abs().max()
    assert (masks - want_masks).abs().max() <= 1e-5 * want_masks.abs().max()
