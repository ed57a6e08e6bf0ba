# ruff: noqa: E501 - one table row per line reads best
"""Hostile and careless use of the ``segany`` command, table-driven, plus hostile pickles.

Each row of ``CASES``: an id, its category, the arguments (``{img}``, ``{dir}``, ``{model}``,
``{out}`` filled in) and the exit code and a fragment of the one-line error expected. The
output-safety cases (colliding names, long names, failing images in a folder, stale temporary
files) follow as separate tests; the SIGKILL fault test is in ``test_fuzz_faults.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import seeded_model
from PIL import Image

from segany.checkpoints import load_model, load_state_dict, save_model
from segany.cli import build_parser, main
from segany.errors import CheckpointError
from segany.formats import read_label_map, read_sa1b
from segany.train.synth import SynthConfig, write_sa1b

SMALL_RUN = ["--points-per-side", "2", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cli_fuzz")
    model = folder / "small.safetensors"
    save_model(seeded_model(), model)
    img = folder / "img"
    img.mkdir()
    _image(img / "a.png")
    write_sa1b(folder / "sa", 1, seed=0, cfg=SynthConfig(long_side=32, min_short_side=24))
    (folder / "random.bin").write_bytes(np.random.default_rng(0).bytes(2048))
    (folder / "config.json").write_text("{}")
    os.mkfifo(folder / "pipe.png")
    os.symlink("loop.png", folder / "loop.png")
    # A grid file claiming 2**21 + 1 points (sparse on disk): refused from its header.
    np.lib.format.open_memmap(
        folder / "huge.npy", mode="w+", dtype=np.float32, shape=(2**21 + 1, 2)
    )
    (folder / "folder.onnx").mkdir()
    _with_version(model, folder / "v_abc.safetensors", "abc")
    return {"dir": folder, "model": model, "img": img / "a.png", "evil": _evil(folder)}


def _with_version(src: Path, dst: Path, version: str) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as f:
        meta, state = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    save_file(state, str(dst), metadata={**meta, "segany.format_version": version})


def _image(path: Path, seed: int = 0) -> None:
    a = np.full((24, 32, 3), 30, np.uint8)
    a[4:16, 6:22] = (220, 60, 60)
    a += np.random.default_rng(seed).integers(0, 10, a.shape, dtype=np.uint8)
    Image.fromarray(a).save(path)


class _Payload:
    """Unpickling this runs ``open(marker, "w")``: the marker file appears if code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _evil(folder: Path) -> dict[str, Path]:
    marker = folder / "PWNED"
    out = {"marker": marker}
    payload = {"image_encoder.pos_embed": _Payload(marker)}
    torch.save(payload, folder / "evil_zip.pth")
    out["zip"] = folder / "evil_zip.pth"
    for proto in (0, 1, 2, 4, 5):
        out[f"p{proto}"] = folder / f"evil_p{proto}.pth"
        out[f"p{proto}"].write_bytes(pickle.dumps(payload, protocol=proto))
    # Nested under "model", as training checkpoints are, and in a transformers folder.
    torch.save({"model": payload, "epoch": 1}, folder / "evil_nested.pth")
    out["nested"] = folder / "evil_nested.pth"
    hf = folder / "evil_hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "sam"}))
    torch.save(payload, hf / "pytorch_model.bin")
    out["hf"] = hf
    return out


