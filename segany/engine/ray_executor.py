"""The Ray executor: one actor per worker, each holding one model loaded once.

``address`` joins an existing cluster (``ray://...`` or ``host:port``); without it a local Ray
is started for the run and shut down after it (unless Ray was already initialised in this
process, which is then used as is). A host:port that accepts no connection is refused at once
(Ray itself retries for minutes); a cluster that refuses this driver's credentials gets an
error that says how Ray's token authentication is switched on for a driver. The driver reads
the images and writes the outputs, so the cluster's nodes need neither the inputs nor the
output folder.

Each actor holds one task at a time; an actor that dies (its node lost, killed) is replaced
and its image retried once, as in the local executor.
"""

from __future__ import annotations

import os
import socket
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from segany.engine.annotate import Annotator, Task, WorkerSpec, failure
from segany.errors import CheckpointError, InputError, MissingExtraError

CONNECT_TIMEOUT_S = 10.0  # for the TCP check of a cluster address


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raise InputError unless ``host:port`` (or ``ray://host:port``) accepts a TCP connection.
    ``auto`` and ``local`` are Ray's own words and are left to it."""
    if address in ("auto", "local"):
        return
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InputError(f"Ray address {address!r}: expected host:port, ray://host:port or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise InputError(
            f"no Ray cluster answers at {address} ({e.strerror or e}): start one with "
            "`ray start --head`, or leave out the address to start a local Ray for the run"
        ) from None


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
                check_reachable(self.address)
                try:
                    ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
                except ConnectionError as e:
                    hint = ""
                    if "RAY_AUTH_MODE" not in os.environ:
                        hint = (
                            " (a cluster that uses Ray's token authentication also needs "
                            "RAY_AUTH_MODE=token, and its token, set for this command)"
                        )
                    raise ConnectionError(f"{e}{hint}") from None
            else:
                ray.init(  # "local": a new instance, never a `ray start` one found on this host
                    address="local",
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
