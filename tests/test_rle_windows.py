"""RLE windows (segany.rle_windows): cut, paste and measure by runs, checked against the same
operations on the decoded masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segany.errors import InputError
from segany.masks import compressed_runs, decode_rle, encode_rle, mask_to_uncompressed_rle
from segany.rle_windows import (
    check_window,
    crop_rle,
    paste_rle,
    rle_box_area,
    rle_runs,
    shrink_rle,
)


def _mask(rng: np.random.Generator, h: int, w: int, kind: int) -> np.ndarray:
    if kind == 0:  # speckle: many runs, runs across column ends
        return rng.random((h, w)) < 0.5
    if kind == 1:  # blobs
        m = np.zeros((h, w), bool)
        for _ in range(3):
            y, x = rng.integers(0, h), rng.integers(0, w)
            r = rng.integers(1, max(2, min(h, w) // 2))
            yy, xx = np.ogrid[:h, :w]
            m |= (yy - y) ** 2 + (xx - x) ** 2 <= r * r
        return m
    if kind == 2:
        return np.ones((h, w), bool)  # one run over every column
    return np.zeros((h, w), bool)


def _window(rng: np.random.Generator, h: int, w: int) -> tuple[int, int, int, int]:
    x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
    return x0, y0, int(rng.integers(x0 + 1, w + 1)), int(rng.integers(y0 + 1, h + 1))


@pytest.mark.parametrize("seed", range(6))
def test_crop_and_paste_equal_the_decoded_masks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(40):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        mask = _mask(rng, h, w, int(rng.integers(0, 4)))
        x0, y0, x1, y1 = _window(rng, h, w)
        rle = encode_rle(mask)
        crop = crop_rle(rle, (x0, y0, x1, y1))
        assert crop["size"] == [y1 - y0, x1 - x0]
        np.testing.assert_array_equal(decode_rle(crop), mask[y0:y1, x0:x1])
        assert crop == encode_rle(np.ascontiguousarray(mask[y0:y1, x0:x1]))  # canonical counts
        piece = _mask(rng, y1 - y0, x1 - x0, int(rng.integers(0, 4)))
        pasted = paste_rle(rle, encode_rle(piece), (x0, y0, x1, y1))
        expect = mask.copy()
        expect[y0:y1, x0:x1] = piece
        assert pasted == encode_rle(expect)
        box, area = rle_box_area(pasted)
        assert area == int(expect.sum())
        if area:
            ys, xs = np.nonzero(expect)
            assert box == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        else:
            assert box == [0, 0, 0, 0]


@pytest.mark.parametrize("seed", range(4))
def test_shrinking_equals_the_decoded_masks_blocks(seed: int) -> None:
    """A pixel of the shrunk mask is set where any pixel of its block is."""
    rng = np.random.default_rng(100 + seed)
    for _ in range(40):
        h, w = (int(v) for v in rng.integers(1, 60, 2))
        mask = _mask(rng, h, w, int(rng.integers(0, 4)))
        if rng.random() < 0.3:  # sparse lines and dots, the overview's hard case
            mask = rng.random((h, w)) < 0.02
        f = int(rng.integers(1, max(h, w) + 1))
        oh, ow = -(-h // f), -(-w // f)
        padded = np.zeros((oh * f, ow * f), bool)
        padded[:h, :w] = mask
        expect = padded.reshape(oh, f, ow, f).any(axis=(1, 3))
        (plain,) = mask_to_uncompressed_rle(torch.from_numpy(mask)[None])
        for form in (encode_rle(mask), plain):
            got = shrink_rle(form, f)
            assert got == encode_rle(expect), (h, w, f)
    with pytest.raises(InputError, match="factor"):
        shrink_rle(encode_rle(np.ones((4, 5), bool)), 6)
    with pytest.raises(InputError, match="factor"):
        shrink_rle(encode_rle(np.ones((4, 5), bool)), 0)


def test_runs_of_both_rle_forms() -> None:
    rng = np.random.default_rng(7)
    mask = rng.random((13, 9)) < 0.4
    flat = mask.T.reshape(-1)
    for rle in (
        encode_rle(mask),
        mask_to_uncompressed_rle(torch.from_numpy(mask)[None])[0],
    ):
        start, end = rle_runs(rle)
        again = np.zeros(flat.size, bool)
        for s, e in zip(start, end, strict=True):
            again[s:e] = True
        np.testing.assert_array_equal(again, flat)
    assert sum(compressed_runs(encode_rle(mask)["counts"])) == mask.size


def test_a_large_image_mask_is_cut_without_its_bitmap() -> None:
    # 50 000 × 40 000 = 2e9 pixels: never decoded; a square of 300 px at (45 000, 30 000)
    h, w = 40_000, 50_000
    piece = np.zeros((1000, 1000), bool)
    piece[100:400, 200:500] = True
    window = (44_800, 29_900, 45_800, 30_900)
    big = paste_rle({"size": [h, w], "counts": [h * w]}, encode_rle(piece), window)
    box, area = rle_box_area(big)
    assert (box, area) == ([45_000, 30_000, 300, 300], 90_000)
    np.testing.assert_array_equal(decode_rle(crop_rle(big, window)), piece)
    shifted = crop_rle(big, (45_100, 30_000, 45_400, 30_200))
    assert decode_rle(shifted).sum() == 200 * 200
    with pytest.raises(InputError, match="32-bit"):
        crop_rle({"size": [100_000, 50_000], "counts": [5 * 10**9]}, (0, 0, 5, 5))


def test_bad_windows_and_counts_are_input_errors() -> None:
    rle = encode_rle(np.ones((4, 5), bool))
    for window in [(0, 0, 6, 4), (2, 0, 2, 4), (-1, 0, 3, 3), ("a", 0, 1, 1), (0, 0, 1)]:
        with pytest.raises(InputError):
            crop_rle(rle, window)
    with pytest.raises(InputError, match="window"):
        paste_rle(rle, encode_rle(np.ones((2, 2), bool)), (0, 0, 3, 2))
    with pytest.raises(InputError, match="add up"):
        rle_runs({"size": [4, 5], "counts": [3, 4]})
    with pytest.raises(InputError):
        rle_box_area({"size": [4, 5], "counts": "0"})
    assert check_window([1.0, 2, 3, 4], (10, 10)) == (1, 2, 3, 4)
