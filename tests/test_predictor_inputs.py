"""Bad input at the Predictor's boundary: a clear ValueError/TypeError naming what was expected."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import SMALL, seeded_model
from PIL import Image

from segany.errors import InputError
from segany.images import to_rgb_uint8
from segany.inference.predictor import Prediction, Predictor


@pytest.fixture(scope="module")
def predictor():
    p = Predictor(seeded_model(SMALL))
    p.set_image(np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8))
    return p


def test_predict_before_set_image():
    p = Predictor(seeded_model(SMALL))
    with pytest.raises(InputError, match="set_image"):
        p.predict(point_coords=[[1, 2]], point_labels=[1])
    with pytest.raises(InputError, match="set_image"):
        p.get_image_embedding()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(point_coords=[[1, 2]]), "point_labels must be given"),
        (dict(point_labels=[1]), "without point_coords"),
        (dict(point_coords=[[1, 2], [3, 4]], point_labels=[1]), "does not match"),
        (dict(point_coords=[1, 2], point_labels=[1]), "N×2 or B×N×2"),
        (dict(point_coords=[[1, 2, 3]], point_labels=[1]), "N×2 or B×N×2"),
        (dict(point_coords=[[np.nan, 2]], point_labels=[1]), "NaN or infinite"),
        (dict(point_coords=[[np.inf, 2]], point_labels=[1]), "NaN or infinite"),
        (dict(point_coords=[[1, 2]], point_labels=[4]), "1 \\(fg\\), 0 \\(bg\\)"),
        (dict(point_coords=[[1, 2]], point_labels=[0.5]), "integers"),
        (dict(point_coords=np.zeros((0, 2)), point_labels=np.zeros(0)), "no points"),
        (dict(box=[10, 10, 5, 20]), "x1 >= x0"),
        (dict(box=[10, 30, 20, 20]), "x1 >= x0 and y1 >= y0"),
        (dict(box=[1, 2, 3]), "4 or B×4"),
        (dict(box=[[0, 0, 5, 5], [0, 0, np.nan, 5]]), "NaN"),
        (dict(mask_input=np.zeros((1, 32, 32))), "1×64×64"),
        (dict(mask_input=np.zeros((64, 64))), "B×1×64×64"),
        (dict(box=np.zeros((2, 4)), mask_input=np.zeros((3, 1, 64, 64))), "batch sizes differ"),
        (dict(point_coords=[["a", "b"]], point_labels=[1]), "numeric"),
    ],
)
def test_bad_prompts(predictor, kwargs, message):
    with pytest.raises(ValueError, match=message):
        predictor.predict(**kwargs)


@pytest.mark.parametrize(
    "image, error, message",
    [
        (np.zeros((0, 10, 3), np.uint8), ValueError, "empty"),
        (np.zeros((10, 0), np.uint8), ValueError, "empty"),
        (np.zeros((10, 10, 2), np.uint8), ValueError, "H×W×3"),
        (np.zeros((10, 10, 3, 1), np.uint8), ValueError, "H×W×3"),
        (np.zeros((10, 10, 3), np.int64), TypeError, "unsupported image dtype"),
        (np.zeros((10, 10, 3), np.complex64), TypeError, "unsupported image dtype"),
        (np.full((10, 10, 3), np.nan, np.float32), ValueError, "NaN"),
        (np.full((10, 10, 3), 300.0, np.float32), ValueError, r"\[0, 1\] or \[0, 255\]"),
        ([[1, 2], [3, 4]], TypeError, "numpy array"),
        ("/no/such/image.png", ValueError, "not found"),
    ],
)
def test_bad_images(predictor, image, error, message):
    with pytest.raises(error, match=message):
        predictor.set_image(image)


def test_image_kinds_normalise_alike(tmp_path):
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    gray = rgb[:, :, 0]
    assert np.array_equal(to_rgb_uint8(gray), np.repeat(gray[:, :, None], 3, 2))
    assert np.array_equal(to_rgb_uint8(gray[:, :, None]), to_rgb_uint8(gray))
    rgba = np.concatenate([rgb, np.full((20, 30, 1), 7, np.uint8)], 2)
    assert np.array_equal(to_rgb_uint8(rgba), rgb)
    assert np.array_equal(to_rgb_uint8(rgb[:, :, ::-1], "BGR"), rgb)
    assert np.array_equal(to_rgb_uint8(rgb.astype(np.uint16) * 257), rgb)
    assert np.array_equal(to_rgb_uint8(rgb / 255.0), rgb)
    assert np.array_equal(to_rgb_uint8(rgb.astype(np.float32)), rgb)
    assert np.array_equal(to_rgb_uint8(Image.fromarray(rgb)), rgb)
    Image.fromarray(rgb).save(tmp_path / "x.png")
    assert np.array_equal(to_rgb_uint8(tmp_path / "x.png"), rgb)
    assert np.array_equal(to_rgb_uint8(str(tmp_path / "x.png")), rgb)
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "g16.png")
    assert np.array_equal(to_rgb_uint8(tmp_path / "g16.png"), to_rgb_uint8(gray))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read image"):
        to_rgb_uint8(tmp_path / "bad.png")
    with pytest.raises(ValueError, match="image_format"):
        to_rgb_uint8(rgb, "XYZ")


def test_result_unpacks_like_official_tuple(predictor):
    res = predictor.predict(point_coords=[[10, 20]], point_labels=[1])
    assert isinstance(res, Prediction)
    masks, scores, logits = res
    assert masks.shape == (3, 60, 80) and masks.dtype == bool
    assert scores.shape == (3,) and logits.shape == (3, 64, 64)
    mask, score = res.best()
    assert mask.shape == (60, 80) and score == scores.max()
    single = predictor.predict(box=[[5, 5, 40, 40]], multimask_output=False)
    assert single.masks.shape == (1, 60, 80)  # a 1×4 box stays unbatched, as officially
    forced = predictor.predict(box=[[5, 5, 40, 40]], batched=True)
    assert forced.masks.shape == (1, 3, 60, 80)
    batched = predictor.predict(point_coords=[[[10, 20]], [[30, 40]]], point_labels=[[1], [1]])
    assert batched.masks.shape == (2, 3, 60, 80)
    logits_out = predictor.predict(point_coords=[[10, 20]], point_labels=[1], return_logits=True)
    assert logits_out.masks.dtype == np.float32


def test_padding_label_lets_point_sets_of_different_length_share_a_batch(predictor):
    """A -1 label is a not-a-point token (what the model pads with itself), so a short point set
    padded with -1 inside a batch decodes exactly as the same padded set on its own."""
    alone = predictor.predict(point_coords=[[10, 20], [0, 0]], point_labels=[1, -1])
    padded = predictor.predict(
        point_coords=[[[10, 20], [0, 0]], [[30, 40], [50, 10]]],
        point_labels=[[1, -1], [1, 0]],
    )
    scale = np.abs(alone.logits).max()
    np.testing.assert_allclose(padded.logits[0], alone.logits, atol=1e-5 * scale, rtol=0)
    np.testing.assert_allclose(padded.scores[0], alone.scores, atol=1e-5, rtol=0)


def test_embedding_shape_checked(predictor):
    with pytest.raises(ValueError, match="1×256×16×16"):
        predictor.set_image_embedding(np.zeros((1, 256, 64, 64), np.float32), (10, 10))
    with pytest.raises(ValueError, match="original_size"):
        predictor.set_image_embedding(np.zeros((1, 256, 16, 16), np.float32), (0, 10))
