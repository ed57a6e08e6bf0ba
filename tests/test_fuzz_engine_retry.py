"""A re-run retries images that failed because they changed while the run read them, and
keeps reporting (without retrying) images that are bad in themselves (issue 37).

The change is made by a hook on ``Blob.read`` (as in ``test_fuzz_engine_changes``), so each case
is deterministic. A changed image is not a bad image: once its file is whole again, the re-run
of the same command annotates it as a clean run would. A corrupt image, whose bytes stayed the
same, stays in ``errors.csv`` and is not decoded again, until its file changes.
"""

from __future__ import annotations

import csv
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from engine_fixtures import SPEC, documents, scene_files

import segany.engine.sources
from segany.cli import main
from segany.cli.common import EXIT_INTERRUPTED
from segany.engine.annotate import CHANGED_NOTE

SCENES = scene_files(3)
TARGET = "sa_1.jpg"
WHOLE = dict((name, data) for name, data, _ in SCENES)[TARGET]


def _args(source: Path, out: Path, shard_size: int = 2, executor: str = "serial") -> list[str]:
    return [
        "engine", "run", str(source), "-o", str(out), "--executor", executor, "-q",
        "--points-per-side", "6", "--pred-iou-thresh", "0.5", "--stability-score-thresh", "0.7",
        "--max-pixels", str(SPEC.max_pixels), "--threads-per-worker", "1",
        "--shard-size", str(shard_size),
    ]  # fmt: skip


def _folder(root: Path, name: str = "in") -> Path:
    folder = root / name
    folder.mkdir()
    for scene, data, _ in SCENES:
        (folder / scene).write_bytes(data)
    return folder


def _tar(root: Path) -> Path:
    path = root / "sa_000000.tar"
    with tarfile.open(path, "w") as tar:
        for scene, data, _ in SCENES:
            info = tarfile.TarInfo(scene)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _errors(out: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((out / "errors.csv").open(encoding="utf-8")))


def _rerun(capsys, argv: list[str]) -> tuple[int, dict]:
    """The exit code and the run's --json summary (this run's counts, unlike summary.json,
    which keeps the run that completed the folder)."""
    capsys.readouterr()
    code = main([*argv, "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out)


def _run_with_hook(
    monkeypatch, capsys, argv: list[str], on_target: Callable[[Path], None], after=None
) -> int:
    """Run ``argv`` with ``on_target(file)`` called just before the target image's bytes are
    read (the file: the image, or the tar holding it); ``after(file)`` before the next read."""
    read = segany.engine.sources.Blob.read
    seen: list[str] = []
    members: dict[str, dict[int, str]] = {}  # a tar's offsets -> names, read before any change

    def hooked(blob: segany.engine.sources.Blob) -> bytes:
        if blob.size is None:
            name = Path(blob.path).name
        else:
            if blob.path not in members:
                with tarfile.open(blob.path) as tar:
                    members[blob.path] = {m.offset_data: m.name for m in tar}
            name = members[blob.path].get(blob.offset, "")
        if name == TARGET and not seen:
            seen.append(blob.path)
            on_target(Path(blob.path))
        elif seen and after is not None and name != TARGET:
            after(Path(blob.path))
        return read(blob)

    monkeypatch.setattr(segany.engine.sources.Blob, "read", hooked)
    try:
        code = main(argv)
    finally:
        monkeypatch.undo()
        capsys.readouterr()
    assert seen, "the hook never ran"
    return code


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:300])


@pytest.fixture(scope="module")
def clean_docs(tmp_path_factory) -> dict:
    """What a run that nothing disturbed writes for the scenes."""
    root = tmp_path_factory.mktemp("clean")
    assert main(_args(_folder(root), root / "out")) == 0
    return documents(root / "out")


TAR_WITH_IMAGES = ("--shard-format", "tar", "--with-images")


