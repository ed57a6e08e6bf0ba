"""SAM 2's shared-image decoder (``segany.modeling.mask_decoder_sam2_shared.Sam2PointDecoder``)
against the ``MaskDecoderSAM2.forward`` it mirrors, on seeded SAM 2.1 tiny weights with a random
embedding and high-res map: clicks, boxes (as SAM 2 merges them: corner points), a batch of
prompts, multimask on and off, and the single-mask answer with the stability fallback taken on
some rows and not on others. Logits within 3e-6 of the reference's largest magnitude (measured
~6e-7), IoU and object scores likewise."""

from __future__ import annotations

import pytest
import torch
from helpers import max_rel_err, perturb_

from segany.modeling import Sam2
from segany.modeling.mask_decoder_sam2_shared import Sam2PointDecoder
from segany.modeling.mask_decoder_shared import PointDecoder
from segany.models import VARIANTS, build_sam

TOL = 3e-6


@pytest.fixture(scope="module")
def case():
    """(model, embedding 1×256×64×64, packed high-res 1×128×128×192, the shared decoder)."""
    with torch.random.fork_rng(devices=[]):  # the initial weights too: the same every run
        torch.manual_seed(3)
        model = perturb_(build_sam(VARIANTS["sam2.1_hiera_tiny"]), 3).eval()
    assert isinstance(model, Sam2)
    gen = torch.Generator().manual_seed(3)
    emb = torch.randn(1, 256, 64, 64, generator=gen)
    high_res = torch.randn(1, 128, 128, 192, generator=gen)
    return model, emb, high_res, Sam2PointDecoder(model, emb, high_res)


def _prompts(kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Points B×N×2 in the 1024² frame and labels B×N, SAM 2's boxes already as corners."""
    gen = torch.Generator().manual_seed(len(kind))
    if kind == "one_point":
        return torch.tensor([[[412.0, 301.5]]]), torch.ones(1, 1, dtype=torch.int)
    if kind == "points":  # a batch of 5, two clicks each, one negative
        return torch.rand(5, 2, 2, generator=gen) * 1024, torch.tensor([[1, 0]] * 5).int()
    corners = torch.rand(4, 2, 2, generator=gen).sort(dim=1).values * 1024
    labels = torch.tensor([[2, 3]] * 4).int()
    box = Sam2.merge_boxes(None, None, corners.reshape(4, 4))
    assert box is not None and torch.equal(box[0], corners) and torch.equal(box[1], labels)
    if kind == "boxes":
        return box
    click = torch.rand(4, 1, 2, generator=gen) * 1024  # "box_point": a box and a click each
    return torch.cat([corners, click], 1), torch.cat([labels, torch.ones(4, 1).int()], 1)


def _reference(model, emb, high_res, points, multimask):
    pe = model.prompt_encoder
    sparse, dense = pe(points=points, boxes=None, masks=None)
    with torch.inference_mode():
        want = model.mask_decoder(emb, pe.get_dense_pe(), sparse, dense, multimask, high_res)
        all_masks, all_iou, obj = model.mask_decoder.predict_all(
            emb, pe.get_dense_pe(), sparse, dense, high_res
        )
    return sparse, want, (all_masks, all_iou, obj)


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("kind", ["one_point", "points", "boxes", "box_point"])
def test_decode_matches_the_decoder(case, kind, multimask):
    model, emb, high_res, dec = case
    sparse, (want_masks, want_iou), (all_masks, all_iou, obj) = _reference(
        model, emb, high_res, _prompts(kind), multimask
    )
    masks, iou = dec.decode(sparse, multimask)
    assert masks.shape == want_masks.shape and iou.shape == want_iou.shape
    assert max_rel_err(masks, want_masks) < TOL
    assert max_rel_err(iou, want_iou) < TOL
    tokens, keys = dec.transformer(sparse)
    assert tokens.shape[1] == 2 + model.mask_decoder.num_mask_tokens  # object score, IoU, masks
    assert max_rel_err(dec.iou_predictions(tokens), all_iou) < TOL
    assert max_rel_err(dec.object_scores(tokens), obj) < TOL
    # Any subset of outputs, e.g. the single one and the last multimask one, for some prompts.
    rows = torch.arange(0, len(sparse), 2)
    some = dec.mask_logits(tokens[rows], keys[rows], [0, 3])
    assert max_rel_err(some, all_masks[rows][:, [0, 3]]) < TOL


def test_single_answer_with_and_without_the_fallback(case, monkeypatch):
    # A threshold between the rows' stabilities: some single-mask outputs are kept, the others
    # replaced by their best multimask output; both answers must equal the decoder's.
    model, emb, high_res, dec = case
    points = _prompts("points")
    sparse, _, (all_masks, all_iou, _) = _reference(model, emb, high_res, points, False)
    stability = model.mask_decoder.stability(all_masks[:, :1])[:, 0]
    # Midway between two rows' stabilities, far from both (a count that rounding moves by one
    # pixel changes a stability by ~1e-5).
    levels = sorted(set(stability.tolist()))
    assert len(levels) > 1, stability
    k = len(levels) // 2
    thresh = (levels[k - 1] + levels[k]) / 2
    monkeypatch.setattr(model.mask_decoder, "stability_thresh", thresh)
    _, (want_masks, want_iou), _ = _reference(model, emb, high_res, points, False)
    stable = stability >= thresh
    assert stable.any() and (~stable).any()
    best = 1 + all_iou[:, 1:].argmax(dim=1)
    assert (best != 0).all() and not torch.equal(want_masks[~stable, 0], all_masks[~stable, 0])
    masks, iou = dec.decode(sparse, False)
    assert max_rel_err(masks, want_masks) < TOL
    assert max_rel_err(iou, want_iou) < TOL
    picked = all_masks[torch.arange(len(best)), torch.where(stable, 0, best)]
    assert max_rel_err(masks[:, 0], picked) < TOL


def test_kinds_are_kept_apart(case):
    model, emb, high_res, _ = case
    with pytest.raises(ValueError, match="Sam2PointDecoder"):
        PointDecoder(model, emb)
    with pytest.raises(ValueError, match="1×2h×2w×E"):
        Sam2PointDecoder(model, emb, high_res[0])
