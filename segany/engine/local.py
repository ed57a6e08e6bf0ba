"""The local executor: worker processes, each with one model loaded once.

Each worker holds at most one task at a time, so when a worker dies (killed, out of memory, a
crash in native code) the driver knows which image it held: the worker is replaced and the
image retried once; a second death on the same image records it as an error. Workers exit by
themselves when the driver goes away (they poll for their parent), so a ``kill -9`` of the
driver leaves no process behind.
"""

from __future__ import annotations

import errno
import multiprocessing as mp
import queue
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from segany.engine.annotate import Annotator, Task, WorkerSpec, failure
from segany.engine.sizing import Sizing
from segany.errors import CheckpointError

#: How often (seconds) the driver checks its workers and a worker checks its parent.
POLL_S = 0.5

#: Write errors that fail every later image too (a full disk, a quota): a worker that meets one
#: reports it and the run stops, instead of the image being failed and the run going on.
STOP_ERRNOS = (errno.ENOSPC, errno.EDQUOT)

#: Builds the per-task function in a worker; the default loads the model (tests inject others).
Factory = Callable[[WorkerSpec], Callable[[Task], dict[str, Any]]]


def _worker_main(spec: WorkerSpec, factory: Factory, tasks: Any, results: Any, ready: Any) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver handles Ctrl-C and stops us
    parent = mp.parent_process()
    try:
        annotate = factory(spec)
    except Exception as e:  # noqa: BLE001 - reported to the driver, which raises it
        results.put({"fatal": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
        return
    # An Event, not a queue message: a queue's feeder thread may not have sent a message yet
    # when the process dies, and a lost "ready" would blame the image's death on start-up.
    ready.set()
    while True:
        try:
            task = tasks.get(timeout=POLL_S)
        except queue.Empty:
            if parent is not None and not parent.is_alive():
                return
            continue
        if task is None:
            return
        try:
            results.put(annotate(task))
        except OSError as e:
            if e.errno not in STOP_ERRNOS:
                raise  # the worker dies: retried once, then the image fails
            # A full disk is no fault of the image: the driver stops the run, saying so.
            results.put({"stop": [e.errno, e.strerror or str(e)]})
            return


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def spread_device(spec: WorkerSpec, slot: int, gpus: int) -> WorkerSpec:
    """Worker ``slot``'s spec: with device "cuda" (no index) and several GPUs, the workers go
    round the GPUs (cuda:0, cuda:1, ...) instead of all loading onto the first."""
    if spec.device != "cuda" or gpus < 2:
        return spec
    return replace(spec, device=f"cuda:{slot % gpus}")


def death(code: int | None) -> str:
    """How a worker process ended, for the errors file: its exit code, or the signal that
    killed it (SIGKILL is also what the kernel's out-of-memory killer sends)."""
    import signal

    if code is None or code >= 0:
        return f"exit code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    if -code == getattr(signal, "SIGKILL", 9):
        return f"killed by {name}: by hand, or by the system when memory ran out"
    return f"killed by {name}"


class _Worker:
    def __init__(self, ctx: Any, spec: WorkerSpec, factory: Factory, results: Any) -> None:
        self.tasks = ctx.Queue()
        self.started = ctx.Event()
        self.proc = ctx.Process(
            target=_worker_main,
            args=(spec, factory, self.tasks, results, self.started),
            daemon=True,
        )
        self.proc.start()
        self.task: Task | None = None

    def give(self, task: Task) -> None:
        self.task = task
        self.tasks.put(task)

    def stop(self) -> None:
        if self.proc.is_alive():
            self.tasks.put(None)

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=5)


def _context() -> Any:
    """``forkserver`` with torch and segany preloaded: every worker (a replacement too) starts
    as a fork of a clean, single-threaded process that already imported them, instead of
    paying the imports again; ``spawn`` where forkserver does not exist (Windows)."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["torch", "segany.engine.annotate", "segany.automatic"])
        return ctx
    return mp.get_context("spawn")


class LocalExecutor:
    """Run tasks on ``workers`` processes (see ``_context`` for how they start)."""

    def __init__(self, spec: WorkerSpec, workers: int = 1, factory: Factory = Annotator) -> None:
        self.spec = spec
        self.workers = max(1, int(workers))
        self.factory = factory
        self.sizing: Sizing | None = None  # how the worker count was chosen, if it was
        self.events: list[str] = []  # workers that died, and how (the run's summary lists them)

    def run(self, tasks: Iterator[Task], on_result: Callable[[dict[str, Any]], None]) -> None:
        ctx = _context()
        results = ctx.Queue()
        gpus = _cuda_count() if self.spec.device == "cuda" else 0
        specs = [spread_device(self.spec, slot, gpus) for slot in range(self.workers)]
        pool = [_Worker(ctx, specs[i], self.factory, results) for i in range(self.workers)]
        retry: deque[Task] = deque()
        deaths: dict[int, int] = {}
        source = iter(tasks)
        exhausted = False
        failed_starts = 0
        try:
            while True:
                for w in pool:  # hand out work
                    if w.task is None and w.proc.is_alive():
                        nxt = retry.popleft() if retry else None
                        if nxt is None and not exhausted:
                            nxt = next(source, None)
                            exhausted = nxt is None
                        if nxt is not None:
                            w.give(nxt)
                if exhausted and not retry and all(w.task is None for w in pool):
                    return
                try:
                    res = results.get(timeout=POLL_S)
                except queue.Empty:
                    res = None
                if res is not None:
                    self._take(res, pool, on_result)
                for i, w in enumerate(pool):  # replace the dead, retry their image once
                    if w.proc.is_alive():
                        continue
                    self._drain(results, pool, on_result)
                    held, code, ready = w.task, w.proc.exitcode, w.started.is_set()
                    w.kill()
                    pool[i] = _Worker(ctx, specs[i], self.factory, results)
                    if not ready:  # died while loading the model: not the image's fault
                        failed_starts += 1
                        if failed_starts > 2 * self.workers + 2:
                            raise RuntimeError(
                                f"worker processes die while starting (exit code {code})"
                            )
                        if held is not None:
                            retry.appendleft(held)
                        continue
                    how = death(code)
                    if held is None:
                        self.events.append(f"a worker died between images ({how})")
                        continue
                    deaths[held.index] = deaths.get(held.index, 0) + 1
                    if deaths[held.index] < 2:
                        self.events.append(f"a worker died on {held.key} ({how}); retried once")
                        retry.append(held)
                    else:
                        self.events.append(f"a worker died again on {held.key} ({how})")
                        on_result(
                            failure(
                                held.index, held.key, f"the worker died twice on this image ({how})"
                            )
                        )
        finally:
            for w in pool:
                w.stop()
            for w in pool:
                w.proc.join(timeout=2)
                w.kill()

    def _drain(self, results: Any, pool: list[_Worker], on_result: Callable) -> None:
        # A worker may have sent its result just before dying: take it before judging.
        while True:
            try:
                res = results.get_nowait()
            except queue.Empty:
                return
            self._take(res, pool, on_result)

    @staticmethod
    def _take(res: dict[str, Any], pool: list[_Worker], on_result: Callable) -> None:
        if "fatal" in res:
            raise CheckpointError(f"a worker could not start: {res['fatal']}")
        if "stop" in res:
            raise OSError(*res["stop"])
        for w in pool:
            if w.task is not None and w.task.index == res["index"]:
                w.task = None
        on_result(res)


class SerialExecutor:
    """Run tasks one by one in this process (no workers): for debugging and tiny runs."""

    def __init__(self, spec: WorkerSpec, factory: Factory = Annotator) -> None:
        self.spec = spec
        self.factory = factory

    def run(self, tasks: Iterator[Task], on_result: Callable[[dict[str, Any]], None]) -> None:
        annotate = self.factory(self.spec)
        for task in tasks:
            on_result(annotate(task))
