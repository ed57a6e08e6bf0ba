"""`segany eval`: the command runs the protocols the library runs, writes the report and plot,
compares reports, and turns mistakes into one line and an exit code."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from eval_fixtures import make_scenes, tiny_model, write_coco, write_sa1b

from segany.checkpoints import load_model, save_model
from segany.cli import main
from segany.evaluate import evaluate_prompts, open_dataset, subset
from segany.inference.predictor import Predictor
from segany.zoom import ZoomPredictor


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # tiny model: a second thread only adds contention


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalcli")
    scenes = make_scenes(3, seed=2)
    model = save_model(tiny_model(), root / "tiny.safetensors")
    return {
        "root": root,
        "model": model,
        "coco": write_coco(root / "coco", scenes),
        "sa1b": write_sa1b(root / "sa1b", scenes),
    }


def _eval(files, *extra):
    return ["eval", "--model", str(files["model"]), "--threads", "1", *map(str, extra)]


def test_prompted_protocols_match_the_library(files, capsys):
    out = files["root"] / "run" / "report.json"
    plot = files["root"] / "run" / "clicks.png"
    argv = _eval(
        files,
        files["coco"],
        "--protocol",
        "clicks",
        "--limit",
        "2",
        "--seed",
        "4",
        "--max-clicks",
        "5",
        "--bootstrap",
        "100",
        "-o",
        out,
        "--plot",
        plot,
    )
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "noc@90" in table and "miou@5" in table
    report = json.loads(out.read_text())
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert report["dataset"]["num_images"] == 2 and report["dataset"]["subset_of"] == 3
    assert report["model"]["config"] == "eval-tiny"
    assert report["options"]["max_clicks"] == 5
    data = subset(open_dataset(files["coco"]), 2, seed=4)
    lib = evaluate_prompts(
        Predictor(load_model(files["model"])),
        data,
        ("clicks",),
        max_clicks=5,
        bootstrap=100,
        seed=4,
    )["clicks"]
    got = report["protocols"]["clicks"]
    for name, est in lib.metrics.items():
        assert got["metrics"][name]["value"] == pytest.approx(est.value, abs=1e-6)
        assert got["metrics"][name]["ci95"] == pytest.approx([est.low, est.high], abs=1e-6)
    flat = [v for r in got["per_object"] for v in r["ious"]]
    assert flat == pytest.approx([v for r in lib.per_object for v in r["ious"]], abs=1e-6)
    assert got["seconds"] > 0 and len(got["per_image"]) == 2


def test_all_protocols_with_json_summary(files, capsys):
    out = files["root"] / "all.json"
    argv = _eval(
        files,
        files["sa1b"],
        "--limit",
        "1",
        "--max-clicks",
        "3",
        "--bootstrap",
        "20",
        "--points-per-side",
        "4",
        "--pred-iou-thresh",
        "0",
        "--stability-score-thresh",
        "0",
        "--max-dets",
        "10,100",
        "-o",
        out,
        "--json",
    )
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["runs"][0]["protocols"]) == {"point", "clicks", "box", "auto"}
    assert summary["runs"][0]["label"] == "tiny" and summary["report"] == str(out)
    report = json.loads(out.read_text())
    auto = report["protocols"]["auto"]
    assert set(auto["metrics"]) >= {"ar@10", "ar@100", "ar@100:small", "ar@100:large"}
    recalls = [r["recall@100"] for r in auto["per_object"]]
    assert auto["metrics"]["ar@100"]["value"] == pytest.approx(np.mean(recalls), abs=1e-6)
    assert report["protocols"]["point"]["settings"]["shared_with"] == ["clicks", "box"]


def test_compare_two_reports(files, tmp_path):
    a = tmp_path / "base.json"
    b = tmp_path / "tuned.json"
    common = _eval(files, files["sa1b"], "--protocol", "box", "--bootstrap", "10", "-q")
    assert main([*common, "-o", str(a)]) == 0
    assert main([*common, "--box-noise", "0.2", "--box-noise-max-px", "5", "-o", str(b)]) == 0
    # The real command, in its own process: the comparison needs no model or torch.
    done = subprocess.run(
        [sys.executable, "-m", "segany", "eval", "--compare", str(a), str(b)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "base" in done.stdout and "tuned" in done.stdout and "miou" in done.stdout
    assert "seconds" in done.stdout
    noisy = json.loads(b.read_text())["protocols"]["box"]
    assert noisy["settings"]["box_noise"] == 0.2 and noisy["settings"]["box_noise_max_px"] == 5


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["eval"], "give a DATASET"),
        (["eval", "x.json", "--compare", "a.json", "b.json"], "either a DATASET"),
        (["eval", "missing_dir/nothing.json"], "neither a COCO"),
        (["eval", "--compare", "nope.json", "nope2.json"], "cannot read report"),
    ],
)
def test_errors_are_one_line_with_an_exit_code(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("segany: error:") and message in err and "\n" not in err


def test_usage_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--protocol", "everything", "x.json"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        main(["eval", "--box-noise", "3", "x.json"])  # a fraction
    assert "fraction" in capsys.readouterr().err


def test_baselines_run_beside_the_model_on_the_same_objects(files, capsys):
    out = files["root"] / "base" / "report.json"
    argv = _eval(files, files["sa1b"], "--protocol", "box", "--bootstrap", "0")
    argv += ["--baseline", "all", "--objects-per-image", "2", "-o", str(out)]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "grabcut:box" in table and "model wins" in table
    report = json.loads(out.read_text())
    protos = report["protocols"]
    assert set(protos) == {"box", "grabcut:box"}  # the flood fill has no box prompt
    model_ids = [(r["image_id"], r["object_id"]) for r in protos["box"]["per_object"]]
    base_ids = [(r["image_id"], r["object_id"]) for r in protos["grabcut:box"]["per_object"]]
    assert model_ids == base_ids and len(model_ids) > 0
    assert [r["box"] for r in protos["box"]["per_object"]] == [
        r["box"] for r in protos["grabcut:box"]["per_object"]
    ]


def test_zoom_answers_boxes_on_crops_like_the_library(files, tmp_path):
    out = tmp_path / "zoom.json"
    argv = _eval(files, files["coco"], "--protocol", "box", "--zoom", "1.5", "-o", out)
    assert main([*argv, "--bootstrap", "0"]) == 0
    report = json.loads(out.read_text())
    assert report["options"]["zoom"] == 1.5
    lib = evaluate_prompts(
        ZoomPredictor(Predictor(load_model(files["model"])), 1.5),
        open_dataset(files["coco"]),
        ("box",),
        bootstrap=0,
    )["box"]
    got = [r["iou"] for r in report["protocols"]["box"]["per_object"]]
    assert got == pytest.approx([r["iou"] for r in lib.per_object], abs=1e-6)
    plain = evaluate_prompts(
        Predictor(load_model(files["model"])), open_dataset(files["coco"]), ("box",), bootstrap=0
    )["box"]
    assert got != pytest.approx([r["iou"] for r in plain.per_object], abs=1e-6)  # it zoomed


def test_zoom_clicks_answers_corrections_on_crops_like_the_library(files, tmp_path):
    out = tmp_path / "zoomclicks.json"
    argv = _eval(files, files["coco"], "--protocol", "all", "--zoom-clicks", "-o", out)
    assert main([*argv, "--max-clicks", "4", "--bootstrap", "0"]) == 0
    report = json.loads(out.read_text())
    assert report["options"]["zoom_clicks"] == 1.0 and "zoom" not in report["options"]

    def run(predictor):
        protos = ("point", "clicks", "box")
        return evaluate_prompts(
            predictor, open_dataset(files["coco"]), protos, max_clicks=4, bootstrap=0
        )

    lib = run(ZoomPredictor(Predictor(load_model(files["model"])), None, click_margin=1.0))
    plain = run(Predictor(load_model(files["model"])))
    got = {p: report["protocols"][p]["per_object"] for p in ("point", "clicks", "box")}
    clicks = np.array([r["ious"] for r in got["clicks"]])
    assert np.allclose(clicks, [r["ious"] for r in lib["clicks"].per_object], atol=1e-6)
    assert not np.allclose(clicks, [r["ious"] for r in plain["clicks"].per_object], atol=1e-6)
    for proto in ("point", "box"):  # the first click and the boxes are the whole image's
        want = [r["iou"] for r in plain[proto].per_object]
        assert [r["iou"] for r in got[proto]] == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("given, radius", [(["--refine"], None), (["--refine", "3"], 3)])
def test_refine_measures_the_refined_masks_like_the_library(files, tmp_path, given, radius):
    from segany.refine import RefinedPredictor

    out = tmp_path / "refine.json"
    argv = _eval(files, files["coco"], "--protocol", "clicks", "--max-clicks", "3", *given)
    assert main([*argv, "--bootstrap", "0", "-o", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["options"]["refine"] == (radius or "auto")
    lib = evaluate_prompts(
        RefinedPredictor(Predictor(load_model(files["model"])), radius),
        open_dataset(files["coco"]),
        ("clicks",),
        max_clicks=3,
        bootstrap=0,
    )["clicks"]
    got = [v for r in report["protocols"]["clicks"]["per_object"] for v in r["ious"]]
    assert got == pytest.approx([v for r in lib.per_object for v in r["ious"]], abs=1e-6)
    plain = evaluate_prompts(
        Predictor(load_model(files["model"])),
        open_dataset(files["coco"]),
        ("clicks",),
        max_clicks=3,
        bootstrap=0,
    )["clicks"]
    assert got != pytest.approx([v for r in plain.per_object for v in r["ious"]], abs=1e-6)


def test_refine_refuses_a_radius_that_is_not_a_whole_number(files, capsys):
    with pytest.raises(SystemExit) as stop:
        main(_eval(files, files["coco"], "--refine", "2.5"))
    assert stop.value.code == 2 and "2.5" in capsys.readouterr().err
