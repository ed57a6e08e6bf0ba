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
