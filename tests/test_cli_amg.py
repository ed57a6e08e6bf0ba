"""``segany auto`` run with the official ``scripts/amg.py`` command line, compared with the
reference generator's records written in amg.py's formats.

amg.py reads each image with OpenCV (BGR -> RGB), generates with the reference
``SamAutomaticMaskGenerator`` and writes ``STEM/{i}.png`` (mask * 255) + ``metadata.csv``, or with
``--convert-to-rle`` ``STEM.json`` (``json.dump`` of the records). Here the same command line
runs ``segany auto`` on the bundled model saved as an official ``.pth``; masks must be equal,
integers equal, scores within 1e-4, and the masks in the same order.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import reference_model
from PIL import Image
from skimage import data
from test_cli import error_line, run_main, segany

from segany.checkpoints import load_model, save_state_dict
from segany.masks import decode_rle

TOL = 1e-4
# thresholds low enough that the bundled model keeps several masks on both photos (v8 at 0.5
# kept 2 on the astronaut), so that there is an order and a set of masks to compare
OPTS = ["--points-per-side", "8", "--pred-iou-thresh", "0.4", "--stability-score-thresh", "0.5"]
KW = dict(points_per_side=8, pred_iou_thresh=0.4, stability_score_thresh=0.5)
HEADER = (
    "id,area,bbox_x0,bbox_y0,bbox_w,bbox_h,point_input_x,point_input_y,predicted_iou,"
    "stability_score,crop_box_x0,crop_box_y0,crop_box_w,crop_box_h"
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(official .pth of the bundled model, input folder, the reference model)."""
    root = tmp_path_factory.mktemp("amg")
    model = load_model()
    checkpoint = save_state_dict(model.config, model.state_dict(), root / "tiny.pth", "official")
    folder = root / "in"
    folder.mkdir()
    photo = Image.fromarray(data.astronaut()).resize((160, 120), Image.BILINEAR)
    photo.save(folder / "astronaut.png")
    Image.fromarray(data.coffee()).resize((150, 100), Image.BILINEAR).save(folder / "coffee.png")
    (folder / "notes.txt").write_text("amg.py skips files it cannot read as images")
    return checkpoint, folder, reference_model(model.config, model.state_dict())


def _reference(ref, image_path: Path, output_mode: str) -> list[dict]:
    from segment_anything import SamAutomaticMaskGenerator

    torch.set_num_threads(1)
    image = cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB)  # as amg.py reads it
    return SamAutomaticMaskGenerator(ref, output_mode=output_mode, **KW).generate(image)


def _amg_command(checkpoint, folder, out, *extra):
    return [
        "auto",
        "--input",
        folder,
        "--output",
        out,
        "--model-type",
        "vit_b",
        "--checkpoint",
        checkpoint,
        *OPTS,
        *extra,
    ]


def _close_row(row: str, index: int, rec: dict) -> None:
    values = row.split(",")
    assert len(values) == 14
    ints = [index, rec["area"], *rec["bbox"]]
    assert [int(v) for v in values[:6]] == ints
    np.testing.assert_allclose([float(v) for v in values[6:8]], rec["point_coords"][0], atol=1e-9)
    assert abs(float(values[8]) - rec["predicted_iou"]) <= TOL
    assert abs(float(values[9]) - rec["stability_score"]) <= TOL
    assert [int(v) for v in values[10:]] == rec["crop_box"]


