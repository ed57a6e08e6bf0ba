"""``write_region_tiff``: an image in a format not read by region (PNG, JPEG, ...) written once
as a tiled TIFF that ``open_regions`` reads by region, with the pixels ``read_image`` gives;
never half-written where the finished file goes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segany.errors import InputError
from segany.images import read_image
from segany.limits import pixel_limit
from segany.tasks.region_files import ArrayRegions, open_regions, write_region_tiff

tifffile = pytest.importorskip("tifffile")
pytest.importorskip("zarr")


@pytest.mark.parametrize(
    ("mode", "suffix", "orientation"),
    [("RGB", "png", 1), ("L", "png", 1), ("RGBA", "png", 1), ("RGB", "jpg", 8), ("I;16", "png", 1)],
)
def test_the_tiff_holds_read_images_pixels(tmp_path, mode, suffix, orientation) -> None:
    rng = np.random.default_rng(7)
    h, w = 700, 1100  # not multiples of the 512-px tiles
    if mode == "I;16":
        im = Image.fromarray(rng.integers(0, 65535, (h, w), dtype=np.uint16))
    else:
        im = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).convert(mode)
    src = tmp_path / f"image.{suffix}"
    exif = Image.Exif()
    exif[0x0112] = orientation
    im.save(src, exif=exif) if suffix == "jpg" else im.save(src)
    expect = read_image(src)
    assert write_region_tiff(src, tmp_path / "image.tif") == expect.shape[:2]
    source = open_regions(tmp_path / "image.tif")
    assert isinstance(source, ArrayRegions)  # read by region, not decoded whole
    np.testing.assert_array_equal(
        np.asarray(source[0 : expect.shape[0], 0 : expect.shape[1]]), expect
    )
    np.testing.assert_array_equal(
        np.asarray(source[100:650, 500:1100][:, :50]), expect[100:650, 500:550]
    )
    with tifffile.TiffFile(tmp_path / "image.tif") as tif:
        page = tif.pages.first
        assert page.is_tiled and (page.tilewidth, page.tilelength) == (512, 512)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_bad_input_leaves_no_file(tmp_path, monkeypatch) -> None:
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(InputError, match="broken.png"):
        write_region_tiff(tmp_path / "broken.png", tmp_path / "out.tif")
    with pytest.raises(InputError, match="not found"):
        write_region_tiff(tmp_path / "missing.png", tmp_path / "out.tif")
    big = tmp_path / "big.png"
    Image.new("RGB", (3000, 2000)).save(big)
    with pixel_limit(1_000_000), pytest.raises(InputError, match="limit|range"):
        write_region_tiff(big, tmp_path / "out.tif")  # over the limit in force: not decoded

    def cut(path, *args, **kwargs):  # the disk fills halfway through
        Path(path).write_bytes(b"II*\x00 the first tiles")
        raise OSError("No space left on device")

    monkeypatch.setattr(tifffile, "imwrite", cut)
    with pytest.raises(OSError, match="No space"):
        write_region_tiff(big, tmp_path / "out.tif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.png", "broken.png"]
