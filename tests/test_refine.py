"""segany.refine: masks snapped to the image's edges by a colour guided filter."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import SMALL, perturb_

from segany.errors import InputError
from segany.inference.predictor import Predictor
from segany.models import build_sam
from segany.refine import RefinedPredictor, default_radius, guided_filter, refine_logits
from segany.zoom import ZoomPredictor


def _by_windows(guide: np.ndarray, p: np.ndarray, r: int, eps: float) -> np.ndarray:
    """The guided filter written out: one ridge regression per window, in float64, with the
    image's edges mirrored (``np.pad`` "symmetric", which repeats the edge pixel)."""
    h, w = p.shape
    gi = np.pad(guide.astype(np.float64), ((r, r), (r, r), (0, 0)), mode="symmetric")
    pp = np.pad(p.astype(np.float64), r, mode="symmetric")
    a = np.zeros((h, w, 3))
    b = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            win_i = gi[y : y + 2 * r + 1, x : x + 2 * r + 1].reshape(-1, 3)
            win_p = pp[y : y + 2 * r + 1, x : x + 2 * r + 1].reshape(-1)
            mi, mp = win_i.mean(axis=0), win_p.mean()
            centred = win_i - mi
            sigma = centred.T @ centred / len(win_p)
            a[y, x] = np.linalg.solve(
                sigma + eps * np.eye(3), centred.T @ (win_p - mp) / len(win_p)
            )
            b[y, x] = mp - a[y, x] @ mi
    pa = np.pad(a, ((r, r), (r, r), (0, 0)), mode="symmetric")
    pb = np.pad(b, r, mode="symmetric")
    q = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            ma = pa[y : y + 2 * r + 1, x : x + 2 * r + 1].reshape(-1, 3).mean(axis=0)
            q[y, x] = ma @ guide[y, x] + pb[y : y + 2 * r + 1, x : x + 2 * r + 1].mean()
    return q


@pytest.mark.parametrize("eps", [1e-4, 1e-2])
def test_guided_filter_equals_one_regression_per_window(eps):
    rng = np.random.default_rng(0)
    guide = rng.random((13, 17, 3)).astype(np.float32)
    p = rng.random((13, 17)).astype(np.float32)
    got = guided_filter(guide, p, 2, eps)
    assert got.dtype == np.float32 and got.shape == p.shape
    np.testing.assert_allclose(got, _by_windows(guide, p, 2, eps), atol=2e-5)


def test_a_flat_mask_stays_flat_and_an_edge_of_the_image_is_taken():
    rng = np.random.default_rng(1)
    guide = rng.random((30, 40, 3)).astype(np.float32)
    flat = guided_filter(guide, np.full((30, 40), 0.7, np.float32), 3, 1e-3)
    np.testing.assert_allclose(flat, 0.7, atol=1e-5)
    # A dark left half and a bright right half; masks whose edge lies a pixel off either way
    # (a spill, a miss) take the image's edge. The filter is a local linear fit, not a snap:
    # an edge far off (here 3 px at radius 4) moves only part of the way.
    image = np.zeros((30, 40, 3), np.uint8)
    image[:, 20:] = 200
    columns = np.arange(40)
    for start in (19, 21):
        logits = np.where(columns >= start, 4.0, -4.0)[None, None].repeat(30, 1)
        refined = refine_logits(image, logits.astype(np.float32), radius=4, eps=1e-4)
        assert ((refined[0] > 0) == (columns >= 20)[None]).all(), start


def test_refine_logits_visits_only_the_masks_and_keeps_the_rest():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    logits = np.full((3, 64, 80), -12.0, np.float32)
    logits[0, 20:30, 30:45] = 5.0  # a blob
    logits[1, 22:29, 34:42] = 5.0  # a smaller one inside it (multimask outputs overlap)
    out = refine_logits(image, logits, radius=3, eps=1e-3)  # the third mask is empty
    # Far from the blobs (beyond twice the radius) and on the empty mask: untouched.
    assert np.array_equal(out[2], logits[2])
    far = np.ones((64, 80), bool)
    far[14:36, 24:51] = False
    for k in (0, 1):
        assert np.array_equal(out[k][far], logits[k][far])
        # Inside the window, each is the filter of the whole image's probability (the guide's
        # statistics are shared between the masks), thresholded the same.
        prob = (1 / (1 + np.exp(-logits[k]))).astype(np.float32)
        whole = guided_filter(image.astype(np.float32) / 255, prob, 3, 1e-3)
        assert (whole > 0.5).any(), k  # (a mask the filter would erase is the next test's)
        assert np.array_equal(out[k] > 0, whole > 0.5), k
    assert np.abs(out).max() <= 20.0
    # The same answer mask by mask: sharing the window changes nothing that counts.
    for k in (0, 1):
        assert np.array_equal(refine_logits(image, logits[k : k + 1], 3, 1e-3)[0] > 0, out[k] > 0)


