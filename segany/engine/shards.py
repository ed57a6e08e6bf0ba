"""Staging and committing shards: the part of the output a worker writes itself.

A worker (a local process or a Ray actor on any node) writes each image's result into
``OUT/.staging/SHARD/N.json`` (and, with images, ``N.img``), each atomically; the worker whose
result completes a shard builds the shard under a temporary name and renames it into place
(``commit_shard``), so results never travel through the driver. Each staged record carries what
the shard's index needs (key, member name, source), so building a shard needs no item list.

Every path is relative to ``OUT`` and every write is "write a temporary name, then rename",
the two operations an object store behind fsspec would also have to provide (there a rename is
a copy and a delete, and a shard is one object: ``--shard-format tar``).

``OUT/.staging/run.id`` is the run's marker: the driver writes a fresh token there when a run
starts, and a worker that cannot read the same token at the same path is not looking at the
run's output folder (a node without the shared file system), which it says at once.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from segany.atomic import atomic_open, write_bytes_atomic, write_json_atomic
from segany.errors import InputError

SHARD_INDEX = "index.json"
MARKER = "run.id"


class OutputNotVisibleError(InputError):
    """A worker cannot see the run's output folder (not on a shared path)."""


@dataclass(frozen=True)
class OutputSpec:
    """Where and how results are written (picklable: every worker gets one)."""

    out: str
    items: int  # images in the run; item N (1-based) goes to shard (N - 1) // shard_size
    shard_size: int
    shard_kind: str = "folder"
    with_images: bool = False
    token: str = ""  # the run's marker (``OUT/.staging/run.id``); empty: not checked

    @property
    def root(self) -> Path:
        return Path(self.out)

    @property
    def staging(self) -> Path:
        return self.root / ".staging"

    def shard_of(self, index: int) -> int:
        return (index - 1) // self.shard_size

    def shard_indexes(self, shard: int) -> range:
        start = shard * self.shard_size + 1
        return range(start, min(start + self.shard_size, self.items + 1))

    def shard_path(self, shard: int) -> Path:
        name = f"{shard:05d}"
        return self.root / "shards" / (name + ".tar" if self.shard_kind == "tar" else name)

    def shard_staging(self, shard: int) -> Path:
        return self.staging / f"{shard:05d}"

    def staged(self, index: int) -> Path:
        return self.shard_staging(self.shard_of(index)) / f"{index}.json"

    def staged_image(self, index: int) -> Path:
        return self.shard_staging(self.shard_of(index)) / f"{index}.img"


def write_marker(spec: OutputSpec) -> None:
    spec.staging.mkdir(parents=True, exist_ok=True)
    (spec.staging / MARKER).write_text(spec.token, encoding="utf-8")


def check_visible(spec: OutputSpec, where: str) -> None:
    """Raise ``OutputNotVisibleError`` unless this process sees the run's marker."""
    if not spec.token:
        return
    marker = spec.staging / MARKER
    try:
        seen = marker.read_text(encoding="utf-8")
    except OSError:
        seen = None
    if seen != spec.token:
        what = "is missing" if seen is None else "belongs to another run"
        raise OutputNotVisibleError(
            f"the output folder {spec.out} is not visible to the worker on {where} (its marker "
            f"{marker} {what} there): workers write their results into the output folder "
            "themselves, so it must be a path every node sees (a shared file system mounted "
            "at the same path on each node)"
        )


def stage_record(spec: OutputSpec, record: dict[str, Any], image: bytes | None = None) -> None:
    """Write one image's record (and its bytes, with images) into staging, atomically; the
    image first, so a staged record always has its image."""
    index = int(record["index"])
    if image is not None:
        with atomic_open(spec.staged_image(index), "wb") as f:
            f.write(image)
    write_json_atomic(spec.staged(index), record)


def shard_ready(spec: OutputSpec, shard: int) -> bool:
    """Every record of ``shard`` is staged."""
    try:
        names = set(os.listdir(spec.shard_staging(shard)))
    except FileNotFoundError:
        return False
    return all(f"{i}.json" in names for i in spec.shard_indexes(shard))


def is_final(spec: OutputSpec, shard: int) -> bool:
    p = spec.shard_path(shard)
    return p.is_file() if spec.shard_kind == "tar" else (p / SHARD_INDEX).is_file()


def commit_shard(spec: OutputSpec, shard: int) -> dict[str, Any]:
    """Build ``shard`` from its staged records under a temporary name, rename it into place
    (one step: whole or not at all), remove its staging; return its index. Two workers may
    both find a shard complete: the second rename finds the shard there and drops its copy."""
    try:
        return _commit(spec, shard)
    except FileNotFoundError:
        if not is_final(spec, shard):  # else: its staging went with another worker's commit
            raise
        return json.loads(read_member(spec.shard_path(shard), SHARD_INDEX))


def _commit(spec: OutputSpec, shard: int) -> dict[str, Any]:
    members: list[tuple[str, bytes]] = []
    index: dict[str, Any] = {"shard": shard, "items": [], "failed": []}
    for i in spec.shard_indexes(shard):
        r = json.loads(spec.staged(i).read_text(encoding="utf-8"))
        if not r["ok"]:
            failed = {"index": i, "key": r["key"], "source": r["source"], "reason": r["reason"]}
            failed.update({k: r[k] for k in ("stamp", "changed") if k in r})  # for a re-run
            index["failed"].append(failed)
            continue
        name = r["member"]
        members.append((name, json.dumps(r["doc"]).encode()))
        entry = {"index": i, "key": r["key"], "file": name, "masks": len(r["doc"]["annotations"])}
        if spec.with_images:
            image_name = str(PurePosixPath(name).parent / r["doc"]["image"]["file_name"])
            members.append((image_name, spec.staged_image(i).read_bytes()))
            entry["image"] = image_name
        index["items"].append(entry)
    members.append((SHARD_INDEX, json.dumps(index, indent=1).encode()))
    final = spec.shard_path(shard)
    final.parent.mkdir(parents=True, exist_ok=True)
    if spec.shard_kind == "tar":
        with atomic_open(final, "wb") as f:
            with tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for name, data in members:
                    info = tarfile.TarInfo(name)
                    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
                    tar.addfile(info, io.BytesIO(data))
    else:
        tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
        try:  # each member flushed to disk, so a full disk fails here, before the rename
            for name, data in members:
                write_bytes_atomic(tmp / name, data)
        except BaseException:  # a full disk: no half-built shard is left beside the others
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        try:
            os.rename(tmp, final)
        except OSError:
            if not is_final(spec, shard):
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another worker committed it first
    shutil.rmtree(spec.shard_staging(shard), ignore_errors=True)
    return index


def read_member(shard: Path, name: str) -> bytes:
    """One file of a shard (folder or tar)."""
    if shard.suffix == ".tar":
        with tarfile.open(shard, "r:") as tar:
            f = tar.extractfile(name)
            if f is None:
                raise InputError(f"{shard}: {name} is not a file")
            return f.read()
    return (shard / name).read_bytes()
