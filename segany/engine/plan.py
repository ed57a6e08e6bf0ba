"""What a run would do, before it starts (``segany engine plan``).

``plan_run(config, sample=3)`` lists the images as the run would, reads what the output folder
already holds (finished shards, staged images, whether its settings match: nothing is written
there), sizes the workers as the run would (``sizing``: this machine, or the nodes of the Ray
cluster at ``config.address``), and measures the model on a few of the images left to do, in
worker processes like the run's, as many at once as the run has here (so they share the cores
and memory bandwidth as the run's will): load time, seconds per image, masks per image and a
worker's peak memory. From those it estimates the run's time and, for a target, the workers
(and machines like the sizing's) it would take.

Assumptions, stated with the figures: the sample's images are like the rest (taken evenly
spread over the images to do); each worker's first image, which pays the model's warm-up, is
in the mean, so a small sample reads a little slow; workers run at the sample's speed
(measured on this machine, with the run's threads per worker, under this machine's load at the
time, which the figures carry); on a cluster, nodes unlike this machine take other times.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from segany.engine.annotate import Annotator, Task, WorkerSpec
from segany.engine.output import Layout
from segany.engine.run import EngineConfig, _existing_index, _tasks
from segany.engine.sizing import (
    NodeResources,
    local_resources,
    ray_resources,
    size_for,
)
from segany.engine.sources import list_items
from segany.engine.worker import available_memory, peak_rss
from segany.errors import InputError


class SampleWorker:
    """A worker that only measures: annotates, writes nothing, and reports its load time and
    peak memory with each result."""

    def __init__(self, spec: WorkerSpec) -> None:
        t0 = time.perf_counter()
        self.annotate = Annotator(spec)
        self.load_seconds = round(time.perf_counter() - t0, 3)

    def __call__(self, task: Task) -> dict[str, Any]:
        result = self.annotate(task)
        masks = len(result["doc"]["annotations"]) if result["ok"] else 0
        small: dict[str, Any] = {
            k: result[k] for k in ("index", "key", "ok", "reason", "seconds") if k in result
        }
        return {
            **small,
            "masks": masks,
            "load_seconds": self.load_seconds,
            "peak_rss": peak_rss(),
            "available": available_memory(),
        }


def _done(layout: Layout) -> tuple[set[int], int]:
    """(indexes done: in finished shards or staged, finished shards), reading only."""
    done: set[int] = set()
    final = 0
    for shard in range(layout.num_shards):
        if layout.is_final(shard):
            final += 1
            done.update(layout.shard_indexes(shard))
            continue
        folder = layout.staging / f"{shard:05d}"
        if folder.is_dir():
            done.update(int(f.stem) for f in folder.glob("*.json") if f.stem.isdigit())
    return done, final


def _spread(indexes: list[int], k: int) -> list[int]:
    if k >= len(indexes):
        return list(indexes)
    step = len(indexes) / k
    return [indexes[int(i * step)] for i in range(k)]


def _nodes(config: EngineConfig) -> list[NodeResources]:
    """What the run would size its workers from: this machine for local workers; for Ray, the
    nodes Ray reports (a local Ray started for the run as the run starts it: its memory
    resource is Ray's share of this machine's, not the local executor's)."""
    if config.executor != "ray":
        return [local_resources()]
    from segany.engine.raysession import ray_session

    cpus = int(local_resources().cpus)
    with ray_session(config.address, cpus) as ray:
        return ray_resources(ray)


def _measure(
    config: EngineConfig, layout: Layout, picks: list[int], threads: int, workers: int
) -> list[dict]:
    from segany.engine.local import LocalExecutor

    results: list[dict[str, Any]] = []
    existing = _existing_index(config.existing) if config.mode == "semi" else None
    tasks = _tasks(layout, picks, config.mode, existing, results.append)
    spec = replace(config.spec, threads=threads)
    LocalExecutor(spec, workers, factory=SampleWorker).run(tasks, results.append)
    return results


def plan_run(
    config: EngineConfig,
    *,
    sample: int = 3,
    target_hours: float | None = None,
    target_images: int | None = None,
) -> dict[str, Any]:
    """The plan of ``config``'s run as a dict (see the module's doc); writes nothing."""
    if sample < 0:
        raise InputError(f"sample must be ≥ 0 images, got {sample}")
    if target_hours is not None and not (target_hours > 0 and math.isfinite(target_hours)):
        raise InputError(f"target hours must be a positive number, got {target_hours}")
    out = Path(config.out).resolve()
    items = [
        it
        for it in list_items(config.sources, recursive=config.recursive)
        if out not in Path(it.image.path).resolve().parents
    ]
    if not items:
        raise InputError("no images found in " + ", ".join(config.sources))
    layout = Layout(
        config.out,
        items,
        shard_size=config.shard_size,
        shard_kind=config.shard_kind,
        with_images=config.with_images,
    )
    settings = {"mode": config.mode, "existing": config.existing, **config.spec.settings()}
    changed = layout.settings_changed(settings)
    done, final = _done(layout)
    todo = [i for i in range(1, len(items) + 1) if i not in done]
    plan: dict[str, Any] = {
        "output": str(config.out),
        "images": len(items),
        "shards": layout.num_shards,
        "shard_size": config.shard_size,
        "finished_shards": final,
        "done": len(done),
        "todo": len(todo),
        "resumable": bool(done) and bool(todo) and not changed,
        "settings_differ": changed or [],
    }
    nodes = _nodes(config)
    workers = 1 if config.executor == "serial" else config.workers
    kw: dict[str, Any] = {
        "memory_per_worker": config.memory_per_worker,
        "auto_threads": config.auto_threads,
    }
    try:
        sizing = size_for(config.spec, workers, nodes, **kw)
    except InputError as e:
        if workers == "auto":
            raise
        plan["refused"] = str(e)  # the run would stop here; the rest plans what fits
        sizing = size_for(config.spec, "auto", nodes, **kw)
    plan.update(
        executor=config.executor,
        nodes=[{"name": n.name, "cpus": n.cpus, "memory": n.memory, "gpus": n.gpus} for n in nodes],
        **sizing.to_dict(),
    )
    if sample == 0:
        return plan
    picks = _spread(todo or list(range(1, len(items) + 1)), sample)
    started = time.perf_counter()
    # As many workers at once as the run puts on this machine (at most one per sampled image)
    here = int(local_resources().cpus // sizing.threads)
    at_once = max(1, min(len(picks), sizing.workers, here))
    results = _measure(config, layout, picks, sizing.threads, at_once)
    plan["sample"] = _sample_figures(results, picks, time.perf_counter() - started)
    plan["sample"]["workers"] = at_once
    per_image = plan["sample"].get("seconds_per_image")
    if not per_image:
        return plan
    per_hour = 3600.0 / per_image
    load = plan["sample"]["load_seconds"]
    plan["images_per_hour_per_worker"] = round(per_hour, 1)
    plan["images_per_hour"] = round(per_hour * sizing.workers, 1)
    plan["estimated_seconds"] = round(load + math.ceil(len(todo) / sizing.workers) * per_image, 1)
    peak = plan["sample"]["peak_memory"]
    if peak:
        try:  # the workers the measured peak (with a 10 % margin) allows
            kw["memory_per_worker"] = int(peak * 1.1)
            again = size_for(config.spec, "auto", nodes, **kw)
            plan["workers_by_measured_memory"] = again.workers
        except InputError:
            plan["workers_by_measured_memory"] = 0
    if target_hours is not None:
        n = target_images if target_images is not None else len(todo)
        need = math.ceil(n * per_image / (target_hours * 3600.0))
        plan["target"] = {
            "images": n,
            "hours": target_hours,
            "workers": need,
            "machines_like_these": math.ceil(need / max(1, sizing.workers)),
        }
    return plan


def _sample_figures(results: list[dict[str, Any]], picks: list[int], wall: float) -> dict:
    by_index = {int(r["index"]): r for r in results}
    ok = [by_index[i] for i in picks if i in by_index and by_index[i].get("ok")]
    failed = [by_index[i] for i in picks if i in by_index and not by_index[i].get("ok")]
    timed = [r["seconds"] for r in ok]
    figures: dict[str, Any] = {
        "images": len(picks),
        "picked": list(picks),  # their positions in the run (1-based: the SA-1B image ids)
        "annotated": len(ok),
        "failed": [f"{r['key']}: {r.get('reason', '')}" for r in failed],
        "seconds": [round(t, 3) for t in timed],
        "seconds_per_image": round(sum(timed) / len(timed), 3) if timed else None,
        "masks_per_image": round(sum(r["masks"] for r in ok) / len(ok), 1) if ok else None,
        "load_seconds": max((r.get("load_seconds", 0.0) for r in ok + failed), default=0.0),
        "peak_memory": max((r.get("peak_rss", 0) for r in ok), default=0),
        "wall_seconds": round(wall, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()]
        if hasattr(os, "getloadavg")
        else None,
    }
    return figures
