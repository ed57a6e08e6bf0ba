"""Engine shards on a full disk: ``segany engine run`` whose output disk fills up mid-run.

The run must stop with one line saying the disk is full, leave no half-written shard or
manifest where a finished one belongs, and a re-run after space is freed must finish with
every image exactly once (``segany engine verify`` clean). The ``disk`` fixture (a small tmpfs
or a simulated full disk) comes from ``test_fuzz_disk``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from engine_fixtures import SPEC, documents, scene_files
from test_fuzz_disk import _one_line, _temporary_files, disk  # noqa: F401 - the fixture

from segany.cli import main

SCENES = 4


def _args(images: Path, out: Path, shard_format: str, executor: str = "serial") -> list[str]:
    return [
        "engine", "run", str(images), "-o", str(out), "--executor", executor, "-q",
        "--points-per-side", "6", "--pred-iou-thresh", "0.5", "--stability-score-thresh", "0.7",
        "--max-pixels", str(SPEC.max_pixels), "--threads-per-worker", "1", "--workers", "1",
        "--shard-size", "1", "--shard-format", shard_format,
    ]  # fmt: skip


def _finished_shards_are_whole(out: Path, shard_format: str) -> int:
    """Each shard in place is whole (its index lists one readable document); their count."""
    from segany.engine.shards import SHARD_INDEX, read_member

    shards = sorted((out / "shards").glob("0*")) if (out / "shards").is_dir() else []
    for shard in shards:
        assert shard.suffix == (".tar" if shard_format == "tar" else ""), shard
        index = json.loads(read_member(shard, SHARD_INDEX))
        for entry in index["items"]:
            json.loads(read_member(shard, entry["file"]))
    return len(shards)


@pytest.mark.parametrize(
    "shard_format, executor", [("folder", "serial"), ("tar", "serial"), ("tar", "local")]
)
def test_engine_run_stops_on_a_full_disk_and_finishes_after(
    disk,  # noqa: F811 - the fixture imported above
    tmp_path,
    capsys,
    shard_format,
    executor,
):
    if executor == "local" and disk.kind == "simulated":
        pytest.skip("the simulated disk is a patch in this process; worker processes need tmpfs")
    images = tmp_path / "in"
    images.mkdir()
    for name, data, _record in scene_files(SCENES):
        (images / name).write_bytes(data)
    # What a run needs on this disk, measured on it; then room for about half of it.
    assert main(_args(images, disk.root / "dry", shard_format, executor)) == 0
    need = disk.used()
    shutil.rmtree(disk.root / "dry")
    capsys.readouterr()
    disk.leave(need // 2)

    out = disk.root / "out"
    code = main(_args(images, out, shard_format, executor))
    line = _one_line(capsys.readouterr().err)
    assert code == 6, line
    assert "no space left on device" in line and "run the same command" in line, line
    assert not (out / "manifest.json").exists() and not (out / "summary.json").exists()
    assert not _temporary_files(disk.root)
    if (out / "shards").is_dir():  # no shard under construction left beside the finished ones
        assert not [p.name for p in (out / "shards").iterdir() if p.name.startswith(".")]
    assert 0 < _finished_shards_are_whole(out, shard_format) < SCENES  # filled mid-run

    disk.free()
    assert main(_args(images, out, shard_format, executor)) == 0, capsys.readouterr().err
    docs = documents(out)
    assert sorted(docs) == sorted(name for name, _, _ in scene_files(SCENES))
    assert json.loads((out / "manifest.json").read_text())["images"] == SCENES
    assert main(["engine", "verify", str(out)]) == 0, capsys.readouterr().err
    assert not _temporary_files(disk.root)


def test_a_ray_worker_on_a_full_disk_stops_the_run_saying_so():
    """A Ray actor whose write meets ENOSPC: the run stops with the full-disk error (the CLI
    turns it into its one line), not a worker failure, and the image is not failed."""
    exceptions = pytest.importorskip("ray.exceptions")
    import errno

    from segany.engine.ray_executor import _Run, _Slot

    full = OSError(errno.ENOSPC, "No space left on device")

    class Ray:
        def get(self, ref):
            raise exceptions.RayTaskError("run", "Traceback ...", full)

    run = object.__new__(_Run)
    run.ray, run.errors, run.on_result = Ray(), exceptions, None
    slot = _Slot(actor=None, loading="loaded", since=0.0, info={"node": "n"})
    with pytest.raises(OSError) as caught:
        run.answer(slot, "task")
    assert caught.value.errno == errno.ENOSPC