@pytest.mark.parametrize(
    "kind, executor, extra",
    [
        ("folder", "serial", ()),
        ("tar", "serial", ()),
        # local: the stamp travels with the task to a worker process, which stages the failure
        ("folder", "local", ()),
        # the reopened shard is a tar holding the kept image's bytes, which are staged again
        ("folder", "serial", TAR_WITH_IMAGES),
    ],
)
def test_an_image_that_changed_is_annotated_by_the_rerun(
    kind, executor, extra, clean_docs, tmp_path, capsys, monkeypatch
):
    source = _folder(tmp_path) if kind == "folder" else _tar(tmp_path)
    out = tmp_path / "out"
    args = [*_args(source, out, executor=executor), *extra]
    whole = source.read_bytes() if kind == "tar" else None

    def cut(path: Path) -> None:  # the image (or its tar) cut short as the run reads it
        if kind == "folder":
            _truncate(path)
        else:
            with tarfile.open(path) as tar:
                m = tar.getmember(TARGET)
            path.write_bytes(path.read_bytes()[: m.offset_data + m.size // 2])

    def restore(path: Path) -> None:  # the copy finished: the file is whole again
        path.write_bytes(WHOLE if kind == "folder" else whole)

    # In a folder the image is restored after the run; a tar is restored before its next
    # member is read (a cut tar cannot be listed again by the re-run).
    code = _run_with_hook(monkeypatch, capsys, args, cut, after=restore if kind == "tar" else None)
    assert code == 1
    (row,) = [r for r in _errors(out) if r["path"].endswith(TARGET)]
    assert row["reason"].endswith(CHANGED_NOTE), row
    if kind == "folder":
        restore(source / TARGET)

    code, summary = _rerun(capsys, args)
    assert code == 0 and _errors(out) == []
    assert (summary["failed"], summary["annotated"], summary["processed_this_run"]) == (0, 3, 1)
    docs = documents(out)
    assert docs == {name: clean_docs[name] for name in docs} and len(docs) == 3
    assert main(["engine", "verify", str(out)]) == 0, capsys.readouterr().err
    if extra:
        with tarfile.open(out / "shards" / "00000.tar") as tar:
            images = {Path(n).name: tar.extractfile(n).read() for n in tar.getnames()}
        assert images["sa_0.jpg"] == (source / "sa_0.jpg").read_bytes()
        assert images[TARGET] == WHOLE


def test_a_corrupt_image_stays_failed_until_its_file_changes(tmp_path, capsys):
    source = _folder(tmp_path)
    (source / "bad.jpg").write_bytes(WHOLE[: len(WHOLE) // 3])  # corrupt from the start
    out = tmp_path / "out"
    assert main(_args(source, out)) == 1
    (row,) = _errors(out)
    assert row["path"].endswith("bad.jpg") and "cannot decode" in row["reason"]
    assert CHANGED_NOTE not in row["reason"]  # it did not change while read

    # The same bytes: nothing is decoded again, the failure is still reported.
    code, summary = _rerun(capsys, _args(source, out))
    assert code == 1 and summary["processed_this_run"] == 0 and _errors(out) == [row]

    # Replaced by a whole image: the next run retries it, and only it.
    (source / "bad.jpg").write_bytes(WHOLE)
    code, summary = _rerun(capsys, _args(source, out))
    assert code == 0
    assert (summary["failed"], summary["annotated"], summary["processed_this_run"]) == (0, 4, 1)
    assert main(["engine", "verify", str(out)]) == 0


def test_an_image_left_broken_after_changing_is_tried_once_more(tmp_path, capsys, monkeypatch):
    source = _folder(tmp_path)
    out = tmp_path / "out"
    assert _run_with_hook(monkeypatch, capsys, _args(source, out), _truncate) == 1
    # Still cut short: the re-run tries it again (it changed as it was read), and it fails
    # again, now as a bad image (stable bytes): the run after does nothing more.
    assert main(_args(source, out)) == 1
    (row,) = _errors(out)
    assert "cannot decode" in row["reason"] and CHANGED_NOTE not in row["reason"], row
    code, summary = _rerun(capsys, _args(source, out))
    assert code == 1 and summary["processed_this_run"] == 0 and _errors(out) == [row]
    assert main(["engine", "verify", str(out)]) == 0, capsys.readouterr().err


def test_a_staged_failure_of_a_changed_image_is_retried(clean_docs, tmp_path, capsys, monkeypatch):
    # The run stops (Ctrl-C) after the changed image's failure was staged, before its shard
    # was built: the re-run, with the file whole again, annotates it.
    source = _folder(tmp_path)
    out = tmp_path / "out"

    def interrupt(_path: Path) -> None:
        raise KeyboardInterrupt

    argv = _args(source, out, shard_size=10)
    code = _run_with_hook(monkeypatch, capsys, argv, _truncate, after=interrupt)
    assert code == EXIT_INTERRUPTED and not (out / "shards").exists()
    staged = [json.loads(p.read_text()) for p in (out / ".staging").rglob("*.json")]
    assert [r["ok"] for r in staged if r.get("key") == TARGET] == [False]
    (source / TARGET).write_bytes(WHOLE)
    assert main(_args(source, out, shard_size=10)) == 0, capsys.readouterr().err
    assert _errors(out) == [] and documents(out) == clean_docs
    assert main(["engine", "verify", str(out)]) == 0
