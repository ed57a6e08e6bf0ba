"""The Ray executor: one actor per worker, each holding one model loaded once.

Where Ray listens (``raysession``): without ``address`` a local Ray is started for the run on
127.0.0.1 only; an ``address`` on loopback joins that cluster over loopback; any other host is
a remote cluster, joined because the user named it.

How work flows: an actor gets an image only once it is placed and has loaded its model, and
holds one image at a time, so the driver always knows which image each actor holds. The driver
waits with a timeout and looks at the cluster's nodes every few seconds, so a lost node is
noticed even when Ray never answers for its actors. When an actor is lost:
- its node is gone (killed, preempted): the image goes back to the queue, not counted against
  it, and a replacement actor is asked for; the run goes on with the actors left, and the
  replacement takes work when (if ever) the cluster has room for it;
- its node lives (the worker process crashed, or Ray's memory monitor killed it): the image is
  tried once more and recorded as failed (with the reason) on a second death; a memory-monitor
  kill also lowers the number of actors by one, so fewer images run at once.
An actor that cannot load its model, or cannot see the output folder, stops the run with that
reason. Workers write their own results (``shards``), so receipts are all that travels back.
"""

from __future__ import annotations

import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from segany.engine.annotate import Annotator, Task, WorkerSpec, failure
from segany.engine.local import STOP_ERRNOS
from segany.engine.raysession import check_reachable, ray_session
from segany.engine.shards import OutputNotVisibleError
from segany.engine.sizing import NodeResources, Sizing, is_gpu, local_resources, ray_resources
from segany.errors import CheckpointError, MissingExtraError

__all__ = ["RayExecutor", "check_reachable"]

POLL_S = 1.0  # the longest the driver waits for a result before looking around
NODE_CHECK_S = 3.0  # how often the driver asks which nodes are alive
PLACE_TIMEOUT_S = 300.0  # no actor placed anywhere for this long: the cluster has no room
MAX_NODE_LOSSES = 3  # an image whose node was lost this often is recorded as failed


class _AnnotatorActor:
    """Wrapped by ``ray.remote`` at run time (importing Ray stays optional). Construction is
    cheap, so "placed" and "loaded" are two separate answers."""

    def __init__(self, spec: WorkerSpec, factory: Callable[[WorkerSpec], Any]) -> None:
        self.spec, self.factory = spec, factory
        self.annotate: Any = None

    def load(self) -> dict[str, Any]:
        import ray

        info: dict[str, Any] = {"node": ray.get_runtime_context().get_node_id()}
        info["host"] = socket.gethostname()
        info["pid"] = os.getpid()
        try:
            self.annotate = self.factory(self.spec)
        except OutputNotVisibleError as e:
            info["problem"] = str(e)
        return info

    def run(self, task: Task) -> dict[str, Any]:
        return self.annotate(task)


@dataclass
class _Slot:
    actor: Any
    loading: Any  # the ref of load(): resolves once placed and loaded
    since: float
    info: dict[str, Any] | None = None
    task: Task | None = None
    ref: Any = None


class RayExecutor:
    """``workers``: a count, or "auto" with a ``sizer`` (the cluster's nodes -> a ``Sizing``),
    which also checks an explicit count against the cluster's memory once Ray is joined."""

    def __init__(
        self,
        spec: WorkerSpec,
        workers: int | str = 1,
        *,
        address: str | None = None,
        factory: Callable[[WorkerSpec], Any] = Annotator,
        sizer: Callable[[list[NodeResources]], Sizing] | None = None,
    ) -> None:
        if workers == "auto" and sizer is None:
            raise ValueError("workers 'auto' needs a sizer")
        self.spec = spec
        self.workers = workers if workers == "auto" else max(1, int(workers))
        self.address = address
        self.factory = factory
        self.sizer = sizer
        self.sizing: Sizing | None = None
        self.events: list[str] = []  # what happened to actors (lost nodes, memory kills)

    def run(self, tasks: Iterator[Task], on_result: Callable[[dict[str, Any]], None]) -> None:
        try:
            import ray  # noqa: F401
        except ImportError as err:
            raise MissingExtraError("the Ray executor", "ray", "ray") from err
        if self.workers == "auto":  # a local Ray gets this machine's cores
            cpus = int(local_resources().cpus)
        else:
            cpus = int(self.workers) * self.spec.threads
        with ray_session(self.address, cpus) as ray:
            if self.sizer is not None:
                self.sizing = self.sizer(ray_resources(ray))
                self.workers = self.sizing.workers
                self.spec = replace(self.spec, threads=self.sizing.threads)
            _Run(self, ray, tasks, on_result).loop()