def test_a_mask_the_window_would_erase_is_kept_as_the_model_gave_it():
    """A 4×4 object on a flat image with a 15-px radius: the window's mean drowns it (the
    filtered probability stays far below 0.5), so the model's own mask is returned; a larger
    object in the same call is refined as usual."""
    image = np.full((80, 80, 3), 120, np.uint8)
    logits = np.full((2, 80, 80), -8.0, np.float32)
    logits[0, 40:44, 40:44] = 8.0
    logits[1, 10:70, 10:70] = 8.0
    prob = (1 / (1 + np.exp(-logits[0]))).astype(np.float32)
    assert guided_filter(image.astype(np.float32) / 255, prob, 15, 1e-4).max() < 0.5
    out = refine_logits(image, logits, radius=15, eps=1e-4)
    assert np.array_equal(out[0], logits[0])
    assert not np.array_equal(out[1], logits[1]) and (out[1] > 0).sum() > 3000


def test_refine_logits_refuses_bad_input():
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(InputError, match="radius"):
        refine_logits(image, np.zeros((1, 8, 8)), radius=0)
    with pytest.raises(InputError, match="eps"):
        refine_logits(image, np.zeros((1, 8, 8)), eps=float("nan"))
    with pytest.raises(InputError, match="same size"):
        refine_logits(image, np.zeros((1, 8, 9)))
    with pytest.raises(InputError, match="uint8"):
        refine_logits(image.astype(np.float32), np.zeros((1, 8, 8)))


@pytest.fixture(scope="module")
def model():
    return perturb_(build_sam(SMALL), 5, scale=1.0).eval()


@pytest.mark.parametrize("wrap_zoom", [False, True])
def test_refined_predictor_returns_the_refined_masks_and_the_models_scores(model, wrap_zoom):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)

    def make():
        inner = Predictor(model, cache=False)
        return ZoomPredictor(inner) if wrap_zoom else inner

    plain, refined = make(), RefinedPredictor(make(), radius=3, eps=1e-3)
    plain.set_image(image)
    refined.set_image(image)
    prompt = dict(
        point_coords=np.array([[60.0, 40.0]]),
        point_labels=np.array([1]),
        box=np.array([50.0, 30.0, 70.0, 50.0]),
    )
    want = plain.predict(**prompt, return_logits=True)
    got = refined.predict(**prompt)
    assert got.masks.dtype == bool and got.masks.shape == (3, 90, 120)
    assert np.array_equal(got.masks, refine_logits(image, want.masks, 3, 1e-3) > 0)
    assert np.array_equal(got.scores, want.scores) and np.array_equal(got.logits, want.logits)
    logits = refined.predict(**prompt, return_logits=True).masks
    assert np.array_equal(logits > 0, got.masks)


def test_refined_predictor_takes_a_batch_of_boxes(model):
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (60, 70, 3), dtype=np.uint8)
    refined = RefinedPredictor(Predictor(model, cache=False), radius=2, eps=1e-3)
    refined.set_image(image)
    boxes = np.array([[5.0, 5.0, 30.0, 30.0], [20.0, 10.0, 60.0, 50.0]])
    got = refined.predict(box=boxes, multimask_output=False)
    assert got.masks.shape == (2, 1, 60, 70)
    for i, box in enumerate(boxes):
        assert np.array_equal(got.masks[i], refined.predict(box=box, multimask_output=False).masks)


def test_refined_predictor_refuses_what_it_cannot_answer(model):
    with pytest.raises(InputError, match="radius"):
        RefinedPredictor(Predictor(model, cache=False), radius=2.5)
    with pytest.raises(InputError, match="eps"):
        RefinedPredictor(Predictor(model, cache=False), eps=0)
    with pytest.raises(InputError, match="set_image"):
        RefinedPredictor(Predictor(model, cache=False)).predict(box=np.array([1.0, 1.0, 5.0, 5.0]))


def test_the_default_radius_is_a_fraction_of_the_longer_side():
    assert default_radius((384, 288)) == 24  # the bundled model's input size
    assert default_radius((200, 260)) == 16
    assert default_radius((7, 5)) == 1  # never below one pixel


