"""segany.tasks.regions: the tile level a view picks, and answers on a region's tiles."""

from __future__ import annotations

import numpy as np
import pytest

from segany.errors import InputError
from segany.inference.predictor import Predictor
from segany.tasks.regions import RegionPredictor, check_view, view_tile
from segany.tasks.tiles import TiledPredictor, check_frame
from tests.server_fixtures import tiny  # noqa: F401


@pytest.mark.parametrize(
    ("view", "size", "tile"),
    [
        ([0, 0, 300, 200], (4000, 6000), 384),  # within one model frame: full resolution
        ([0, 0, 384, 100], (4000, 6000), 384),
        ([0, 0, 385, 100], (4000, 6000), 768),
        ([100, 100, 1600, 900], (4000, 6000), 1536),
        ([-500, -500, 7000, 4500], (4000, 6000), 6144),  # cut to the image: the whole of it
        ([5900, 3900, 9000, 9000], (4000, 6000), 384),  # only 100 px of it are in the image
        ([0, 0, 1024, 1024], (768, 1024), 1536),  # the whole image
    ],
)
def test_the_tile_a_view_picks(view, size, tile):
    assert view_tile(view, size, 384) == tile


@pytest.mark.parametrize(
    ("view", "message"),
    [
        ([0, 0, 10], "4 finite numbers"),
        ([0, 0, float("nan"), 5], "4 finite numbers"),
        ("abcd", "4 finite numbers"),
        ([10, 0, 10, 5], "x0 < x1"),
        ([2000, 0, 3000, 5], "does not overlap"),
    ],
)
def test_bad_views_are_refused(view, message):
    with pytest.raises(InputError, match=message):
        check_view(view, (100, 200))


@pytest.mark.parametrize(
    "frame", [[0, 0, 10], [0, 0, 10.5, 10], [0, 0, 201, 10], [5, 5, 5, 10], None]
)
def test_bad_frames_are_refused(frame):
    with pytest.raises(InputError, match="frame"):
        check_frame(frame, (100, 200))


def scene() -> np.ndarray:
    """A 768×1152 scene: two dark discs on a light, gently varying background."""
    yy, xx = np.mgrid[:768, :1152]
    image = np.stack([160 + xx * 40 // 1152, 170 + yy * 40 // 768, 150 + 0 * xx], -1)
    for cx, cy, r in ((300, 250, 60), (800, 520, 90)):
        image[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = (30, 40, 120)
    return image.astype(np.uint8)


def test_a_zoomed_prompt_is_the_tiled_predictors_answer_on_that_level(tiny):  # noqa: F811
    image = scene()
    regions = RegionPredictor(Predictor(tiny, cache=False))
    regions.set_image(image)
    tiled = TiledPredictor(Predictor(tiny, cache=False), tile=384)
    tiled.set_image(image)
    point = np.array([[300.0, 250.0]])
    ours = regions.predict([150, 100, 450, 400], point, [1])
    theirs = tiled.predict(point, np.array([1]))
    assert ours is not None and regions.frame == tiled.last_frame
    assert np.array_equal(ours.masks, theirs.masks)
    assert np.allclose(ours.scores, theirs.scores)
    assert ours.masks.shape == (3, 768, 1152)

    # predict_on the same frame, with the logits fed back: the correction the server makes.
    k = int(np.argmax(ours.scores))
    fixed = regions.predict(
        [150, 100, 450, 400],
        np.array([[300.0, 250.0], [330.0, 250.0]]),
        np.array([1, 1]),
        mask_input=ours.logits[k : k + 1],
        mask_input_frame=regions.frame,
        multimask_output=False,
    )
    again = tiled.predict_on(
        tiled.last_frame,
        np.array([[300.0, 250.0], [330.0, 250.0]]),
        np.array([1, 1]),
        mask_input=ours.logits[k : k + 1],
        multimask_output=False,
    )
    assert fixed is not None and np.array_equal(fixed.masks, again.masks)


def test_the_whole_image_answers_a_view_of_all_of_it(tiny):  # noqa: F811
    regions = RegionPredictor(Predictor(tiny, cache=False))
    regions.set_image(scene())
    assert regions.predict([0, 0, 1152, 768], [[300, 250]], [1]) is None
    logits = np.zeros((1, 192, 192), np.float32)
    # logits without a frame are the whole image's: corrected on it
    assert regions.predict([200, 200, 400, 400], [[300, 250]], [1], mask_input=logits) is None
    assert regions.encoded == 0
    with pytest.raises(InputError, match="without a mask_input"):
        regions.predict([200, 200, 400, 400], [[300, 250]], [1], mask_input_frame=[0, 0, 9, 9])


def test_an_image_read_by_region_gives_the_same_answers_in_their_frames(tiny, tmp_path):  # noqa: F811
    image = scene()
    np.save(tmp_path / "scene.npy", image)
    mapped = np.load(tmp_path / "scene.npy", mmap_mode="r")
    by_region = RegionPredictor(Predictor(tiny, cache=False))
    by_region.set_image(mapped)
    whole = RegionPredictor(Predictor(tiny, cache=False))
    whole.set_image(image)
    view, point = [150, 100, 450, 400], np.array([[300.0, 250.0]])
    framed = by_region.predict_framed(view, point, [1])
    ours = whole.predict(view, point, [1])
    assert framed is not None and ours is not None
    assert framed.frame == by_region.frame == whole.frame
    x0, y0, x1, y1 = framed.frame
    assert framed.masks.shape[-2:] == (y1 - y0, x1 - x0)  # the frame's, not the image's
    assert np.array_equal(framed.pasted().masks, ours.masks)
    with pytest.raises(InputError, match="H×W×3"):
        by_region.set_image(np.load(tmp_path / "scene.npy", mmap_mode="r")[..., 0])
