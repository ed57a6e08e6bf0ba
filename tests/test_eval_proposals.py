"""The paper's object proposals (§7.3, issue 39): ``evaluate_proposals`` reports class-agnostic
AR@1000 by object size, ``segany eval --protocol proposals`` runs it with the ``proposals``
preset (generator flags override it), and the preset's values are what the generator uses."""

from __future__ import annotations

import json
import math

import pytest
import torch
from eval_fixtures import find_scene, make_scenes, tiny_model, write_coco, write_sa1b

from segany.automatic import PRESETS, MaskGenerator
from segany.checkpoints import load_model, save_model
from segany.cli import main
from segany.evaluate import evaluate_auto, evaluate_proposals, open_dataset
from segany.inference.predictor import Predictor


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("proposals")
    scenes = make_scenes(2, seed=7)
    return {
        "root": root,
        "scenes": scenes,
        "sa1b": write_sa1b(root / "sa1b", scenes),
        "coco": write_coco(root / "coco", scenes),
        "model": save_model(tiny_model(), root / "tiny.safetensors"),
    }


def _values(metrics):
    """name -> value, None for NaN (no object of that size), as the JSON report writes it."""
    return {k: None if math.isnan(v.value) else v.value for k, v in metrics.items()}


class Exact:
    """Proposes every ground-truth object, plus a blank mask ranked first."""

    def __init__(self, scenes):
        self.scenes = scenes

    def generate(self, image):
        masks = find_scene(self.scenes, image)
        blank = [{"segmentation": masks[0] & False, "predicted_iou": 1.0}]
        return blank + [{"segmentation": m, "predicted_iou": 0.5} for m in masks]


def test_proposals_are_auto_recall_at_1000_by_size(files):
    data = open_dataset(files["sa1b"])
    got = evaluate_proposals(Exact(files["scenes"]), data, bootstrap=20)
    assert got.protocol == "proposals"
    assert set(got.metrics) == {"ar@1000", "ar@1000:small", "ar@1000:medium", "ar@1000:large"}
    assert got.metrics["ar@1000"].value == pytest.approx(1.0)
    auto = evaluate_auto(Exact(files["scenes"]), data, max_dets=(1000,), bootstrap=20)
    assert _values(got.metrics) == _values(auto.metrics)
    # a budget of 1 holds only the blank mask: nothing recalled
    none = evaluate_proposals(Exact(files["scenes"]), data, max_dets=(1,), bootstrap=0)
    assert none.metrics["ar@1"].value == 0


def test_the_preset_sets_the_generator(files):
    preset = PRESETS["proposals"]
    made = MaskGenerator.from_preset("proposals", tiny_model())
    for name, value in preset.items():
        assert getattr(made, name) == value, name
    # for_model: the preset beats the model's own thresholds, given flags beat the preset
    sam = tiny_model()
    sam.generator_defaults = {"pred_iou_thresh": 0.99, "stability_score_offset": 0.25}
    made = MaskGenerator.for_model(sam, "proposals", box_nms_thresh=0.5)
    assert made.pred_iou_thresh == preset["pred_iou_thresh"]
    assert made.stability_score_offset == 0.25 and made.box_nms_thresh == 0.5


def test_eval_proposals_command_equals_the_library(files, capsys):
    out = files["root"] / "report.json"
    argv = ["eval", str(files["coco"]), "--protocol", "proposals", "--points-per-side", "4"]
    argv += ["--model", str(files["model"]), "--threads", "1", "--bootstrap", "20"]
    assert main([*argv, "-o", str(out)]) == 0
    assert "ar@1000:small" in capsys.readouterr().out
    got = json.loads(out.read_text())["protocols"]["proposals"]
    generator = MaskGenerator.for_model(
        Predictor(load_model(files["model"]), cache=False), "proposals", points_per_side=4
    )
    lib = evaluate_proposals(generator, open_dataset(files["coco"]), bootstrap=20)
    assert {k: v["value"] for k, v in got["metrics"].items()} == _values(lib.metrics)
    assert [r["proposals"] for r in got["per_image"]] == [r["proposals"] for r in lib.per_image]
