"""Run the engine over a collection: list, resume, feed an executor, stage, shard, summarise."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

from segany.engine.annotate import Task, WorkerSpec, failure, with_read_stamp
from segany.engine.output import MANIFEST, SUMMARY, Layout
from segany.engine.sizing import local_resources, parse_workers, size_for
from segany.engine.sources import Item, list_items
from segany.engine.worker import ShardWorker
from segany.errors import InputError

EXECUTORS = ("local", "ray", "serial")
MODES = ("auto", "semi")


@dataclass
class EngineConfig:
    """One engine run. ``sources``: folders, globs, manifests, tar shards (see ``sources``).

    ``workers``: a count, or "auto" (``sizing``: the workers the machine's or the cluster's
    memory and cores hold; with ``auto_threads`` the threads per worker too, else
    ``spec.threads``). An explicit count whose memory the machine cannot give is refused.

    mode "semi" keeps each image's existing annotations (from ``existing``: a folder of SA-1B
    JSON named like the images, or a COCO instances JSON; else an SA-1B JSON beside the image
    in its folder or tar) and adds automatic masks only where nothing is annotated.
    """

    sources: list[str]
    out: str
    spec: WorkerSpec = field(default_factory=WorkerSpec)
    workers: int | str = 1  # model copies, or "auto": as many as memory and cores hold
    memory_per_worker: int | None = None  # bytes; None: estimated from the model's size
    auto_threads: bool = True  # workers "auto": threads = a node's cores / its workers
    executor: str = "local"
    address: str | None = None  # Ray cluster address; None starts a local Ray for the run
    shard_size: int = 1000
    shard_kind: str = "folder"
    with_images: bool = False
    mode: str = "auto"
    existing: str | None = None
    recursive: bool = True
    progress: bool = False


def default_threads(workers: int) -> int:
    """Torch threads per worker so that the workers together use each core once."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def run_engine(
    config: EngineConfig, *, executor: Any = None, on_progress: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """Annotate every image of ``config.sources`` not yet done in ``config.out``; return the
    run summary (also written to ``OUT/summary.json``). ``executor``: anything with
    ``run(tasks, on_result)`` (default: the one ``config.executor`` names)."""
    if config.executor not in EXECUTORS:
        raise InputError(f"executor must be one of {EXECUTORS}, got {config.executor!r}")
    if config.mode not in MODES:
        raise InputError(f"mode must be one of {MODES}, got {config.mode!r}")
    if config.mode == "auto" and config.existing:
        raise InputError("existing annotations are for the semi-automatic mode (mode 'semi')")
    config = replace(config, workers=parse_workers(config.workers))
    started = time.perf_counter()
    out = Path(config.out).resolve()
    # An output folder inside an input folder: its files (images copied into shards) are
    # never inputs, so a re-run sees the same items.
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
    layout.check_settings(settings)
    layout.clean_leftovers()
    layout.reopen_changed()  # images that failed as they changed: done again, if now stable
    done = layout.done()
    _commit_complete(layout)  # killed after staging a shard's last image
    todo = [it_index for it_index in range(1, len(items) + 1) if it_index not in done]
    processed = 0
    runner: Any = None
    if todo:
        # Made first: a worker count this machine's memory cannot hold is refused here,
        # before the run marks the folder (a Ray executor sizes itself once Ray is joined).
        runner = executor if executor is not None else _executor(config, layout)
        layout.start()
        existing = _existing_index(config.existing) if config.mode == "semi" else None
        bar = _progress_bar(len(todo), config.progress)
        finished: set[int] = set()

        def on_result(result: dict[str, Any]) -> None:
            nonlocal processed
            index = int(result["index"])
            if index in finished:  # a late duplicate (a retried image): already staged
                return
            finished.add(index)
            if not result.get("staged"):
                # Not written by a worker (an unreadable input, or an executor whose workers
                # return whole results): staged here, and its shard committed when complete.
                layout.stage(result)
                shard = layout.shard_of(index)
                if layout.shard_complete(shard) and not layout.is_final(shard):
                    layout.finalise(shard)
            processed += 1
            if bar is not None:
                bar.update(1)
            if on_progress is not None:
                on_progress(processed)

        tasks = _tasks(layout, todo, config.mode, existing, on_result)
        try:
            runner.run(tasks, on_result)
        finally:
            if bar is not None:
                bar.close()
        missing = [i for i in todo if i not in finished]
        if missing:  # an executor must answer for every image; never leave a silent gap
            raise RuntimeError(f"the executor returned without results for images {missing[:10]}")
        _commit_complete(layout)  # shards whose worker was lost between staging and commit
    if not todo and (layout.out / MANIFEST).is_file() and (layout.out / SUMMARY).is_file():
        # Already complete: nothing is rewritten; the stored summary describes the run that
        # finished it.
        stored = json.loads((layout.out / SUMMARY).read_text(encoding="utf-8"))
        return {**stored, "processed_this_run": 0, "already_complete": True}
    seconds = time.perf_counter() - started
    manifest, failed = layout.collect()  # the counts come from the shards
    summary = {
        "images": manifest["images"],
        "annotated": manifest["annotated"],
        "failed": manifest["failed"],
        "masks": manifest["masks"],
        "masks_per_image": round(manifest["masks"] / max(1, manifest["annotated"]), 3),
        "processed_this_run": processed,
        "seconds": round(seconds, 3),
        "images_per_hour": round(3600 * processed / seconds, 1) if processed else 0.0,
        "executor": config.executor,
        "workers": getattr(runner, "workers", config.workers),
        "threads_per_worker": getattr(runner, "spec", config.spec).threads,
        "shards": layout.num_shards,
    }
    if getattr(runner, "sizing", None) is not None:
        summary["sizing"] = runner.sizing.to_dict()
    if getattr(runner, "events", None):  # lost nodes, memory-monitor kills (Ray)
        summary["worker_events"] = list(runner.events)
    layout.write_final(manifest, failed, summary)
    return summary


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    # tqdm shows the rate (img/s) and the ETA from the images done so far.
    return tqdm(total=total, desc="engine", unit="img", dynamic_ncols=True)


