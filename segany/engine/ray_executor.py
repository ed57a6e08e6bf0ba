"""The Ray executor: one actor per worker, each holding one model loaded once.

``address`` joins an existing cluster (``ray://...`` or ``host:port``); without it a local Ray
is started for the run and shut down after it (unless Ray was already initialised in this
process, which is then used as is). The driver reads the images and writes the outputs, so
the cluster's nodes need neither the inputs nor the output folder.

Each actor holds one task at a time; an actor that dies (its node lost, killed) is replaced
and its image retried once, as in the local executor.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from segany.engine.annotate import Annotator, Task, WorkerSpec, failure
from segany.errors import CheckpointError, MissingExtraError


class _AnnotatorActor:
    """Wrapped by ``ray.remote`` at run time (importing Ray stays optional)."""

    def __init__(self, spec: WorkerSpec, factory: Callable[[WorkerSpec], Any]) -> None:
        self.annotate = factory(spec)

    def run(self, task: Task) -> dict[str, Any]:
        return self.annotate(task)


class RayExecutor:
    def __init__(
        self,
        spec: WorkerSpec,
        workers: int = 1,
        *,
        address: str | None = None,
        factory: Callable[[WorkerSpec], Any] = Annotator,
    ) -> None:
        self.spec = spec
        self.workers = max(1, int(workers))
        self.address = address
        self.factory = factory

    def run(self, tasks: Iterator[Task], on_result: Callable[[dict[str, Any]], None]) -> None:
        try:
            import ray
            from ray.exceptions import (
                OutOfMemoryError,
                RayActorError,
                RayTaskError,
                WorkerCrashedError,
            )
        except ImportError as err:
            raise MissingExtraError("the Ray executor", "ray", "ray") from err
        started = False
        if not ray.is_initialized():
            if self.address is not None:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(
                    num_cpus=self.workers * self.spec.threads,
                    include_dashboard=False,
                    log_to_driver=False,
                )
            started = True
        actor_cls = ray.remote(num_cpus=self.spec.threads, max_restarts=0)(_AnnotatorActor)

        def new_actor() -> Any:
            return actor_cls.remote(self.spec, self.factory)  # type: ignore[attr-defined]

        actors = [new_actor() for _ in range(self.workers)]
        running: dict[Any, tuple[int, Task]] = {}  # object ref -> (actor slot, task)
        idle = deque(range(self.workers))
        retry: deque[Task] = deque()
        deaths: dict[int, int] = {}
        source = iter(tasks)
        exhausted = False
        try:
            while True:
                while idle:
                    nxt = retry.popleft() if retry else None
                    if nxt is None and not exhausted:
                        nxt = next(source, None)
                        exhausted = nxt is None
                    if nxt is None:
                        break
                    slot = idle.popleft()
                    running[actors[slot].run.remote(nxt)] = (slot, nxt)
                if not running:
                    return
                ready, _ = ray.wait(list(running), num_returns=1)
                ref = ready[0]
                slot, task = running.pop(ref)
                try:
                    result = ray.get(ref)
                except (RayActorError, OutOfMemoryError, WorkerCrashedError) as e:
                    # The actor's process is gone (lost node, killed, Ray's out-of-memory
                    # monitor): a new actor, and the image tried once more.
                    if getattr(e, "actor_init_failed", False) or "creation task" in str(e):
                        raise CheckpointError(
                            f"a Ray worker could not start: {_brief(e)}"
                        ) from None
                    ray.kill(actors[slot], no_restart=True)
                    actors[slot] = new_actor()
                    deaths[task.index] = deaths.get(task.index, 0) + 1
                    if deaths[task.index] < 2:
                        retry.append(task)
                    else:
                        on_result(
                            failure(task.index, task.key, "the Ray worker died twice on this image")
                        )
                    idle.append(slot)
                    continue
                except RayTaskError as e:
                    cause = e.cause if getattr(e, "cause", None) is not None else e
                    raise CheckpointError(f"a Ray worker failed: {_brief(cause)}") from None
                idle.append(slot)
                on_result(result)
        finally:
            for a in actors:
                ray.kill(a, no_restart=True)
            if started:
                ray.shutdown()


def _brief(error: BaseException) -> str:
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    return lines[-1] if lines else type(error).__name__
