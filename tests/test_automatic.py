"""MaskGenerator against the reference SamAutomaticMaskGenerator on the same seeded weights.

Tolerances (fp32): the same number of masks; each of ours matched one-to-one to a reference mask
at mask IoU >= 0.99, with predicted IoU and stability score within 1e-4 (stability: or one
pixel's worth, see ``_same_stability``) and the same point and crop box. Bad inputs: a clear
InputError (a ValueError) at construction, or a correct list.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from helpers import SMALL, perturb_, reference_model
from PIL import Image
from skimage import data

from segany import masks as M
from segany.automatic import PRESETS, MaskGenerator, MaskRecord
from segany.errors import InputError
from segany.inference.predictor import Predictor
from segany.modeling.mask_decoder_shared import PointDecoder
from segany.models import build_sam

TOL = 1e-4
KEYS = ["segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score"]
KEYS.append("crop_box")


def structured_model(seed: int = 0):
    """SMALL with seeded weights twice the helpers' default size, which give more varied
    masks; mask and IoU heads scaled so logits (|x| < ~20) and scores (|x| < ~1) sit where
    the thresholds act."""
    torch.manual_seed(seed)  # build_sam's own initialisation draws from the global generator
    model = perturb_(build_sam(SMALL), seed, scale=2.0).eval()
    with torch.no_grad():
        for mlp in model.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(0.4)
            mlp.layers[-1].bias.mul_(0.4)
        head = model.mask_decoder.iou_prediction_head.layers[-1]
        head.weight.mul_(0.13)
        head.bias.mul_(0.13)
    return model


@pytest.fixture(autouse=True)
def _one_thread():
    # These tests run many small ops; on 2 cores shared with other suites, one thread per
    # process is several times faster than two that wait on each other.
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="module")
def models():
    model = structured_model()
    return model, reference_model(SMALL, model.state_dict())


@pytest.fixture(scope="module")
def photo():
    return np.asarray(Image.fromarray(data.astronaut()).resize((160, 120), Image.BILINEAR))


def _mask(seg) -> np.ndarray:
    return seg if isinstance(seg, np.ndarray) else M.decode_rle(seg)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def _close(a: float, b: float) -> bool:
    return (np.isnan(a) and np.isnan(b)) or abs(a - b) <= TOL


def _same_stability(rec: MaskRecord, theirs: float) -> bool:
    """Stability is a ratio of pixel counts (logits above +offset / above -offset): a pixel
    whose logit lies within float rounding of ±offset may count on either side (the official
    resize and segany's composed one differ by ~1e-7; seen on an AVX-512 CPU: 1.01e-4 for one
    pixel of 9.9k). So: within 1e-4, or one pixel's worth (1/area; the denominator counts at
    least the mask's pixels)."""
    return _close(rec.stability_score, theirs) or abs(rec.stability_score - theirs) <= 1 / max(
        rec.area, 1
    )


def assert_same_records(ours: list[MaskRecord], ref: list[dict]) -> None:
    """Same count; a one-to-one matching at mask IoU >= 0.99 with equal scores and point."""
    assert len(ours) == len(ref)
    ref_masks = [_mask(r["segmentation"]) for r in ref]
    taken: set[int] = set()
    for rec in ours:
        assert list(rec.to_dict()) == KEYS
        mine = rec.mask()
        matches = [
            j
            for j, m in enumerate(ref_masks)
            if j not in taken
            and _iou(mine, m) >= 0.99
            and _close(rec.predicted_iou, ref[j]["predicted_iou"])
            and _same_stability(rec, ref[j]["stability_score"])
            and np.allclose(rec.point_coords, ref[j]["point_coords"], atol=1e-9)
        ]
        assert matches, f"no reference mask matches {rec.bbox} {rec.predicted_iou}"
        j = matches[0]
        taken.add(j)
        r = ref[j]
        assert rec.crop_box == r["crop_box"]
        assert abs(rec.area - r["area"]) <= 0.01 * r["area"] + 1
        assert type(rec.segmentation) is type(r["segmentation"])


