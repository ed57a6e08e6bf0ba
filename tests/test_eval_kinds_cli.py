"""`segany eval --by-kind` (issue 38): one dataset per subfolder, each kind measured with the
same model and options as its own run would be, one table row per kind with the baselines
beside the model, a per-kind report that `--compare` reads; mistakes are one clear line."""

from __future__ import annotations

import json

import pytest
import torch
from eval_fixtures import make_scenes, tiny_model, write_coco, write_label_maps, write_sa1b
from test_eval_cli import _eval  # the command line with this module's model and one thread

from segany.checkpoints import save_model
from segany.cli import main


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # tiny model: a second thread only adds contention


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalkinds")
    kinds = root / "kinds"
    # three kinds, each in another of the dataset layouts segany eval reads
    write_label_maps(kinds / "flat", make_scenes(2, seed=11))
    write_sa1b(kinds / "photos", make_scenes(2, seed=12))
    write_coco(kinds / "scenes", make_scenes(1, seed=13))
    (kinds / ".hidden").mkdir()  # hidden folders are not kinds
    return {"root": root, "kinds": kinds, "model": save_model(tiny_model(), root / "m.safetensors")}


def test_each_kind_reports_what_its_own_run_reports(files, capsys):
    out = files["root"] / "kinds.json"
    args = ("--protocol", "clicks", "--max-clicks", "3", "--bootstrap", "50")
    assert (
        main(_eval(files, files["kinds"], "--by-kind", *args, "-o", out, "--baseline", "all")) == 0
    )
    table = capsys.readouterr().out
    lines = table.splitlines()
    header = lines[0].split()
    assert header[:3] == ["kind", "images", "objects"]
    assert "flood" in lines[0] and "GrabCut" in lines[0] and "NoC@85" in lines[0]
    assert [line.split()[0] for line in lines[2:]] == ["flat", "photos", "scenes"]
    combined = json.loads(out.read_text())
    assert combined["format"] == "segany-eval-kinds/1"
    assert list(combined["kinds"]) == ["flat", "photos", "scenes"]
    for kind in combined["kinds"]:
        alone = files["root"] / f"{kind}.json"
        dataset = files["kinds"] / kind
        if kind == "scenes":
            dataset = dataset / "annotations.json"
        argv = _eval(files, dataset, *args, "-o", alone, "--baseline", "all")
        assert main(argv) == 0
        capsys.readouterr()
        mine, theirs = combined["kinds"][kind]["protocols"], json.loads(alone.read_text())
        assert (
            set(mine)
            == set(theirs["protocols"])
            == {
                "clicks",
                "floodfill:clicks",
                "grabcut:clicks",
            }
        )
        for name, proto in theirs["protocols"].items():
            assert mine[name]["metrics"] == proto["metrics"], (kind, name)
            assert mine[name]["per_object"] == proto["per_object"], (kind, name)
        # the row shows this kind's figures
        row = next(line.split() for line in lines[2:] if line.split()[0] == kind)
        clicks3 = theirs["protocols"]["clicks"]["metrics"]["miou@3"]["value"]
        assert f"{clicks3:.3f}" in row, row


def test_kinds_reports_compare_kind_by_kind(files, capsys):
    a, b = files["root"] / "a.json", files["root"] / "b.json"
    for out, extra in ((a, ()), (b, ("--box-noise", "0.1"))):
        argv = _eval(files, files["kinds"], "--by-kind", "--protocol", "box", "-o", out, *extra)
        assert main([*argv, "--bootstrap", "0"]) == 0
    capsys.readouterr()
    assert main(["eval", "--compare", str(a), str(b)]) == 0
    text = capsys.readouterr().out
    for kind in ("flat", "photos", "scenes"):
        assert f"\n{kind}\n" in f"\n{text}"
    plain = files["root"] / "plain.json"
    argv = _eval(files, files["kinds"] / "flat", "--protocol", "box", "-o", plain)
    assert main([*argv, "--bootstrap", "0"]) == 0
    capsys.readouterr()
    assert main(["eval", "--compare", str(a), str(plain)]) == 3
    assert "per-kind reports" in capsys.readouterr().err


@pytest.mark.parametrize(
    "setup, extra, message",
    [
        ("empty", (), "holds no subfolders"),
        ("broken", (), "kind 'junk'"),
        ("file", (), "needs a folder with one dataset per subfolder"),
        ("ok", ("--labels", "x"), "--labels does not apply with --by-kind"),
    ],
)
def test_bad_kinds_folders_are_one_clear_line(files, capsys, tmp_path, setup, extra, message):
    target = tmp_path / "set"
    if setup == "empty":
        target.mkdir()
    elif setup == "broken":
        write_label_maps(target / "good", make_scenes(1, seed=3))
        (target / "junk").mkdir()  # not a dataset: nothing is measured before this is found
    elif setup == "file":
        target.write_text("not a folder")
    else:
        target = files["kinds"]
    out = tmp_path / "r.json"
    argv = _eval(files, target, "--by-kind", "--protocol", "box", "-o", out, *extra)
    assert main(argv) == 3
    errors = [x for x in capsys.readouterr().err.splitlines() if x.startswith("segany: error")]
    assert len(errors) == 1 and message in errors[0]
    assert not out.exists()
