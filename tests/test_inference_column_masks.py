"""Masks made a block of columns at a time (``ColumnMasks``, ``Predictor.predict_lazy``): the
same values as the whole upscaling, read by any columns, their box, area and RLE; and a large
frame on a tiled image answered without its frame-sized mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import SMALL, seeded_model
from test_modeling_hq import SMALL_HQ

import segany.inference.column_masks as CM
import segany.masks as M
from segany import Predictor
from segany.errors import InputError
from segany.formats.prompted import mask_entry
from segany.inference.column_masks import ColumnMasks
from segany.masks import place_rle
from segany.modeling.sam_upscale import upscale_logits


def _case(seed: int, c: int = 3):
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(c, 64, 64, generator=g) * 4  # many pixels near the threshold
    h, w = (int(v) for v in torch.randint(150, 900, (2,), generator=g))
    padded = 256
    long = max(h, w)
    inp = (round(h * padded / long), round(w * padded / long))
    return low, inp, (h, w), padded


@pytest.mark.parametrize("seed", range(6))
def test_equal_to_the_whole_upscaling_read_by_any_columns(seed, monkeypatch):
    low, inp, (h, w), padded = _case(seed)
    want = upscale_logits(low, inp, (h, w), padded, threshold=0.0).numpy()
    lazy = ColumnMasks(low, inp, (h, w), padded, 0.0)
    assert lazy.shape == (3, h, w) and lazy.dtype == np.bool_ and len(lazy) == 3
    np.testing.assert_array_equal(np.asarray(lazy), want)
    np.testing.assert_array_equal(lazy[:, 5:40, 17:230], want[:, 5:40, 17:230])
    rng = np.random.default_rng(seed)
    monkeypatch.setattr(CM, "_COLUMN_BYTES", int(rng.integers(1, 40)) * h)  # stats in blocks
    for c in range(3):
        one = lazy[c]
        assert one.shape == (h, w)
        step = int(rng.integers(1, 300))
        got = np.concatenate([one[:, a : a + step] for a in range(0, w, step)], axis=1)
        np.testing.assert_array_equal(got, want[c])
        box, area = one.stats()
        ys, xs = np.nonzero(want[c].any(1))[0], np.nonzero(want[c].any(0))[0]
        assert area == int(want[c].sum()) > 0
        assert box == (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
    with pytest.raises(IndexError):
        lazy[3]


@pytest.mark.parametrize("seed", range(4))
def test_its_rle_and_record_equal_the_whole_masks(seed, monkeypatch):
    """``place_rle`` takes its runs, found in one pass over blocks of columns (of any width),
    and ``mask_entry`` its box and area: the same RLE and record as from the whole mask."""
    low, inp, (h, w), padded = _case(seed, c=2)
    whole = np.asarray(ColumnMasks(low, inp, (h, w), padded, 0.0))
    image_hw, offset = (h + 90, w + 130), (seed * 17, 60 - seed)
    for block in (1 << 24, 3 * h, h):  # whole, three and one column(s) a block
        monkeypatch.setattr(CM, "_COLUMN_BYTES", block)
        monkeypatch.setattr(M, "_RUN_BLOCK_BYTES", block)
        lazy = ColumnMasks(low, inp, (h, w), padded, 0.0)
        for c in range(2):
            assert place_rle(lazy[c], image_hw, offset) == place_rle(whole[c], image_hw, offset)
            assert lazy[c] is lazy[c]  # one summary per mask
    frame = (offset[0], offset[1], offset[0] + w, offset[1] + h)
    lazy = ColumnMasks(low, inp, (h, w), padded, 0.0)
    for c in range(2):
        got = mask_entry(0, 0, c, 0.5, lazy[c], None, frame=frame, image_hw=image_hw)
        want = mask_entry(0, 0, c, 0.5, whole[c], None, frame=frame, image_hw=image_hw)
        assert got == want
    empty = ColumnMasks(torch.full((1, 64, 64), -5.0), inp, (h, w), padded, 0.0)[0]
    assert empty.stats() == (None, 0)
    got = mask_entry(0, 0, 0, 0.1, empty, None, frame=frame, image_hw=image_hw)
    assert got["bbox"] == [0, 0, 0, 0] and got["area"] == 0


@pytest.mark.parametrize("family", ["sam", "sam_hq"])
def test_predict_lazy_equals_predict(family):
    model = seeded_model(SMALL if family == "sam" else SMALL_HQ, seed=1)
    predictor = Predictor(model, cache=False)
    image = np.random.default_rng(0).integers(0, 255, (150, 210, 3), dtype=np.uint8)
    predictor.set_image(image)
    for prompt in (
        {"point_coords": [[50.0, 60.0]], "point_labels": [1]},
        {"box": [20.0, 30.0, 160.0, 120.0], "multimask_output": False},
        {
            "point_coords": [[50.0, 60.0], [90, 100]],
            "point_labels": [1, 0],
            "box": [5, 5, 200, 140],
        },
    ):
        want = predictor.predict(**prompt)
        got = predictor.predict_lazy(**prompt)
        assert isinstance(got.masks, ColumnMasks) and got.masks.shape == want.masks.shape
        np.testing.assert_array_equal(np.asarray(got.masks), want.masks)
        np.testing.assert_array_equal(got.scores, want.scores)
        np.testing.assert_array_equal(got.logits, want.logits)
    with pytest.raises(InputError, match="one prompt set"):
        predictor.predict_lazy(box=[[1.0, 1.0, 9.0, 9.0], [2.0, 2.0, 8.0, 8.0]])
