"""Model in the loop (annotate -> fine-tune -> re-annotate) and the ``segany engine`` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from engine_fixtures import SPEC, make_folder, scene_files

from segany.checkpoints import load_model
from segany.cli import main
from segany.engine import EngineConfig
from segany.engine.check import verify
from segany.engine.rounds import EngineTrainSet, RoundConfig, run_rounds


def _heldout(root: Path) -> Path:
    folder = root / "heldout"
    folder.mkdir()
    for name, data, record in scene_files(2, seed=11):
        (folder / name).write_bytes(data)
        (folder / name).with_suffix(".json").write_text(json.dumps(record))
    return folder


@pytest.mark.slow
def test_a_round_fine_tunes_on_the_engine_output_and_reports_each_round(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, 2)
    engine = EngineConfig([str(folder)], "unused", spec=SPEC, executor="serial")
    train = {"steps": 2, "batch_size": 1, "masks_per_image": 2, "rounds": 2, "amp": False}
    train.update({"warmup_steps": 0, "val_every": 100, "ckpt_every": 100, "device": "cpu"})
    config = RoundConfig(engine, str(tmp_path / "loop"), str(_heldout(tmp_path)), 1, train)
    rows = run_rounds(config)
    assert [r["round"] for r in rows] == [0, 1]
    assert rows[0]["model"] == "(bundled)"
    assert rows[1]["model"].endswith("round_0/model.safetensors")
    # Each row's held-out mIoU is its own model's (the bundled one, then the fine-tuned one).
    from segany.evaluate import evaluate_points, open_dataset
    from segany.inference.predictor import Predictor

    heldout = open_dataset(str(tmp_path / "heldout"))
    for r, weights in zip(rows, [None, rows[1]["model"]], strict=True):
        assert r["images"] == 2 and r["heldout_images"] == 2
        miou = evaluate_points(Predictor(load_model(weights)), heldout, bootstrap=0).miou
        assert r["point_miou"] == round(float(miou), 4)
        assert 0 <= r["ar@100"] <= 1
    assert rows[0]["point_miou"] != rows[1]["point_miou"]  # so the rows tell the models apart
    loop = tmp_path / "loop"
    assert json.loads((loop / "rounds.json").read_text())["rounds"] == rows
    for r in (0, 1):
        assert verify(loop / f"round_{r}" / "annotations") == []
    # The fine-tuned weights differ from the bundled ones: training happened.
    before = load_model().state_dict()
    after = load_model(rows[1]["model"]).state_dict()
    assert any(not (before[k] == after[k]).all() for k in before)


def test_engine_output_is_training_data(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, 2)
    out = tmp_path / "out"
    assert main(_run_args(folder, out)) == 1  # 1: finished, the broken inputs failed
    data = EngineTrainSet(out, [str(folder)], 64, masks_per_image=2)
    assert len(data) == 2
    image, masks = data.load(0)
    assert image.ndim == 3 and masks and masks[0].shape == image.shape[:2]
    assert data.get(0).image.shape == (3, 64, 64)


def _run_args(folder: Path, out: Path) -> list[str]:
    return [
        "engine", "run", str(folder), "-o", str(out), "--executor", "serial", "-q",
        "--points-per-side", "6", "--pred-iou-thresh", "0.5", "--stability-score-thresh", "0.7",
        "--max-pixels", str(SPEC.max_pixels), "--threads-per-worker", "1",
    ]  # fmt: skip


def test_cli_run_verify_stats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = make_folder(tmp_path, 2)
    out = tmp_path / "out"
    assert main([*_run_args(folder, out), "--json", "--shard-format", "tar"]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["annotated"] == 2 and summary["failed"] == 4
    assert main(["engine", "verify", str(out)]) == 0
    assert main(["engine", "stats", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 2
    (out / "shards" / "00001.tar").write_bytes(b"a stray file")
    assert main(["engine", "verify", str(out)]) == 3
    assert "00001.tar: not listed" in capsys.readouterr().err
    (out / "shards" / "00001.tar").unlink()
    shard = out / "shards" / "00000.tar"
    shard.write_bytes(shard.read_bytes()[:1500])  # truncated
    assert main(["engine", "verify", str(out)]) == 3
    assert "00000.tar" in capsys.readouterr().err
    assert main(["engine", "verify", str(tmp_path / "nothing")]) == 3
    assert main(["engine", "run", str(folder), "-o", str(out), "--preset", "nope"]) == 3


def test_with_images_a_shard_is_an_sa1b_folder_and_outputs_inside_inputs_are_skipped(
    tmp_path: Path,
) -> None:
    from segany.engine import run_engine
    from segany.train.datasets import SA1BDataset

    folder = make_folder(tmp_path, 2)
    out = folder / "engine_out"  # inside the input folder
    config = EngineConfig([str(folder)], str(out), spec=SPEC, executor="serial", with_images=True)
    assert run_engine(config)["images"] == 6
    shard = out / "shards" / "00000"
    assert (shard / "sub0" / "sa_0.jpg").read_bytes() == (folder / "sub0" / "sa_0.jpg").read_bytes()
    again = run_engine(config)  # the copied images are not new inputs
    assert again["images"] == 6 and again["processed_this_run"] == 0
    data = SA1BDataset(shard / "sub0", 64)  # what `segany train` reads
    image, masks = data.load(0)
    assert masks and masks[0].shape == image.shape[:2]
    assert verify(out) == []
