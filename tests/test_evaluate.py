"""Evaluation protocols: prompts on hand-made masks, fake predictors with known answers,
dataset readers, reports, and an end-to-end run with a seeded small SAM checked against an
independent computation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from eval_fixtures import (
    EmptyPredictor,
    OraclePredictor,
    find_scene,
    make_scenes,
    write_coco,
    write_label_maps,
    write_sa1b,
)
from scipy import ndimage

from segany.errors import InputError
from segany.evaluate import (
    CocoDataset,
    LabelMapDataset,
    Sa1bDataset,
    Sample,
    build_report,
    center_point,
    evaluate_auto,
    evaluate_box,
    evaluate_clicks,
    evaluate_points,
    evaluate_prompts,
    format_comparison,
    format_table,
    jitter_box,
    load_report,
    mask_box,
    mask_iou,
    next_click,
    open_dataset,
    plot_clicks,
    subset,
    write_report,
)
from segany.evaluate.results import EvalResult, estimates


@pytest.fixture(scope="module")
def scenes():
    return make_scenes(3)


@pytest.fixture(scope="module")
def coco(tmp_path_factory, scenes):
    return CocoDataset(write_coco(tmp_path_factory.mktemp("coco"), scenes))


@pytest.fixture(scope="module")
def sa1b(tmp_path_factory, scenes):
    return Sa1bDataset(write_sa1b(tmp_path_factory.mktemp("sa1b"), scenes))


# --- prompts -------------------------------------------------------------------------------


def _disk(h, w, cy, cx, r):
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_center_point_of_a_ring_lies_inside_the_ring():
    ring = _disk(61, 61, 30, 30, 25) & ~_disk(61, 61, 30, 30, 15)
    x, y = center_point(ring)
    assert ring[y, x]
    assert 17 <= math.hypot(x - 30, y - 30) <= 23  # on the ring's middle circle


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        ((10, 20, 30, 28), (20, 24)),  # x0, y0, x1, y1 inclusive -> the middle pixel
        ((0, 0, 8, 40), (4, 20)),  # touching the border: the border counts as boundary
    ],
)
def test_center_point_of_rectangles(box, expected):
    m = np.zeros((50, 60), bool)
    m[box[1] : box[3] + 1, box[0] : box[2] + 1] = True
    assert center_point(m) == expected


def test_center_point_matches_an_independent_distance_transform():
    m = _disk(40, 50, 18, 22, 12) | _disk(40, 50, 30, 40, 6)
    x, y = center_point(m)
    dist = ndimage.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]
    assert dist[y, x] == pytest.approx(dist.max())


def test_center_point_rejects_empty_masks():
    with pytest.raises(InputError):
        center_point(np.zeros((4, 4), bool))


def test_next_click_picks_the_largest_error_region():
    gt = np.zeros((40, 40), bool)
    gt[5:35, 5:35] = True
    pred = gt.copy()
    pred[5:35, 5:10] = False  # missed strip of 150 px
    pred[36:40, 0:40] = True  # false strip of 160 px: larger -> negative click
    x, y, label = next_click(gt, pred)
    assert label == 0 and pred[y, x] and not gt[y, x]
    pred[36:40, 0:40] = False
    pred[37:39, 0:10] = True  # now the false region is small -> positive click in the miss
    x, y, label = next_click(gt, pred)
    assert label == 1 and gt[y, x] and not pred[y, x]
    assert next_click(gt, gt) is None


def test_next_click_distance_mode_prefers_the_deepest_region():
    gt = np.zeros((40, 200), bool)
    gt[10:30, 10:30] = True  # missed square: 400 px, 10 px deep
    pred = np.zeros_like(gt)
    pred[0:3, :] = True  # false strip: 600 px but only 2 px deep
    assert next_click(gt, pred, "area")[2] == 0
    x, y, label = next_click(gt, pred, "distance")
    assert label == 1 and (x, y) == center_point(gt)
    with pytest.raises(InputError):
        next_click(gt, pred, "nearest")


def test_mask_box_and_jitter():
    m = np.zeros((30, 40), bool)
    m[5:11, 7:20] = True
    box = mask_box(m)
    assert box.tolist() == [7, 5, 19, 10]
    rng = np.random.default_rng(0)
    assert jitter_box(box, 0.0, 20, m.shape, rng).tolist() == box.tolist()
    moved = jitter_box(box, 0.5, 2.0, m.shape, np.random.default_rng(1))
    assert np.abs(moved - box).max() <= 2.0 and moved[0] < moved[2] and moved[1] < moved[3]
    again = jitter_box(box, 0.5, 2.0, m.shape, np.random.default_rng(1))
    assert moved.tolist() == again.tolist()


def test_mask_iou():
    a = np.zeros((4, 4), bool)
    b = a.copy()
    a[:2] = True
    b[1:3] = True
    assert float(mask_iou(a, b)) == pytest.approx(4 / 12)
    assert float(mask_iou(a, a)) == 1.0
    assert float(mask_iou(a, ~a)) == 0.0
    assert float(mask_iou(b & ~b, a & ~a)) == 1.0  # both empty: a perfect match
    # Batched over leading dims, numpy or torch alike.
    assert mask_iou(np.stack([a, b]), b).tolist() == pytest.approx([4 / 12, 1.0])


# --- bootstrap -----------------------------------------------------------------------------


def test_estimates_are_seeded_means_with_intervals():
    values = np.random.default_rng(3).random(200)
    a = estimates({"x": values}, 500, seed=7)["x"]
    b = estimates({"x": values}, 500, seed=7)["x"]
    assert a == b
    assert a.value == pytest.approx(values.mean()) and a.low < a.value < a.high and a.n == 200
    sem = values.std() / math.sqrt(200)
    assert a.high - a.low == pytest.approx(2 * 1.96 * sem, rel=0.2)
    const = estimates({"c": [0.5] * 10}, 100)["c"]
    assert (const.value, const.low, const.high) == (0.5, 0.5, 0.5)
    empty = estimates({"e": []}, 100)["e"]
    assert math.isnan(empty.value) and empty.n == 0
    assert EvalResult("p", {"e": empty}).to_dict()["metrics"]["e"]["value"] is None


# --- datasets ------------------------------------------------------------------------------


def test_coco_reader_decodes_rle_polygons_and_crowd(coco, scenes):
    assert len(coco) == 3 and coco.images_dir.name == "images"
    for sample, (image, masks) in zip(coco, scenes, strict=True):
        assert np.array_equal(sample.load_image(), image)
        plain = [o for o in sample.objects if not o.iscrowd]
        assert len(plain) == len(masks)
        for obj, mask in zip(plain, masks, strict=True):
            assert mask_iou(obj.mask(), mask) > 0.8  # polygons rasterise a little differently
            assert obj.area == obj.mask().sum()
    crowd = [o for o in coco[0].objects if o.iscrowd]
    assert len(crowd) == 1 and crowd[0].mask()[:4, :8].all() and crowd[0].area == 32


def test_sa1b_and_label_map_readers_agree(tmp_path, scenes, sa1b):
    maps = open_dataset(write_label_maps(tmp_path / "lm", scenes))
    assert isinstance(maps, LabelMapDataset) and isinstance(open_dataset(sa1b.source), Sa1bDataset)
    for a, b, (_, masks) in zip(sa1b, maps, scenes, strict=True):
        assert [o.mask().tolist() for o in a.objects] == [m.tolist() for m in masks]
        assert [o.mask().tolist() for o in b.objects] == [m.tolist() for m in masks]
        assert [o.object_id for o in b.objects] == [1, 2, 3, 4]


def test_open_dataset_errors(tmp_path, scenes):
    with pytest.raises(InputError, match="neither"):
        open_dataset(tmp_path / "missing.txt")
    path = write_coco(tmp_path / "c", scenes[:1])
    (tmp_path / "c" / "images" / "img_0.png").unlink()
    with pytest.raises(InputError, match="--images"):
        open_dataset(path)
    with pytest.raises(InputError, match="SA-1B"):
        open_dataset(tmp_path / "c")


def test_subset_is_fixed_by_the_seed(coco):
    a, b = subset(coco, 2, seed=5), subset(coco, 2, seed=5)
    assert len(a) == 2 and [s.image_id for s in a] == [s.image_id for s in b]
    assert subset(coco, 10) is coco
    assert a.describe()["subset_of"] == 3


# --- protocols with fake predictors ---------------------------------------------------------


def test_perfect_predictor_scores_one(coco, scenes):
    results = evaluate_prompts(OraclePredictor(scenes), coco, bootstrap=50)
    n_objects = sum(len(m) for _, m in scenes)
    point, clicks, box = results["point"], results["clicks"], results["box"]
    assert point.miou == pytest.approx(1, abs=0.2)  # polygons: GT is rasterised slightly off
    assert len(point.per_object) == n_objects  # the crowd region is not prompted
    assert box.metrics["miou"].n == n_objects
    assert point.seconds > 0 and point.timing["encode"] >= 0
    assert len(clicks.series["miou_by_clicks"]) == 20


def test_perfect_and_empty_predictors_on_exact_masks(sa1b, scenes):
    perfect = evaluate_prompts(OraclePredictor(scenes), sa1b, bootstrap=50)
    assert perfect["point"].miou == 1.0 and perfect["point"].metrics["oracle_miou"].value == 1
    assert perfect["box"].miou == 1.0
    m = perfect["clicks"].metrics
    assert m["noc@85"].value == 1 and m["noc@90"].value == 1 and m["miou@9"].value == 1
    assert (m["noc@90"].low, m["noc@90"].high) == (1, 1)
    empty = evaluate_prompts(EmptyPredictor(), sa1b, bootstrap=50, max_clicks=5)
    assert empty["point"].miou == 0 and empty["box"].miou == 0
    e = empty["clicks"].metrics
    assert e["noc@85"].value == 5 and e["noc@90"].value == 5  # capped at max_clicks
    assert "miou@9" not in e and e["miou@5"].value == 0


def test_in_memory_samples_for_validation_loops(scenes):
    data = [Sample.from_arrays(image, masks, image_id=i) for i, (image, masks) in enumerate(scenes)]
    assert evaluate_points(OraclePredictor(scenes), data, bootstrap=0).miou == 1.0
    assert evaluate_box(EmptyPredictor(), data, bootstrap=0).miou == 0.0
    with pytest.raises(InputError, match="mask 0"):
        Sample.from_arrays(scenes[0][0], [np.zeros((3, 3), bool)])


def test_top_scoring_and_oracle_masks_differ(sa1b, scenes):
    result = evaluate_points(OraclePredictor(scenes, wrong_top=True), sa1b, bootstrap=0)
    assert result.miou == 0 and result.metrics["oracle_miou"].value == 1
    assert all(r["mask_index"] == 0 and r["ious"][2] == 1 for r in result.per_object)
    rows = result.per_image
    assert len(rows) == 3 and all(r["objects"] == 4 and r["oracle_miou"] == 1 for r in rows)


class ScriptedPredictor:
    """Returns pre-set masks in order, logits tagged with the call number."""

    def __init__(self, outputs):
        self.outputs = list(outputs)
        self.calls = []

    def set_image(self, image):
        pass

    def predict(
        self, point_coords=None, point_labels=None, box=None, mask_input=None, multimask_output=True
    ):
        self.calls.append(
            (np.array(point_coords), np.array(point_labels), mask_input, multimask_output)
        )
        mask = self.outputs[len(self.calls) - 1]
        n = 3 if multimask_output else 1
        masks = np.repeat(mask[None], n, axis=0)
        logits = np.full((n, 8, 8), float(len(self.calls)), np.float32)
        return masks, np.arange(n, dtype=float)[::-1], logits


def test_clicks_follow_the_error_regions_and_feed_logits_back(tmp_path):
    gt = np.zeros((40, 40), bool)
    gt[10:30, 10:30] = True
    half = gt.copy()
    half[:, 20:] = False  # IoU 0.5, missed right half
    extra = gt.copy()
    extra[30:33, 10:30] = True  # IoU 400/460 = 0.87, false strip below
    scene = (np.zeros((40, 40, 3), np.uint8), [gt])
    data = Sa1bDataset(write_sa1b(tmp_path, [scene]))
    pred = ScriptedPredictor([half, extra, gt])
    result = evaluate_clicks(pred, data, max_clicks=20, bootstrap=0)
    row = result.per_object[0]
    assert row["ious"][:3] == pytest.approx([0.5, 400 / 460, 1.0]) and row["ious"][-1] == 1
    assert (row["noc@85"], row["noc@90"]) == (2, 3)
    assert len(pred.calls) == 3  # nothing left to correct after the perfect mask
    (x1, y1, l1), (x2, y2, l2) = row["clicks"][1], row["clicks"][2]
    assert l1 == 1 and gt[y1, x1] and not half[y1, x1]
    assert l2 == 0 and extra[y2, x2] and not gt[y2, x2]
    assert [c[3] for c in pred.calls] == [True, False, False]
    assert pred.calls[0][2] is None
    assert pred.calls[1][2].shape == (1, 8, 8) and pred.calls[2][2][0, 0, 0] == 2
    assert pred.calls[2][0].shape == (3, 2) and pred.calls[2][1].tolist() == [1, 1, 0]
    assert result.metrics["miou@2"].value == pytest.approx(400 / 460)


def test_protocol_argument_checks(sa1b, scenes):
    with pytest.raises(InputError):
        evaluate_prompts(OraclePredictor(scenes), sa1b, ("bogus",))
    with pytest.raises(InputError):
        evaluate_clicks(OraclePredictor(scenes), sa1b, max_clicks=0)

    class Wrong(EmptyPredictor):
        def predict(self, **kw):
            return np.zeros((3, 5, 5), bool), np.zeros(3), np.zeros((3, 4, 4))

    with pytest.raises(InputError, match="expected C×"):
        evaluate_box(Wrong(), sa1b)


def test_box_jitter_is_seeded_and_stated(sa1b, scenes):
    a = evaluate_box(OraclePredictor(scenes), sa1b, box_noise=0.1, seed=3, bootstrap=0)
    b = evaluate_box(OraclePredictor(scenes), sa1b, box_noise=0.1, seed=3, bootstrap=0)
    assert [r["box"] for r in a.per_object] == [r["box"] for r in b.per_object]
    assert a.settings["box_noise"] == 0.1 and a.settings["box_noise_max_px"] == 20


# --- automatic masks --------------------------------------------------------------------------


class ListGenerator:
    def __init__(self, scenes, transform):
        self.scenes = scenes
        self.transform = transform

    def generate(self, image):
        return self.transform(find_scene(self.scenes, image))


def _greedy_recall(gts, dets, scores, budget):
    """Independent COCO-style matching: proposals in score order take the best free object."""
    thresholds = np.linspace(0.5, 0.95, 10)
    order = np.argsort(-np.asarray(scores), kind="stable")[:budget]
    ious = np.array([[float(mask_iou(dets[d], g)) for g in gts] for d in order])
    ious = ious.reshape(-1, len(gts))
    recall = np.zeros(len(gts))
    for t in thresholds:
        taken = np.zeros(len(gts), bool)
        for row in ious:
            cand = np.where(~taken & (row >= t), row, -1)
            if cand.max() >= 0:
                taken[int(np.argmax(cand))] = True
        recall += taken / len(thresholds)
    return recall


def test_auto_recall_against_independent_matching(sa1b, scenes):
    def as_records(masks):
        out = [{"segmentation": m, "predicted_iou": 0.9} for m in masks]
        shrunk = [ndimage.binary_erosion(m, iterations=2) for m in masks]
        out += [{"segmentation": m, "predicted_iou": 0.95} for m in shrunk]  # ranked first
        return out[1:]  # the first object only has its shrunk copy

    def exact(masks):
        return [{"segmentation": m, "predicted_iou": 0.9} for m in masks]

    perfect = evaluate_auto(ListGenerator(scenes, exact), sa1b, bootstrap=50)
    assert perfect.metrics["ar@1000"].value == pytest.approx(1.0)
    assert perfect.metrics["ar@100"].value == pytest.approx(1.0)
    empty = evaluate_auto(ListGenerator(scenes, lambda ms: []), sa1b, bootstrap=50)
    assert empty.metrics["ar@1000"].value == 0 and empty.per_image[0]["proposals"] == 0

    result = evaluate_auto(ListGenerator(scenes, as_records), sa1b, max_dets=(3, 100), seed=1)
    expected = {3: [], 100: []}
    for _, masks in scenes:
        recs = as_records(masks)
        dets, scores = [r["segmentation"] for r in recs], [r["predicted_iou"] for r in recs]
        for budget in expected:
            expected[budget].extend(_greedy_recall(masks, dets, scores, budget))
    for budget, values in expected.items():
        assert result.metrics[f"ar@{budget}"].value == pytest.approx(np.mean(values))
        rows = [r[f"recall@{budget}"] for r in result.per_object]
        assert rows == pytest.approx(values)
        est = result.metrics[f"ar@{budget}"]
        assert est.low <= est.value <= est.high
    assert 0 < result.metrics["ar@100"].value < 1
    sizes = [result.metrics[f"ar@100:{s}"] for s in ("small", "medium", "large")]
    assert sum(s.n for s in sizes) == len(result.per_object)
    best = [r["best_iou"] for r in result.per_object]
    assert min(best) < 1 and max(best) == 1


# --- reports --------------------------------------------------------------------------------


def test_report_roundtrip_table_comparison_and_plot(tmp_path, sa1b, scenes):
    good = evaluate_prompts(OraclePredictor(scenes), sa1b, bootstrap=20, max_clicks=4)
    bad = evaluate_prompts(EmptyPredictor(), sa1b, bootstrap=20, max_clicks=4)
    a = write_report(build_report(good, dataset=sa1b.describe()), tmp_path / "a.json")
    b = write_report(build_report(bad, model={"name": "empty"}), tmp_path / "b.json")
    ra, rb = load_report(a), load_report(b)
    assert ra["protocols"]["point"]["metrics"]["miou"]["value"] == 1.0
    assert ra["dataset"]["kind"] == "sa1b" and rb["model"]["name"] == "empty"
    assert len(ra["protocols"]["clicks"]["per_object"]) == 12
    table = format_table(ra)
    assert "oracle_miou" in table and "noc@90" in table and "1.0000" in table
    side = format_comparison(ra, rb, ("good", "empty"))
    assert "-1.0000" in side and "+3.00" in side and "good" in side  # noc 1 -> 4
    png = plot_clicks([("good", ra), ("empty", rb)], tmp_path / "clicks.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    svg = plot_clicks([("good", ra)], tmp_path / "clicks.svg")  # the format from the name
    assert b"<svg" in svg.read_bytes()[:1000]
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # atomic writes
    (tmp_path / "x.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(InputError):
        load_report(tmp_path / "x.json")
    with pytest.raises(InputError):
        plot_clicks([("x", {"protocols": {}})], tmp_path / "none.png")
