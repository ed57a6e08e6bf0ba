"""Tiled inference for large images (issue 39): ``segany.tasks.tiles``.

On a 3000×2000 synthetic scene with the bundled model (384 px input): small objects answered on
full-resolution tiles match their ground truth far better than on the whole image shrunk ~8×;
an object wholly inside a tile gets exactly the Predictor's masks on that tile; a prompt on an
object that crosses a seam gives one whole mask, not the half its first tile sees. Segment
everything over tiles equals the generator's own when the image is one tile, and keeps no mask
cut by a tile's inner edge.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from eval_fixtures import tiny_model

from segany import Predictor, load_model
from segany.automatic import MaskGenerator
from segany.errors import InputError
from segany.masks import box_iou, place_rle
from segany.tasks import TiledPredictor, generate_tiled, tile_frames

H, W = 2000, 3000
SMALL = [  # (kind, cx, cy, r): objects a few tens of px across, away from the seams
    ("rect", 300, 200, 30),
    ("disk", 1500, 1000, 26),
    ("rect", 2500, 1700, 24),
    ("disk", 800, 1500, 30),
    ("rect", 2200, 400, 28),
]
SEAM = (600, 1000, 150)  # a disk across the seam between the 2nd and 3rd tile columns
COLOURS = [(230, 40, 40), (40, 220, 60), (50, 80, 240), (240, 220, 40), (200, 60, 220)]


def _scene():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 40, (H, W, 3), dtype=np.uint8)
    yy, xx = np.ogrid[:H, :W]
    objects = []
    for (kind, cx, cy, r), colour in zip(SMALL, COLOURS, strict=True):
        if kind == "rect":
            m = (abs(yy - cy) <= r) & (abs(xx - cx) <= int(r * 1.4))
        else:
            m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        image[m] = colour
        objects.append(m)
    cx, cy, r = SEAM
    seam = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    image[seam] = (230, 130, 40)
    return image, objects, seam


def _box(mask):
    ys, xs = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    return np.array([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], np.float64)


def _iou(a, b):
    return float((a & b).sum() / (a | b).sum())


@pytest.fixture(scope="module")
def scene():
    return _scene()


@pytest.fixture(scope="module")
def model():
    return load_model()


@pytest.fixture(scope="module")
def tiled(scene, model):
    tp = TiledPredictor(Predictor(model, cache=False))
    tp.set_image(scene[0])
    return tp


# ----- the tile grid --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("size", "tile", "overlap"),
    [
        ((2000, 3000), 384, 96),
        ((500, 700), 384, 96),
        ((384, 385), 384, 0),
        ((1024, 4000), 1024, 256),
    ],
)
def test_tiles_cover_the_image_with_the_overlap_asked(size, tile, overlap):
    frames = tile_frames(size, tile, overlap)
    h, w = size
    seen = np.zeros(size, bool)
    for x0, y0, x1, y1 in frames:
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert (x1 - x0, y1 - y0) == (min(tile, w), min(tile, h))
        seen[y0:y1, x0:x1] = True
    assert seen.all()
    xs = sorted({f[0] for f in frames})
    ys = sorted({f[1] for f in frames})
    for starts in (xs, ys):
        assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:], strict=False))


def test_an_image_within_one_tile_is_one_frame():
    assert tile_frames((300, 200), 384, 96) == [(0, 0, 200, 300)]


@pytest.mark.parametrize(
    ("tile", "overlap", "message"),
    [(8, 0, "tile must be at least 16"), (384, 384, "overlap must be in"), (64, -1, "overlap")],
)
def test_bad_tiles_are_refused(tile, overlap, message):
    with pytest.raises(InputError, match=message):
        tile_frames((100, 100), tile, overlap)


# ----- prompts on a 3000×2000 image --------------------------------------------------------------
@pytest.mark.slow  # six encoder passes of the bundled model: 15 s at load 5, 34 s at load 9
def test_small_objects_are_sharper_on_tiles_than_on_the_shrunk_image(scene, model, tiled):
    image, objects, _ = scene
    whole = Predictor(model, cache=False)
    whole.set_image(image)
    on_tiles, shrunk = [], []
    for mask in objects:
        box = _box(mask)
        shrunk.append(_iou(whole.predict(box=box, multimask_output=False).masks[0], mask))
        on_tiles.append(_iou(tiled.predict(box=box, multimask_output=False).masks[0], mask))
    # measured: tiles 0.97-0.99 each, the shrunk image 0.40-0.83 (mean ~0.63)
    assert min(on_tiles) >= 0.9
    assert np.mean(on_tiles) - np.mean(shrunk) >= 0.2
    assert all(t > s for t, s in zip(on_tiles, shrunk, strict=True))
    assert tiled.encoded <= len(objects)  # only the tiles a prompt needed were encoded


def test_inside_one_tile_equals_the_predictor_on_that_tile(scene, model, tiled):
    image, objects, _ = scene
    box = _box(objects[1])
    got = tiled.predict(box=box, multimask_output=True)
    x0, y0, x1, y1 = tiled.last_frame
    assert (x1 - x0, y1 - y0) == (384, 384)  # a tile, not a grown crop
    alone = Predictor(model, cache=False)
    alone.set_image(image[y0:y1, x0:x1])
    want = alone.predict(box=box - [x0, y0, x0, y0], multimask_output=True)
    assert got.masks.shape == (3, H, W)
    np.testing.assert_array_equal(got.masks[:, y0:y1, x0:x1], want.masks)
    assert not got.masks[:, :y0].any() and not got.masks[:, :, x1:].any()
    np.testing.assert_array_equal(got.scores, want.scores)
    np.testing.assert_array_equal(got.logits, want.logits)


@pytest.mark.slow  # ~5 encoder passes (tiles, grown frames): 7 s idle, 42 s at load 10
def test_a_prompt_across_a_seam_gives_one_whole_mask(scene, model, tiled):
    image, _, seam = scene
    cx, cy, r = SEAM
    point = np.array([[cx, cy]], np.float64)
    first = tiled.route([cx, cy, cx, cy])
    x0, y0, x1, y1 = first
    assert x0 < cx - r + 2 or x1 > cx + r - 2  # the first tile cuts the object
    alone = Predictor(model, cache=False)
    alone.set_image(image[y0:y1, x0:x1])
    cut = alone.predict(point_coords=point - [x0, y0], point_labels=[1]).masks
    half = max(_iou(np.pad(m, ((y0, H - y1), (x0, W - x1))), seam) for m in cut)
    got = tiled.predict(point_coords=point, point_labels=[1])
    whole = max(_iou(m, seam) for m in got.masks)
    fx0, fy0, fx1, fy1 = tiled.last_frame
    assert fx0 <= cx - r and fx1 >= cx + r and fy0 <= cy - r and fy1 >= cy + r
    assert half < 0.8 and whole >= 0.9, (half, whole)  # measured: 0.50 on the tile, 0.98
    # a box over the seam: one mask, whole
    boxed = tiled.predict(box=_box(seam), multimask_output=False)
    assert _iou(boxed.masks[0], seam) >= 0.9


def test_batched_boxes_are_routed_one_by_one(scene, tiled):
    _, objects, _ = scene
    boxes = np.stack([_box(objects[0]), _box(objects[4])])
    both = tiled.predict(box=boxes, multimask_output=False)
    assert both.masks.shape == (2, 1, H, W)
    for k, box in enumerate(boxes):
        one = tiled.predict(box=box, multimask_output=False)
        np.testing.assert_array_equal(both.masks[k], one.masks)


def test_mask_input_is_answered_on_its_own_frame(scene, tiled):
    _, objects, _ = scene
    box = _box(objects[3])
    first = tiled.predict(box=box, multimask_output=False)
    frame = tiled.last_frame
    cx, cy = (box[:2] + box[2:]) / 2
    again = tiled.predict(
        point_coords=[[cx, cy]], point_labels=[1], box=box, mask_input=first.logits
    )
    assert tiled.last_frame == frame and again.masks.shape == (3, H, W)


def test_bad_inputs_say_what_is_wrong(model):
    tp = TiledPredictor(Predictor(model, cache=False), tile=128, overlap=32)
    with pytest.raises(InputError, match="no image is set"):
        tp.predict(box=[0, 0, 10, 10])
    tp.set_image(np.zeros((300, 300, 3), np.uint8))
    low = np.zeros((1, *model.prompt_encoder.mask_input_size), np.float32)
    with pytest.raises(InputError, match="mask_input only for one prompt"):
        tp.predict(point_coords=[[5, 5]], point_labels=[1], mask_input=low)
    with pytest.raises(InputError, match="overlap must be in"):
        TiledPredictor(Predictor(model, cache=False), tile=128, overlap=128)
    with pytest.raises(InputError, match="tiles_kept"):
        TiledPredictor(Predictor(model, cache=False), tiles_kept=0)


# ----- segment everything over tiles (a seeded tiny model: structure, not quality) -------------
@pytest.fixture(scope="module")
def tiny_generator():
    torch.set_num_threads(1)
    return MaskGenerator(
        tiny_model(),
        points_per_side=4,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        output_mode="coco_rle",
    )


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_one_tile_equals_the_generator(tiny_generator):
    image = _image(100, 120)
    tiled = generate_tiled(tiny_generator, image, tile=128, overlap=32)
    plain = tiny_generator.generate(image)
    assert len(tiled) == len(plain) > 0
    for a, b in zip(tiled, plain, strict=True):
        assert a["segmentation"] == b["segmentation"] and a["bbox"] == b["bbox"]


@pytest.mark.slow  # three encoder passes and 3×64 grid prompts: 17 s at load 7, 34 s at load 9
def test_tiled_masks_are_whole_and_found_once(model):
    # 500×300 with 384-px tiles: two tiles sharing x 116..384, and the whole image
    rng = np.random.default_rng(2)
    image = rng.integers(0, 40, (300, 500, 3), dtype=np.uint8)
    yy, xx = np.ogrid[:300, :500]
    objects = []
    for (cx, cy, r), colour in zip(
        [(250, 150, 20), (60, 80, 18), (450, 220, 22)], COLOURS[:3], strict=True
    ):
        m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        image[m] = colour
        objects.append(m)
    # The thresholds this test was written with (the bundled file's before issue 38 lowered them
    # for photographs, which keeps the model's weaker part-masks too): it is about tiles merging.
    generator = MaskGenerator(
        Predictor(model, cache=False),
        points_per_side=8,
        pred_iou_thresh=0.6,
        stability_score_thresh=0.95,
        stability_score_offset=0.25,
    )
    records = generate_tiled(generator, image)
    frames = tile_frames((300, 500), 384, 96)
    assert len(frames) == 2
    for obj in objects:  # the first lies in both tiles: one mask for it, not one per tile
        found = [r for r in records if _iou(r["segmentation"], obj) > 0.3]
        assert len(found) == 1 and _iou(found[0]["segmentation"], obj) >= 0.9
        assert found[0]["crop_box"] != [0, 0, 500, 300]  # from a tile, at full resolution
    for r in records:
        x0, y0, cw, ch = r["crop_box"]
        bx, by, bw, bh = r["bbox"]
        inner = [x0 > 0 and bx <= x0 + 20, x0 + cw < 500 and bx + bw >= x0 + cw - 20]
        assert not any(inner), (r["bbox"], r["crop_box"])  # masks cut by a seam are dropped
    boxes = torch.tensor(
        [[b[0], b[1], b[0] + b[2], b[1] + b[3]] for b in (r["bbox"] for r in records)]
    )
    ious = box_iou(boxes.float(), boxes.float()) - torch.eye(len(boxes))
    assert float(ious.max()) <= generator.crop_nms_thresh + 1e-6


# ----- images read by region -------------------------------------------------------------------
class Regions:
    """An H×W×3 uint8 array-like that records the regions read from it."""

    def __init__(self, array):
        self.array = array
        self.shape = array.shape
        self.dtype = array.dtype
        self.reads = []

    def __getitem__(self, key):
        rows, cols = key
        self.reads.append((cols.start, rows.start, cols.stop, rows.stop))
        return self.array[key]


@pytest.fixture(scope="module")
def tiny_predictor():
    return Predictor(tiny_model(), cache=False)  # 128-px input: fast tiles


def test_an_image_read_by_region_reads_only_the_tiles_it_needs(tiny_predictor):
    array = _image(400, 600, seed=5)
    regions = Regions(array)
    lazy = TiledPredictor(tiny_predictor, tile=128, overlap=32)
    lazy.set_image(regions)
    assert regions.reads == [] and lazy.image_size == (400, 600)
    box = np.array([300.0, 150.0, 340.0, 190.0])
    got = lazy.predict(box=box, multimask_output=False)
    # one read per frame encoded: the routed tile first, then any frame a mask grew into (the
    # random tiny model's masks are large)
    assert len(regions.reads) == lazy.encoded >= 1
    assert regions.reads[0] == lazy.route(box) and regions.reads[-1] == lazy.last_frame
    x0, y0, x1, y1 = regions.reads[0]
    assert (x1 - x0, y1 - y0) == (128, 128)
    whole = TiledPredictor(tiny_predictor, tile=128, overlap=32)
    whole.set_image(array)
    want = whole.predict(box=box, multimask_output=False)
    np.testing.assert_array_equal(got.masks, want.masks)
    np.testing.assert_array_equal(got.scores, want.scores)


def test_a_memory_mapped_tiff_is_read_by_region(tmp_path, tiny_predictor):
    tifffile = pytest.importorskip("tifffile")  # (scikit-image's dependency, in the dev extra)
    array = _image(300, 500, seed=6)
    tifffile.imwrite(tmp_path / "big.tif", array)  # uncompressed: memory-mappable
    mapped = tifffile.memmap(tmp_path / "big.tif")
    assert isinstance(mapped, np.memmap)
    tp = TiledPredictor(tiny_predictor, tile=128, overlap=32)
    tp.set_image(mapped)
    got = tp.predict(point_coords=[[250, 140]], point_labels=[1])
    ref = TiledPredictor(tiny_predictor, tile=128, overlap=32)
    ref.set_image(array)
    np.testing.assert_array_equal(
        got.masks, ref.predict(point_coords=[[250, 140]], point_labels=[1]).masks
    )


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((40, 50, 3), np.float32), "must be H×W×3 \\(or ×4\\) uint8"),
        (np.zeros((40, 50), np.uint8), "must be H×W×3"),
        (np.zeros((1, 2**16, 3), np.uint8), "pixels"),
    ],
)
def test_bad_region_sources_are_refused(array, message, tiny_predictor):
    tp = TiledPredictor(tiny_predictor, tile=128, overlap=32)
    with pytest.raises(InputError, match=message):
        tp.set_image(Regions(array))


def test_framed_answers_equal_the_pasted_ones_without_full_size_masks(tiny_predictor):
    from segany.formats.prompted import mask_entry
    from segany.masks import encode_rle

    array = _image(400, 600, seed=7)
    regions = Regions(array)
    tp = TiledPredictor(tiny_predictor, tile=128, overlap=32)
    tp.set_image(regions)
    boxes = np.array([[300.0, 150.0, 340.0, 190.0], [20.0, 300.0, 90.0, 380.0]])
    framed = tp.predict_framed(box=boxes, multimask_output=True)
    pasted = tp.predict(box=boxes, multimask_output=True)
    assert framed[0].threshold == tiny_predictor.model.mask_threshold
    assert len(framed) == 2
    for k, answer in enumerate(framed):
        x0, y0, x1, y1 = answer.frame
        assert answer.masks.shape == (3, y1 - y0, x1 - x0) and answer.image_size == (400, 600)
        np.testing.assert_array_equal(answer.pasted().masks, pasted.masks[k])
        np.testing.assert_array_equal(answer.scores, pasted.scores[k])
        for c in range(3):
            full = pasted.masks[k, c]
            assert answer.rle(c) == encode_rle(full)
            framed = {"frame": answer.frame, "image_hw": (400, 600)}
            entry = mask_entry(0, k, c, answer.scores[c], answer.masks[c], None, **framed)
            assert entry == mask_entry(0, k, c, answer.scores[c], full, None)
    # an empty mask keeps the record convention's empty box
    empty = np.zeros((128, 128), bool)
    entry = mask_entry(0, 0, 0, 0.5, empty, None, frame=(256, 128, 384, 256), image_hw=(400, 600))
    assert entry["bbox"] == [0, 0, 0, 0] and entry["area"] == 0
    # logits: the same mask above the threshold, -inf outside the frame when pasted
    binary = tp.predict_framed(box=boxes[0], multimask_output=False)[0]
    logits = tp.predict_framed(box=boxes[0], multimask_output=False, return_logits=True)[0]
    assert logits.frame == binary.frame != (0, 0, 600, 400)
    assert logits.masks.dtype == np.float32 and logits.rle(0) == binary.rle(0)
    outside = logits.pasted().masks[0]
    x0, y0, x1, y1 = logits.frame
    outside[y0:y1, x0:x1] = -np.inf
    assert np.isneginf(outside).all()


def test_framed_points_and_a_box_equal_the_pasted_answer(tiny_predictor):
    array = _image(400, 600, seed=8)
    tp = TiledPredictor(tiny_predictor, tile=128, overlap=32)
    tp.set_image(array)
    prompt = {
        "point_coords": [[330.0, 170.0], [305.0, 160.0]],
        "point_labels": [1, 0],
        "box": [300.0, 150.0, 345.0, 195.0],
    }
    (framed,) = tp.predict_framed(**prompt)
    pasted = tp.predict(**prompt)
    np.testing.assert_array_equal(framed.pasted().masks, pasted.masks)
    np.testing.assert_array_equal(framed.logits, pasted.logits)
    assert tp.last_frame == framed.frame


def test_iter_framed_answers_one_prompt_at_a_time(tiny_predictor):
    """``iter_framed`` checks the prompts at once and answers each only when it is read, so
    a caller keeping RLEs holds one prompt's masks at a time; its answers are
    ``predict_framed``'s."""
    from segany.formats.prompted import framed_entries

    tp = TiledPredictor(tiny_predictor, tile=128, overlap=32)
    tp.set_image(Regions(_image(400, 600, seed=9)))
    boxes = np.array([[300.0, 150.0, 340.0, 190.0], [20.0, 300.0, 90.0, 380.0]])
    with pytest.raises(InputError):  # checked before any answer is read
        tp.iter_framed(box=[[5.0, 5.0]])
    decoded = []
    real = tp.predictor.predict
    tp.predictor.predict = lambda *a, **k: decoded.append(1) or real(*a, **k)
    try:
        answers = tp.iter_framed(box=boxes, multimask_output=True)
        assert decoded == []  # nothing made yet
        first = next(answers)
        assert len(decoded) >= 1
        made = len(decoded)
        rest = list(answers)
        assert len(decoded) > made and len(rest) == 1
    finally:
        del tp.predictor.predict
    want = tp.predict_framed(box=boxes, multimask_output=True)
    for got, ref in zip([first, *rest], want, strict=True):
        assert got.frame == ref.frame
        np.testing.assert_array_equal(got.masks, ref.masks)
    assert [a.prompt for a in want] == [0, 1]
    # answers in any order give the entries in prompt order, numbered
    backwards = ((a.prompt, a.frame, a.masks, a.scores) for a in reversed(want))
    entries = framed_entries(backwards, (400, 600))
    assert [(e["id"], e["prompt"], e["candidate"]) for e in entries] == [
        (i, i // 3, i % 3) for i in range(6)
    ]
    assert entries[4]["segmentation"] == want[1].rle(1)


def test_unordered_answers_visit_each_tile_once_with_the_same_masks(tiny_predictor):
    """Prompts scattered over more tiles than are kept: in prompt order each return to a tile
    encodes it again; ``ordered=False`` groups them by routed tile (each encoded once), gives
    each answer its prompt's index and the same masks; ``predict`` and ``predict_framed`` use
    that order and give the answers back in prompt order."""
    tp = TiledPredictor(tiny_predictor, tile=128, overlap=32, tiles_kept=1)
    # The random model's masks may reach a tile's edge, and a grown frame would take the one
    # kept place: growth is tested above; here each answer stays on its routed tile.
    tp._grown = lambda *args: None
    tp.set_image(Regions(_image(300, 300, seed=4)))
    # boxes each well inside one corner tile (A, B, C), visited A B A B C B
    a, b = [20.0, 20.0, 60.0, 60.0], [220.0, 220.0, 260.0, 260.0]
    boxes = np.array([a, b, a, b, [230.0, 20.0, 270.0, 60.0], b])
    ordered = list(tp.iter_framed(box=boxes, multimask_output=False))
    assert tp.encoded == 6  # A, B, A, B, C, B
    tp.set_image(Regions(_image(300, 300, seed=4)))
    loose = list(tp.iter_framed(box=boxes, multimask_output=False, ordered=False))
    assert tp.encoded == 3  # A, B, C once each
    assert [x.prompt for x in loose] == [0, 2, 1, 3, 5, 4]
    assert [x.prompt for x in ordered] == list(range(6))
    for got in loose:
        ref = ordered[got.prompt]
        assert got.frame == ref.frame
        np.testing.assert_array_equal(got.masks, ref.masks)
        np.testing.assert_array_equal(got.scores, ref.scores)
    tp.set_image(Regions(_image(300, 300, seed=4)))
    framed = tp.predict_framed(box=boxes, multimask_output=False)
    assert tp.encoded == 3 and [x.prompt for x in framed] == list(range(6))
    assert tp.last_frame == ordered[-1].frame  # the last prompt's, as in prompt order
    tp.set_image(_image(300, 300, seed=4))
    pasted = tp.predict(box=boxes, multimask_output=False)
    assert tp.encoded == 3
    for k, ref in enumerate(ordered):
        np.testing.assert_array_equal(pasted.masks[k], ref.pasted().masks)


def test_a_frame_many_model_sizes_long_is_read_shrunk_with_full_resolution_masks(monkeypatch):
    """A box over most of an image 9 model sizes across is answered on a crop read shrunk, a
    strip of rows at a time (never the whole crop at full resolution), and its mask comes at
    full resolution and agrees with the whole-image Predictor's, which also sees the image
    shrunk."""
    import segany.tasks.region_files as R
    from segany import load_model

    model = load_model()  # the bundled model: it segments discs
    size = int(model.image_size)
    h, w = 9 * size - 100, 9 * size
    rng = np.random.default_rng(3)
    image = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    yy, xx = np.ogrid[:h, :w]
    cy, cx, r = h // 2 + 37, w // 2 - 51, int(0.45 * h)
    image[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = (200, 180, 40)
    monkeypatch.setattr(R, "STRIP_BYTES", 2**22)
    regions = Regions(image)
    tp = TiledPredictor(Predictor(model, cache=False))
    tp.set_image(regions)
    box = np.array([cx - r - 30, cy - r - 30, cx + r + 30, cy + r + 30], float)
    (answer,) = tp.predict_framed(box=box, multimask_output=False)
    x0, y0, x1, y1 = answer.frame
    assert x1 - x0 > 8 * size and tp.shrink_factor(answer.frame) >= 2
    assert answer.masks.shape == (1, y1 - y0, x1 - x0)  # full resolution
    # made only when read, by columns: the same RLE as the frame-sized mask made whole
    from segany.inference.column_masks import ColumnMasks

    assert isinstance(answer.masks, ColumnMasks)
    # (the predictor holds the frame's embedding: its predict makes the frame-sized masks)
    made = tp.predictor.predict(box=box - np.tile(answer.frame[:2], 2), multimask_output=False)
    np.testing.assert_array_equal(np.asarray(answer.masks), made.masks)
    assert answer.rle(0) == place_rle(made.masks[0], (h, w), answer.frame[:2])
    # read in strips of at most STRIP_BYTES, all inside the frame
    assert regions.reads and all((b - t) * (c - a) * 3 <= 2**22 for a, t, c, b in regions.reads)
    assert all(x0 <= a and c <= x1 and y0 <= t and b <= y1 for a, t, c, b in regions.reads)
    got = answer.pasted().masks[0]
    whole = Predictor(model, cache=False)
    whole.set_image(image)
    want = whole.predict(box=box, multimask_output=False).masks[0]

    def iou(a, b):
        return (a & b).sum() / (a | b).sum()

    assert iou(got, want) >= 0.97, iou(got, want)


def test_reduced_reads_are_block_means_strip_by_strip(monkeypatch):
    """A shrunk frame is the block means of its pixels (within PIL's rounding), the blocks cut
    by the frame's edge included, whatever the strip size."""
    import segany.tasks.region_files as R
    from segany.tasks.tiles import FrameSource, _read_reduced

    array = _image(230, 170, seed=11)
    frame, f = (13, 21, 168, 224), 6  # 155×203 px: partial blocks on both edges
    crop = array[21:224, 13:168].astype(np.float64)
    oh, ow = -(-203 // f), -(-155 // f)
    want = np.array(
        [
            [
                crop[i * f : (i + 1) * f, j * f : (j + 1) * f].reshape(-1, 3).mean(0)
                for j in range(ow)
            ]
            for i in range(oh)
        ]
    )
    for strip in (2**20, 155 * 3 * f * 2, 1):  # one strip; two blocks of rows; one each
        monkeypatch.setattr(R, "STRIP_BYTES", strip)
        regions = Regions(array)
        got = _read_reduced(FrameSource(regions, frame, "RGB"), f)
        assert got.shape == (oh, ow, 3) and got.dtype == np.uint8
        assert np.abs(got - want).max() <= 1.0
        assert all(a >= 13 and c <= 168 and t >= 21 and b <= 224 for a, t, c, b in regions.reads)
        if strip == 1:
            assert len(regions.reads) == oh  # one block of rows a read


def test_the_shrink_factor_leaves_four_to_six_model_sizes_on_a_pyramids_level(tiny_predictor):
    """Frames up to 8 model sizes are read whole; a larger one is shrunk to 4–6 sizes, by a
    multiple of a pyramid level's factor when one fits (so that level is read)."""
    tp = TiledPredictor(tiny_predictor)  # 128-px input
    flat = Regions(np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (11000, 11000, 3)))
    tp.set_image(flat)
    assert tp.shrink_factor((0, 0, 1024, 700)) == 1  # 8 sizes: read whole
    assert tp.shrink_factor((0, 0, 1025, 700)) == 2
    assert tp.shrink_factor((0, 0, 7000, 7000)) == 13  # 7000/13 = 538 px, 4.2 sizes
    flat.levels = [(2, None), (4, None), (8, None)]
    tp.set_image(flat)
    assert tp.shrink_factor((0, 0, 7000, 7000)) == 12  # level 4, 4.6 sizes (8: 8 is too few)
    assert tp.shrink_factor((0, 0, 10000, 9000)) == 16  # level 8, 4.9 sizes
    for levels in ([], flat.levels):  # every long side above 8 sizes: 4–6 sizes left
        flat.levels = levels
        tp.set_image(flat)
        for long in range(1025, 11000):
            f = tp.shrink_factor((0, 0, long, 10))
            assert 4 * 128 <= long / f <= 6 * 128, (levels, long, f)