def _commit_complete(layout: Layout) -> None:
    for shard in range(layout.num_shards):
        if not layout.is_final(shard) and layout.shard_complete(shard):
            layout.finalise(shard)


def _executor(config: EngineConfig, layout: Layout) -> Any:
    """The executor ``config.executor`` names, its workers writing into ``layout`` themselves."""
    factory = partial(ShardWorker, layout.spec)
    if config.executor == "serial":
        from segany.engine.local import SerialExecutor

        return SerialExecutor(config.spec, factory=factory)
    sizer = partial(
        size_for,
        config.spec,
        config.workers,
        memory_per_worker=config.memory_per_worker,
        auto_threads=config.auto_threads,
    )
    if config.executor == "ray":
        from segany.engine.ray_executor import RayExecutor

        return RayExecutor(
            config.spec, config.workers, address=config.address, factory=factory, sizer=sizer
        )
    from segany.engine.local import LocalExecutor

    sizing = sizer([local_resources()])
    spec = replace(config.spec, threads=sizing.threads)
    ex = LocalExecutor(spec, sizing.workers, factory=factory)
    ex.sizing = sizing
    return ex


def _tasks(
    layout: Layout,
    todo: list[int],
    mode: str,
    existing: Callable[[Item], dict[str, Any] | None] | None,
    on_result: Callable[[dict[str, Any]], None],
) -> Iterator[Task]:
    """Read each image's bytes just before a worker needs them; unreadable inputs become
    error results here and never reach a worker."""
    for index in todo:
        item = layout.items[index - 1]
        before = item.image.stamp()
        try:
            data = item.image.read()
        except (OSError, InputError) as e:
            after = item.image.stamp()
            what = "no such file" if isinstance(e, FileNotFoundError) else f"cannot read ({e})"
            bad = failure(index, item.key, f"{item.source}: {what}")
            on_result(with_read_stamp(bad, after, before != after))
            continue
        after = item.image.stamp()
        given = None
        if mode == "semi":
            try:
                given = existing(item) if existing is not None else None
                if given is None and item.annotations is not None:
                    given = _parse_sa1b_bytes(item.annotations.read(), item.source)
            except (OSError, InputError) as e:
                on_result(failure(index, item.key, f"existing annotations: {e}"))
                continue
            given = given if given is not None else {"annotations": []}
        member = layout.names[item.key]
        task = Task(index, item.key, item.file_name, data, given, member, item.source)
        yield replace(task, stamp=after, changed=before != after)


def _parse_sa1b_bytes(data: bytes, source: str) -> dict[str, Any]:
    from segany.formats.sa1b import parse_sa1b

    try:
        loaded = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise InputError(f"{source}: annotations are not JSON ({e})") from None
    return parse_sa1b(loaded, source=source).to_dict()


def _existing_index(spec: str | None) -> Callable[[Item], dict[str, Any] | None] | None:
    """A lookup item -> its existing annotations (SA-1B dict), from a folder or COCO file."""
    if spec is None:
        return None
    path = Path(spec)
    if path.is_dir():

        def from_folder(item: Item) -> dict[str, Any] | None:
            rel = PurePosixPath(item.key)
            for cand in (path / rel.with_suffix(".json"), path / (item.key + ".json")):
                if cand.is_file():
                    return _parse_sa1b_bytes(cand.read_bytes(), str(cand))
            return None

        return from_folder
    if path.is_file():
        return _coco_lookup(path)
    raise InputError(f"existing annotations {spec}: no such file or folder")


def _coco_lookup(path: Path) -> Callable[[Item], dict[str, Any] | None]:
    from segany.formats import read_coco
    from segany.formats.records import segmentation_rle

    data = read_coco(path)
    by_id: dict[Any, list[dict[str, Any]]] = {}
    for ann in data["annotations"]:
        by_id.setdefault(ann.get("image_id"), []).append(ann)
    images: dict[str, dict[str, Any]] = {}
    for im in data["images"]:
        name = str(im.get("file_name", ""))
        images.setdefault(name, im)
        images.setdefault(PurePosixPath(name).name, im)

    def lookup(item: Item) -> dict[str, Any] | None:
        im = images.get(item.key) or images.get(item.file_name)
        if im is None:
            return None
        h, w = int(im["height"]), int(im["width"])
        anns = []
        for ann in by_id.get(im["id"], []):
            seg = ann.get("segmentation")
            if not (isinstance(seg, dict) and isinstance(seg.get("counts"), str)):
                # Polygons and uncompressed RLE become compressed RLE (SA-1B stores RLE).
                ann = dict(ann, segmentation=_coco_rle(seg, h, w, segmentation_rle))
            anns.append(ann)
        info = {"image_id": im["id"], "width": w, "height": h, "file_name": item.file_name}
        return {"image": info, "annotations": anns}

    return lookup


def _coco_rle(seg: Any, h: int, w: int, to_rle: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    if isinstance(seg, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    elif isinstance(seg, dict) and isinstance(seg.get("counts"), list):
        rle = mask_utils.frPyObjects(seg, h, w)
    elif isinstance(seg, dict):
        rle = seg
    else:
        raise InputError(f"a COCO segmentation must be polygons or RLE, got {type(seg).__name__}")
    return to_rle(rle)
