"""Independent pieces of CPU work run side by side, one torch thread each.

A decoder pass over a few prompts is made of skinny matrix products (a few dozen rows against
4096 image tokens). torch's own threads split each product, and with so little work per
product a second core adds little. Measured on a 2-core host, vit_b, the automatic generator
on a 16×16 grid (``benchmarks/bench_thread_pool.py``): 24.6–27.4 → 18.5–23.0 ms per prompt
(medians of three runs) when the chunks of prompts go to two Python threads that each run
torch with one thread instead of one thread running torch with two. torch releases the GIL
inside its operations.

``map_ordered`` does that when torch uses more than one thread in the calling thread and there is
more than one piece; otherwise it is a plain loop in the calling thread. Workers are started once
per thread count and kept. torch's thread setting is per OS thread (OpenMP), so a worker's
setting of 1 leaves the caller's alone; torch also keeps a process-wide copy of the last value
set (read by threads that start later), which is put back after the workers start.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

__all__ = ["map_ordered"]

T = TypeVar("T")
R = TypeVar("R")

_pools: dict[int, ThreadPoolExecutor] = {}
_lock = threading.Lock()


def _forget_pools() -> None:
    # A forked child has none of the parent's threads: its pools would wait forever.
    _pools.clear()


os.register_at_fork(after_in_child=_forget_pools)


def _one_torch_thread() -> None:
    # torch reads its process-wide count into a thread on the thread's first use; do that
    # first, or it would later replace the 1 set here.
    torch.get_num_threads()
    torch.set_num_threads(1)


def _pool(workers: int) -> ThreadPoolExecutor:
    with _lock:
        pool = _pools.get(workers)
        if pool is None:
            pool = ThreadPoolExecutor(
                workers,
                thread_name_prefix="segany-cpu",
                initializer=_one_torch_thread,
            )
            # Start every worker now (each waits for the others), then put back torch's
            # process-wide thread count, which each worker's setting of 1 overwrote.
            ready = threading.Barrier(workers, timeout=60)
            list(pool.map(lambda _: ready.wait(), range(workers)))
            torch.set_num_threads(workers)
            _pools[workers] = pool
        return pool


def map_ordered(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[fn(x) for x in items]``, the pieces side by side when torch uses several threads here.

    fn must be safe to call from several threads at once (its own buffers per thread). It runs
    with the caller's grad and inference modes. An exception in any piece is raised here.
    """
    workers = min(torch.get_num_threads(), len(items))
    if workers <= 1:
        return [fn(x) for x in items]
    inference = torch.is_inference_mode_enabled()
    grad = torch.is_grad_enabled()

    def run(x: T) -> R:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return fn(x)

    return list(_pool(torch.get_num_threads()).map(run, items))