class _Run:
    """One run's bookkeeping: slots (actors), the queue of retries, deaths per image."""

    def __init__(self, ex: RayExecutor, ray: Any, tasks: Iterator[Task], on_result: Any) -> None:
        from ray import exceptions

        self.ex, self.ray, self.on_result = ex, ray, on_result
        self.errors = exceptions
        need: dict[str, Any] = {"num_cpus": ex.spec.threads}
        if ex.sizing is not None and ex.sizing.memory_per_worker:
            need["memory"] = ex.sizing.memory_per_worker  # Ray places by memory too
        if is_gpu(ex.spec.device):
            need["num_gpus"] = 1  # else Ray hides every GPU from the actor
        self.actor_cls = ray.remote(max_restarts=0, **need)(_AnnotatorActor)
        self.target = int(ex.workers)
        self.slots: list[_Slot] = []
        self.retry: deque[Task] = deque()
        self.charged: dict[int, int] = {}  # deaths of a live node's worker on this image
        self.lost: dict[int, int] = {}  # lost nodes while holding this image
        self.replaced = 0
        self.source = iter(tasks)
        self.exhausted = False
        self.last_check = time.monotonic()

    def spawn(self) -> None:
        actor = self.actor_cls.remote(self.ex.spec, self.ex.factory)
        self.slots.append(_Slot(actor, actor.load.remote(), time.monotonic()))

    def next_task(self) -> Task | None:
        if self.retry:
            return self.retry.popleft()
        if not self.exhausted:
            nxt = next(self.source, None)
            self.exhausted = nxt is None
            return nxt
        return None

    def loop(self) -> None:
        try:
            for _ in range(self.target):
                self.spawn()
            while True:
                for s in self.slots:  # hand out work to loaded, idle actors
                    if s.info is not None and s.task is None:
                        nxt = self.next_task()
                        if nxt is None:
                            break
                        s.task, s.ref = nxt, s.actor.run.remote(nxt)
                busy = [s for s in self.slots if s.task is not None]
                if self.exhausted and not self.retry and not busy:
                    return
                self.check_placement()
                waiting = {s.ref: s for s in busy}
                waiting.update({s.loading: s for s in self.slots if s.info is None})
                ready, _ = self.ray.wait(list(waiting), num_returns=1, timeout=POLL_S)
                for ref in ready:
                    slot = waiting[ref]
                    if slot in self.slots:
                        self.answer(slot, ref)
                if time.monotonic() - self.last_check > NODE_CHECK_S:
                    self.check_nodes()
        finally:
            for s in self.slots:
                self.ray.kill(s.actor, no_restart=True)

    def answer(self, slot: _Slot, ref: Any) -> None:
        e = self.errors
        lost = (e.RayActorError, e.WorkerCrashedError, e.ObjectLostError, e.OutOfMemoryError)
        try:
            value = self.ray.get(ref)
        except lost as err:
            if isinstance(err, e.RayActorError) and err.actor_init_failed:
                raise CheckpointError(f"a Ray worker could not start: {_brief(err)}") from None
            self.died(slot, err)
            return
        except e.RayTaskError as err:
            cause = err.cause if getattr(err, "cause", None) is not None else err
            if isinstance(cause, OSError) and cause.errno in STOP_ERRNOS:
                raise OSError(cause.errno, cause.strerror or str(cause)) from None  # disk full
            what = "could not start" if ref is slot.loading else "failed"
            raise CheckpointError(f"a Ray worker {what}: {_brief(cause)}") from None
        if ref is slot.loading:
            if value.get("problem"):
                raise OutputNotVisibleError(value["problem"])
            slot.info = value
            return
        slot.task, slot.ref = None, None
        self.on_result(value)

    def died(self, slot: _Slot, err: BaseException | None, node_lost: bool | None = None) -> None:
        """An actor is gone: its image back to the queue (or failed), a replacement asked."""
        self.slots.remove(slot)
        self.ray.kill(slot.actor, no_restart=True)
        if node_lost is None:
            # Unreachable (its node's raylet gone, the network cut) is not the image's doing,
            # even before the cluster has marked the node dead; a worker that crashed on a
            # live node is reported by that node as dead, and counts against the image.
            node_lost = isinstance(err, self.errors.ActorUnavailableError) or (
                slot.info is not None and slot.info["node"] not in self.alive_nodes()
            )
        oom = err is not None and _is_memory_kill(err, self.errors)
        where = f"{slot.info['host']} (node {slot.info['node'][:8]})" if slot.info else "?"
        task = slot.task
        if oom:
            self.target = max(1, self.target - 1)
            self.ex.events.append(f"a worker on {where} was killed by Ray's memory monitor")
        elif node_lost:
            held = f", image {task.key} back in the queue" if task is not None else ""
            self.ex.events.append(f"the worker on {where} was lost with its node{held}")
        elif slot.info is None:
            self.ex.events.append(f"a worker was lost while starting ({_brief(err or '')})")
        else:
            self.ex.events.append(f"the worker on {where} died ({_brief(err or '')})")
        if task is not None:
            self.requeue(task, node_lost and not oom, oom)
        self.replaced += 1
        if self.replaced > 4 * int(self.ex.workers) + 4:
            raise RuntimeError(f"Ray workers keep dying ({self.replaced} lost): {self.ex.events}")
        while len(self.slots) < self.target:
            self.spawn()

    def requeue(self, task: Task, node_lost: bool, oom: bool) -> None:
        if node_lost:
            self.lost[task.index] = self.lost.get(task.index, 0) + 1
            if self.lost[task.index] <= MAX_NODE_LOSSES:
                self.retry.appendleft(task)
                return
            reason = f"{MAX_NODE_LOSSES + 1} Ray nodes were lost while annotating this image"
        else:
            self.charged[task.index] = self.charged.get(task.index, 0) + 1
            if self.charged[task.index] < 2:
                self.retry.append(task)
                return
            reason = (
                "killed twice by Ray's memory monitor on this image (the node ran low on memory)"
                if oom
                else "the Ray worker died twice on this image"
            )
        self.on_result(failure(task.index, task.key, reason))

    def alive_nodes(self) -> set[str]:
        return {n["NodeID"] for n in self.ray.nodes() if n.get("Alive")}

    def check_nodes(self) -> None:
        """Actors on nodes the cluster has marked dead are lost, whether or not Ray has
        answered for them yet."""
        self.last_check = time.monotonic()
        alive = self.alive_nodes()
        for s in list(self.slots):
            if s.info is not None and s.info["node"] not in alive:
                self.died(s, None, node_lost=True)

    def check_placement(self) -> None:
        """Nothing runs and no actor has been placed for a long time: say why, not hang."""
        if any(s.info is not None for s in self.slots):
            return
        oldest = min((s.since for s in self.slots), default=time.monotonic())
        if time.monotonic() - oldest < PLACE_TIMEOUT_S:
            return
        total = self.ray.cluster_resources().get("CPU", 0)
        free = self.ray.available_resources().get("CPU", 0)
        raise RuntimeError(
            f"no Ray worker could start in {PLACE_TIMEOUT_S:.0f} s: each needs "
            f"{self.ex.spec.threads} CPU(s) (--threads-per-worker); the cluster has {total:g} "
            f"CPU(s), {free:g} free"
        )


def _is_memory_kill(err: BaseException, errors: Any) -> bool:
    if isinstance(err, errors.OutOfMemoryError):
        return True
    # How Ray names a memory-monitor kill in an actor's death (its worker exit type); a plain
    # crash's text also mentions "OOM" among possible causes, so that word proves nothing.
    text = str(err)
    return "NODE_OUT_OF_MEMORY" in text or "running low on memory" in text


def _brief(error: BaseException | str) -> str:
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    return lines[-1] if lines else type(error).__name__
