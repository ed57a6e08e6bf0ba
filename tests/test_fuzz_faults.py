"""SIGKILL ``segany auto --overwrite`` while it writes, then check every image's outputs.

The command runs in a subprocess whose ``os.replace`` (the step that puts every finished file,
and every staged file, in place) kills the process just before its N-th call. A dry run lists
those calls, so the kill points are chosen where they hurt: while an image's files are staged,
just before its journal is written, between the moves that install it, just before its JSON.

After each kill, and after the next plain run, each image must have one consistent set
(SA-1B JSON masks == mask PNGs == metadata.csv rows == label map), equal to the old run's set
or the new run's set; after the next run no temporary file, staging folder or journal remains.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import seeded_model
from PIL import Image

from segany.checkpoints import save_model
from segany.cli import main
from segany.formats import label_map, read_label_map, read_mask_folder, read_sa1b

ROOT = Path(__file__).resolve().parents[1]

DRIVER = r"""
import os, signal, sys
limit, calls, real = int(sys.argv[1]), [0], os.replace
def replace(src, dst, *args, **kwargs):
    calls[0] += 1
    if calls[0] == limit:
        os.kill(os.getpid(), signal.SIGKILL)
    print("REPLACE", os.fspath(dst), file=sys.stderr, flush=True)
    return real(src, dst, *args, **kwargs)
os.replace = replace
from segany.cli import main
sys.exit(main(sys.argv[2:]))
"""

STEMS = ("a", "b")
# Every mask kept (no quality cut, no NMS): 12 masks per image, then 27.
KEEP_ALL = ["--pred-iou-thresh", "0", "--stability-score-thresh", "0", "--box-nms-thresh", "1"]
OLD = ["--points-per-side", "2", *KEEP_ALL]
NEW = ["--points-per-side", "3", *KEEP_ALL]


def _driver(limit: int, *argv: object) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-c", DRIVER, str(limit), *map(str, argv)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )


def _consistent(out: Path, stem: str) -> list[dict]:
    """The image's annotations, after checking that all of its files describe the same masks."""
    doc = read_sa1b(out / f"{stem}.json")
    masks = doc.masks()
    folder_masks, rows = read_mask_folder(out / stem)
    pngs = sorted(int(p.stem) for p in (out / stem).glob("*.png"))
    assert pngs == list(range(len(doc.annotations))), (stem, pngs, len(doc.annotations))
    assert len(rows) == len(doc.annotations)
    if len(masks):
        assert np.array_equal(folder_masks, masks)
    assert np.array_equal(read_label_map(out / f"{stem}_labels.png"), label_map(masks))
    return doc.annotations


def _pending(out: Path) -> bool:
    return any((out / ".segany" / "journal").glob("*.json"))


@pytest.mark.slow
def test_sigkill_during_overwrite_leaves_old_or_new_sets(tmp_path, capsys):
    model = tmp_path / "m.safetensors"
    save_model(seeded_model(), model)
    images = tmp_path / "in"
    images.mkdir()
    rng = np.random.default_rng(0)
    for stem in STEMS:
        a = np.full((24, 32, 3), 30, np.uint8)
        a[4:16, 6:22] = (220, 60, 60)
        a += rng.integers(0, 20, a.shape, dtype=np.uint8)
        Image.fromarray(a).save(images / f"{stem}.png")
    flags = ["-m", model, "--masks", "--label-map", "-q"]
    base = tmp_path / "base"
    assert main([str(a) for a in ["auto", images, "-o", base, *flags, *OLD]]) == 0
    old = {s: _consistent(base, s) for s in STEMS}

    # Dry run of the overwrite: which replaces it makes, in order.
    dry = tmp_path / "dry"
    shutil.copytree(base, dry)
    proc = _driver(0, "auto", images, "-o", dry, *flags, *NEW, "--overwrite")
    assert proc.returncode == 0, proc.stderr
    new = {s: _consistent(dry, s) for s in STEMS}
    assert all(len(new[s]) != len(old[s]) for s in STEMS)  # a mix would show
    steps = [
        line.split(" ", 1)[1] for line in proc.stderr.splitlines() if line.startswith("REPLACE")
    ]
    journals = [i + 1 for i, d in enumerate(steps) if "/.segany/journal/" in d]
    first_json = next(i + 1 for i, d in enumerate(steps) if d == str(dry / "a.json"))
    kill_points = {
        "while staging": 2,
        "before the journal": journals[0],
        "before the first move": journals[0] + 1,
        "between moves": journals[0] + 3,
        "before the JSON move": first_json,
        "second image, mid-install": journals[1] + 2,
    }

    for what, k in kill_points.items():
        out = tmp_path / f"kill_{k}"
        shutil.copytree(base, out)
        proc = _driver(k, "auto", images, "-o", out, *flags, *NEW, "--overwrite")
        assert proc.returncode == -9, (what, proc.returncode, proc.stderr[-2000:])
        if not _pending(out):  # not committed, or fully installed: whole sets already
            for s in STEMS:
                assert _consistent(out, s) in (old[s], new[s]), what
        # The next plain run finishes what was committed and drops what was not.
        assert main([str(a) for a in ["auto", images, "-o", out, *flags, *NEW]]) == 0, what
        for s in STEMS:
            got = _consistent(out, s)
            assert got in (old[s], new[s]), what
        assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")], what
        assert not (out / ".segany" / "staging").exists() and not _pending(out), what
        settings = json.loads((out / ".segany" / "run.json").read_text())
        assert settings["options"]["points_per_side"] == 3