def run(capsys, *argv: object) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse usage errors exit inside parse_args
        code = int(e.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


SEG = ["segment", "{img}", "-o", "{out}", "-m", "{model}"]
AUTO = ["auto", "{img}", "-o", "{out}", "-m", "{model}"]

# (id, category, argv, exit code, fragment of stderr)
CASES = [
    ("--points-per-side 3000", "bound", [*AUTO, "--points-per-side", "3000"], 3, "--points-per-side: points_per_side must be an integer in [1, 1024]"),
    ("--crop-n-layers 40", "bound", [*AUTO, "--crop-n-layers", "40"], 3, "[0, 6]"),
    ("--points-per-batch 10**9", "bound", [*AUTO, "--points-per-batch", "1000000000"], 3, "[1, 1024]"),
    ("--crop-n-layers 6", "bound", [*AUTO, "--crop-n-layers", "6"], 3, "1048576"),
    ("--point-grids 2**21 points", "bound", [*AUTO, "--point-grids", "{dir}/huge.npy"], 3, "1048576 prompts"),
    ("--point 1e39", "silent", [*SEG, "-p", "1e39,1"], 3, "outside the 32×24 image"),
    ("--device cpu:1", "silent", [*SEG, "-p", "1,1", "--device", "cpu:1"], 3, "one CPU device"),
    ("--device meta", "silent", [*SEG, "-p", "1,1", "--device", "meta"], 3, "holds no data"),
    ("--device cuda:99", "silent", [*SEG, "-p", "1,1", "--device", "cuda:99"], 3, "CUDA"),
    ("no prompt", "clear", SEG, 2, "at least one --point"),
    ("--tile -1e9", "clear", [*SEG, "-p", "1,1", "--tile", "-1e9"], 2, "unrecognized arguments: -1e9: this command does not take them (a value starting with '-' must be joined to its option with '=', as in --opt=-1)"),
    ("points and boxes", "clear", [*SEG, "-b", "1,1,5,5", "-b", "2,2,6,6", "-p", "3,3"], 2, "one --box"),
    ("grids and side", "clear", [*AUTO, "--point-grids", "{dir}/random.bin", "--points-per-side", "2"], 2, "not both"),
    ("image symlink loop", "clear", ["segment", "{dir}/loop.png", "-p", "1,1", "-o", "{out}", "-m", "{model}"], 3, "broken symbolic link"),
    ("image a fifo", "clear", ["segment", "{dir}/pipe.png", "-p", "1,1", "-o", "{out}", "-m", "{model}"], 3, "not a regular file"),
    ("image /dev/zero", "clear", ["segment", "/dev/zero", "-p", "1,1", "-o", "{out}", "-m", "{model}"], 3, "not a regular file"),
    ("weights random", "clear", [*SEG, "-p", "1,1", "-m", "{dir}/random.bin"], 4, "not a checkpoint"),
    ("weights a PNG", "clear", [*SEG, "-p", "1,1", "-m", "{img}"], 4, "a PNG image"),
    ("weights a JSON", "clear", [*SEG, "-p", "1,1", "-m", "{dir}/config.json"], 4, "a JSON file"),
    ("weights a fifo", "clear", ["info", "{dir}/pipe.png"], 4, "not a checkpoint"),
    ("info symlink loop", "clear", ["info", "{dir}/loop.png"], 3, "loop.png is a broken symbolic link"),
    ("convert onto loop", "clear", ["convert", "{model}", "{dir}/loop.png"], 3, "cannot tell the output format from 'loop.png': name it .safetensors, .pth or a folder, or give --format"),
    ("--output a file", "clear", [*AUTO[:-4], "-o", "{dir}/config.json", "-m", "{model}"], 3, "--output {dir}/config.json is a file, not a folder"),
    ("--output under a file", "clear", [*SEG[:-4], "-p", "1,1", "-o", "{dir}/config.json/sub", "-m", "{model}"], 3, "config.json is a file, not a folder"),
    ("--coco a folder", "clear", [*AUTO, "--coco", "{dir}/img"], 3, "--coco {dir}/img is a folder; give a file name"),
    ("--model ''", "clear", [*SEG[:-2], "-p", "1,1", "-m", ""], 4, "the model name or path is empty"),
    ("convert under a file", "clear", ["convert", "{model}", "{dir}/config.json/x.safetensors"], 3, "OUT {dir}/config.json/x.safetensors: {dir}/config.json is a file, not a folder"),
    ("eval -o a folder", "clear", ["eval", "{dir}/sa", "-m", "{model}", "-o", "{dir}/img", "-q"], 3, "--output {dir}/img is a folder; give a file name"),
    ("eval --plot under a file", "clear", ["eval", "{dir}/sa", "-m", "{model}", "--plot", "{dir}/config.json/p.png", "-q"], 3, "config.json is a file, not a folder"),
    ("export-onnx -o a folder", "clear", ["export-onnx", "-m", "{model}", "-o", "{dir}/folder.onnx"], 3, "folder.onnx is a folder; give a file name"),
    ("train --out a file", "clear", ["train", "{dir}/sa", "-m", "{model}", "-o", "{dir}/config.json", "-q"], 3, "--out {dir}/config.json is a file, not a folder"),
    ("train --export a folder", "clear", ["train", "{dir}/sa", "-m", "{model}", "-o", "{out}/run", "--export", "{dir}/img", "-q"], 3, "--export {dir}/img is a folder"),
    ("distill --out a folder", "clear", ["distill", "{dir}/img", "-t", "{model}", "--student", "tiny", "-o", "{dir}/img", "-q"], 3, "--out {dir}/img is a folder; give a file name"),
    ("synth OUT a file", "clear", ["synth", "{dir}/config.json", "-n", "1", "-q"], 3, "OUT {dir}/config.json is a file, not a folder"),
    ("info: format version 'abc'", "clear", ["info", "{dir}/v_abc.safetensors"], 4, "bad segany.format_version metadata 'abc': expected a whole number"),
    ("point grids pickle", "code", [*AUTO, "--point-grids", "{dir}/evil_p2.pth"], 3, "--point-grids"),
    ("segment -m evil", "code", [*SEG, "-p", "1,1", "-m", "{dir}/evil_zip.pth"], 4, "nothing from it was executed"),
    ("info evil", "code", ["info", "{dir}/evil_p5.pth"], 4, "nothing from it was executed"),
    ("convert evil", "code", ["convert", "{dir}/evil_nested.pth", "{out}/x.safetensors"], 4, "nothing from it was executed"),
    ("auto -m evil hf", "code", [*AUTO, "-m", "{dir}/evil_hf"], 4, "nothing from it was executed"),
    ("auto --checkpoint evil", "code", ["auto", "{img}", "-o", "{out}", "--checkpoint", "{dir}/evil_p2.pth", "--model-type", "vit_b"], 4, "nothing from it was executed"),
    ("eval -m evil", "code", ["eval", "{dir}/sa", "-m", "{dir}/evil_p4.pth", "-o", "{out}/r.json", "-q"], 4, "nothing from it was executed"),
    ("train -m evil", "code", ["train", "{dir}/sa", "-m", "{dir}/evil_p5.pth", "-o", "{out}/run", "-q"], 4, "nothing from it was executed"),
    ("distill -t evil", "code", ["distill", "{dir}/img", "-t", "{dir}/evil_zip.pth", "--student", "tiny", "-o", "{out}/s.safetensors", "-q"], 4, "nothing from it was executed"),
    ("export-onnx -m evil", "code", ["export-onnx", "-m", "{dir}/evil_zip.pth", "-o", "{out}/d.onnx"], 4, "nothing from it was executed"),
    ("engine run -m evil", "code", ["engine", "run", "{dir}/img", "-o", "{out}/e", "-m", "{dir}/evil_nested.pth", "--executor", "serial", "-q"], 4, "nothing from it was executed"),
    ("engine plan -m evil", "code", ["engine", "plan", "{dir}/img", "-m", "{dir}/evil_nested.pth", "--sample", "1", "-q"], 4, "nothing from it was executed"),
    ("engine round -m evil", "code", ["engine", "round", "{dir}/img", "-o", "{out}/r", "--heldout", "{dir}/sa", "-m", "{dir}/evil_hf", "--executor", "serial", "-q"], 4, "nothing from it was executed"),
    ("edges -m evil", "code", ["edges", "{img}", "-o", "{out}/edges", "-m", "{dir}/evil_p2.pth", "-q"], 4, "nothing from it was executed"),
]  # fmt: skip


@pytest.mark.parametrize("name, category, argv, code, fragment", CASES, ids=[c[0] for c in CASES])
def test_fuzz_cli(files, tmp_path, capsys, name, category, argv, code, fragment):
    fill = {"img": files["img"], "dir": files["dir"], "model": files["model"], "out": tmp_path}
    got, _, err = run(capsys, *(a.format(**fill) for a in argv))
    assert got == code, err
    assert fragment.format(**fill) in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err  # one line
    assert not files["evil"]["marker"].exists()


# The options (by argparse dest) through which a subcommand reads weights.
WEIGHT_OPTIONS = {"model", "checkpoint", "teacher", "source"}
# serve hands its model to the app and then serves (the server tests' business), so no row here.
NOT_HERE = {("serve", ("-m", "--model"))}


def _weight_readers() -> set[tuple[str, tuple[str, ...]]]:
    """(subcommand, its option strings; () for a positional) for every weights argument."""
    found = set()

    def walk(parser: argparse.ArgumentParser, words: tuple[str, ...]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, (*words, name))
                return
        for action in parser._actions:
            if action.dest in WEIGHT_OPTIONS:
                found.add((" ".join(words), tuple(action.option_strings)))

    walk(build_parser(), ())
    return found


def test_every_way_to_pass_weights_has_a_code_row():
    # Each argument of the real command line that reads weights is run on a pickle that would
    # run code by some "code" row (test_fuzz_cli checks that it is refused and nothing ran).
    readers = _weight_readers()
    assert NOT_HERE <= readers and ("info", ()) in readers  # the walk sees positionals too
    code_rows = [argv for _, category, argv, _, _ in CASES if category == "code"]
    missing = {
        (cmd, options)
        for cmd, options in readers - NOT_HERE
        if not any(
            argv[: len(cmd.split())] == cmd.split() and (not options or set(options) & set(argv))
            for argv in code_rows
        )
    }
    assert not missing, f"no 'code' row reads weights through {sorted(missing)}"
    assert len({c[0] for c in CASES}) == len(CASES), "row ids must be unique"
    assert {c[1] for c in CASES} == {"bound", "silent", "clear", "code"}


@pytest.mark.parametrize("kind", ["zip", "p0", "p1", "p2", "p4", "p5", "nested", "hf"])
def test_hostile_pickles_never_run(files, kind):
    """Every way segany reads weights refuses a pickle that would create the marker file."""
    evil = files["evil"]
    for read in (load_state_dict, load_model):
        with pytest.raises(CheckpointError, match="nothing from it was executed|not a checkpoint"):
            read(evil[kind])
    assert not evil["marker"].exists()


def test_nothing_segany_reads_is_unpickled_with_code():
    """A guard on the source: every torch.load passes weights_only=True, and nothing calls
    pickle.load(s) or np.load with allow_pickle=True, anywhere in the package (training resume
    state included)."""
    root = Path(__file__).resolve().parents[1] / "segany"
    bad = []
    for path in root.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"torch\.load\((?:[^()]|\([^()]*\))*\)", text):
            if "weights_only=True" not in m.group(0):
                bad.append(f"{path.name}: {m.group(0)}")
        if re.search(r"pickle\.loads?\(|allow_pickle=True|dill|cloudpickle", text):
            bad.append(f"{path.name}: unpickles")
    assert not bad, bad


