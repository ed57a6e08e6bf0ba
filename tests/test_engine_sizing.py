"""``--workers auto`` and the memory check of an explicit count (engine/sizing.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from engine_fixtures import SPEC, scene_files

from segany.engine import EngineConfig, WorkerSpec, run_engine
from segany.engine import run as engine_run
from segany.engine.sizing import (
    GiB,
    NodeResources,
    model_bytes,
    parse_size,
    parse_workers,
    size_for,
    size_workers,
)
from segany.errors import InputError

MiB = 2**20


@pytest.mark.parametrize(
    ("given", "expected"),
    [("auto", "auto"), (" AUTO ", "auto"), ("3", 3), ("+2", 2), (1, 1), (12, 12)],
)
def test_worker_counts_that_are_understood(given, expected) -> None:
    assert parse_workers(given) == expected


@pytest.mark.parametrize("given", ["0", "-1", "2.5", "many", "", "auto2", 0, -3, 2.0, True, None])
def test_nonsense_worker_counts_are_refused_saying_what_is_expected(given) -> None:
    with pytest.raises(InputError, match=r"whole number ≥ 1 or 'auto'"):
        parse_workers(given)


@pytest.mark.parametrize(
    ("text", "size"),
    [("1500M", 1500 * MiB), ("2G", 2 * GiB), ("2.5GiB", int(2.5 * GiB)), ("4096", 4096)],
)
def test_memory_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "-1G", "lots", "2X", "1.5.2G"])
def test_bad_memory_sizes_are_refused(text: str) -> None:
    with pytest.raises(InputError, match="memory size"):
        parse_size(text)


def test_model_sizes_are_the_weights_in_fp32() -> None:
    from segany import load_model

    # vit_b's 93,735,472 parameters are a fact of the official model, sized without a
    # download; the weights also hold the prompt encoder's 2×128 Fourier matrix (a buffer)
    assert model_bytes("vit_b") == 4 * (93_735_472 + 256)
    bundled = load_model(None)
    floats = [t for t in bundled.state_dict().values() if t.is_floating_point()]
    assert model_bytes(None) == 4 * sum(t.numel() for t in floats)
    with pytest.raises(InputError, match="neither a file or folder nor a known variant"):
        model_bytes("vit_zz")


NODE = NodeResources("n", cpus=8, memory=10 * GiB)


@pytest.mark.parametrize(
    ("nodes", "per_worker", "threads", "gpu", "workers", "threads_out"),
    [
        ([NODE], 3 * GiB, None, False, 3, 2),  # memory limits: 3 workers, 8 // 3 threads
        ([NODE], 1 * GiB, None, False, 8, 1),  # cores limit
        ([NODE], 1 * GiB, 4, False, 2, 4),  # cores limit at the given threads
        ([NodeResources("g", 16, 64 * GiB, gpus=2)], 1 * GiB, None, True, 2, 8),  # a GPU each
        # per node: 3 on n, 1 on the small node (its 2 cores shared by 1 worker: 2 threads,
        # the fewest of any node with workers)
        ([NODE, NodeResources("s", 2, 4 * GiB)], 3 * GiB, None, False, 4, 2),
    ],
)
def test_auto_takes_every_worker_that_fits(
    nodes, per_worker, threads, gpu, workers, threads_out
) -> None:
    s = size_workers(nodes, per_worker, requested="auto", threads=threads, gpu=gpu)
    assert (s.workers, s.threads) == (workers, threads_out)
    assert sum(f for _, f in s.per_node) == workers


def test_auto_with_room_for_nothing_says_what_each_worker_needs() -> None:
    small = [NodeResources("a", 4, 2 * GiB), NodeResources("b", 1, 3 * GiB)]
    with pytest.raises(InputError) as err:
        size_workers(small, 7 * GiB, requested="auto", threads=None)
    text = str(err.value)
    assert "not one worker fits" in text and "7.0 GiB" in text
    assert "a: 4 CPU(s), 2.0 GiB" in text and "--memory-per-worker" in text
    with pytest.raises(InputError, match="and a GPU"):
        size_workers([NODE], GiB, requested="auto", threads=None, gpu=True)


def test_an_explicit_count_the_memory_cannot_hold_is_refused_with_the_figures() -> None:
    with pytest.raises(InputError) as err:
        size_workers([NODE], 3 * GiB, requested=4, threads=2)
    text = str(err.value)
    assert "4 workers need 4 × 3.0 GiB" in text and "= 12.0 GiB" in text
    assert "10.0 GiB" in text and "room for 3" in text
    ok = size_workers([NODE], 3 * GiB, requested=3, threads=2)
    assert (ok.workers, ok.threads) == (3, 2)


def test_size_for_estimates_from_the_model_unless_given() -> None:
    big = NodeResources("n", 64, 64 * GiB)
    vit_h = size_for(WorkerSpec(model="vit_h"), "auto", [big])
    tiny = size_for(WorkerSpec(), "auto", [big])
    assert vit_h.memory_per_worker > 5 * GiB > tiny.memory_per_worker  # 2.4 GiB of weights
    assert vit_h.workers == 64 * GiB // vit_h.memory_per_worker
    given = size_for(WorkerSpec(model="vit_h"), "auto", [big], memory_per_worker=4 * GiB)
    assert (given.workers, given.memory_source) == (16, "given")
    # threads fixed by the caller stay
    fixed = size_for(WorkerSpec(threads=8), "auto", [big], auto_threads=False)
    assert (fixed.workers, fixed.threads) == (8, 8)
    # an explicit count with a model that cannot be sized: the workers will say why
    missing = size_for(WorkerSpec(model="/nonexistent/w.pth"), 2, [big])
    assert missing.workers == 2
    with pytest.raises(InputError):
        size_for(WorkerSpec(model="/nonexistent/w.pth"), "auto", [big])


def _collection(root: Path, count: int) -> Path:
    src = root / "src"
    src.mkdir()
    for name, data, _ in scene_files(count, seed=5):
        (src / name).write_bytes(data)
    return src


def test_a_local_run_with_workers_auto_uses_what_the_machine_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A machine with 2 cores and room for 2 workers of 600 MiB: two one-thread workers."""
    src = _collection(tmp_path, 3)
    machine = NodeResources("this machine", 2, 1300 * MiB)
    monkeypatch.setattr(engine_run, "local_resources", lambda: machine)
    cfg = EngineConfig(
        [str(src)], str(tmp_path / "out"), spec=SPEC, workers="auto", memory_per_worker=600 * MiB
    )
    summary = run_engine(cfg)
    assert summary["annotated"] == 3
    assert (summary["workers"], summary["threads_per_worker"]) == (2, 1)
    assert summary["sizing"]["memory_per_worker"] == 600 * MiB
    assert summary["sizing"]["memory_source"] == "given"
    stored = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert stored["sizing"]["fit_per_node"] == {"this machine": 2}


