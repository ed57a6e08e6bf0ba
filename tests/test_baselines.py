"""The classical baselines: flood fill and GrabCut give exactly what an independent computation
gives on hand-built images, and run through the protocols like a model."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy import ndimage as ndi

from segany.errors import InputError
from segany.evaluate import Sample, evaluate_prompts, mask_iou
from segany.evaluate.baselines import (
    FLOOD_TOLERANCE,
    FloodFill,
    GrabCut,
    evaluate_baselines,
    flood_region,
    format_against_baselines,
)
from segany.evaluate.report import build_report
from segany.inference.prediction import Prediction


def _reachable(image: np.ndarray, x: int, y: int, tol: int) -> np.ndarray:
    """Independent flood fill: the 8-connected component, containing (x, y), of the pixels
    whose every channel is within ±tol of the seed pixel."""
    close = (np.abs(image.astype(int) - image[y, x].astype(int)) <= tol).all(axis=2)
    comps, _ = ndi.label(close, structure=np.ones((3, 3)))
    return comps == comps[y, x]


def _scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """60×80: dark background; object A (rows 10-39, cols 10-34) a horizontal ramp 190..210
    (all within ±24 of its centre, 200); B (rows 10-39, cols 35-49) touching A, value 186 --
    within tolerance of A's centre (and all of A within B's), so the wand spills into it; a
    far object C."""
    img = np.full((60, 80, 3), 20, np.uint8)
    ramp = np.linspace(190, 210, 25).round().astype(np.uint8)
    img[10:40, 10:35] = ramp[None, :, None]
    img[10:40, 35:50] = 186
    img[45:55, 60:75] = (30, 200, 90)
    gt_a = np.zeros((60, 80), bool)
    gt_a[10:40, 10:35] = True
    gt_c = np.zeros((60, 80), bool)
    gt_c[45:55, 60:75] = True
    return img, gt_a, gt_c


def test_flood_region_matches_an_independent_fill():
    img, gt_a, gt_c = _scene()
    rng = np.random.default_rng(0)
    noisy = np.clip(img + rng.integers(-15, 16, img.shape), 0, 255).astype(np.uint8)
    noisy.setflags(write=False)  # images read from files may be read-only
    for x, y in [(22, 25), (40, 20), (66, 50), (2, 2)]:
        for tol in (8, FLOOD_TOLERANCE):
            assert np.array_equal(flood_region(noisy, x, y, tol), _reachable(noisy, x, y, tol))


def test_flood_fill_protocol_figures_are_the_independent_ones():
    img, gt_a, gt_c = _scene()
    sample = Sample.from_arrays(img, [gt_a, gt_c])
    res = evaluate_prompts(FloodFill(), [sample], ("point", "clicks"), max_clicks=3, bootstrap=0)
    # A's center click (22, 24) spills into B: IoU = |A| / |A ∪ B|.
    spill = _reachable(img, 22, 24, FLOOD_TOLERANCE)
    assert spill.sum() == 30 * 40
    expected_a = float(mask_iou(spill, gt_a))
    assert expected_a == pytest.approx(750 / 1200)
    rows = res["point"].per_object
    assert rows[0]["iou"] == pytest.approx(expected_a)
    assert rows[1]["iou"] == pytest.approx(1.0)  # C is uniform and isolated
    assert res["point"].miou == pytest.approx((expected_a + 1.0) / 2)
    # Clicks on A: the 2nd click is negative in B (the false region) and its fill, B's value
    # being within tolerance of A's, wipes A too (IoU 0); the 3rd, positive, restores A ∪ B.
    clicks = res["clicks"].per_object[0]
    assert [c[2] for c in clicks["clicks"]] == [1, 0, 1]
    assert clicks["ious"] == pytest.approx([expected_a, 0.0, expected_a])
    assert res["clicks"].per_object[1]["ious"] == pytest.approx([1.0, 1.0, 1.0])


def test_grabcut_box_is_rect_grabcut_on_the_local_crop():
    rng = np.random.default_rng(1)
    img = np.clip(rng.normal(70, 12, (90, 120, 3)), 0, 255).astype(np.uint8)
    gt = np.zeros((90, 120), np.uint8)
    cv2.ellipse(gt, (60, 45), (25, 18), 20, 0, 360, 1, -1)
    obj = np.clip(rng.normal(180, 12, (90, 120, 3)), 0, 255).astype(np.uint8)
    img = np.where(gt[..., None] > 0, obj, img)
    gt_b = gt.astype(bool)
    ys, xs = np.nonzero(gt_b)
    box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], float)
    cut = GrabCut()
    cut.set_image(img)
    masks, scores, logits = cut.predict(box=box, multimask_output=False)
    assert masks.shape == (1, 90, 120) and scores.tolist() == [1.0]
    assert np.array_equal(logits[0] > 0, masks[0])
    # Independent: OpenCV's rectangle initialisation on the same crop (margin 20 % of the
    # longer box side, at least 10 px), same iterations.
    side = max(box[2] - box[0] + 1, box[3] - box[1] + 1)
    pad = max(10, round(0.2 * side))
    y0, y1 = max(int(box[1]) - pad, 0), min(int(box[3]) + pad + 1, 90)
    x0, x1 = max(int(box[0]) - pad, 0), min(int(box[2]) + pad + 1, 120)
    crop = np.ascontiguousarray(img[y0:y1, x0:x1, ::-1])
    lab = np.zeros(crop.shape[:2], np.uint8)
    rect = (int(box[0]) - x0, int(box[1]) - y0, int(box[2] - box[0]) + 1, int(box[3] - box[1]) + 1)
    bgd, fgd = np.zeros((1, 65)), np.zeros((1, 65))
    cv2.setRNGSeed(0)
    cv2.grabCut(crop, lab, rect, bgd, fgd, 5, cv2.GC_INIT_WITH_RECT)
    expected = np.zeros((90, 120), bool)
    expected[y0:y1, x0:x1] = (lab == cv2.GC_FGD) | (lab == cv2.GC_PR_FGD)
    assert mask_iou(masks[0], expected) > 0.99
    assert mask_iou(masks[0], gt_b) > 0.95  # an easy object: GrabCut finds it


def test_grabcut_clicks_use_the_clicks_as_sure_labels():
    img, gt_a, gt_c = _scene()
    cut = GrabCut()
    cut.set_image(img)
    first, _, logits = cut.predict(np.array([[22, 24]]), np.array([1]))
    # A negative click in B must leave B's disk out of the mask, whatever GrabCut decides.
    second, _, _ = cut.predict(
        np.array([[22, 24], [42, 24]]), np.array([1, 0]), mask_input=logits, multimask_output=False
    )
    assert first[0, 24, 22] and second[0, 24, 22]
    assert not second[0, 24, 42]


def test_baselines_in_a_report_and_their_limits():
    img, gt_a, gt_c = _scene()
    samples = [Sample.from_arrays(img, [gt_a, gt_c])]
    base = evaluate_baselines(samples, ("point", "box"), bootstrap=0)
    assert set(base) == {"floodfill:point", "grabcut:point", "grabcut:box"}  # no flood box
    model = evaluate_prompts(FloodFill(), samples, ("point",), bootstrap=0)
    table = format_against_baselines(build_report(model | base))
    assert "floodfill" in table and "grabcut" in table
    assert "0/2" in table  # the "model" here is the flood fill itself: it never beats itself
    with pytest.raises(InputError, match="clicks only"):
        wand = FloodFill()
        wand.set_image(img)
        wand.predict(box=np.array([0, 0, 5, 5]))
    with pytest.raises(InputError, match="set_image"):
        GrabCut().predict(box=np.array([0, 0, 5, 5]))


def test_baselines_answer_as_a_predictor_does():
    """The ``PredictorLike`` contract: a ``Prediction``, and with ``return_logits`` the ±1
    logits in place of the mask (what a ``RefinedPredictor`` wrapped around one reads)."""
    img, gt_a, _ = _scene()
    wand = FloodFill()
    wand.set_image(img)
    click = dict(point_coords=np.array([[22, 24]]), point_labels=np.array([1]))
    plain = wand.predict(**click)
    raw = wand.predict(**click, return_logits=True)
    assert isinstance(plain, Prediction) and plain.masks.dtype == bool
    assert raw.masks.dtype == np.float32 and set(np.unique(raw.masks)) == {-1.0, 1.0}
    np.testing.assert_array_equal(raw.masks > 0, plain.masks)
    np.testing.assert_array_equal(raw.logits, plain.logits)
