"""Segment everything on images of any size, resumable (issue 39): ``segany.tasks.tiled_generate``.

What is checked, on a 300×420 image of disks with the bundled model (384-px input) on 192-px tiles
(6 tiles and the whole image: 7 frames) and a 4×4 grid (a seeded tiny model's masks all touch
their tile's edges, so every one would be dropped):
- masks are pasted and blown up as RLE (``place_rle``) exactly as encoding the full-size mask,
  and holes/islands are cleaned in a mask's own frame exactly as in the full image;
- ``generate_tiled`` equals the generator's own crop decoding over the same frames, and on an
  image larger than ``overview_side`` decodes a shrunk overview whose masks are blown back up;
  no image-sized array is made on the way (``coco_rle`` output, holes and islands cleaned);
- a run stopped after N frames (an exception from the hook, or a real SIGKILL of a child
  process) resumes: only the missing frames are decoded and the records equal an uninterrupted
  run's; progress made with other settings is started afresh;
- the pixel limit is explicit (``pixel_limit``, ``--max-pixels``, PIL's limit with it), and a
  corrupt or cut-short TIFF is a clear error.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from segany import Predictor, load_model
from segany import masks as M
from segany.automatic import MaskGenerator
from segany.automatic import select as S
from segany.automatic.select import _clean_in_frame, _paste
from segany.errors import InputError
from segany.limits import MAX_IMAGE_PIXELS, check_image_size, current_pixel_limit, pixel_limit
from segany.tasks import generate_tiled, tile_frames
from segany.tasks import region_files as R
from segany.tasks.region_files import FileRegions, open_regions, read_overview, region_shape

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


H, W, TILE, OVERLAP = 300, 420, 192, 48
OPTIONS = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}


@pytest.fixture(scope="module")
def generator():
    model = load_model()
    return MaskGenerator(Predictor(model, cache=False), **OPTIONS, output_mode="coco_rle")


@pytest.fixture(scope="module")
def image():
    return _image(H, W)


@pytest.fixture(scope="module")
def uninterrupted(generator, image):
    return generate_tiled(generator, image, tile=TILE, overlap=OVERLAP)


FRAMES = len(tile_frames((H, W), TILE, OVERLAP)) + 1


def _image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    yy, xx = np.ogrid[:h, :w]
    for _ in range(6):  # a few bright disks, so that masks differ from frame to frame
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(10, 40)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = rng.integers(120, 255, 3)
    return image


def _dicts(records):
    return [r.to_dict() for r in records]


# ----- RLE in frames -----------------------------------------------------------------------------
@pytest.mark.parametrize("block_bytes", [16 << 20, 1, 50])  # whole; a column; a few columns
def test_placed_rle_equals_the_encoded_full_mask(block_bytes, monkeypatch):
    """Whatever the blocks of columns the runs are found in (``_RUN_BLOCK_BYTES``)."""
    monkeypatch.setattr(M, "_RUN_BLOCK_BYTES", block_bytes)
    rng = np.random.default_rng(0)
    for _ in range(400):
        hh, ww = (int(v) for v in rng.integers(1, 40, 2))
        s = int(rng.integers(1, 4))
        h, w = int(rng.integers(1, hh + 1)), int(rng.integers(1, ww + 1))
        x0, y0 = int(rng.integers(0, ww)), int(rng.integers(0, hh))
        mask = rng.random((h, w)) < rng.random()
        big = np.repeat(np.repeat(mask, s, 0), s, 1)[: hh - y0, : ww - x0]
        full = np.zeros((hh, ww), bool)
        full[y0 : y0 + big.shape[0], x0 : x0 + big.shape[1]] = big
        assert M.place_rle(mask, (hh, ww), (x0, y0), s) == M.encode_rle(full)


def test_placing_a_mask_outside_the_image_is_refused():
    with pytest.raises(InputError, match="cannot place"):
        M.place_rle(np.ones((2, 2), bool), (10, 10), (10, 0))
    with pytest.raises(InputError, match="h×w"):
        M.place_rle(np.ones(4, bool), (10, 10))


def test_cleaning_in_a_frame_equals_cleaning_the_full_mask():
    rng = np.random.default_rng(1)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(20, 70, 2))
        x0, y0 = int(rng.integers(0, w - 5)), int(rng.integers(0, h - 5))
        x1, y1 = int(rng.integers(x0 + 5, w + 1)), int(rng.integers(y0 + 5, h + 1))
        mask = rng.random((y1 - y0, x1 - x0)) < 0.6
        area = int(rng.integers(1, 60))
        frame = [x0, y0, x1, y1]
        got, got_frame, changed = _clean_in_frame(mask, frame, (h, w), area)
        full = _paste(mask, frame, (h, w))
        want, holes = M.remove_small_regions(full, area, "holes")
        want, islands = M.remove_small_regions(want, area, "islands")
        assert changed == (holes or islands)
        np.testing.assert_array_equal(_paste(got, got_frame, (h, w)), want)


# ----- generate_tiled ----------------------------------------------------------------------------
def test_tiled_equals_the_generators_crop_decoding(generator, image, uninterrupted):
    frames = [[0, 0, W, H], *(list(f) for f in tile_frames((H, W), TILE, OVERLAP))]
    assert len(frames) == FRAMES == 7
    want = generator.refilter(generator.candidates_in_crops(image, frames))
    assert len(uninterrupted) > 3 and _dicts(uninterrupted) == _dicts(want)
    assert {tuple(r["crop_box"]) for r in uninterrupted} != {(0, 0, W, H)}  # tiles' masks too


def test_a_large_image_is_seen_whole_through_a_shrunk_overview(generator, image):
    # one tile (the image), larger than overview_side: the overview alone, 2 times smaller
    only_whole = generate_tiled(generator, image, tile=W, overlap=32, overview_side=384)
    small = read_overview(image, 2)
    assert small.shape == (150, 210, 3)
    np.testing.assert_allclose(small[10, 20], image[20:22, 40:42].reshape(-1, 3).mean(0), atol=0.51)
    crop = generator.candidates_of_crop(small, [0, 0, 210, 150], (150, 210))
    blown = [M.place_rle(M.decode_rle(r), (H, W), (0, 0), 2) for r in crop.rles]
    assert len(only_whole) > 0
    for record in only_whole:  # each mask: one of the overview's, blown up 2 times
        assert record["segmentation"] in blown
        mask = M.decode_rle(record["segmentation"])
        ys, xs = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
        assert record["bbox"] == [xs[0], ys[0], xs[-1] - xs[0], ys[-1] - ys[0]]


def test_no_image_sized_array_is_made(generator, image, tmp_path, monkeypatch):
    np.save(tmp_path / "image.npy", image)
    monkeypatch.setattr(R, "STRIP_BYTES", 2**12)  # the overview read a few rows at a time
    source = open_regions(tmp_path / "image.npy")
    assert isinstance(source, FileRegions)
    made = []
    decode = M.decode_rle

    def watched(rle, **kw):
        made.append(tuple(rle["size"]))
        return decode(rle, **kw)

    monkeypatch.setattr(M, "decode_rle", watched)
    monkeypatch.setattr(S, "_paste", lambda *a: pytest.fail("an image-sized mask was made"))
    records = generate_tiled(
        generator, source, tile=TILE, overlap=OVERLAP, overview_side=384
    )  # the whole image through its overview, which is blown up as RLE
    assert len(records) > 3 and made and (H, W) not in made
    assert all(r["segmentation"]["size"] == [H, W] for r in records)
    # Holes and islands are cleaned in each tile's frame (a whole-image mask, which is already
    # the image's size, is cleaned at that size: docs/tasks.md says so).
    made.clear()
    cleaning = generator.__class__(
        generator.predictor, **OPTIONS, min_mask_region_area=30, output_mode="coco_rle"
    )
    records = generate_tiled(cleaning, source, tile=TILE, overlap=OVERLAP, whole_image=False)
    assert len(records) > 3 and made and (H, W) not in made


# ----- resuming ----------------------------------------------------------------------------------
class Stop(Exception):
    pass


def _stop_after(n, decoded):
    def hook(i, total):
        decoded.append(i)
        if len(decoded) == n:
            raise Stop

    return hook


def test_a_stopped_run_resumes_and_ends_as_an_uninterrupted_one(
    generator, image, uninterrupted, tmp_path
):
    first: list[int] = []
    with pytest.raises(Stop):
        generate_tiled(
            generator,
            image,
            tile=TILE,
            overlap=OVERLAP,
            progress=tmp_path,
            on_frame=_stop_after(3, first),
        )
    assert sorted(p.name for p in tmp_path.glob("0*.json")) == [f"{i:06d}.json" for i in range(3)]
    rest: list[int] = []
    got = generate_tiled(
        generator,
        image,
        tile=TILE,
        overlap=OVERLAP,
        progress=tmp_path,
        on_frame=_stop_after(0, rest),
    )
    assert rest == list(range(3, FRAMES))  # only the missing frames were decoded
    assert _dicts(got) == _dicts(uninterrupted)


def test_progress_of_other_settings_is_started_afresh(generator, image, uninterrupted, tmp_path):
    other = image[::-1].copy()  # other pixels: nothing of a run on them may be reused
    with pytest.raises(Stop):
        generate_tiled(
            generator,
            other,
            tile=TILE,
            overlap=OVERLAP,
            progress=tmp_path,
            on_frame=_stop_after(2, []),
        )
    decoded: list[int] = []
    got = generate_tiled(
        generator,
        image,
        tile=TILE,
        overlap=OVERLAP,
        progress=tmp_path,
        on_frame=_stop_after(0, decoded),
    )
    assert decoded == list(range(FRAMES))
    assert _dicts(got) == _dicts(uninterrupted)


CHILD = """
import os, signal, sys
import numpy as np, torch
sys.path[:0] = [{tests!r}]
from segany import Predictor, load_model
from segany.automatic import MaskGenerator
from segany.tasks import generate_tiled
torch.set_num_threads(1)
generator = MaskGenerator(Predictor(load_model(), cache=False), **{options!r},
    output_mode="coco_rle")
