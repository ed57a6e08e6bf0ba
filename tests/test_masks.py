"""Table-driven tests of the pure mask helpers, against pycocotools and the reference helpers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pycocotools import mask as coco
from segment_anything.utils import amg
from torchvision.ops import boxes as ref_boxes  # tests/stubs: a plain-loop greedy NMS

from segany import masks as M
from segany.errors import InputError


def _rand_masks(b: int, h: int, w: int, seed: int = 0, p: float = 0.5) -> np.ndarray:
    return np.random.default_rng(seed).random((b, h, w)) < p


def _blobs(h: int, w: int, seed: int) -> np.ndarray:
    """A mask with a few rectangles: runs, holes and islands of several sizes."""
    rng = np.random.default_rng(seed)
    m = np.zeros((h, w), bool)
    for _ in range(6):
        y, x = rng.integers(0, h), rng.integers(0, w)
        m[y : y + rng.integers(1, h // 2 + 2), x : x + rng.integers(1, w // 2 + 2)] ^= True
    return m


MASK_CASES = {
    "empty": np.zeros((4, 6), bool),
    "full": np.ones((4, 6), bool),
    "first_pixel": np.eye(4, 6, dtype=bool),
    "last_pixel": np.pad(np.ones((1, 1), bool), ((3, 0), (5, 0))),
    "one_row": _rand_masks(1, 1, 9, seed=1)[0],
    "one_col": _rand_masks(1, 9, 1, seed=2)[0],
    "random": _rand_masks(1, 13, 17, seed=3)[0],
    "blobs": _blobs(30, 40, seed=4),
}


# ------------------------------------------------------------------------------------- RLE


@pytest.mark.parametrize("name", MASK_CASES)
def test_encode_rle_matches_pycocotools_and_roundtrips(name):
    m = MASK_CASES[name]
    rle = M.encode_rle(m)
    ref = coco.encode(np.asfortranarray(m.astype(np.uint8)))
    assert rle == {"size": list(m.shape), "counts": ref["counts"].decode()}
    json.dumps(rle)  # JSON-ready
    assert M.rle_area(rle) == m.sum()
    np.testing.assert_array_equal(M.decode_rle(rle), m)
    bytes_rle = {"size": rle["size"], "counts": rle["counts"].encode()}
    np.testing.assert_array_equal(M.decode_rle(bytes_rle), m)
    assert M.decode_rle(rle).dtype == bool
    np.testing.assert_array_equal(M.decode_rle(M.encode_rle(torch.from_numpy(m))), m)


@pytest.mark.parametrize("name", MASK_CASES)
def test_uncompressed_rle_matches_reference(name):
    m = MASK_CASES[name]
    ours = M.mask_to_uncompressed_rle(torch.from_numpy(m)[None])
    assert ours == amg.mask_to_rle_pytorch(torch.from_numpy(m)[None])
    # Counts run down the columns (Fortran order) and start with the number of leading zeros.
    column_major = m.flatten(order="F")
    leading_zeros = int(np.argmax(column_major)) if column_major.any() else column_major.size
    assert ours[0]["counts"][0] == leading_zeros
    np.testing.assert_array_equal(M.uncompressed_rle_to_mask(ours[0]), m)
    np.testing.assert_array_equal(M.decode_rle(ours[0]), m)
    assert M.rle_area(ours[0]) == amg.area_from_rle(ours[0]) == m.sum()
    # The official COCO conversion of our uncompressed form gives our COCO RLE.
    assert amg.coco_encode_rle(ours[0]) == M.encode_rle(m)


@pytest.mark.parametrize("b,h,w", [(0, 5, 5), (1, 1, 1), (7, 11, 3), (5, 32, 48)])
def test_batched_rle(b, h, w):
    ms = _rand_masks(b, h, w, seed=b + h)
    if b:
        ms[0] = False
    ours = M.mask_to_uncompressed_rle(torch.from_numpy(ms))
    assert ours == (amg.mask_to_rle_pytorch(torch.from_numpy(ms)) if b else [])
    coco_rles = M.encode_rles(torch.from_numpy(ms))
    assert coco_rles == M.encode_rles(ms) == [M.encode_rle(m) for m in ms]


@pytest.mark.parametrize(
    "bad",
    [
        {"counts": "abc"},
        {"size": [2, 2]},
        {"size": "x", "counts": []},
        {"size": [2, 2], "counts": [1, 2]},  # sums to 3, not 4
    ],
)
def test_bad_rle_raises(bad):
    with pytest.raises(InputError):
        M.decode_rle(bad)


@pytest.mark.parametrize(
    ("counts", "words"),
    [
        ("0", "sum to 0, expected H*W = 20"),  # pycocotools alone reads junk past the runs
        ("522000", "sum to 15, expected H*W = 20"),
        ("52200030", "sum to 22, expected H*W = 20"),  # a run too many
        ("5220003x", "'x', not a COCO compressed RLE character"),
        ("5220003\x7f", "not a COCO compressed RLE character"),
        ("52200o", "end in the middle of a run"),
        ("é", "must be ASCII"),
        ([-1, 21], "run lengths >= 0, got -1"),
    ],
)
def test_rle_counts_that_do_not_cover_the_image_are_refused(counts, words):
    """Each of decode_rle and rle_area checks the runs first: the same message from both."""
    rle = {"size": [4, 5], "counts": counts}
    for read in (M.decode_rle, M.rle_area):
        with pytest.raises(InputError) as info:
            read(rle)
        assert words in str(info.value), str(info.value)


def test_compressed_counts_check_accepts_every_encoding():
    # whatever pycocotools encodes passes the check, and decodes to the same mask and area
    rng = np.random.default_rng(7)
    for i in range(200):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        m = rng.random((h, w)) < rng.random() if i % 2 else np.zeros((h, w), bool)
        if i % 4 == 0:
            m[: rng.integers(0, h + 1), : rng.integers(0, w + 1)] = True
        rle = M.encode_rle(m)
        M.check_compressed_counts(rle["counts"].encode(), h * w)
        assert (M.decode_rle(rle) == m).all() and M.rle_area(rle) == int(m.sum())


def test_bad_mask_shapes_raise():
    with pytest.raises(InputError):
        M.encode_rle(np.zeros((2, 2, 2), bool))
    with pytest.raises(InputError):
        M.mask_to_uncompressed_rle(torch.zeros(2, 2, dtype=torch.bool))


# ------------------------------------------------------------------------------------- boxes


@pytest.mark.parametrize(
    "shape",
    [(0, 8, 8), (3, 0, 0), (8, 8), (5, 9, 7), (2, 3, 6, 5), (4, 1, 1)],
)
def test_batched_mask_to_box_matches_reference(shape):
    ms = torch.from_numpy(np.random.default_rng(len(shape)).random(shape) < 0.1)
    if ms.numel():
        ms.view(-1, *shape[-2:])[0] = False  # an empty mask -> 0,0,0,0
    ours = M.batched_mask_to_box(ms)
    assert ours.shape == (*shape[:-2], 4)
    assert ours.dtype == torch.int64
    if ms.numel():
        torch.testing.assert_close(ours, amg.batched_mask_to_box(ms))
        assert (ours.view(-1, 4)[0] == 0).all()


def test_box_xyxy_to_xywh():
    b = torch.tensor([[1, 2, 5, 9], [0, 0, 0, 0]])
    assert M.box_xyxy_to_xywh(b).tolist() == [[1, 2, 4, 7], [0, 0, 0, 0]]
    assert M.box_xyxy_to_xywh(b[0]).tolist() == [1, 2, 4, 7]
    assert b[0].tolist() == [1, 2, 5, 9]  # input untouched


def test_box_iou_table():
    a = torch.tensor([[0.0, 0, 2, 2], [0, 0, 1, 1]])
    b = torch.tensor([[1.0, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]])
    want = torch.tensor([[1 / 7, 1, 0], [0, 0.25, 0]])
    torch.testing.assert_close(M.box_iou(a, b), want)
    assert M.box_iou(a, b[:0]).shape == (2, 0)


def _random_boxes(n: int, seed: int, ties: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 50
    wh = torch.rand(n, 2, generator=g) * 30
    boxes = torch.cat([xy, xy + wh], 1).round()
    scores = torch.rand(n, generator=g)
    if ties:
        scores = (scores * 3).floor()
    return boxes, scores


@pytest.mark.parametrize("n", [0, 1, 2, 40, 300])
@pytest.mark.parametrize("thr", [0.0, 0.3, 0.7, 1.0])
@pytest.mark.parametrize("ties", [False, True])
def test_nms_matches_greedy_loop(n, thr, ties):
    boxes, scores = _random_boxes(n, seed=n, ties=ties)
    ours = M.nms(boxes, scores, thr)
    assert ours.dtype == torch.int64
    assert ours.tolist() == ref_boxes.nms(boxes, scores, thr).tolist()


@pytest.mark.parametrize("n", [0, 1, 50, 200])
@pytest.mark.parametrize("n_groups", [1, 3])
def test_batched_nms_matches_per_group_loop(n, n_groups):
    boxes, scores = _random_boxes(n, seed=7 + n)
    groups = torch.arange(n) % n_groups
    ours = M.batched_nms(boxes, scores, groups, 0.5)
    assert ours.tolist() == ref_boxes.batched_nms(boxes, scores, groups, 0.5).tolist()


def test_nms_zero_area_and_identical_boxes():
    boxes = torch.tensor([[0.0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 4, 4], [1, 1, 4, 4]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.7])
    # Zero-area boxes have NaN IoU and never suppress; of two equal boxes the first is kept.
    assert M.nms(boxes, scores, 0.5).tolist() == [0, 1, 2]


# ------------------------------------------------------------------------------------- stability


@pytest.mark.parametrize("shape", [(0, 4, 4), (3, 16, 16), (2, 2, 5, 7)])
@pytest.mark.parametrize("thr,offset", [(0.0, 1.0), (0.5, 0.25), (-1.0, 2.0)])
def test_stability_matches_reference(shape, thr, offset):
    logits = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 3
    ours = M.stability_score(logits, thr, offset)
    ref = amg.calculate_stability_score(logits, thr, offset)
    torch.testing.assert_close(ours, ref, equal_nan=True)
    assert ours.shape == shape[:-2]


def test_stability_table():
    logits = torch.tensor([[[2.0, 0.5], [-0.5, -2.0]], [[-5.0, -5.0], [-5.0, -5.0]]])
    s = M.stability_score(logits, 0.0, 1.0)
    assert s[0].item() == pytest.approx(1 / 3)
    assert torch.isnan(s[1])  # both thresholded masks empty


# ------------------------------------------------------------------------------------- regions


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("mode", ["holes", "islands"])
@pytest.mark.parametrize("area", [0, 5, 30, 10_000])
def test_remove_small_regions_matches_reference(seed, mode, area):
    m = _blobs(40, 50, seed)
    ours, changed = M.remove_small_regions(m, area, mode)
    ref, ref_changed = amg.remove_small_regions(m, area, mode)
    assert changed == ref_changed
    np.testing.assert_array_equal(ours, ref)


def test_remove_small_regions_table():
    m = np.zeros((9, 9), bool)
    m[1:8, 1:8] = True
    m[4, 4] = False  # a 1-px hole
    m[0, 0] = True  # a 1-px island touching the block diagonally (8-connected)
    filled, changed = M.remove_small_regions(m, 2, "holes")
    assert changed and filled[4, 4] and filled.sum() == m.sum() + 1
    same, changed = M.remove_small_regions(m, 2, "islands")
    assert not changed and same is m
    # Every island small: the largest is kept.
    two = np.zeros((6, 6), bool)
    two[0, 0] = True
    two[3:5, 3:5] = True
    kept, changed = M.remove_small_regions(two, 100, "islands")
    assert changed and kept.sum() == 4 and not kept[0, 0]
    with pytest.raises(InputError):
        M.remove_small_regions(m, 2, "both")


def test_remove_small_regions_empty():
    m = np.zeros((5, 5), bool)
    out, changed = M.remove_small_regions(m, 10, "islands")
    assert not changed and not out.any()
    out, changed = M.remove_small_regions(m, 100, "holes")  # the whole frame is one big hole
    assert changed and out.all()


# ------------------------------------------------------------------------------------- polygons


def test_mask_to_polygons_keeps_holes():
    import cv2

    m = np.zeros((20, 20), bool)
    m[2:12, 2:12] = True
    m[5:8, 5:8] = False  # a hole
    m[15:18, 15:19] = True  # a second region
    rings = M.mask_to_polygons(m)
    assert len(rings) == 3
    assert all(len(r) >= 3 and len(r[0]) == 2 for r in rings)
    signed = [cv2.contourArea(np.array(r, np.float32), oriented=True) for r in rings]
    outer = [r for r, a in zip(rings, signed, strict=True) if a < 0]
    holes = [r for r, a in zip(rings, signed, strict=True) if a > 0]
    assert len(outer) == 2 and len(holes) == 1
    # The hole ring surrounds the hole's centre; its outer ring comes right before it.
    hole = np.array(holes[0], np.float32)
    assert cv2.pointPolygonTest(hole, (6.0, 6.0), False) > 0
    big_ring = [r for r in outer if [2.0, 2.0] in r][0]
    assert rings.index(holes[0]) == rings.index(big_ring) + 1
    big = np.array(big_ring)
    assert big.min(0).tolist() == [2, 2] and big.max(0).tolist() == [11, 11]
    assert M.mask_to_polygons(np.zeros((4, 4), bool)) == []
    assert M.mask_to_polygons(np.ones((1, 1), bool)) == []  # a single pixel is no polygon
    with pytest.raises(InputError):
        M.mask_to_polygons(np.zeros((2, 2, 2), bool))


# ------------------------------------------------------------------------------------- crops


@pytest.mark.parametrize("n,layers,scale", [(1, 0, 1), (4, 1, 2), (32, 2, 2), (7, 3, 1)])
def test_point_grids_match_reference(n, layers, scale):
    ours = M.build_all_layer_point_grids(n, layers, scale)
    ref = amg.build_all_layer_point_grids(n, layers, scale)
    assert len(ours) == len(ref) == layers + 1
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "size,layers,ratio",
    [
        ((1, 1), 2, 512 / 1500),
        ((480, 640), 0, 0.3),
        ((480, 640), 2, 512 / 1500),
        ((97, 33), 3, 0.5),
    ],
)
def test_crop_boxes_match_reference(size, layers, ratio):
    assert M.generate_crop_boxes(size, layers, ratio) == amg.generate_crop_boxes(
        size, layers, ratio
    )


def test_uncrop_helpers_match_reference():
    crop = [10, 20, 50, 60]
    boxes = torch.tensor([[0, 0, 5, 5], [1, 2, 3, 4]])
    torch.testing.assert_close(M.uncrop_boxes_xyxy(boxes, crop), amg.uncrop_boxes_xyxy(boxes, crop))
    pts = torch.tensor([[1.5, 2.5]], dtype=torch.float64)
    torch.testing.assert_close(M.uncrop_points(pts, crop), amg.uncrop_points(pts, crop))
    ms = torch.rand(2, 40, 40) > 0.5
    torch.testing.assert_close(M.uncrop_masks(ms, crop, 70, 80), amg.uncrop_masks(ms, crop, 70, 80))
    assert M.uncrop_masks(ms, [0, 0, 40, 40], 40, 40) is ms
    near = M.is_box_near_crop_edge(boxes.float(), crop, [0, 0, 100, 100])
    want = amg.is_box_near_crop_edge(boxes.float(), crop, [0, 0, 100, 100])
    assert near.tolist() == want.tolist() == [False, True]
    assert M.is_box_near_crop_edge(torch.zeros(0, 4), crop, [0, 0, 100, 100]).shape == (0,)