def test_an_explicit_count_too_big_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _collection(tmp_path, 1)
    out = tmp_path / "out"
    monkeypatch.setattr(engine_run, "local_resources", lambda: NodeResources("m", 2, 1 * GiB))
    cfg = EngineConfig([str(src)], str(out), spec=SPEC, workers=3, memory_per_worker=GiB // 2)
    with pytest.raises(InputError, match="room for 2"):
        run_engine(cfg)
    assert not (out / ".staging" / "run.id").exists()


@pytest.mark.parametrize("value", ["0", "lots", "-2"])
def test_the_command_refuses_nonsense_worker_counts(tmp_path: Path, value: str) -> None:
    cmd = [sys.executable, "-m", "segany", "engine", "run", str(tmp_path), "-o", str(tmp_path)]
    done = subprocess.run([*cmd, "-w", value], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "whole number ≥ 1 or 'auto'" in done.stderr and repr(value) in done.stderr


def test_the_command_refuses_a_bad_memory_size(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "segany", "engine", "run", str(tmp_path), "-o", str(tmp_path)]
    done = subprocess.run(
        [*cmd, "--memory-per-worker", "2X"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and "memory size" in done.stderr


def test_local_workers_on_cuda_go_round_the_gpus() -> None:
    from segany.engine.local import spread_device

    cuda = WorkerSpec(device="cuda")
    assert [spread_device(cuda, i, 2).device for i in range(3)] == ["cuda:0", "cuda:1", "cuda:0"]
    assert spread_device(cuda, 1, 1).device == "cuda"  # one GPU: as given
    pinned = WorkerSpec(device="cuda:1")
    assert spread_device(pinned, 0, 4).device == "cuda:1"  # an index given: kept
    assert spread_device(WorkerSpec(), 3, 4).device == "cpu"