image = np.load({image!r})

def hook(i, n):
    if i == {kill_after}:
        os.kill(os.getpid(), signal.SIGKILL)

generate_tiled(generator, image, tile={tile}, overlap={overlap}, progress={progress!r},
    on_frame=hook)
"""


def test_a_sigkilled_run_resumes(generator, image, uninterrupted, tmp_path):
    np.save(tmp_path / "image.npy", image)
    progress = tmp_path / "progress"
    code = CHILD.format(
        tests=str(ROOT / "tests"),
        image=str(tmp_path / "image.npy"),
        progress=str(progress),
        options=OPTIONS,
        tile=TILE,
        overlap=OVERLAP,
        kill_after=4,
    )
    child = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, timeout=300)
    assert child.returncode == -signal.SIGKILL
    done = sorted(p.name for p in progress.glob("0*.json"))
    assert done == [f"{i:06d}.json" for i in range(5)]  # frame 4 was saved, then the kill
    rest: list[int] = []
    got = generate_tiled(
        generator,
        image,
        tile=TILE,
        overlap=OVERLAP,
        progress=progress,
        on_frame=_stop_after(0, rest),
    )
    assert rest == list(range(5, FRAMES))
    assert _dicts(got) == _dicts(uninterrupted)


# ----- the pixel limit and files ---------------------------------------------------------------
def test_the_pixel_limit_is_explicit():
    from PIL import Image

    with pytest.raises(InputError, match="--tile.*--max-pixels"):
        check_image_size(20_000, 20_000)
    before = Image.MAX_IMAGE_PIXELS
    with pixel_limit(400_000_000):
        assert check_image_size(20_000, 20_000) == (20_000, 20_000)
        assert current_pixel_limit() == 400_000_000
        assert Image.MAX_IMAGE_PIXELS == 400_000_000
        with pytest.raises(InputError, match="400000000"):
            check_image_size(20_001, 20_000)
    assert current_pixel_limit() == MAX_IMAGE_PIXELS and Image.MAX_IMAGE_PIXELS == before
    for bad in (0, -5, 2.5, True, 2**32):
        with pytest.raises(InputError, match="pixel limit"):
            with pixel_limit(bad):  # type: ignore[arg-type]
                pass


def test_tiff_and_npy_files_are_read_by_region(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    rgb = _image(90, 130, seed=6)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb)
    tifffile.imwrite(tmp_path / "big.tif", rgb, bigtiff=True)
    grey16 = (np.arange(90 * 130, dtype=np.uint16) * 5).reshape(90, 130)
    tifffile.imwrite(tmp_path / "grey.tif", grey16, byteorder=">")
    np.save(tmp_path / "rgba.npy", np.dstack([rgb, np.full((90, 130), 7, np.uint8)]))
    for name, want in [
        ("rgb.tif", rgb),
        ("big.tif", rgb),
        ("rgba.npy", rgb),
        ("grey.tif", np.repeat(np.round(grey16 * (255 / 65535)).astype(np.uint8)[..., None], 3, 2)),
    ]:
        source = open_regions(tmp_path / name)
        assert isinstance(source, FileRegions) and source.shape == (90, 130, 3)
        np.testing.assert_array_equal(source[10:50, 20:125], want[10:50, 20:125])
        np.testing.assert_array_equal(source[0:90, 0:130], want)
    tifffile.imwrite(tmp_path / "zip.tif", rgb, compression="zlib", tile=(32, 32))
    zipped = open_regions(tmp_path / "zip.tif")  # by region with zarr, else read whole
    assert isinstance(zipped, np.ndarray) or type(zipped).__name__ == "ArrayRegions"
    np.testing.assert_array_equal(zipped[5:9, 7:11], rgb[5:9, 7:11])


def test_a_corrupt_tiff_is_a_clear_error(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "whole.tif", _image(200, 300))
    data = (tmp_path / "whole.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.tif").write_bytes(data[:4] + bytes(range(256)) * 4)
    (tmp_path / "zip.tif").write_bytes(b"")
    tifffile.imwrite(tmp_path / "zip.tif", _image(64, 64), compression="zlib", tile=(32, 32))
    zipped = bytearray((tmp_path / "zip.tif").read_bytes())
    zipped[400:600] = bytes(200)  # a damaged compressed tile
    (tmp_path / "zip.tif").write_bytes(bytes(zipped))
    with pytest.raises(InputError, match="cut short"):
        open_regions(tmp_path / "cut.tif")
    with pytest.raises(InputError, match="cannot read TIFF .*garbage.tif"):
        open_regions(tmp_path / "garbage.tif")
    with pytest.raises(InputError, match="zip.tif"):
        open_regions(tmp_path / "zip.tif")[0:64, 0:64]  # (zarr reads the tile only here)
    with pytest.raises(InputError, match="not found"):
        open_regions(tmp_path / "missing.tif")


def test_without_zarr_a_compressed_tiff_is_read_whole_or_refused(tmp_path, monkeypatch):
    tifffile = pytest.importorskip("tifffile")
    import segany.limits

    rgb = _image(60, 80, seed=7)
    tifffile.imwrite(tmp_path / "zip.tif", rgb, compression="zlib", tile=(32, 32))
    monkeypatch.setitem(sys.modules, "zarr", None)  # import zarr fails
    np.testing.assert_array_equal(open_regions(tmp_path / "zip.tif"), rgb)
    # Its size comes from the header alone: no pixel decoded (segment --tile asks it first).
    with monkeypatch.context() as m:
        m.setattr(tifffile, "imread", lambda *a, **k: pytest.fail("decoded"))
        m.setattr(tifffile.TiffPage, "asarray", lambda *a, **k: pytest.fail("decoded"))
        assert region_shape(tmp_path / "zip.tif") == (60, 80)
    monkeypatch.setattr(segany.limits, "MAX_IMAGE_PIXELS", 1000)  # a "large" image now
    with pixel_limit(10**6), pytest.raises(InputError, match=r"needs zarr .*segany\[tiff\]"):
        open_regions(tmp_path / "zip.tif")
