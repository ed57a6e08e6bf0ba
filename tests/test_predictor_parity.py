"""segany's Predictor against the reference SamPredictor on the same seeded weights.

Tolerance (fp32): embeddings and logits within 1e-4 of the reference's largest magnitude;
IoU scores within 1e-4 of max(1, largest reference score) (they estimate an IoU in [0, 1]: the
relative error of a lone near-zero score, e.g. -0.0016 off by 2e-7, measures float noise only);
binary masks equal except where the reference logit lies that close to the threshold.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import SMALL, max_rel_err, reference_model, seeded_model
from skimage import data

from segany.inference.predictor import Predictor
from segany.models import VIT_B

TOL = 1e-4


def _photo(h: int, w: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(data.astronaut()).resize((w, h), Image.BILINEAR))


def _pair(config, seed=0):
    from segment_anything import SamPredictor

    model = seeded_model(config, seed)
    ref = reference_model(config, model.state_dict())
    return Predictor(model), SamPredictor(ref)


def _cases(h: int, w: int):
    rng = np.random.default_rng(1)
    pts = np.stack([rng.uniform(0, w, 5), rng.uniform(0, h, 5)], 1)
    box = np.array([0.1 * w, 0.2 * h, 0.7 * w, 0.9 * h])
    return {
        "one_point": dict(point_coords=pts[:1], point_labels=np.array([1])),
        "mixed_points": dict(point_coords=pts, point_labels=np.array([1, 0, 1, 0, 0])),
        "box": dict(box=box),
        "box_1x4": dict(box=box[None]),
        "box_points": dict(box=box, point_coords=pts[:2], point_labels=np.array([1, 0])),
        "no_prompt": dict(),
    }


def score_err(scores, ref_scores) -> float:
    ref_scores = np.asarray(ref_scores, dtype=np.float64)
    scale = max(1.0, float(np.abs(ref_scores).max(initial=0.0)))
    return float(np.abs(np.asarray(scores, dtype=np.float64) - ref_scores).max() / scale)


def assert_same_masks(masks, ref_masks, ref_logits, thr, scale):
    near = np.abs(ref_logits - thr) <= TOL * scale
    differ = masks != ref_masks
    assert not (differ & ~near).any(), f"{int((differ & ~near).sum())} mask pixels differ"


def compare(ours, ref, multimask, **prompt):
    a = ours.predict(multimask_output=multimask, **prompt)
    am, ai, al = ref.predict(multimask_output=multimask, **prompt)
    assert a.masks.shape == am.shape and a.scores.shape == ai.shape
    assert max_rel_err(a.logits, al) < TOL
    assert score_err(a.scores, ai) < TOL
    full = ours.predict(multimask_output=multimask, return_logits=True, **prompt).masks
    ref_full = ref.predict(multimask_output=multimask, return_logits=True, **prompt)[0]
    assert max_rel_err(full, ref_full) < TOL
    assert_same_masks(a.masks, am, ref_full, 0.0, np.abs(ref_full).max())
    return a, (am, ai, al)


@pytest.mark.parametrize("hw", [(256, 256), (173, 301), (300, 97)])
def test_small_model_all_prompts(hw):
    ours, ref = _pair(SMALL)
    img = _photo(*hw)
    ours.set_image(img)
    ref.set_image(img)
    assert max_rel_err(ours.get_image_embedding(), ref.get_image_embedding()) < TOL
    assert ours.input_size == tuple(ref.input_size)
    for _name, prompt in _cases(*hw).items():
        for multimask in (True, False):
            a, (_, _, al) = compare(ours, ref, multimask, **prompt)
    # a mask from the previous round fed back with a new point
    prev = a.logits[np.argmax(a.scores)][None]
    prompt = dict(_cases(*hw)["mixed_points"], mask_input=prev)
    for multimask in (True, False):
        compare(ours, ref, multimask, **prompt)


def test_bgr_matches_reference():
    ours, ref = _pair(SMALL)
    img = _photo(120, 200)[:, :, ::-1].copy()
    ours.set_image(img, image_format="BGR")
    ref.set_image(img, image_format="BGR")
    assert max_rel_err(ours.get_image_embedding(), ref.get_image_embedding()) < TOL


def test_batched_boxes_equal_one_by_one():
    """B boxes in one call equal B separate reference calls (the reference rejects B×4)."""
    ours, ref = _pair(SMALL)
    ours.decode_chunk = 2  # the 3 prompts below are decoded in two chunks
    img = _photo(200, 250)
    ours.set_image(img)
    ref.set_image(img)
    boxes = np.array([[10, 10, 120, 150], [50, 60, 240, 190], [0, 0, 249, 199.0]])
    pts = np.array([[[30, 40], [90, 100]], [[100, 120], [60, 70]], [[5, 5], [200, 150]]])
    labels = np.array([[1, 0], [1, 1], [0, 1]])
    res = ours.predict(box=boxes, point_coords=pts, point_labels=labels)
    assert res.masks.shape == (3, 3, 200, 250) and res.scores.shape == (3, 3)
    for i in range(3):
        am, ai, al = ref.predict(box=boxes[i], point_coords=pts[i], point_labels=labels[i])
        assert max_rel_err(res.logits[i], al) < TOL
        assert score_err(res.scores[i], ai) < TOL
    # the torch-level entry point with the same prompts
    tb = ours.transform.apply_boxes_torch(torch.as_tensor(boxes, dtype=torch.float), img.shape[:2])
    masks, iou, low = ours.predict_torch(None, None, boxes=tb, multimask_output=False)
    assert masks.shape == (3, 1, 200, 250) and iou.shape == (3, 1) and low.shape == (3, 1, 64, 64)
    # ... and its values: the reference's predict_torch takes the same B×4 boxes.
    rm, ri, rl = ref.predict_torch(None, None, boxes=tb, multimask_output=False)
    assert max_rel_err(low, rl) < TOL and max_rel_err(iou, ri) < TOL
    ref_full = ref.predict_torch(None, None, boxes=tb, multimask_output=False, return_logits=True)
    scale = float(ref_full[0].abs().max())
    assert_same_masks(masks.numpy(), rm.numpy(), ref_full[0].numpy(), 0.0, scale)
    # Batched points (B×N×2) with multimask output, against the reference's batched call.
    tp = ours.transform.apply_coords_torch(torch.as_tensor(pts, dtype=torch.float), img.shape[:2])
    tl = torch.as_tensor(labels)
    masks, iou, low = ours.predict_torch(tp, tl, boxes=tb)
    rm, ri, rl = ref.predict_torch(tp, tl, boxes=tb)
    assert masks.shape == (3, 3, 200, 250) and max_rel_err(low, rl) < TOL
    assert max_rel_err(iou, ri) < TOL


@pytest.mark.parametrize(
    "precision,tol",
    # Measured on this model and image: bf16 1.1e-2 (embedding) / 5.9e-3 (logits),
    # fp16 1.2e-3 / 8.0e-4, relative to the largest fp32 magnitude.
    [("bf16", 3e-2), ("fp16", 5e-3)],
)
def test_reduced_precision_stays_close_to_fp32(precision, tol):
    """The encoder under bf16/fp16 autocast: outputs stay fp32 and within ``tol`` of fp32."""
    model = seeded_model(SMALL)
    img = _photo(173, 301)
    full, low = Predictor(model), Predictor(model, precision=precision)
    full.set_image(img)
    low.set_image(img)
    emb_err = max_rel_err(low.get_image_embedding(), full.get_image_embedding())
    assert low.get_image_embedding().dtype == torch.float32
    assert 0 < emb_err < tol  # > 0: the reduced precision really ran
    prompt = dict(
        point_coords=np.array([[50, 60], [200, 100]]),
        point_labels=np.array([1, 0]),
        box=np.array([30, 20, 250, 160]),
    )
    a, b = low.predict(**prompt), full.predict(**prompt)
    assert a.logits.dtype == np.float32
    assert max_rel_err(a.logits, b.logits) < tol and max_rel_err(a.scores, b.scores) < tol
    assert (a.masks == b.masks).mean() > 0.99


def test_embedding_reuse_skips_encoder():
    ours, _ = _pair(SMALL)
    img = _photo(150, 180)
    ours.set_image(img)
    emb = ours.get_image_embedding().clone()
    first = ours.predict(point_coords=[[60, 70]], point_labels=[1])
    fresh = Predictor(ours.model)
    calls = []
    hook = fresh.model.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        fresh.set_image_embedding(emb, original_size=(150, 180))
        again = fresh.predict(point_coords=[[60, 70]], point_labels=[1])
    finally:
        hook.remove()
    assert calls == []
    np.testing.assert_array_equal(first.logits, again.logits)


def test_embedding_cache():
    model = seeded_model(SMALL)
    p = Predictor(model, cache_size=2)
    calls = []
    hook = model.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        a, b = _photo(100, 120), _photo(90, 60)
        for img in (a, b, a, b):
            p.set_image(img)
        assert len(calls) == 2
        assert p.original_size == (90, 60)
    finally:
        hook.remove()


@pytest.mark.slow
def test_vit_b_full_size():
    """The official vit_b sizes at 1024 px input on an odd-sized photograph."""
    torch.manual_seed(0)
    ours, ref = _pair(VIT_B)
    img = _photo(375, 500)
    ours.set_image(img)
    ref.set_image(img)
    assert max_rel_err(ours.get_image_embedding(), ref.get_image_embedding()) < TOL
    cases = _cases(375, 500)
    for multimask in (True, False):
        for name in ("one_point", "mixed_points", "box", "box_points"):
            a, _ = compare(ours, ref, multimask, **cases[name])
    prev = a.logits[np.argmax(a.scores)][None]
    compare(ours, ref, True, mask_input=prev, **cases["mixed_points"])


def test_batched_forward_matches_reference():
    """``Sam.forward``, the official list-of-dicts call for several images at once."""
    model = seeded_model(SMALL)
    ref = reference_model(SMALL, model.state_dict())
    gen = torch.Generator().manual_seed(4)
    batch = [
        {  # already resized so the long side is 256, as the official call expects
            "image": torch.randint(0, 256, (3, 256, 192), generator=gen).float(),
            "original_size": (400, 300),
            "point_coords": torch.tensor([[[50.0, 60.0], [120.0, 30.0]]] * 2),
            "point_labels": torch.tensor([[1, 0], [1, 1]]),
            "boxes": torch.tensor([[10.0, 20.0, 150.0, 200.0], [0.0, 0.0, 100.0, 100.0]]),
        },
        {
            "image": torch.randint(0, 256, (3, 170, 256), generator=gen).float(),
            "original_size": (170, 256),
            "mask_inputs": torch.randn(1, 1, 64, 64, generator=gen),
        },
    ]
    with torch.inference_mode():
        ours, theirs = model(batch, multimask_output=True), ref(batch, multimask_output=True)
    for a, b, record in zip(ours, theirs, batch, strict=True):
        assert a["masks"].shape == b["masks"].shape
        assert max_rel_err(a["low_res_logits"], b["low_res_logits"]) < TOL
        assert max_rel_err(a["iou_predictions"], b["iou_predictions"]) < TOL
        ref_full = ref.postprocess_masks(
            b["low_res_logits"], record["image"].shape[-2:], record["original_size"]
        ).numpy()
        assert_same_masks(
            a["masks"].numpy(), b["masks"].numpy(), ref_full, 0.0, np.abs(ref_full).max()
        )
