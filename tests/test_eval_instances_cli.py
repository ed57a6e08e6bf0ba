"""`segany eval --protocol instances` (issue 39, the paper's zero-shot instance segmentation):
a detector's boxes and a COCO ground truth give the mask AP table the library computes."""

from __future__ import annotations

import json

import pytest
import torch
from eval_fixtures import make_scenes, tiny_model, write_coco

from segany.checkpoints import load_model, save_model
from segany.cli import main
from segany.evaluate.instances import INSTANCE_METRICS, evaluate_instances
from segany.inference.predictor import Predictor


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalinst")
    coco = write_coco(root / "coco", make_scenes(3, seed=5), crowd=False)
    gt = json.loads(coco.read_text())
    # the ground truth's boxes as a detector's output, with descending scores
    dets = [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": a["bbox"],
            "score": 1.0 - 0.01 * k,
        }
        for k, a in enumerate(gt["annotations"])
    ]
    (root / "dets.json").write_text(json.dumps(dets))
    return {
        "root": root,
        "model": save_model(tiny_model(), root / "tiny.safetensors"),
        "coco": coco,
        "dets": root / "dets.json",
    }


def _eval(files, *extra):
    return ["eval", "--model", str(files["model"]), "--threads", "1", *map(str, extra)]


def test_instances_report_equals_the_library(files, capsys):
    out = files["root"] / "inst.json"
    argv = _eval(files, files["coco"], "--protocol", "instances", "--detections", files["dets"])
    assert main([*argv, "-o", str(out)]) == 0
    table = capsys.readouterr().out
    assert "instances" in table and "ap50" in table
    report = json.loads(out.read_text())
    got = report["protocols"]["instances"]
    assert got["settings"]["images_with_detections"] == 3
    assert report["dataset"]["num_images"] == 3
    lib = evaluate_instances(
        Predictor(load_model(files["model"]), cache=False), files["coco"], files["dets"]
    )
    for name in INSTANCE_METRICS:
        want = lib.metrics[name].value
        value = got["metrics"][name]["value"]
        assert (value is None and want != want) or value == pytest.approx(want), name
    # a seeded random model's masks are not the shapes: AP is a real figure, not 0 or 1 by rule
    assert 0.0 <= lib.metrics["ap50"].value <= 1.0


def test_min_score_drops_detections(files, capsys):
    out = files["root"] / "few.json"
    argv = _eval(files, files["coco"], "--protocol", "instances", "--detections", files["dets"])
    assert main([*argv, "--min-score", "0.95", "-o", str(out)]) == 0
    rows = json.loads(out.read_text())["protocols"]["instances"]["per_image"]
    n = len(json.loads(files["coco"].read_text())["annotations"])
    assert sum(r["detections"] for r in rows) == sum(1.0 - 0.01 * k >= 0.95 for k in range(n))


def test_all_with_detections_adds_instances(files, capsys):
    out = files["root"] / "all.json"
    argv = _eval(files, files["coco"], "--detections", files["dets"], "--limit", "1")
    argv += ["--points-per-side", "4", "--max-clicks", "2", "--bootstrap", "10", "-o", str(out)]
    assert main(argv) == 0
    protocols = json.loads(out.read_text())["protocols"]
    assert set(protocols) == {"point", "clicks", "box", "auto", "instances"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--protocol", "instances"), "needs --detections FILE"),
        (("--protocol", "box", "--detections", "DETS"), "is for the instances protocol"),
        (("--protocol", "instances", "--detections", "DETS", "--limit", "1"), "--limit does not"),
        (("--protocol", "instances", "--detections", "DETS", "--zoom"), "--zoom does not"),
        (("--protocol", "instances", "--detections", "MISSING"), "MISSING"),
    ],
)
def test_instances_errors_are_one_line(files, extra, message, capsys):
    extra = tuple(
        str(files["dets"]) if e == "DETS" else str(files["root"] / e) if e == "MISSING" else e
        for e in extra
    )
    assert main(_eval(files, files["coco"], *extra)) == 3
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress lines
    assert err.startswith("segany: error:") and message in err


def test_instances_needs_a_coco_file(files, capsys):
    argv = _eval(files, files["root"] / "coco", "--protocol", "instances")
    assert main([*argv, "--detections", str(files["dets"])]) == 3
    assert "needs a COCO instances .json" in capsys.readouterr().err
