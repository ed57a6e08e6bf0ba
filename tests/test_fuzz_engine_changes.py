"""Images that change while ``segany engine run`` reads them: a file rewritten, truncated,
emptied, replaced by a folder or deleted between listing and reading, and a tar shard cut
short or deleted under the run.

The change is made by a hook on the source read (``Blob.read``), just before the engine reads
that image's bytes, so each case is deterministic (no racing threads). Each must end with the
image failed for a clear reason (or annotated from the bytes read, consistently), the run
finished with every other image annotated, ``engine verify`` clean, and a re-run of the same
command either finding the run complete or (when the list of images changed) saying so.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from engine_fixtures import SPEC, documents, scene_files

import segany.engine.sources
from segany.cli import main
from segany.engine import list_items
from segany.errors import InputError

SCENES = scene_files(3)
OTHER = scene_files(1, seed=11)[0][1]  # another picture for a rewrite
TARGET = "sa_1.jpg"


def _args(source: Path, out: Path) -> list[str]:
    return [
        "engine", "run", str(source), "-o", str(out), "--executor", "serial", "-q",
        "--points-per-side", "6", "--pred-iou-thresh", "0.5", "--stability-score-thresh", "0.7",
        "--max-pixels", str(SPEC.max_pixels), "--threads-per-worker", "1", "--shard-size", "2",
    ]  # fmt: skip


def _folder(root: Path) -> Path:
    folder = root / "in"
    folder.mkdir()
    for name, data, _ in SCENES:
        (folder / name).write_bytes(data)
    return folder


def _tar(root: Path) -> Path:
    path = root / "sa_000000.tar"
    with tarfile.open(path, "w") as tar:
        for name, data, _ in SCENES:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _replace_by_folder(p: Path) -> None:
    p.unlink()
    p.mkdir()


def _cut_tar(p: Path) -> None:  # the tar ends inside sa_1.jpg's data
    with tarfile.open(p) as tar:
        m = tar.getmember(TARGET)
    p.write_bytes(p.read_bytes()[: m.offset_data + m.size // 2])


#: id, source kind, the change made to the file read (the image, or the tar holding it), and
#: the reason's fragment (None: the image is annotated from the bytes that were read).
CASES: list[tuple[str, str, Callable[[Path], None], str | None]] = [
    ("deleted", "folder", lambda p: p.unlink(), "no such file"),
    ("truncated", "folder", lambda p: p.write_bytes(p.read_bytes()[:300]), "cannot decode"),
    ("emptied", "folder", lambda p: p.write_bytes(b""), "empty"),
    ("now text", "folder", lambda p: p.write_bytes(b"gone\n"), "not an image"),
    ("now a folder", "folder", _replace_by_folder, "cannot read"),
    ("rewritten", "folder", lambda p: p.write_bytes(OTHER), None),
    ("tar deleted", "tar", lambda p: p.unlink(), "no such file"),
    ("tar cut short", "tar", _cut_tar, "truncated tar member"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_an_image_that_changes_under_the_run(case, tmp_path, capsys, monkeypatch):
    _id, kind, change, reason = case
    source = _folder(tmp_path) if kind == "folder" else _tar(tmp_path)
    out = tmp_path / "out"
    keys = [it.key for it in list_items([str(source)])]
    read = segany.engine.sources.Blob.read
    changed: list[str] = []

    def change_then_read(blob: segany.engine.sources.Blob) -> bytes:
        is_target = blob.path.endswith(TARGET) or (kind == "tar" and blob.offset > 0)
        if is_target and not changed and _reads(blob) == TARGET:
            changed.append(blob.path)
            change(Path(blob.path))
        return read(blob)

    def _reads(blob: segany.engine.sources.Blob) -> str:
        if kind == "folder":
            return Path(blob.path).name
        with tarfile.open(blob.path) as tar:
            names = {m.offset_data: m.name for m in tar}
        return names.get(blob.offset, "")

    monkeypatch.setattr(segany.engine.sources.Blob, "read", change_then_read)
    code = main(_args(source, out))
    err = capsys.readouterr().err
    assert changed, "the hook never ran"
    monkeypatch.undo()

    rows = list(csv.DictReader((out / "errors.csv").open(encoding="utf-8")))
    docs = documents(out)
    others = sorted(name for name, _, _ in SCENES if name != TARGET)
    if kind == "tar" and reason is not None:
        # The whole tar is gone or cut: the images read after the change fail with it.
        assert [r["path"].endswith(TARGET) for r in rows][:1] == [True], rows
        assert all(n in docs or any(r["path"].endswith(n) for r in rows) for n in others)
    elif reason is not None:
        assert sorted(docs) == others
    if reason is None:  # annotated from what was read: the new picture
        assert code == 0, err
        assert rows == [] and sorted(docs) == sorted(n for n, _, _ in SCENES)
        doc = docs[TARGET]
        from segany.engine.annotate import decode_image

        h, w = decode_image(OTHER, TARGET).shape[:2]
        assert (doc["image"]["height"], doc["image"]["width"]) == (h, w)
    else:
        assert code == 1, err  # finished, with failures
        failed = [r for r in rows if r["path"].endswith(TARGET)]
        assert len(failed) == 1 and reason in failed[0]["reason"], rows
        assert "Traceback" not in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["images"] == len(SCENES)
    assert manifest["annotated"] + manifest["failed"] == len(SCENES)
    assert main(["engine", "verify", str(out)]) == 0, capsys.readouterr().err

    # A re-run of the same command.
    capsys.readouterr()
    code = main(_args(source, out))
    err = capsys.readouterr().err
    try:
        same = [it.key for it in list_items([str(source)])] == keys
    except InputError:  # the tar cut short cannot be listed any more
        same = False
    if same:
        assert code in (0, 1) and "Traceback" not in err, err
    else:  # the images changed, or cannot be listed: said in one line, nothing rewritten
        assert code == 3 and err.strip().count("\n") == 0 and "Traceback" not in err, err
        if kind == "folder":
            assert "holds an engine run over other images" in err, err
    assert main(["engine", "verify", str(out)]) == 0
    if Path(changed[0]).is_dir():
        shutil.rmtree(changed[0])
