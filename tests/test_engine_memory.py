"""Workers killed for memory: the image is retried, then reported; the run never hangs.

Locally, the kernel's out-of-memory killer ends a process with SIGKILL, which the tests send
themselves (a real out-of-memory kill would endanger everything else on a shared machine). On
Ray, the real thing: a local Ray whose memory monitor kills at a threshold set just above what
the machine uses now, and a worker that allocates past it on one image."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from engine_fixtures import SPEC

from segany.engine import EngineConfig, run_engine
from segany.engine.check import verify

NAMES = ("a.png", "hog_once.png", "b.png", "hog.png", "c.png")


def _fake_annotator(marks: str, hog: str, spec: Any) -> Any:
    """A model-free worker: on images named hog*, ``hog`` happens (hog_once only the first
    time); the others are annotated with no masks."""

    def annotate(task: Any) -> dict[str, Any]:
        flag = Path(marks) / (task.key + ".seen")
        if task.key.startswith("hog") and not (task.key.startswith("hog_once") and flag.exists()):
            flag.touch()
            if hog == "sigkill":  # what the kernel's out-of-memory killer does
                os.kill(os.getpid(), signal.SIGKILL)
            else:  # allocate (and touch) until the memory monitor steps in
                held = []
                for _ in range(48):
                    held.append(bytearray(256 * 2**20))
                    time.sleep(0.1)
        info = {"image_id": task.index, "width": 1, "height": 1, "file_name": task.file_name}
        doc = {"image": info, "annotations": []}
        return {"index": task.index, "key": task.key, "ok": True, "doc": doc}

    return annotate


def _source(tmp_path: Path) -> tuple[Path, Path]:
    src = tmp_path / "src"
    src.mkdir()
    for name in NAMES:
        (src / name).write_bytes(b"image bytes")
    marks = tmp_path / "marks"
    marks.mkdir()
    return src, marks


def _check(out: Path, summary: dict[str, Any], killed_by: str) -> list[str]:
    assert summary["annotated"] == 4 and summary["failed"] == 1, summary
    rows = (out / "errors.csv").read_text().splitlines()
    assert len(rows) == 2 and "hog.png" in rows[1] and killed_by in rows[1], rows
    assert verify(out) == []  # every image once: no gap, no duplicate
    events = summary["worker_events"]
    assert sum("hog_once.png" in e or "memory" in e for e in events) >= 1, events
    return events


def test_a_local_worker_killed_like_the_oom_killer_is_retried_then_reported(
    tmp_path: Path,
) -> None:
    from segany.engine.local import LocalExecutor

    src, marks = _source(tmp_path)
    executor = LocalExecutor(SPEC, 2, factory=partial(_fake_annotator, str(marks), "sigkill"))
    out = tmp_path / "out"
    summary = run_engine(EngineConfig([str(src)], str(out), spec=SPEC), executor=executor)
    events = _check(out, summary, "killed by SIGKILL")
    assert any("hog_once.png" in e and "retried once" in e for e in events), events
    assert any("died again on hog.png" in e for e in events), events
    stored = json.loads((out / "summary.json").read_text())
    assert stored["worker_events"] == events


def _used_fraction() -> tuple[float, int]:
    info = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":", 1)
            info[key] = int(value.split()[0]) * 1024
    total = info["MemTotal"]
    return (total - info["MemAvailable"]) / total, total


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Ray's memory monitor: Linux")
def test_a_ray_worker_killed_by_the_memory_monitor_is_retried_then_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray's memory monitor set to kill at the memory used now plus 1.5 GiB; the worker on
    hog.png allocates up to 12 GiB, 256 MiB at a time. Each kill must cost that image one try
    (two on hog.png: it is recorded with the monitor's reason) and nothing else."""
    ray = pytest.importorskip("ray", reason="Ray is the optional extra segany[ray]")
    from ray import cloudpickle

    from segany.engine.ray_executor import RayExecutor

    used, total = _used_fraction()
    threshold = used + 1.5 * 2**30 / total
    if threshold > 0.9:
        pytest.skip(f"this machine already uses {used:.0%} of its memory")
    monkeypatch.setenv("RAY_memory_usage_threshold", f"{threshold:.3f}")
    monkeypatch.setenv("RAY_memory_monitor_refresh_ms", "100")
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers lack tests/
    src, marks = _source(tmp_path)
    executor = RayExecutor(SPEC, 2, factory=partial(_fake_annotator, str(marks), "allocate"))
    out = tmp_path / "out"
    assert not ray.is_initialized()
    summary = run_engine(EngineConfig([str(src)], str(out), spec=SPEC), executor=executor)
    events = _check(out, summary, "memory monitor")
    assert sum("killed by Ray's memory monitor" in e for e in events) >= 3, events
