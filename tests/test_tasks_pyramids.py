"""Pyramidal TIFFs for tiled work (issue 39): level 0 is read by region whether the pyramid is
stored plain or compressed in tiles (a whole-slide image's or a cloud-optimised GeoTIFF's
layout), and the whole-image pass reads its overview from a lower level instead of block-averaging
every pixel of level 0."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import disc_image

from segany import Predictor, load_model
from segany.automatic import MaskGenerator
from segany.tasks import generate_tiled
from segany.tasks.region_files import (
    ArrayRegions,
    FileRegions,
    open_regions,
    overview_factor,
    read_overview,
)

tifffile = pytest.importorskip("tifffile")

H, W = 600, 820


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _image(h, w, seed=0):
    return disc_image(h, w, seed, discs=8, radius=(20, 90))


def _pyramid(path, image, factors, **options):
    """A TIFF whose level 0 is ``image`` and whose lower levels (SubIFDs, as tifffile and most
    slide writers store them) are its block means ``factors`` times smaller."""
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, subifds=len(factors), photometric="rgb", **options)
        for f in factors:
            tif.write(read_overview(image, f), subfiletype=1, photometric="rgb", **options)
    return path


@pytest.fixture(scope="module")
def image():
    return _image(H, W)


@pytest.mark.parametrize("stored", ["plain", "zlib tiles"])
def test_a_pyramids_levels_are_read_by_region(tmp_path, image, stored):
    if stored == "zlib tiles":
        pytest.importorskip("zarr")
    options = {} if stored == "plain" else {"tile": (128, 128), "compression": "zlib"}
    source = open_regions(_pyramid(tmp_path / "p.tif", image, [2, 4], **options))
    kind = FileRegions if stored == "plain" else ArrayRegions
    assert isinstance(source, kind) and source.shape == (H, W, 3)
    np.testing.assert_array_equal(source[10:90, 700:820], image[10:90, 700:820])
    assert [f for f, _ in source.levels] == [2, 4]
    for f, level in source.levels:
        assert isinstance(level, kind) and level.shape == (-(-H // f), -(-W // f), 3)
        np.testing.assert_array_equal(
            level[0 : level.shape[0], 0 : level.shape[1]], read_overview(image, f)
        )


def test_the_overview_comes_from_the_largest_level_that_fits(tmp_path, image, monkeypatch):
    source = open_regions(_pyramid(tmp_path / "p.tif", image, [2, 4]))

    def unread(*_):
        raise AssertionError("level 0 was read")

    monkeypatch.setattr(source, "region", unread)
    np.testing.assert_array_equal(read_overview(source, 4), read_overview(image, 4))
    np.testing.assert_array_equal(read_overview(source, 2), read_overview(image, 2))
    # 8: the level shrunk 4 times, block-averaged 2 times more
    np.testing.assert_array_equal(
        read_overview(source, 8), read_overview(read_overview(image, 4), 2)
    )
    # 3: no level divides it, so level 0 is read
    with pytest.raises(AssertionError, match="level 0 was read"):
        read_overview(source, 3)


def test_the_overview_factor_moves_to_a_level_within_twice_the_smallest(tmp_path, image):
    plain = open_regions(_pyramid(tmp_path / "flat.tif", image, []))
    pyramid = open_regions(_pyramid(tmp_path / "p.tif", image, [2, 4]))
    assert plain.levels == []
    assert overview_factor(plain, 300, 128) == 3  # ceil(820 / 300)
    assert overview_factor(pyramid, 300, 128) == 4  # level 4: less than 2x the smallest factor
    assert (
        overview_factor(pyramid, 500, 128) == 2
    )  # smallest 2: level 2 (4 would halve the overview)
    assert overview_factor(pyramid, 500, 300) == 2
    assert overview_factor(pyramid, 300, 250) == 3  # level 4 leaves 205 px < 250
    assert overview_factor(image, 300, 128) == 3  # an array has no levels


def test_a_pyramid_gives_the_records_of_its_level_0(tmp_path):
    """The whole-image pass's overview read from level 4 equals the block means of level 0,
    so tiled segment-everything over the pyramid equals it over a plain TIFF of level 0."""
    generator = MaskGenerator(
        Predictor(load_model(), cache=False),
        points_per_side=4,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        output_mode="coco_rle",
    )
    big = _image(1000, 1600, seed=3)
    plain = _pyramid(tmp_path / "flat.tif", big, [])
    pyramid = _pyramid(tmp_path / "p.tif", big, [4])
    # one tile (the image): the whole-image pass alone, through a 400×250 overview
    opts = {"tile": 1600, "overview_side": 400}
    source = open_regions(pyramid)
    assert overview_factor(source, 400, 384) == 4
    want = generate_tiled(generator, open_regions(plain), **opts)
    rows = []
    read = source.region

    def counted(y0, y1, x0, x1):
        rows.append(y1 - y0)
        return read(y0, y1, x0, x1)

    source.region = counted
    got = generate_tiled(generator, source, progress=tmp_path / "progress", **opts)
    assert sum(rows) <= 5  # level 0: only the rows the progress folder samples
    assert len(got) == len(want) > 0
    assert [r.to_dict() for r in got] == [r.to_dict() for r in want]


def test_a_multi_page_tiff_is_read_from_its_first_page(tmp_path, image):
    other = _image(H, W, seed=9)
    tifffile.imwrite(tmp_path / "pages.tif", np.stack([image, other]), photometric="rgb")
    source = open_regions(tmp_path / "pages.tif")
    assert source.shape == (H, W, 3) and source.levels == []
    np.testing.assert_array_equal(source[0:H, 0:W], image)


def test_levels_rounded_down_serve_and_odd_levels_are_left(tmp_path):
    big = _image(601, 803, seed=4)  # sides that 2 and 4 do not divide
    with tifffile.TiffWriter(tmp_path / "down.tif") as tif:
        tif.write(big, subifds=3, photometric="rgb")
        tif.write(read_overview(big, 2)[:300, :401], subfiletype=1, photometric="rgb")  # floor
        tif.write(read_overview(big, 4)[:, :, 0], subfiletype=1)  # grey: another layout
        tif.write(np.zeros((200, 267, 3), np.uint16), subfiletype=1, photometric="rgb")  # 16 bit
    source = open_regions(tmp_path / "down.tif")
    assert [f for f, _ in source.levels] == [2]
    got = read_overview(source, 2)
    want = read_overview(big, 2)
    assert got.shape == want.shape == (301, 402, 3)
    np.testing.assert_array_equal(got[:300, :401], want[:300, :401])
    np.testing.assert_array_equal(got[300], got[299])  # the missing last row: its edge repeated
    np.testing.assert_array_equal(got[:, 401], got[:, 400])


def test_a_damaged_level_falls_back_to_level_0(tmp_path, image, monkeypatch):
    from segany.errors import InputError

    source = open_regions(_pyramid(tmp_path / "p.tif", image, [2]))
    ((_, level),) = source.levels

    def damaged(*_):
        raise InputError("cannot read region of p.tif (pyramid level 1)")

    monkeypatch.setattr(level, "region", damaged)
    np.testing.assert_array_equal(read_overview(source, 2), read_overview(image, 2))


def test_a_large_prompt_on_a_pyramid_reads_a_lower_level(tmp_path, monkeypatch):
    """A box over most of a pyramidal TIFF 9 model sizes across is answered on its frame read
    from the level shrunk twice (level 0 is never read), with the mask of a level-0 read."""
    from segany.tasks import TiledPredictor

    model = load_model()  # the bundled model: it segments discs
    size = int(model.image_size)
    h, w = 9 * size - 100, 9 * size
    big = np.random.default_rng(3).integers(0, 60, (h, w, 3), dtype=np.uint8)
    yy, xx = np.ogrid[:h, :w]
    cy, cx, r = h // 2 + 37, w // 2 - 51, int(0.45 * h)
    big[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = (200, 180, 40)
    path = _pyramid(tmp_path / "p.tif", big, [2])
    box = np.array([cx - r - 30, cy - r - 30, cx + r + 30, cy + r + 30], float)

    def answer(source):
        tp = TiledPredictor(Predictor(model, cache=False))
        tp.set_image(source)
        (got,) = tp.predict_framed(box=box, multimask_output=False)
        assert tp.shrink_factor(got.frame) == 2
        return got

    pyramid = open_regions(path)

    def unread(*_):
        raise AssertionError("level 0 was read")

    monkeypatch.setattr(pyramid, "region", unread)
    from_level = answer(pyramid)
    monkeypatch.undo()
    flat = open_regions(path)
    flat.levels = []  # level 0 only
    from_zero = answer(flat)
    assert from_level.frame == from_zero.frame
    # (a frame read shrunk answers with masks made when read: np.asarray makes them whole)
    a, b = np.asarray(from_level.masks)[0], np.asarray(from_zero.masks)[0]
    assert a.shape == (h, w) and (a & b).sum() / (a | b).sum() >= 0.99
