"""Semi-automatic selection (``segany.automatic.semi``): prompt and keep only what the existing
annotations leave free."""

from __future__ import annotations

import numpy as np
import pytest

from segany.automatic import MaskGenerator, MaskRecord
from segany.automatic.semi import SemiOptions, _is_new, annotated_pixels, generate_semi
from segany.errors import InputError
from segany.masks import encode_rle


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, list[np.ndarray]]:
    from segany.train.synth import SynthConfig, iter_scenes

    image, masks = next(iter(iter_scenes(5, 1, SynthConfig(long_side=96, min_short_side=72))))
    return image, list(masks)


@pytest.fixture(scope="module")
def generator() -> MaskGenerator:
    from segany import load_model

    # Options that are not the defaults, so that a copy which lost one would differ.
    options = {"pred_iou_thresh": 0.5, "stability_score_thresh": 0.7, "box_nms_thresh": 0.6}
    return MaskGenerator.for_model(
        load_model(), points_per_side=6, output_mode="coco_rle", **options
    )


def _record(mask: np.ndarray, point: tuple[int, int]) -> MaskRecord:
    return MaskRecord(encode_rle(mask), int(mask.sum()), [0, 0, 1, 1], 0.9, [list(point)], 0.9, [])


def _square(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((10, 10), bool)
    mask[y0:y1, x0:x1] = True
    return mask


ANNOTATED = _square(0, 10, 0, 5)  # the left half


@pytest.mark.parametrize(
    ("mask", "point", "max_overlap", "new"),
    [
        (_square(0, 4, 6, 10), (8, 1), 0.5, True),  # all free
        (_square(0, 4, 6, 10), (2, 1), 0.5, False),  # prompted from annotated pixels
        (np.zeros((10, 10), bool), (8, 1), 0.5, False),  # empty
        (_square(0, 4, 3, 7), (6, 1), 0.5, True),  # half on annotated pixels: at the limit
        (_square(0, 4, 3, 7), (6, 1), 0.4, False),  # over a lower limit
        (_square(0, 4, 2, 7), (6, 1), 0.5, False),  # 3 of 5 columns annotated
        (_square(0, 4, 6, 10), (80, -5), 0.5, True),  # a point off the image is clamped
    ],
)
def test_which_new_masks_are_kept(mask, point, max_overlap, new):
    assert _is_new(_record(mask, point), ANNOTATED, max_overlap) is new


def test_nothing_annotated_is_the_generator_alone(generator, scene):
    image, _ = scene
    result = generate_semi(generator, np.zeros(image.shape[:2], bool), image=image)
    want = [r for r in generator.generate(image) if r.area > 0]
    assert want and result.prompted == 36 and result.dropped == 0
    assert [r.to_dict() for r in result.records] == [r.to_dict() for r in want]
    assert generator.points_per_side == 6 and len(generator.point_grids[0]) == 36  # untouched


def test_annotated_pixels_are_neither_prompted_nor_proposed_again(generator, scene):
    image, masks = scene
    h, w = image.shape[:2]
    annotated = annotated_pixels(masks[::2], (h, w))
    grid = generator.point_grids[0]
    xy = np.minimum((grid * [w, h]).astype(int), [w - 1, h - 1])
    free = int((~annotated[xy[:, 1], xy[:, 0]]).sum())
    assert 0 < free < len(grid)
    result = generate_semi(generator, annotated, image=image, options=SemiOptions(0.2))
    assert result.prompted == free and result.records
    for record in result.records:
        x, y = (int(v) for v in record.point_coords[0])
        mask = record.mask()
        assert not annotated[y, x] and (mask & annotated).sum() <= 0.2 * mask.sum()
    # Everything annotated and no crop layers: the model is not run at all.
    everything = np.ones((h, w), bool)
    assert generate_semi(generator, everything, image=object()).records == ()


def test_wrong_sizes_and_options_are_input_errors(generator, scene):
    image, masks = scene
    h, w = image.shape[:2]
    with pytest.raises(
        InputError, match=rf"a.jpg: existing annotation 1 is 5×5 but the image is {h}×{w}"
    ):
        annotated_pixels([masks[0], np.zeros((5, 5), bool)], (h, w), source="a.jpg")
    with pytest.raises(InputError, match="annotated is"):
        generate_semi(generator, np.zeros((h + 1, w), bool), image=image)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(InputError, match="max_overlap"):
            SemiOptions(bad)
