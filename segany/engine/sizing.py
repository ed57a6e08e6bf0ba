"""How many workers (model copies) a machine or a Ray cluster holds, and how much memory each needs.

A worker's memory is estimated from the model's size: the Python/torch runtime, plus the
weights about 2.5 times (the loaded model, the state read from the file while it is copied in,
and the generator's activations). Measured here with ``ru_maxrss`` of a worker that loaded the
model and annotated one 1024×768 image (fp32, CPU): the bundled model (3.3 M parameters,
13 MB) peaked at 452 MB, ``vit_b`` (93.7 M, 375 MB) at 1034 MB; the estimate gives 545 MB and
1449 MB, and 6.9 GB for ``vit_h`` (641 M, 2.56 GB). ``segany engine plan`` measures the real
peak on a sample of the collection; ``--memory-per-worker`` takes that figure instead.

Per node, the workers that fit are the fewest of: its memory / memory per worker, its CPUs /
threads per worker, and (for a CUDA device) its GPUs, one worker each. ``--workers auto``
takes all that fit; an explicit count that the memory cannot hold is refused with the figures.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segany.errors import InputError

if TYPE_CHECKING:
    from segany.engine.annotate import WorkerSpec

RUNTIME_BYTES = 512 * 2**20  # Python, torch, OpenCV and the engine, before the model
WEIGHT_FACTOR = 2.5  # the weights, the state they were loaded from, the activations
LOCAL_MEMORY_SHARE = 0.9  # of this machine's available memory (the rest: driver, page cache)

GiB = 2**30


def parse_workers(value: Any) -> int | str:
    """A worker count (a whole number ≥ 1) or ``"auto"``; ``InputError`` otherwise."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        if re.fullmatch(r"\+?\d+", text):
            value = int(text)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise InputError(f"workers: expected a whole number ≥ 1 or 'auto', got {value!r}")


_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_size(text: str) -> int:
    """``"1500M"``, ``"2G"``, ``"2.5GiB"``, ``"800000000"`` -> bytes (binary units)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", str(text).lower())
    if m is None or float(m.group(1)) <= 0:
        raise InputError(f"a memory size must be a positive number with K, M, G or T, got {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def fmt_bytes(n: float) -> str:
    return f"{n / GiB:.1f} GiB" if n >= GiB else f"{n / 2**20:.0f} MiB"


def _safetensors_numel(path: Path) -> int:
    """Float elements in a safetensors file, from its header (the tensors are not read)."""
    with path.open("rb") as f:
        size = int.from_bytes(f.read(8), "little")
        if not 0 < size < 100 * 2**20:
            raise InputError(f"{path}: not a safetensors file (header size {size})")
        header = json.loads(f.read(size))
    total = 0
    for name, info in header.items():
        if name == "__metadata__" or not str(info.get("dtype", "")).startswith(("F", "BF")):
            continue
        n = 1
        for d in info.get("shape", []):
            n *= int(d)
        total += n
    return total


def model_bytes(model: str | None) -> int:
    """The model's float weights in memory (fp32) in bytes: counted from the variant's config
    for a name (no download), from the header of a safetensors file, else the file's size."""
    from segany.checkpoints import DEFAULT_MODEL

    if model is None:
        return 4 * _safetensors_numel(DEFAULT_MODEL)
    path = Path(model)
    if not path.exists():
        from segany.checkpoints import CHECKPOINTS

        if model not in CHECKPOINTS:
            raise InputError(f"model {model!r}: neither a file or folder nor a known variant")
        import torch

        from segany.models import build_sam, get_config

        with torch.device("meta"):  # shapes only, no memory
            sam = build_sam(get_config(model))
        state = sam.state_dict()  # parameters and buffers, as a weights file holds them
        return 4 * sum(t.numel() for t in state.values() if t.is_floating_point())
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    total = 0
    for f in files:
        if f.suffix == ".safetensors":
            total += 4 * _safetensors_numel(f)
        elif f.suffix in (".pth", ".pt", ".bin", ".ckpt"):
            total += f.stat().st_size  # official files hold fp32 weights
    if total == 0:
        raise InputError(f"model {model}: no weights file found to size it")
    return total


def estimate_worker_memory(model: str | None) -> int:
    """Bytes one worker needs for ``model`` (see the module's doc for the figures)."""
    return int(RUNTIME_BYTES + WEIGHT_FACTOR * model_bytes(model))


@dataclass(frozen=True)
class NodeResources:
    """What a machine (a Ray node) offers workers: CPUs, memory in bytes, GPUs."""

    name: str
    cpus: float
    memory: int
    gpus: float = 0.0


@dataclass(frozen=True)
class Sizing:
    workers: int
    threads: int
    memory_per_worker: int
    memory_source: str  # "estimated from the model's size" or "given"
    per_node: tuple[tuple[str, int], ...]  # (node, workers that fit there)

    def to_dict(self) -> dict[str, Any]:
        return {
            "workers": self.workers,
            "threads_per_worker": self.threads,
            "memory_per_worker": self.memory_per_worker,
            "memory_source": self.memory_source,
            "fit_per_node": dict(self.per_node),
        }


