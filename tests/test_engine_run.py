"""Engine runs on a generated collection with broken files, with the bundled model."""

from __future__ import annotations

import csv
import json
import os
import shutil
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from engine_fixtures import BAD, SPEC, annotations_only, documents, make_folder, make_tars

from segany.engine import EngineConfig, Task, WorkerSpec, run_engine
from segany.engine.check import rle_runs, stats, verify
from segany.engine.local import LocalExecutor
from segany.masks import decode_rle, encode_rle


def _run(sources: list[Path], out: Path, **kw: Any) -> dict[str, Any]:
    kw.setdefault("executor", "serial")
    kw.setdefault("spec", SPEC)
    kw.setdefault("shard_size", 3)
    return run_engine(EngineConfig([str(s) for s in sources], str(out), **kw))


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder(tmp_path_factory.mktemp("coll"), 6)


@pytest.fixture(scope="module")
def reference(collection: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "out"
    _run([collection], out)
    return out


def test_folder_run_writes_shards_manifest_errors_and_summary(reference: Path) -> None:
    summary = json.loads((reference / "summary.json").read_text())
    assert summary["images"] == 10 and summary["annotated"] == 6 and summary["failed"] == 4
    assert summary["masks"] > 0
    assert summary["masks_per_image"] == pytest.approx(summary["masks"] / 6, abs=1e-3)
    assert summary["seconds"] > 0 and summary["images_per_hour"] > 0
    manifest = json.loads((reference / "manifest.json").read_text())
    assert [s["name"] for s in manifest["shards"]] == [f"shards/0000{i}" for i in range(4)]
    assert sum(len(s["items"]) for s in manifest["shards"]) == 6
    assert not (reference / ".staging").exists()
    with open(reference / "errors.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(BAD)
    for name, words in BAD.items():
        (row,) = [r for r in rows if r["path"].endswith("bad/" + name)]
        assert words in row["reason"], row
    assert verify(reference) == []


def test_documents_are_what_the_generator_gives(reference: Path, collection: Path) -> None:
    import torch

    import segany
    from segany.formats import read_image, sa1b_document

    torch.set_num_threads(SPEC.threads)  # as in the workers: the last digits depend on it
    docs = documents(reference)
    # as the workers build it: the model's own defaults (its stability offset), then the options
    gen = segany.MaskGenerator.for_model(
        segany.load_model(), SPEC.preset, output_mode="coco_rle", **SPEC.options
    )
    image = read_image(collection / "sub1" / "sa_3.jpg")
    h, w = image.shape[:2]
    expected = sa1b_document(gen.generate(image), file_name="sa_3.jpg", width=w, height=h)
    assert docs["sa_3.jpg"]["annotations"] == json.loads(json.dumps(expected.annotations))
    assert docs["sa_3.jpg"]["image"]["width"] == w


def test_tar_shards_in_and_out_give_the_same_annotations(reference: Path, tmp_path: Path) -> None:
    tars = make_tars(tmp_path / "tars", 6, per_tar=4)
    out = tmp_path / "out"
    summary = _run(tars, out, shard_kind="tar", shard_size=4)
    assert summary["annotated"] == 6 and summary["failed"] == 4
    assert sorted(p.name for p in (out / "shards").iterdir()) == [
        "00000.tar",
        "00001.tar",
        "00002.tar",
    ]
    assert annotations_only(documents(out)) == annotations_only(documents(reference))
    assert verify(out) == []
    errors = (out / "errors.csv").read_text()
    for name in BAD:
        assert f"sa_000001.tar:{name}" in errors


def test_rerun_of_a_finished_run_does_nothing_and_other_settings_are_refused(
    reference: Path, collection: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    again = _run([collection], out)
    assert again["processed_this_run"] == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    from segany.errors import InputError

    other = WorkerSpec(options={**SPEC.options, "points_per_side": 4}, max_pixels=SPEC.max_pixels)
    with pytest.raises(InputError, match="other settings"):
        _run([collection], out, spec=other)


def test_verify_catches_corrupted_and_missing_outputs(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    shard = out / "shards" / "00001"
    victim = sorted(p for p in shard.rglob("sa_*.json"))[0]
    victim.write_text(victim.read_text()[:-40])  # truncated JSON
    problems = verify(out)
    assert any(victim.name in p and "parse" in p for p in problems), problems

    shutil.rmtree(out)
    shutil.copytree(reference, out)
    doc_path = next(p for p in out.rglob("sa_*.json") if json.loads(p.read_text())["annotations"])
    doc = json.loads(doc_path.read_text())
    h, w = doc["image"]["height"], doc["image"]["width"]
    doc["annotations"][0]["segmentation"] = encode_rle(np.ones((h, w + 1), bool))
    doc["annotations"][0]["segmentation"]["size"] = [h, w]  # stated size no longer matches
    doc_path.write_text(json.dumps(doc))
    assert any("runs add up" in p for p in verify(out))

    shutil.rmtree(out)
    shutil.copytree(reference, out)
    shutil.rmtree(out / "shards" / "00002")
    assert any("missing" in p for p in verify(out))
    (out / "manifest.json").unlink()
    assert "no manifest.json" in verify(out)[0]


def test_rle_runs_decode_the_coco_string() -> None:
    rng = np.random.default_rng(0)
    for shape in [(7, 5), (40, 33), (1, 1)]:
        mask = rng.random(shape) > 0.6
        runs = rle_runs(encode_rle(mask)["counts"])
        assert sum(runs) == mask.size
        flat = mask.flatten(order="F")  # COCO RLE is column-major
        expected, value, n = [], False, 0
        for v in flat:
            if v != value:
                expected.append(n)
                value, n = v, 0
            n += 1
        expected.append(n)
        assert runs == expected


def test_stats_report_masks_per_image_and_sizes(reference: Path) -> None:
    s = stats(reference)
    assert s["images"] == 6
    assert sum(b["count"] for b in s["masks_per_image_histogram"]) == 6
    assert sum(b["count"] for b in s["relative_mask_size_histogram"]) == s["masks"]
    assert 0 < s["relative_mask_size"]["median"] <= 1
    assert sum(s["coco_area"].values()) == s["masks"]


def _drop_half(folder: Path) -> dict[str, dict[str, Any]]:
    """Keep every other ground-truth mask in the sidecar JSONs; return what was kept."""
    kept = {}
    for path in sorted(folder.rglob("sa_*.json")):
        doc = json.loads(path.read_text())
        doc["annotations"] = doc["annotations"][::2]
        path.write_text(json.dumps(doc))
        kept[doc["image"]["file_name"]] = doc
    return kept


def test_semi_automatic_keeps_given_masks_and_adds_only_where_nothing_is(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, 4, with_json=True)
    given = _drop_half(folder)
    out = tmp_path / "out"
    _run([folder], out, mode="semi")
    docs = documents(out)
    added = 0
    for name, doc in docs.items():
        old = given[name]["annotations"]
        anns = doc["annotations"]
        assert json.dumps(anns[: len(old)]) == json.dumps(old)  # byte-identical records
        assert doc["image"] == given[name]["image"]
        h, w = doc["image"]["height"], doc["image"]["width"]
        union = np.zeros((h, w), bool)
        for a in old:
            union |= decode_rle(a["segmentation"])
        ids = [a["id"] for a in anns]
        assert len(set(ids)) == len(ids)
        for a in anns[len(old) :]:
            assert a["origin"] == "automatic"
            x, y = (int(v) for v in a["point_coords"][0])
            assert not union[y, x]
            mask = decode_rle(a["segmentation"])
            assert (mask & union).sum() <= 0.5 * mask.sum()
            added += 1
    assert added > 0
    # The raw shard file holds the given records' text unchanged.
    (path,) = out.rglob("sa_0.json")
    raw = path.read_text()
    for a in given["sa_0.jpg"]["annotations"]:
        assert json.dumps(a) in raw
    assert verify(out) == []


def test_semi_automatic_from_a_coco_file(tmp_path: Path) -> None:
    from segany.formats import coco_dataset, write_coco
    from segany.formats.sa1b import parse_sa1b

    folder = make_folder(tmp_path, 2, with_json=True)
    given = _drop_half(folder)
    dataset = coco_dataset([parse_sa1b(given[k]) for k in sorted(given)])
    for im, k in zip(dataset["images"], sorted(given), strict=True):
        im["file_name"] = k
    write_coco(tmp_path / "given.json", dataset)
    for p in folder.rglob("sa_*.json"):
        p.unlink()  # only the COCO file is a source of existing masks now
    out = tmp_path / "out"
    _run([folder], out, mode="semi", existing=str(tmp_path / "given.json"))
    docs = documents(out)
    coco_anns = {a["id"]: a for a in dataset["annotations"]}
    for name, doc in docs.items():
        old = [a for a in doc["annotations"] if "origin" not in a]
        assert len(old) == len(given[name]["annotations"])
        for a in old:
            assert a == coco_anns[a["id"]]


# ----- worker processes ----------------------------------------------------------------------


def _fake_annotator(marker: str, spec: WorkerSpec) -> Any:
    """A model-free worker that dies on images named die_*: die_once only the first time."""

    def annotate(task: Task) -> dict[str, Any]:
        flag = Path(marker) / (task.key.replace("/", "_") + ".seen")
        if "die_always" in task.key or ("die_once" in task.key and not flag.exists()):
            flag.touch()
            os._exit(9)
        info = {"image_id": task.index, "width": 1, "height": 1, "file_name": task.file_name}
        return {
            "index": task.index,
            "key": task.key,
            "ok": True,
            "doc": {"image": info, "annotations": []},
        }

    return annotate


def test_a_dead_worker_is_replaced_and_its_image_retried_once(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.png", "die_once.png", "die_always.png", "b.png", "c.png"):
        (src / name).write_bytes(b"bytes")
    (tmp_path / "marks").mkdir()
    executor = LocalExecutor(SPEC, 2, factory=partial(_fake_annotator, str(tmp_path / "marks")))
    out = tmp_path / "out"
    summary = run_engine(EngineConfig([str(src)], str(out), spec=SPEC), executor=executor)
    assert summary["annotated"] == 4 and summary["failed"] == 1
    rows = (out / "errors.csv").read_text().splitlines()
    assert len(rows) == 2 and "die_always.png" in rows[1] and "died twice" in rows[1]
    assert verify(out) == []


def test_local_workers_give_the_serial_results(
    reference: Path, collection: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    summary = _run([collection], out, executor="local", workers=2)
    assert summary["workers"] == 2 and summary["failed"] == 4
    assert annotations_only(documents(out)) == annotations_only(documents(reference))
    assert verify(out) == []


# ----- kill -9 and resume ---------------------------------------------------------------------


def _results_on_disk(out: Path) -> int:
    staged = len(list((out / ".staging").rglob("[0-9]*.json"))) if out.exists() else 0
    final = 0
    for index in (out / "shards").glob("*/index.json"):
        data = json.loads(index.read_text())
        final += len(data["items"]) + len(data["failed"])
    return staged + final


def _assert_nothing_partial(out: Path) -> None:
    """Every visible (non-hidden) file under shards/ belongs to a complete shard."""
    shards = out / "shards"
    if not shards.exists():
        return
    for shard in shards.iterdir():
        if shard.name.startswith("."):
            continue  # a temporary name: invisible to readers, removed by the next run
        index = json.loads((shard / "index.json").read_text())
        for entry in index["items"]:
            json.loads((shard / entry["file"]).read_text())


@pytest.mark.slow
def test_sigkill_at_several_points_then_resume_gives_the_complete_set(
    collection: Path, reference: Path, tmp_path: Path
) -> None:
    import signal
    import subprocess
    import sys
    import time

    import psutil
    from engine_fixtures import MAX_PIXELS

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "segany", "engine", "run", str(collection), "-o", str(out)]
    cmd += ["--points-per-side", "6", "--pred-iou-thresh", "0.5"]
    cmd += ["--stability-score-thresh", "0.7", "--max-pixels", str(MAX_PIXELS)]
    cmd += ["--shard-size", "3", "-w", "1", "--threads-per-worker", "1", "-q"]
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    # Kill after 1 result (a shard half staged), after 4 (one shard final), after 8 (two
    # final, the third in progress); the first kill takes only the driver: its workers must
    # notice and exit by themselves.
    for stop_after, whole_group in ((1, False), (4, True), (8, True)):
        proc = subprocess.Popen(cmd, env=env, start_new_session=True)
        deadline = time.monotonic() + 600
        while _results_on_disk(out) < stop_after and proc.poll() is None:
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be killed"
        children = psutil.Process(proc.pid).children(recursive=True)
        if whole_group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        proc.wait()
        _, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, f"worker processes outlived the driver: {alive}"
        _assert_nothing_partial(out)
        assert not (out / "manifest.json").exists()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr  # 1: finished, some inputs failed
    assert verify(out) == []
    assert annotations_only(documents(out)) == annotations_only(documents(reference))
    assert not (out / ".staging").exists()
    assert not [p for p in out.rglob(".*") if p.name != ".staging"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processed_this_run"] < 10  # the last run only did what was left


class _InterruptedAfter:
    """The serial executor, with Ctrl-C arriving after ``n`` results."""

    def __init__(self, n: int) -> None:
        from segany.engine.local import SerialExecutor

        self.inner, self.n = SerialExecutor(SPEC), n

    def run(self, tasks: Any, on_result: Any) -> None:
        count = 0

        def counted(result: dict[str, Any]) -> None:
            nonlocal count
            on_result(result)
            count += 1
            if count == self.n:
                raise KeyboardInterrupt

        self.inner.run(tasks, counted)


def test_ctrl_c_then_resume_cleans_leftovers_and_finishes(
    collection: Path, reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    config = EngineConfig([str(collection)], str(out), spec=SPEC, shard_size=3)
    with pytest.raises(KeyboardInterrupt):
        run_engine(config, executor=_InterruptedAfter(5))
    assert _results_on_disk(out) == 5 and not (out / "manifest.json").exists()
    # What a kill in the middle of a write leaves: temporary names only.
    (out / "shards" / ".00002.tmp-12345" / "sub0").mkdir(parents=True)
    (out / "shards" / ".00003.tar.abcd.tmp").write_bytes(b"half a tar")
    (out / ".staging" / "00001" / ".6.json.xyz.tmp").write_text('{"ind')
    summary = run_engine(config)
    assert summary["processed_this_run"] == 5
    assert verify(out) == []
    assert annotations_only(documents(out)) == annotations_only(documents(reference))
    assert not [p for p in out.rglob(".*")]


# ----- workers write their own output ---------------------------------------------------------


def test_workers_stage_and_commit_their_own_shards(
    reference: Path, collection: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from segany.engine.output import Layout

    calls: list[str] = []
    for name in ("stage", "finalise"):
        original = getattr(Layout, name)

        def counted(self: Any, *a: Any, _name: str = name, _f: Any = original) -> Any:
            calls.append(_name)
            return _f(self, *a)

        monkeypatch.setattr(Layout, name, counted)
    out = tmp_path / "out"
    _run([collection], out)  # the serial executor runs the same worker as the others
    assert calls == []  # the driver wrote no result and built no shard: bookkeeping only
    assert verify(out) == []
    assert annotations_only(documents(out)) == annotations_only(documents(reference))


def test_a_worker_that_cannot_see_the_output_folder_says_so(tmp_path: Path) -> None:
    from segany.engine.shards import OutputNotVisibleError, OutputSpec, write_marker
    from segany.engine.worker import ShardWorker

    spec = OutputSpec(str(tmp_path / "out"), items=1, shard_size=1, token="run-a")
    with pytest.raises(OutputNotVisibleError, match=r"not visible.*marker.*is missing"):
        ShardWorker(spec, SPEC, annotator=lambda s: None)
    write_marker(OutputSpec(spec.out, items=1, shard_size=1, token="run-b"))
    with pytest.raises(OutputNotVisibleError, match="belongs to another run"):
        ShardWorker(spec, SPEC, annotator=lambda s: None)
    write_marker(spec)
    ShardWorker(spec, SPEC, annotator=lambda s: None)  # the same folder: fine


def test_two_workers_committing_the_same_shard_leave_one_shard(tmp_path: Path) -> None:
    from segany.engine.shards import OutputSpec, commit_shard, is_final, stage_record

    spec = OutputSpec(str(tmp_path / "out"), items=2, shard_size=2)
    for i in (1, 2):
        doc = {"image": {"image_id": i, "width": 1, "height": 1, "file_name": f"{i}.jpg"}}
        record = {"index": i, "key": f"{i}.jpg", "member": f"{i}.json", "source": "s"}
        stage_record(spec, {**record, "ok": True, "doc": {**doc, "annotations": []}})
    first = commit_shard(spec, 0)
    stage_record(spec, {**record, "ok": True, "doc": {**doc, "annotations": []}})  # late twin
    second = commit_shard(spec, 0)  # a second worker found it complete too: no second shard
    assert is_final(spec, 0) and second == first
    assert [e["index"] for e in first["items"]] == [1, 2]
    assert [p.name for p in (tmp_path / "out" / "shards").iterdir()] == ["00000"]
