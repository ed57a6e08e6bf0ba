"""``segany auto --tile`` on large images (issue 39): a run stopped mid-image resumes from the
tiles it saved and writes what an uninterrupted run writes; the pixel limit is raised only by
``--max-pixels`` with ``--tile``, and the untiled refusal says so.

The pixel limit is lowered to 50 000 px here so that a 300×420 image (126 000 px) stands for a
scan over the real limit (2**27 px); the bundled model, a 4×4 grid, 192-px tiles: 7 frames.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import segany.limits
from segany.cli import main
from segany.tasks import tiled_generate

FLAGS = ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]
TILES = ["--tile", "192", "--tile-overlap", "48", "--max-pixels", "200000"]


@pytest.fixture(autouse=True)
def _small_limit(monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.setattr(segany.limits, "MAX_IMAGE_PIXELS", 50_000)


@pytest.fixture
def scan(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 60, (300, 420, 3), dtype=np.uint8)
    yy, xx = np.ogrid[:300, :420]
    for cy, cx, r in [(80, 100, 30), (200, 300, 40), (150, 200, 25)]:
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = rng.integers(120, 255, 3)
    Image.fromarray(image).save(tmp_path / "scan.png")
    return tmp_path / "scan.png"


class Stop(Exception):
    pass


def test_a_stopped_auto_tile_run_resumes(scan, tmp_path, monkeypatch, capsys):
    reference = tmp_path / "reference"
    assert main(["auto", str(scan), "-o", str(reference), *FLAGS, *TILES, "-q"]) == 0
    want = json.loads((reference / "scan.json").read_text())
    assert len(want["annotations"]) > 0

    real = tiled_generate.generate_tiled
    decoded: list[int] = []

    def stopping(*args, stop_after=None, **kw):
        def hook(i, n):
            decoded.append(i)
            if len(decoded) == stop_after:
                raise Stop

        return real(*args, **kw, on_frame=hook)

    out = tmp_path / "out"
    argv = ["auto", str(scan), "-o", str(out), *FLAGS, *TILES, "-q"]
    monkeypatch.setattr(
        tiled_generate, "generate_tiled", lambda *a, **k: stopping(*a, stop_after=3, **k)
    )
    assert main(argv) != 0  # (the command reports the exception in one line)
    progress = out / ".segany" / "tiles" / "scan"
    assert sorted(p.name for p in progress.glob("0*.json")) == [f"{i:06d}.json" for i in range(3)]
    assert not (out / "scan.json").exists()

    decoded.clear()
    monkeypatch.setattr(tiled_generate, "generate_tiled", lambda *a, **k: stopping(*a, **k))
    assert main(argv) == 0
    assert decoded == [3, 4, 5, 6]  # only the frames the stopped run had not saved
    assert json.loads((out / "scan.json").read_text()) == want
    assert not progress.exists()  # removed once scan.json is written


def test_the_pixel_limit_is_raised_only_with_tile(scan, tmp_path, capsys):
    assert main(["auto", str(scan), "-o", str(tmp_path / "a"), *FLAGS, "-q"]) != 0
    err = capsys.readouterr().err
    assert "126000 pixels, more than the 50000" in err and "--tile" in err and "--max-pixels" in err
    argv = ["auto", str(scan), "-o", str(tmp_path / "b"), "--max-pixels", "200000", "-q"]
    assert main(argv) == 2
    assert "--max-pixels goes with --tile" in capsys.readouterr().err
    argv = ["auto", str(scan), "-o", str(tmp_path / "c"), *TILES, "--overlay", "-q"]
    assert main(argv) != 0
    assert "--overlay would hold full-size masks" in capsys.readouterr().err


def test_a_corrupt_tiff_fails_alone(tmp_path, capsys):
    tifffile = pytest.importorskip("tifffile")
    folder = tmp_path / "in"
    folder.mkdir()
    good = np.random.default_rng(1).integers(0, 255, (150, 180, 3), dtype=np.uint8)
    Image.fromarray(good).save(folder / "good.png")
    tifffile.imwrite(folder / "cut.tif", good)
    data = (folder / "cut.tif").read_bytes()
    (folder / "cut.tif").write_bytes(data[: len(data) // 2])  # an interrupted copy
    out = tmp_path / "out"
    assert main(["auto", str(folder), "-o", str(out), *FLAGS, *TILES, "-q"]) == 1  # partial
    err = capsys.readouterr().err
    assert "cut.tif" in err and "cut short" in err
    assert (out / "good.json").is_file() and not (out / "cut.json").exists()
    before = (out / "good.json").read_bytes()
    assert main(["auto", str(folder), "-o", str(out), *FLAGS, *TILES, "-q"]) == 1  # re-run
    assert (out / "good.json").read_bytes() == before  # the done image is kept, not redone