def local_resources() -> NodeResources:
    """This machine: the CPUs this process may use, ``LOCAL_MEMORY_SHARE`` of its available
    memory, and its CUDA devices."""
    from segany.engine.worker import available_memory

    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    gpus = 0
    try:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        pass
    return NodeResources("this machine", cpus, int(available_memory() * LOCAL_MEMORY_SHARE), gpus)


def ray_resources(ray: Any) -> list[NodeResources]:
    """The live nodes of the Ray cluster ``ray`` is connected to (their total resources; Ray's
    ``memory`` resource is what it lets tasks and actors reserve, about 70 % of the node's)."""
    nodes = []
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        res = n.get("Resources", {})
        name = f"{n.get('NodeManagerAddress', '?')} ({str(n.get('NodeID', ''))[:8]})"
        nodes.append(
            NodeResources(name, res.get("CPU", 0.0), int(res.get("memory", 0)), res.get("GPU", 0))
        )
    return nodes


def is_gpu(device: str) -> bool:
    return device.startswith("cuda")


def size_workers(
    nodes: list[NodeResources],
    memory_per_worker: int,
    *,
    requested: int | str,
    threads: int | None,
    gpu: bool = False,
    memory_source: str = "estimated from the model's size",
) -> Sizing:
    """The worker count and threads per worker for ``requested`` (a count or ``"auto"``) on
    ``nodes``; ``InputError`` with the figures when not one worker fits, or when an explicit
    count needs more memory than the nodes have."""
    if memory_per_worker <= 0:
        raise InputError(f"memory per worker must be positive, got {memory_per_worker}")
    need_cpus = threads or 1
    fits = []
    for n in nodes:
        fit = min(int(n.memory // memory_per_worker), int(n.cpus // need_cpus))
        if gpu:
            fit = min(fit, int(n.gpus))
        fits.append((n, max(0, fit)))
    where = "the cluster" if len(nodes) > 1 else (nodes[0].name if nodes else "no node")
    have = ", ".join(
        f"{n.name}: {n.cpus:g} CPU(s), {fmt_bytes(n.memory)}"
        + (f", {n.gpus:g} GPU(s)" if gpu else "")
        for n in nodes
    )
    each = f"{fmt_bytes(memory_per_worker)} ({memory_source})"
    if requested == "auto":
        total = sum(f for _, f in fits)
        if total == 0:
            raise InputError(
                f"not one worker fits on {where}: each needs {each}, {need_cpus} CPU(s)"
                + (" and a GPU" if gpu else "")
                + f"; available: {have or 'nothing'}. Give --memory-per-worker if the "
                "estimate is too high (segany engine plan measures it)"
            )
        if threads is None:  # share each node's cores among its workers
            threads = min(max(1, int(n.cpus // f)) for n, f in fits if f > 0)
        per_node = tuple((n.name, f) for n, f in fits)
        return Sizing(total, threads, memory_per_worker, memory_source, per_node)
    count = int(requested)
    by_memory = sum(int(n.memory // memory_per_worker) for n in nodes)
    if count > by_memory:
        raise InputError(
            f"{count} workers need {count} × {each} = {fmt_bytes(count * memory_per_worker)}; "
            f"{where} has {fmt_bytes(sum(n.memory for n in nodes))} for workers ({have}), "
            f"room for {by_memory}. Use fewer workers, --workers auto, or --memory-per-worker "
            "with a measured figure (segany engine plan)"
        )
    per_node = tuple((n.name, f) for n, f in fits)
    return Sizing(count, threads or 1, memory_per_worker, memory_source, per_node)


def size_for(
    spec: WorkerSpec,
    requested: int | str,
    nodes: list[NodeResources],
    *,
    memory_per_worker: int | None = None,
    auto_threads: bool = True,
) -> Sizing:
    """``size_workers`` for a run of ``spec``'s model: memory per worker as given, else
    estimated from the model's size; threads from the nodes for "auto" with ``auto_threads``,
    else ``spec.threads``. A model that cannot be sized (a missing file) is left to the workers
    to report when the count is explicit."""
    if memory_per_worker is not None:
        per, source = memory_per_worker, "given"
    else:
        try:
            per, source = estimate_worker_memory(spec.model), "estimated from the model's size"
        except (InputError, OSError, ValueError):
            if requested == "auto":
                raise
            unknown = "unknown: the model could not be sized"
            return Sizing(int(requested), spec.threads, 0, unknown, ())
    threads = None if requested == "auto" and auto_threads else spec.threads
    return size_workers(
        nodes,
        per,
        requested=requested,
        threads=threads,
        gpu=is_gpu(spec.device),
        memory_source=source,
    )
