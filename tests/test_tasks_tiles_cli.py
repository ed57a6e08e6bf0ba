"""``segany segment --tile`` and ``segany auto --tile`` (issue 39): the command writes what the
library's TiledPredictor and generate_tiled give, and refuses options that do not go together."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from eval_fixtures import tiny_model
from PIL import Image

from segany.automatic import MaskGenerator
from segany.checkpoints import load_model, save_model
from segany.cli import main
from segany.inference.predictor import Predictor
from segany.tasks import TiledPredictor, generate_tiled

AUTO = ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("tilecli")
    image = np.random.default_rng(4).integers(0, 255, (200, 300, 3), dtype=np.uint8)
    image[60:90, 200:240] = (250, 30, 30)
    Image.fromarray(image).save(root / "big.png")
    return {
        "root": root,
        "image": image,
        "model": save_model(tiny_model(), root / "tiny.safetensors"),
    }


def _run(files, *argv):
    return main([*map(str, argv), "--model", str(files["model"]), "--threads", "1", "-q"])


def test_segment_tile_writes_the_tiled_predictors_masks(files):
    out = files["root"] / "seg"
    box = [200, 60, 240, 90]
    assert (
        _run(
            files,
            "segment",
            files["root"] / "big.png",
            "--box",
            "200,60,240,90",
            "--tile",
            "128",
            "--tile-overlap",
            "32",
            "-o",
            out,
        )
        == 0
    )
    doc = json.loads((out / "big.json").read_text())
    got = np.array(Image.open(out / doc["masks"][0]["file"])) > 0
    tiled = TiledPredictor(Predictor(load_model(files["model"]), cache=False), tile=128, overlap=32)
    tiled.set_image(files["image"])
    want = tiled.predict(box=np.array(box, float), multimask_output=False).masks[0]
    np.testing.assert_array_equal(got, want)
    assert got.shape == (200, 300)


def test_auto_tile_writes_generate_tileds_records(files):
    out = files["root"] / "auto"
    argv = ["auto", files["root"] / "big.png", "-o", out, *AUTO, "--tile", "128"]
    assert _run(files, *argv) == 0
    doc = json.loads((out / "big.json").read_text())
    generator = MaskGenerator.for_model(
        Predictor(load_model(files["model"]), cache=False),
        points_per_side=4,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        output_mode="coco_rle",
    )
    records = generate_tiled(generator, files["image"], tile=128)
    assert len(doc["annotations"]) == len(records) > 0
    for ann, rec in zip(doc["annotations"], records, strict=True):
        assert ann["segmentation"]["counts"] == rec["segmentation"]["counts"]
        assert ann["crop_box"] == rec["crop_box"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["segment", "IMG", "--box", "1,1,9,9", "--tile-overlap", "8", "-o", "OUT"],
            "--tile-overlap goes with --tile",
        ),
        (
            ["auto", "IMG", "-o", "OUT", "--tile", "--crop-n-layers", "1"],
            "--tile replaces the crop layers",
        ),
        (
            ["auto", "IMG", "-o", "OUT", "--tile", "--preset", "sa1b"],
            "--tile replaces the crop layers",
        ),
        (
            ["segment", "IMG", "--box", "1,1,9,9", "--tile", "8", "-o", "OUT"],
            "tile must be at least 16",
        ),
        (
            [
                "segment",
                "IMG",
                "--box",
                "1,1,9,9",
                "--tile",
                "64",
                "--tile-overlap",
                "64",
                "-o",
                "OUT",
            ],
            "overlap must be in",
        ),
    ],
)
def test_tile_options_that_do_not_fit_are_refused(files, argv, message, capsys):
    argv = [
        str(files["root"] / "big.png")
        if a == "IMG"
        else str(files["root"] / "bad")
        if a == "OUT"
        else a
        for a in argv
    ]
    assert _run(files, *argv) in (2, 3)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in err


def test_a_corrupt_tiff_is_one_clear_line(files, capsys):
    bad = files["root"] / "corrupt.tif"
    bad.write_bytes(b"II*\x00" + bytes(range(256)) * 2)  # a TIFF header, then garbage
    out = files["root"] / "corrupt_out"
    assert _run(files, "segment", bad, "--box", "1,1,9,9", "--tile", "-o", out) == 3
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("segany: error:") and "corrupt.tif" in err
    assert not list(out.glob("corrupt*"))  # nothing written for it


def _segment_tiff(files, out, *extra):
    return _run(
        files,
        "segment",
        files["root"] / "1.tif",
        "--tile",
        "128",
        "--tile-overlap",
        "32",
        "-o",
        out,
        *extra,
    )


@pytest.fixture(scope="module")
def tiff(files):
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(files["root"] / "1.tif", files["image"])  # uncompressed: read by region
    rows = [
        {"image_id": 1, "bbox": [200, 60, 40, 30], "score": 0.9, "category_id": 3},
        {"image_id": 1, "bbox": [10, 120, 70, 60], "score": 0.6, "category_id": 4},
    ]
    (files["root"] / "dets.json").write_text(json.dumps(rows))
    return files["root"] / "1.tif"


def test_segment_tile_above_the_pixel_limit_writes_rle_only(files, tiff, monkeypatch):
    """An image above the default pixel limit is read by region and written as STEM.json (RLE)
    only, with the same masks as the whole-image run; the limit is lowered here so that a
    200×300 image stands for a 20 000-px scan."""
    import segany.limits

    whole, large = files["root"] / "tif_whole", files["root"] / "tif_large"
    prompts = ["--box", "200,60,240,90", "--box", "10,120,80,180", "--multimask"]
    assert _segment_tiff(files, whole, *prompts) == 0
    monkeypatch.setattr(segany.limits, "MAX_IMAGE_PIXELS", 20_000)
    assert _segment_tiff(files, large, *prompts, "--max-pixels", "100000") == 0
    want, got = (json.loads((d / "1.json").read_text()) for d in (whole, large))
    assert sorted(p.name for p in large.iterdir()) == ["1.json"]  # no PNG, no overlay
    assert got["overlay"] is None and len(got["masks"]) == len(want["masks"]) == 6
    for g, w in zip(got["masks"], want["masks"], strict=True):
        assert g["file"] is None
        assert {**g, "file": w["file"]} == w
    # detections: the COCO results rows are the whole-image run's
    dets = ["--detections", files["root"] / "dets.json"]
    monkeypatch.setattr(segany.limits, "MAX_IMAGE_PIXELS", 2**27)
    assert _segment_tiff(files, whole / "dets", *dets) == 0
    monkeypatch.setattr(segany.limits, "MAX_IMAGE_PIXELS", 20_000)
    assert _segment_tiff(files, large / "dets", *dets, "--max-pixels", "100000") == 0
    want, got = (json.loads((d / "dets" / "results.json").read_text()) for d in (whole, large))
    assert len(got) == 2 and got == want
    # --multimask: each box's best candidate, in both
    assert (
        _segment_tiff(files, large / "multi", *dets, "--multimask", "--max-pixels", "100000") == 0
    )
    monkeypatch.setattr(segany.limits, "MAX_IMAGE_PIXELS", 2**27)
    assert _segment_tiff(files, whole / "multi", *dets, "--multimask") == 0
    want, got = (json.loads((d / "multi" / "results.json").read_text()) for d in (whole, large))
    assert len(got) == 2 and got == want


def test_segment_tile_above_the_pixel_limit_refuses_what_needs_the_image(
    files, tiff, monkeypatch, capsys
):
    import segany.limits

    monkeypatch.setattr(segany.limits, "MAX_IMAGE_PIXELS", 20_000)
    out = files["root"] / "tif_refused"
    assert _segment_tiff(files, out, "--box", "200,60,240,90") == 3  # limit not raised
    assert "more than the 20000" in capsys.readouterr().err
    argv = ["--box", "200,60,240,90", "--max-pixels", "100000", "--refine"]
    assert _segment_tiff(files, out, *argv) == 3
    assert "--refine needs the image whole" in capsys.readouterr().err
    assert not out.exists() or not list(out.glob("1*"))


def test_segment_tile_reads_a_compressed_tiff_within_the_limit_once(files, monkeypatch):
    """Without zarr a compressed TIFF can only be decoded whole: within the pixel limit
    ``segment --tile`` learns its size from the header and decodes it once, by PIL, as any
    image (tifffile never decodes it)."""
    import sys

    tifffile = pytest.importorskip("tifffile")
    zipped = files["root"] / "zip.tif"
    tifffile.imwrite(zipped, files["image"], compression="zlib", tile=(64, 64))
    monkeypatch.setitem(sys.modules, "zarr", None)  # import zarr fails
    monkeypatch.setattr(tifffile, "imread", lambda *a, **k: pytest.fail("tifffile decoded it"))
    out = files["root"] / "zip_out"
    for image in (zipped, files["root"] / "big.png"):  # the same pixels as a PNG
        assert (
            _run(files, "segment", image, "--box", "200,60,240,90", "--tile", "128", "-o", out) == 0
        )
    np.testing.assert_array_equal(
        np.array(Image.open(out / "zip_mask0.png")), np.array(Image.open(out / "big_mask0.png"))
    )