def _both(models, photo, **opts):
    from segment_anything import SamAutomaticMaskGenerator

    model, ref = models
    ours = MaskGenerator(model, **opts).generate(photo)
    theirs = SamAutomaticMaskGenerator(ref, **opts).generate(photo)
    return ours, theirs


# Random-weight masks are speckled over the whole image, so any two boxes overlap > 0.99 and box
# NMS at 0.7 keeps one mask: BASE relaxes it; the crop test keeps the NMS defaults.
BASE = dict(points_per_side=16, pred_iou_thresh=0.7, stability_score_thresh=0.7, box_nms_thresh=1.0)


@pytest.mark.slow
def test_default_options_match_reference(models, photo):
    ours, theirs = _both(models, photo, **BASE)
    assert len(theirs) >= 24  # dozens survive: the comparison means something
    assert all(r["area"] > 0 for r in theirs)
    assert_same_records(ours, theirs)


@pytest.mark.slow
def test_chunks_decoded_side_by_side_match_reference(models, photo, monkeypatch):
    # With 2 torch threads the generator's decoder chunks run on 2 worker threads.
    from segany.automatic import generator

    workers: set[int] = set()
    real = generator.map_ordered

    def spy(fn, items):
        def piece(x):
            workers.add(threading.get_ident())
            return fn(x)

        return real(piece, items)

    monkeypatch.setattr(generator, "map_ordered", spy)
    torch.set_num_threads(2)
    ours, theirs = _both(models, photo, **BASE)
    assert len(workers) == 2 and threading.get_ident() not in workers
    assert len(theirs) >= 24
    assert_same_records(ours, theirs)


@pytest.mark.slow
def test_one_crop_layer_matches_reference(models, photo):
    opts = dict(points_per_side=12, crop_n_layers=1, crop_n_points_downscale_factor=2)
    opts.update(pred_iou_thresh=0.0, stability_score_thresh=0.0)  # the crops' masks are weak
    ours, theirs = _both(models, photo, **opts)
    assert len({tuple(r["crop_box"]) for r in theirs}) > 1  # crops contribute masks
    assert_same_records(ours, theirs)


@pytest.fixture(scope="module")
def small_regions_reference(models, photo):
    """The reference's records with min_mask_region_area, in its uncompressed RLE mode."""
    from segment_anything import SamAutomaticMaskGenerator

    opts = dict(BASE, min_mask_region_area=40, output_mode="uncompressed_rle")
    return SamAutomaticMaskGenerator(models[1], **opts).generate(photo)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["binary_mask", "uncompressed_rle", "coco_rle"])
def test_small_regions_every_output_mode_matches_reference(
    models, photo, small_regions_reference, mode
):
    from segment_anything.utils.amg import coco_encode_rle, rle_to_mask

    # The reference's other output modes are these two functions applied to its RLEs.
    convert = {"binary_mask": rle_to_mask, "coco_rle": coco_encode_rle}.get(mode, lambda r: r)
    theirs = [dict(r, segmentation=convert(r["segmentation"])) for r in small_regions_reference]
    ours = MaskGenerator(models[0], **BASE, min_mask_region_area=40, output_mode=mode)
    ours = ours.generate(photo)
    assert_same_records(ours, theirs)
    plain = MaskGenerator(models[0], **BASE).generate(photo)
    assert len(plain) >= len(ours)
    assert any(a.area != b.area for a, b in zip(ours, plain, strict=False))  # regions changed
    if mode != "binary_mask":
        for rec, r in zip(ours, theirs, strict=True):
            assert set(rec.segmentation) == set(r["segmentation"]) == {"size", "counts"}
            assert type(rec.segmentation["counts"]) is type(r["segmentation"]["counts"])
            if mode == "coco_rle":
                assert rec.segmentation == r["segmentation"]