def test_a_zoomed_answer_is_refined_at_the_crops_scale(model):
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)
    box = np.array([60.0, 40.0, 80.0, 52.0])  # margin 1: the crop is x 36..104, y 12..80
    zoom = ZoomPredictor(Predictor(model, cache=False), margin=1.0)
    zoom.set_image(image)
    raw = zoom.predict(box=box, return_logits=True).masks
    assert zoom.crop == (36, 12, 104, 80)
    refined = RefinedPredictor(ZoomPredictor(Predictor(model, cache=False), margin=1.0))
    refined.set_image(image)
    got = refined.predict(box=box).masks
    assert default_radius((68, 68)) == 4 != default_radius((150, 200))
    assert np.array_equal(got, refine_logits(image, raw, 4) > 0)


@pytest.mark.slow
def test_refinement_improves_the_bundled_model_on_held_out_scenes():
    # Radius and eps were chosen on other scenes (seeds 20261121 and 20261203).
    from segany.checkpoints import load_model
    from segany.evaluate import evaluate_prompts
    from segany.train.quality import synthetic_samples

    bundled = load_model().eval()
    scenes = synthetic_samples(12, seed=778)
    options = dict(max_clicks=3, bootstrap=0)
    protocols = ("point", "box", "clicks")
    plain = evaluate_prompts(Predictor(bundled, cache=False), scenes, protocols, **options)
    refined = evaluate_prompts(
        RefinedPredictor(Predictor(bundled, cache=False)), scenes, protocols, **options
    )
    # Measured (70 objects): point 0.685 -> 0.746, box 0.749 -> 0.820, 3 clicks 0.740 -> 0.797.
    assert refined["point"].miou >= plain["point"].miou + 0.02
    assert refined["box"].miou >= plain["box"].miou + 0.02
    three = refined["clicks"].metrics["miou@3"].value
    assert three >= plain["clicks"].metrics["miou@3"].value + 0.02


def test_large_radii_take_the_fast_filter_with_the_same_masks(monkeypatch):
    import cv2

    import segany.refine as refine

    # A disk on a gradient with noise; the model's disk is 6 px off and 4 px too large.
    h, w = 600, 900
    rng = np.random.default_rng(6)
    image = np.zeros((h, w, 3), np.uint8)
    image[:] = np.linspace(40, 120, w)[None, :, None].astype(np.uint8)
    cv2.circle(image, (450, 300), 150, (200, 150, 90), -1)
    image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[:h, :w]
    truth = np.hypot(yy - 300, xx - 450) <= 150
    logits = np.clip(80 * (1 - np.hypot(yy - 306, xx - 446) / 154), -12, 12)[None]
    radius = 60  # > FAST_ABOVE: fitted at half the size
    fast = refine_logits(image, logits.astype(np.float32), radius)[0] > 0
    monkeypatch.setattr(refine, "FAST_ABOVE", 10**6)
    exact = refine_logits(image, logits.astype(np.float32), radius)[0] > 0

    def iou(a, b):
        return (a & b).sum() / (a | b).sum()

    assert iou(fast, exact) > 0.999
    assert iou(fast, truth) > 0.99 > iou(logits[0] > 0, truth)


def test_any_predictor_with_return_logits_can_be_refined():
    """The onnxruntime backend has no torch ``model``; anything with the predict contract
    is refined the same way."""
    from segany.inference.prediction import Prediction

    class Fixed:  # answers every prompt with the same logits
        def __init__(self, logits):
            self.logits = logits

        def set_image(self, image):
            pass

        def predict(self, *prompts, return_logits=False, **options):
            masks = self.logits if return_logits else self.logits > 0
            return Prediction(masks=masks, scores=np.ones(1), logits=np.zeros((1, 4, 4)))

    image = np.zeros((20, 30, 3), np.uint8)
    image[:, 15:] = 220
    logits = np.where(np.arange(30) >= 14, 3.0, -3.0)[None, None].repeat(20, 1).astype(np.float32)
    refined = RefinedPredictor(Fixed(logits), radius=3)
    assert refined.model is None
    refined.set_image(image)
    got = refined.predict(point_coords=np.array([[20.0, 10.0]]), point_labels=np.array([1]))
    assert np.array_equal(got.masks, refine_logits(image, logits, 3) > 0)
    assert (got.masks[0] == (np.arange(30) >= 15)[None]).all()