@pytest.mark.slow  # two runs of the command and the reference: ~30 s
def test_amg_png_folders_and_metadata(tmp_path, setup):
    checkpoint, folder, ref = setup
    out = tmp_path / "out"
    proc = segany(*_amg_command(checkpoint, folder, out))
    assert "custom variant" in proc.stderr  # --model-type cannot name it: a warning
    assert "notes.txt" in proc.stderr  # skipped, as amg.py skips it
    assert sorted(p.name for p in out.iterdir()) == ["astronaut", "coffee"]  # nothing else
    for stem in ("astronaut", "coffee"):
        theirs = _reference(ref, folder / f"{stem}.png", "binary_mask")
        assert len(theirs) >= 3
        names = sorted(p.name for p in (out / stem).iterdir())
        assert names == sorted([f"{i}.png" for i in range(len(theirs))] + ["metadata.csv"])
        for i, rec in enumerate(theirs):
            png = cv2.imread(str(out / stem / f"{i}.png"), cv2.IMREAD_UNCHANGED)
            assert png.dtype == np.uint8 and png.ndim == 2
            np.testing.assert_array_equal(png, rec["segmentation"].astype(np.uint8) * 255)
        text = (out / stem / "metadata.csv").read_text()
        lines = text.split("\n")
        assert lines[0] == HEADER and not text.endswith("\n") and len(lines) == len(theirs) + 1
        for i, (row, rec) in enumerate(zip(lines[1:], theirs, strict=True)):
            _close_row(row, i, rec)
    # a re-run finds everything done; the same command with --overwrite redoes it
    again = segany(*_amg_command(checkpoint, folder, out, "--json"))
    assert json.loads(again.stdout)["skipped"] == 2


@pytest.mark.slow  # the command and the reference: ~15 s
def test_amg_convert_to_rle_bare_list(tmp_path, setup):
    checkpoint, folder, ref = setup
    out = tmp_path / "out"
    segany(*_amg_command(checkpoint, folder / "astronaut.png", out, "--convert-to-rle"))
    assert sorted(p.name for p in out.iterdir()) == ["astronaut.json"]
    ours = json.loads((out / "astronaut.json").read_text())
    theirs = _reference(ref, folder / "astronaut.png", "coco_rle")
    assert isinstance(ours, list) and len(ours) == len(theirs) >= 3
    for a, b in zip(ours, theirs, strict=True):
        assert list(a) == list(b)
        assert a["segmentation"]["size"] == b["segmentation"]["size"]
        np.testing.assert_array_equal(decode_rle(a["segmentation"]), decode_rle(b["segmentation"]))
        for key in ("area", "bbox", "crop_box"):
            assert a[key] == b[key]
        assert abs(a["predicted_iou"] - b["predicted_iou"]) <= TOL
        assert abs(a["stability_score"] - b["stability_score"]) <= TOL


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--masks"], "--masks write segany's layout"),
        (["--model", "x.safetensors"], "--checkpoint and --model"),
        (["--points-per-side", "0"], "points-per-side"),
    ],
)
def test_amg_flag_errors(tmp_path, setup, capsys, extra, needle):
    checkpoint, folder, _ = setup
    code, _, err = run_main(capsys, *_amg_command(checkpoint, folder, tmp_path / "o"), *extra)
    assert code != 0 and needle in err and "Traceback" not in err


def test_amg_model_type_vit_t(tmp_path, setup, capsys):
    # MobileSAM's amg.py takes --model-type vit_t: a vit_t checkpoint runs, another refused
    import torch as _torch
    from helpers import seeded_model

    from segany.models import VIT_T

    _, folder, _ = setup
    checkpoint = tmp_path / "mobile_sam.pt"
    _torch.save(seeded_model(VIT_T).state_dict(), checkpoint)
    small = ["--points-per-side", "2", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]

    def run(model_type: str, out: str):
        argv = ["auto", "--input", folder / "coffee.png", "--output", tmp_path / out]
        return run_main(
            capsys, *argv, "--model-type", model_type, "--checkpoint", checkpoint, *small
        )

    code, _, err = run("vit_t", "o")
    assert code == 0, err
    assert (tmp_path / "o" / "coffee" / "metadata.csv").is_file()
    code, _, err = run("vit_b", "o2")
    assert code != 0 and "vit_t" in err and "vit_b" in err


def test_auto_without_inputs_says_so(tmp_path):
    proc = segany("auto", "-o", tmp_path / "o", check=None)
    assert proc.returncode != 0 and "no input" in error_line(proc)