# --------------------------------------------------------------------------------------------
# output safety


def _folder(tmp_path: Path, names: list[str]) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for i, name in enumerate(names):
        _image(folder / name, seed=i)
    return folder


def test_names_that_match_run_files_are_kept_apart(files, tmp_path, capsys):
    folder = _folder(tmp_path, ["segany_auto_run.png", "a.png"])
    out = tmp_path / "out"
    code, text, err = run(
        capsys, "auto", folder, "-o", out, "-m", files["model"], "--json", *SMALL_RUN
    )
    assert code == 0, err
    assert read_sa1b(out / "segany_auto_run.json").image["file_name"] == "segany_auto_run.png"
    # An image whose JSON would be the COCO file: refused before anything is written.
    _image(folder / "coco_instances.png")
    code, _, err = run(capsys, "auto", folder, "-o", out, "-m", files["model"], "--coco")
    assert code == 3 and "coco_instances.png" in err and "--coco" in err
    assert read_sa1b(out / "segany_auto_run.json").image["file_name"] == "segany_auto_run.png"


def test_long_names_and_failures_do_not_stop_a_folder_run(files, tmp_path, capsys):
    long = "x" * 250 + ".png"
    folder = _folder(tmp_path, [long, "z.png"])
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    os.symlink(folder / "nowhere.png", folder / "gone.png")
    os.mkfifo(folder / "pipe.png")
    out = tmp_path / "out"
    argv = ["auto", folder, "-o", out, "-m", files["model"], "--json", "--masks", "--overlay"]
    code, text, err = run(capsys, *argv, *SMALL_RUN)
    summary = json.loads(text)
    assert code == 1 and summary["failed"] == 3 and summary["written"] == 2, err
    assert {Path(f["file"]).name for f in summary["failures"]} == {
        "broken.png",
        "gone.png",
        "pipe.png",
    }
    names = [p.name for p in out.iterdir()]
    assert "z.json" in names and all(len(n.encode()) <= 255 for n in names)
    shortened = [n for n in names if n.startswith("xxx") and n.endswith(".json")]
    assert len(shortened) == 1 and "~" in shortened[0]