def test_one_point_grid_matches_reference(models, photo):
    opts = dict(points_per_side=1, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    ours, theirs = _both(models, photo, **opts)
    assert 1 <= len(ours) <= 3
    assert_same_records(ours, theirs)


# ------------------------------------------------------------------------------------------
# reuse: embeddings and candidates


def test_generate_from_embedding_skips_the_encoder(models, photo):
    model, _ = models
    gen = MaskGenerator(model, **BASE)
    want = gen.generate(photo)
    pred = Predictor(model)
    pred.set_image(photo)
    emb = pred.get_image_embedding()
    calls = []
    hook = model.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        got = gen.generate(embedding=emb, original_size=photo.shape[:2])
        from_pred = MaskGenerator(pred, **BASE).generate()
    finally:
        hook.remove()
    assert calls == []
    for other in (got, from_pred):
        assert [r.to_dict()["bbox"] for r in other] == [r.to_dict()["bbox"] for r in want]
        assert all((a.mask() == b.mask()).all() for a, b in zip(other, want, strict=True))
    assert pred.is_image_set  # the caller's predictor keeps its image
    with pytest.raises(InputError):
        gen.generate(embedding=emb)  # no size
    with pytest.raises(InputError):
        MaskGenerator(model, crop_n_layers=1).generate(embedding=emb, original_size=(120, 160))
    with pytest.raises(InputError):
        MaskGenerator(model).generate()  # nothing set


def test_a_predictors_decoder_state_serves_its_clicks_and_the_generator(models, photo):
    """One PointDecoder per image: the generator on a Predictor reuses the image-side
    projections its clicks built (and the other way round), the same masks either way."""
    model, _ = models
    built = []

    class Counting(PointDecoder):
        def __init__(self, *a, **kw):
            built.append(1)
            super().__init__(*a, **kw)

    want = MaskGenerator(model, **BASE).generate(photo)
    pred = Predictor(model)
    pred.set_image(photo)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("segany.inference.predictor.PointDecoder", Counting)
        first = pred.predict(point_coords=np.array([[40.0, 30.0]]), point_labels=np.array([1]))
        got = MaskGenerator(pred, **BASE).generate()
        again = pred.predict(point_coords=np.array([[40.0, 30.0]]), point_labels=np.array([1]))
    assert built == [1]
    assert np.array_equal(first.masks, again.masks)
    _same(got, want)


def _same(a: list[MaskRecord], b: list[MaskRecord]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        dx, dy = x.to_dict(), y.to_dict()
        assert (x.mask() == y.mask()).all()
        dx.pop("segmentation")
        dy.pop("segmentation")
        assert dx == dy


def test_refilter_equals_generating_again(models, photo):
    model, _ = models
    gen = MaskGenerator(model, **BASE)
    cands = gen.generate_candidates(photo)
    _same(gen.refilter(cands), gen.generate(photo))
    new = dict(pred_iou_thresh=0.5, stability_score_thresh=0.9, box_nms_thresh=0.5)
    new.update(min_mask_region_area=30, output_mode="coco_rle")
    _same(gen.refilter(cands, **new), MaskGenerator(model, **{**BASE, **new}).generate(photo))
    assert all(r.predicted_iou > 1.0 for r in gen.refilter(cands, pred_iou_thresh=1.0))
    floored = gen.generate_candidates(photo, pred_iou_floor=0.5, stability_floor=0.6)
    assert len(floored) < len(cands)
    _same(gen.refilter(floored, pred_iou_thresh=0.6), gen.refilter(cands, pred_iou_thresh=0.6))
    with pytest.raises(InputError, match="floor"):
        gen.refilter(floored, pred_iou_thresh=0.4)
    with pytest.raises(InputError, match="points_per_side"):
        gen.refilter(cands, points_per_side=8)
    with pytest.raises(InputError):
        gen.refilter(cands, output_mode="png")
    with pytest.raises(InputError):
        MaskGenerator(model, stability_score_offset=0.5).refilter(cands)


def test_max_area_fraction_drops_big_masks(models, photo):
    model, _ = models
    gen = MaskGenerator(model, **BASE)
    cands = gen.generate_candidates(photo, pred_iou_floor=0.7, stability_floor=0.7)
    everything = gen.refilter(cands)
    limit = 0.2
    kept = gen.refilter(cands, max_area_fraction=limit)
    big = [r for r in everything if r.area >= limit * photo.shape[0] * photo.shape[1]]
    assert big and len(kept) == len(everything) - len(big)


def test_sa1b_preset():
    assert PRESETS["sa1b"]["crop_n_layers"] == 2
    model = build_sam(SMALL).eval()
    gen = MaskGenerator.from_preset("sa1b", model, points_per_side=8)
    assert (gen.crop_n_layers, gen.min_mask_region_area, gen.max_area_fraction) == (2, 100, 0.95)
    assert [len(g) for g in gen.point_grids] == [64, 16, 4]
    assert gen.pred_iou_thresh == 0.88 and gen.box_nms_thresh == 0.7
    with pytest.raises(InputError, match="preset"):
        MaskGenerator.from_preset("sa2b", model)
    gen.pred_iou_thresh = 0.5  # selection options stay settable, and validated
    assert gen.pred_iou_thresh == 0.5
    with pytest.raises(InputError):
        gen.output_mode = "png"
    assert gen.output_mode == "binary_mask"


# ------------------------------------------------------------------------------------------
# bad input


def test_tiny_image_and_everything_filtered(models):
    model, _ = models
    tiny = np.full((3, 2, 3), 200, np.uint8)
    keep_all = dict(pred_iou_thresh=0.0, stability_score_thresh=0.0)
    out = MaskGenerator(model, points_per_side=4, crop_n_layers=2, **keep_all).generate(tiny)
    assert out and all(r.mask().shape == (3, 2) for r in out)
    torch.manual_seed(1)
    weak = perturb_(build_sam(SMALL), 1).eval()  # random masks: none passes the defaults
    assert MaskGenerator(weak, points_per_side=8).generate(tiny) == []
    assert MaskGenerator(weak, points_per_side=8).generate(np.zeros((40, 50, 3), np.uint8)) == []
    gray = np.zeros((20, 30), np.uint8)
    out = MaskGenerator(model, points_per_side=2, **keep_all).generate(gray)
    assert out and all(r.mask().shape == (20, 30) for r in out)


@pytest.mark.parametrize(
    "opts",
    [
        dict(pred_iou_thresh=float("nan")),
        dict(pred_iou_thresh=float("inf")),
        dict(stability_score_thresh=-1),
        dict(stability_score_thresh=1.5),
        dict(stability_score_offset=-1.0),
        dict(box_nms_thresh=float("nan")),
        dict(crop_nms_thresh=2),
        dict(points_per_side=None),  # neither
        dict(point_grids=[M.build_point_grid(4)]),  # both
        dict(points_per_side=0),
        dict(points_per_side=2.5),
        dict(points_per_batch=0),
        dict(crop_n_layers=-1),
        dict(crop_n_points_downscale_factor=0),
        dict(crop_overlap_ratio=-0.2),
        dict(min_mask_region_area=-5),
        dict(output_mode="png"),
        dict(max_area_fraction=0),
        dict(points_per_side=None, point_grids=[np.ones((4, 3))]),
        dict(points_per_side=None, point_grids=[np.full((4, 2), 2.0)]),
        dict(points_per_side=None, point_grids=[M.build_point_grid(4)], crop_n_layers=1),
        dict(points_per_side=2, crop_n_layers=2, crop_n_points_downscale_factor=2),  # 0 points
    ],
)
def test_invalid_options_raise_at_construction(opts):
    with pytest.raises(InputError):
        MaskGenerator(build_sam(SMALL), **opts)


def test_input_error_is_a_value_error():
    # Callers that catch ValueError (as the official package's users do) catch ours too.
    with pytest.raises(ValueError):
        MaskGenerator(build_sam(SMALL), points_per_side=0)


def test_explicit_point_grids(models, photo):
    model, _ = models
    grid = M.build_point_grid(16)
    a = MaskGenerator(model, points_per_side=None, point_grids=[grid], **BASE_THRESH)
    b = MaskGenerator(model, points_per_side=16, **BASE_THRESH)
    _same(a.generate(photo), b.generate(photo))


BASE_THRESH = dict(pred_iou_thresh=0.7, stability_score_thresh=0.7)
