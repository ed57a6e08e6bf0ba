"""What a worker runs per image when it writes its own output: annotate, stage the result into
the output folder, commit the shard the result completes, and send back a small receipt.

Used by every executor (local processes, Ray actors, serial); the driver then only keeps the
books. A receipt also carries the worker's memory figures (its peak resident size and the
node's available memory), which the engine uses to size the number of workers.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

from segany.engine.annotate import Annotator, Task, WorkerSpec, with_read_stamp
from segany.engine.shards import (
    OutputSpec,
    check_visible,
    commit_shard,
    is_final,
    shard_ready,
    stage_record,
)


def peak_rss() -> int:
    """This process's peak resident memory, in bytes."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB


def available_memory() -> int:
    """Memory this machine can still give (Linux's MemAvailable: free plus reclaimable cache),
    in bytes; the free pages where /proc/meminfo does not exist."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


class ShardWorker:
    """``ShardWorker(output, spec)(task)`` -> receipt. Refuses to start (``OutputNotVisibleError``)
    when this process cannot see the run's output folder."""

    def __init__(
        self,
        output: OutputSpec,
        spec: WorkerSpec,
        annotator: Callable[[WorkerSpec], Callable[[Task], dict[str, Any]]] = Annotator,
    ) -> None:
        check_visible(output, socket.gethostname())
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.output = output
        self.annotate = annotator(spec)

    def __call__(self, task: Task) -> dict[str, Any]:
        result = with_read_stamp(self.annotate(task), task.stamp, task.changed)
        record = {**result, "key": task.key, "member": task.member, "source": task.source}
        record["worker"] = self.name  # which worker made it (for the logs, and tests)
        image = task.data if self.output.with_images and result["ok"] else None
        stage_record(self.output, record, image)
        shard = self.output.shard_of(task.index)
        committed = None
        if shard_ready(self.output, shard) and not is_final(self.output, shard):
            commit_shard(self.output, shard)
            committed = shard
        receipt: dict[str, Any] = {
            k: result[k] for k in ("index", "key", "ok", "reason", "seconds") if k in result
        }
        if result["ok"]:
            receipt["masks"] = len(result["doc"]["annotations"])
        receipt.update(
            staged=True,
            committed=committed,
            peak_rss=peak_rss(),
            available=available_memory(),
        )
        return receipt