def test_label_map_of_an_image_without_masks(files, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["auto", files["img"], "-o", out, "-m", files["model"], "--label-map"]
    code, _, err = run(capsys, *argv, "--points-per-side", "2", "--pred-iou-thresh", "1")
    assert code == 0, err
    assert not read_sa1b(out / "a.json").annotations
    assert not read_label_map(out / "a_labels.png").any()


def test_leftovers_of_a_killed_run_are_cleaned(files, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["auto", files["img"], "-o", out, "-m", files["model"], "--masks", *SMALL_RUN]
    assert run(capsys, *argv)[0] == 0
    count = len(read_sa1b(out / "a.json").annotations)
    # What kills leave: a temporary file, a half-staged set (never committed) ...
    (out / ".a.json.k1l2e3d4.segany.tmp").write_text("{")
    staged = out / ".segany" / "staging" / "0123456789abcdef"
    staged.mkdir(parents=True)
    (staged / "a.json").write_text("{}")
    assert run(capsys, *argv)[0] == 0
    assert not list(out.rglob("*.tmp")) and not staged.exists()
    assert len(read_sa1b(out / "a.json").annotations) == count
    assert len(list((out / "a").glob("*.png"))) == count


def test_a_path_too_long_for_the_system_fails_that_image_only(files, tmp_path, capsys, monkeypatch):
    # Sub-folders whose joined path passes the system's limit (4096 bytes on Linux) though
    # each name is legal: the image there fails with a message saying so, and --json counts it.
    (tmp_path / "in").mkdir()
    _image(tmp_path / "in" / "b.png")
    monkeypatch.chdir(tmp_path / "in")
    for i in range(16):  # made one level at a time: the whole path cannot be named at once
        os.mkdir(f"{i:02d}" + "y" * 240)
        os.chdir(f"{i:02d}" + "y" * 240)
    _image(Path("x" * 200 + ".png"))  # in/ + 16 × 243 + 205 = 4096 bytes
    monkeypatch.chdir(tmp_path)
    argv = ["auto", "in", "-r", "-o", "out", "-m", files["model"], "--json", *SMALL_RUN]
    code, text, err = run(capsys, *argv)
    summary = json.loads(text)
    assert code == 1 and summary["failed"] == 1 and summary["written"] == 1, err
    assert "longer than this system allows" in summary["failures"][0]["error"]
    assert len(err.strip().splitlines()) == 2 and "Traceback" not in err, err  # failure + tally
    assert Path("out/b.json").is_file()
