"""Full disks: a folder run's outputs, the embedding cache, training checkpoints and converted
weights on a file system that fills up mid-run.

Each case must end with one clear line (or, for the cache, one warning and a finished call),
nothing half-written in place (no temporary file, no partial set of an image's files, no
checkpoint whose weights and state disagree), and a re-run after space is freed completes.

Each case runs on two disks:
- ``tmpfs``: a real small file system mounted for the test (needs the right to mount, as root
  has on the CI image); the space is used up by a filler file, freed by deleting it;
- ``simulated``: a plain folder whose writes fail with ENOSPC once it holds more than a budget.
  The failure is injected in ``segany.atomic``'s flush step, the last step of every segany
  writer before its rename: delayed-allocation file systems (ext4, XFS) report a full disk
  there. It runs everywhere, so the cases are never skipped silently.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TRAIN_SMALL, seeded_model
from PIL import Image

import segany.atomic
from segany.checkpoints import load_model, save_model
from segany.cli import main
from segany.formats import label_map, read_label_map, read_mask_folder, read_sa1b
from segany.inference.predictor import Predictor
from segany.train.synth import SynthConfig, write_sa1b


class Disk:
    """A folder on a disk that can be filled (``leave``) and emptied (``free``)."""

    def __init__(self, root: Path, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root, self.kind = root, kind
        self.filler = root.parent / f"{root.name}.filler" if kind == "simulated" else root / "f"
        self.budget: int | None = None
        if kind == "simulated":
            flush = segany.atomic._flush

            def full_disk_flush(tmp: str | os.PathLike[str]) -> None:
                inside = Path(tmp).resolve().is_relative_to(self.root.resolve())
                if inside and self.budget is not None and self.used() > self.budget:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                flush(tmp)

            monkeypatch.setattr(segany.atomic, "_flush", full_disk_flush)

    def used(self) -> int:
        return sum(p.stat().st_blocks * 512 for p in self.root.rglob("*") if p.is_file())

    def leave(self, room: int) -> None:
        """Let only ``room`` more bytes be written."""
        if self.kind == "simulated":
            self.budget = self.used() + room
            return
        stat = os.statvfs(self.root)
        free = stat.f_bavail * stat.f_frsize
        with open(self.filler, "wb") as f:
            os.posix_fallocate(f.fileno(), 0, max(free - room, 4096))

    def free(self) -> None:
        self.budget = None
        self.filler.unlink(missing_ok=True)


def _mount_tmpfs(where: Path) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(where)], capture_output=True
    )
    return done.returncode == 0


@pytest.fixture(params=["tmpfs", "simulated"])
def disk(request, tmp_path, monkeypatch) -> Iterator[Disk]:
    root = tmp_path / "disk"
    root.mkdir()
    if request.param == "tmpfs" and not _mount_tmpfs(root):
        pytest.skip("cannot mount a tmpfs here (needs root); the simulated disk runs instead")
    try:
        yield Disk(root, request.param, monkeypatch)
    finally:
        if request.param == "tmpfs":
            subprocess.run(["umount", "-l", str(root)], check=False)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "small.safetensors"
    return save_model(seeded_model(), path)


def _cli(capsys, *argv: object) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def _temporary_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(segany.atomic.TEMP_SUFFIX)]


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# --------------------------------------------------------------------------------------------
# a folder run

STEMS = ("a", "b", "c", "d")
OUTPUTS = ["--masks", "--label-map", "--polygons", "--overlay", "--coco"]
KEEP_ALL = ["--points-per-side", "2", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]


def _whole_or_absent(out: Path, stem: str) -> bool:
    """True when the image's set is whole, False when none of it is there; fails on a mix."""
    parts = [out / stem, out / f"{stem}_labels.png", out / f"{stem}.geojson"]
    parts.append(out / f"{stem}_overlay.png")
    if not (out / f"{stem}.json").exists():
        assert not any(p.exists() for p in parts), (stem, [p for p in parts if p.exists()])
        return False
    masks = read_sa1b(out / f"{stem}.json").masks()
    folder_masks, rows = read_mask_folder(out / stem)
    assert len(rows) == len(masks) == len(list((out / stem).glob("*.png")))
    assert np.array_equal(folder_masks, masks)
    assert np.array_equal(read_label_map(out / f"{stem}_labels.png"), label_map(masks))
    assert json.loads((out / f"{stem}.geojson").read_text())["features"] is not None
    assert Image.open(out / f"{stem}_overlay.png").size == (masks.shape[2], masks.shape[1])
    return True


def test_folder_run_stops_on_a_full_disk_and_finishes_after(disk, model_file, tmp_path, capsys):
    images = tmp_path / "in"
    images.mkdir()
    rng = np.random.default_rng(0)
    for stem in STEMS:
        Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(
            images / f"{stem}.png"
        )
    argv = ["auto", images, "-m", model_file, *OUTPUTS, *KEEP_ALL, "-q"]
    # What the run needs on this disk, measured on it; then room for about 1.5 images.
    assert _cli(capsys, *argv, "-o", disk.root / "dry")[0] == 0
    need = disk.used()
    shutil.rmtree(disk.root / "dry")
    disk.leave(need * 3 // 8)

    out = disk.root / "out"
    code, err = _cli(capsys, *argv, "-o", out)
    line = _one_line(err)
    assert code == 6, err
    assert "no space left on device while writing to" in line and "run the same command" in line
    assert not _temporary_files(disk.root)
    assert not [p for p in (out / ".segany").rglob("*") if p.is_file() and p.suffix != ".json"]
    done = [stem for stem in STEMS if _whole_or_absent(out, stem)]
    assert 0 < len(done) < len(STEMS), done  # the disk filled mid-run

    disk.free()
    code, err = _cli(capsys, *argv, "-o", out)
    assert code == 0, err
    assert all(_whole_or_absent(out, stem) for stem in STEMS)
    assert len(json.loads((out / "coco_instances.json").read_text())["images"]) == len(STEMS)
    assert not _temporary_files(disk.root)


# --------------------------------------------------------------------------------------------
# the embedding cache


def test_embedding_cache_on_a_full_disk_warns_and_predicts(disk):
    model = seeded_model()
    image = np.random.default_rng(1).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    plain = Predictor(model, cache=False)
    plain.set_image(image)
    want = plain.predict(point_coords=[[5, 5]], point_labels=[1]).logits

    cache = disk.root / "cache"
    cache.mkdir()
    disk.leave(0)
    full = Predictor(model, cache=cache)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        full.set_image(image)
    said = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(said) == 1 and "cannot store an entry" in said[0], said
    assert np.array_equal(full.predict(point_coords=[[5, 5]], point_labels=[1]).logits, want)
    assert not list(cache.iterdir())  # nothing half-written

    disk.free()
    Predictor(model, cache=cache).set_image(image)
    assert len(list(cache.iterdir())) == 1
    again = Predictor(model, cache=cache)
    key = again.disk_cache.key(image, model, again.precision)
    assert again.disk_cache.get(key) is not None


# --------------------------------------------------------------------------------------------
# training checkpoints


@pytest.mark.slow
def test_training_checkpoint_on_a_full_disk_keeps_the_last_one(disk, tmp_path, capsys):
    data = tmp_path / "data"
    write_sa1b(data, 2, seed=0, cfg=SynthConfig(long_side=64, min_short_side=48))
    start = save_model(seeded_model(TRAIN_SMALL), tmp_path / "start.safetensors")
    run = disk.root / "run"
    argv = ["train", data, "-m", start, "-o", run, "--batch-size", "1", "--rounds", "1"]
    argv += ["--ckpt-every", "1", "--log-every", "100", "-q"]
    assert _cli(capsys, *argv, "--steps", "1")[0] == 0
    state = json.loads((run / "checkpoint.state.json").read_text())
    assert state["step"] == 1
    weights = load_model(run / "checkpoint.safetensors").state_dict()

    disk.leave(disk.used() // 4)  # a new checkpoint needs a full set beside the old one
    code, err = _cli(capsys, *argv, "--steps", "3", "--resume")
    line = _one_line(err)
    assert code == 6 and "no space left on device" in line and "--resume" in line, err
    assert not _temporary_files(disk.root)
    # The previous checkpoint, whole: its weights and its state still agree (step 1).
    assert json.loads((run / "checkpoint.state.json").read_text())["step"] == 1
    kept = load_model(run / "checkpoint.safetensors").state_dict()
    assert all(np.array_equal(kept[k].numpy(), weights[k].numpy()) for k in weights)

    disk.free()
    code, err = _cli(capsys, *argv, "--steps", "3", "--resume")
    assert code == 0, err
    assert json.loads((run / "checkpoint.state.json").read_text())["step"] == 3
    assert not _temporary_files(disk.root)


# --------------------------------------------------------------------------------------------
# converted weights


@pytest.mark.parametrize("name", ["w.safetensors", "w.pth", "hf_folder"])
def test_convert_onto_a_full_disk_writes_nothing(disk, model_file, capsys, name):
    disk.leave(model_file.stat().st_size // 2)
    dst = disk.root / name
    code, err = _cli(capsys, "convert", model_file, dst)
    line = _one_line(err)
    assert code == 6 and "no space left on device" in line, err
    assert not dst.exists() and not _temporary_files(disk.root)
    disk.free()
    assert _cli(capsys, "convert", model_file, dst)[0] == 0
    want, got = load_model(model_file).state_dict(), load_model(dst).state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


# --------------------------------------------------------------------------------------------
# a read-only output folder


@pytest.fixture
def read_only(tmp_path) -> Iterator[Path]:
    """A folder no file can be created in: a read-only tmpfs (root), else a 0555 folder (root
    ignores permissions, so that needs a non-root user)."""
    where = tmp_path / "ro"
    where.mkdir()
    if _mount_tmpfs(where):
        subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
        try:
            yield where
        finally:
            subprocess.run(["umount", "-l", str(where)], check=False)
    elif os.geteuid() != 0:
        where.chmod(0o555)
        yield where
        where.chmod(0o755)
    else:
        pytest.skip("root without the right to mount: no folder is read-only to it")


@pytest.mark.parametrize("command", ["auto", "segment", "convert", "train"])
def test_read_only_output_is_one_line_before_any_work(
    read_only, model_file, tmp_path, capsys, command
):
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(image)
    out = read_only / "out"
    argv = {
        "auto": ["auto", image, "-o", out, "-m", model_file],
        "segment": ["segment", image, "-p", "3,3", "-o", out, "-m", model_file],
        "convert": ["convert", model_file, out / "w.safetensors"],
        "train": ["train", tmp_path, "-m", model_file, "-o", out],
    }[command]
    code, err = _cli(capsys, *argv)
    line = _one_line(err)
    assert code == 6 and f"cannot write in {read_only} (read-only file system" in line, err


# --------------------------------------------------------------------------------------------
# the annotation app


def test_app_on_a_full_disk_answers_507_and_leaves_no_partial_export(disk):
    pytest.importorskip("fastapi", reason="the server extra is part of the dev extra")
    from fastapi.testclient import TestClient

    from segany.masks import encode_rle
    from segany.server import ServerSettings, create_app
    from tests.server_fixtures import LIMITS, coins_png, scene_png

    app = create_app(ServerSettings(project_dir=disk.root / "p", **LIMITS), model=load_model())
    client = TestClient(app, raise_server_exceptions=False)
    image = client.post("/api/images", files={"file": ("coins.png", coins_png(), "image/png")})
    image = image.json()
    mask = np.zeros((image["height"], image["width"]), bool)
    for row in range(0, 200, 10):  # enough masks that every export needs a few pages
        mask[row : row + 5, 20:300] = True
        body = {"rle": encode_rle(mask), "origin": "clicks", "label": f"c{row}"}
        assert client.post(f"/api/images/{image['id']}/masks", json=body).status_code == 201
    exports = disk.root / "p" / "exports"

    disk.leave(0)
    for fmt in ("sa1b", "coco", "yolo", "png"):
        r = client.post("/api/export", json={"format": fmt})
        assert r.status_code == 507 and "disk is full" in r.json()["detail"], (fmt, r.text)
    r = client.post("/api/images", files={"file": ("scene.png", scene_png(), "image/png")})
    assert r.status_code == 507, r.text
    body = {"rle": encode_rle(~mask), "origin": "clicks"}
    r = client.post(f"/api/images/{image['id']}/masks", json=body)
    assert r.status_code in (201, 507), r.text  # SQLite may still fit a row in its pages
    assert not any(exports.iterdir()) and not _temporary_files(disk.root)
    assert len(client.get("/api/images").json()["images"]) == 1

    disk.free()
    for fmt in ("sa1b", "coco", "yolo", "png"):
        r = client.post("/api/export", json={"format": fmt})
        assert r.status_code == 200, r.text
        assert all((disk.root / "p" / f).is_file() for f in r.json()["files"])
    r = client.post("/api/images", files={"file": ("scene.png", scene_png(), "image/png")})
    assert r.status_code == 201, r.text
