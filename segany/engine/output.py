"""The engine's output folder: sharded SA-1B JSON, resumable, never a partial file in view.

Layout of ``OUT``::

    engine_run.json          settings + the item list's fingerprint (a re-run must match)
    shards/00000/ ...        a folder shard: KEY.json per image (+ the image with --with-images)
    shards/00000.tar         or a tar shard with the same members
        each shard holds index.json: its items (key, file, masks) and its failures
    errors.csv               path, reason: one row per image that could not be annotated
    summary.json             images, masks, masks per image, failures, seconds, images per hour
    manifest.json            every shard and item; written last: its presence means complete
    .staging/00000/N.json    per-image results of shards not yet finalised (removed after)

Item ``N`` (1-based, in key order) goes to shard ``(N - 1) // shard_size``. Each result is
written atomically to ``.staging``; when a shard's results are all there the shard is built
under a temporary name and renamed into place (one atomic step), then its staging is removed.
A re-run reads what is there: finalised shards and staged results are kept, temporary leftovers
are deleted, and only the missing images are processed, so each image is annotated once.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import time
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from segany.atomic import atomic_open, write_json_atomic, write_text_atomic
from segany.engine.sources import Item
from segany.errors import InputError

RUN_FILE = "engine_run.json"
MANIFEST = "manifest.json"
SUMMARY = "summary.json"
ERRORS = "errors.csv"
SHARD_INDEX = "index.json"
FORMAT = "segany-engine/1"
SHARD_KINDS = ("folder", "tar")


def json_names(keys: list[str]) -> dict[str, str]:
    """Key -> the JSON member name in its shard: the key with ``.json`` for its suffix, or
    appended when two keys would collide (``a.jpg`` and ``a.png``)."""
    bare = {k: str(PurePosixPath(k).with_suffix(".json")) for k in keys}
    counts: dict[str, int] = {}
    for v in bare.values():
        counts[v] = counts.get(v, 0) + 1
    return {k: (v if counts[v] == 1 else k + ".json") for k, v in bare.items()}


def fingerprint(items: list[Item]) -> str:
    h = hashlib.sha256()
    for it in items:
        h.update(it.key.encode() + b"\0")
    return h.hexdigest()


class Layout:
    """Paths and state of one output folder for a fixed item list and shard settings."""

    def __init__(
        self,
        out: str | os.PathLike[str],
        items: list[Item],
        *,
        shard_size: int,
        shard_kind: str = "folder",
        with_images: bool = False,
    ) -> None:
        if shard_size < 1:
            raise InputError(f"shard_size must be at least 1, got {shard_size}")
        if shard_kind not in SHARD_KINDS:
            raise InputError(f"shard kind must be one of {SHARD_KINDS}, got {shard_kind!r}")
        self.out = Path(out)
        self.items = items
        self.shard_size = shard_size
        self.shard_kind = shard_kind
        self.with_images = with_images
        self.names = json_names([it.key for it in items])
        self.shards_dir = self.out / "shards"
        self.staging = self.out / ".staging"

    # ----- naming --------------------------------------------------------------------------
    @property
    def num_shards(self) -> int:
        return (len(self.items) + self.shard_size - 1) // self.shard_size

    def shard_of(self, index: int) -> int:
        return (index - 1) // self.shard_size

    def shard_indexes(self, shard: int) -> range:
        start = shard * self.shard_size + 1
        return range(start, min(start + self.shard_size, len(self.items) + 1))

    def shard_path(self, shard: int) -> Path:
        name = f"{shard:05d}"
        return self.shards_dir / (name + ".tar" if self.shard_kind == "tar" else name)

    def staged(self, index: int) -> Path:
        return self.staging / f"{self.shard_of(index):05d}" / f"{index}.json"

    # ----- run settings --------------------------------------------------------------------
    def check_settings(self, settings: dict[str, Any]) -> None:
        """Record the settings, or refuse when the folder holds a run made with others."""
        record = {
            "format": FORMAT,
            "settings": settings,
            "items": len(self.items),
            "fingerprint": fingerprint(self.items),
            "shard_size": self.shard_size,
            "shard_kind": self.shard_kind,
            "with_images": self.with_images,
        }
        path = self.out / RUN_FILE
        if path.is_file():
            try:
                before = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                before = None
            if before is not None and before != json.loads(json.dumps(record)):
                changed = sorted(
                    k for k in record if json.dumps(before.get(k)) != json.dumps(record[k])
                )
                raise InputError(
                    f"{self.out} holds an engine run with other {', '.join(changed)}; re-run "
                    "the same command to resume it, or choose another output folder"
                )
            if before is not None:
                return
        write_json_atomic(path, record, indent=1)

    # ----- resume --------------------------------------------------------------------------
    def is_final(self, shard: int) -> bool:
        p = self.shard_path(shard)
        return p.is_file() if self.shard_kind == "tar" else (p / SHARD_INDEX).is_file()

    def clean_leftovers(self) -> None:
        """Remove temporary files of an interrupted run and staging of finalised shards."""
        for root in (self.shards_dir, self.staging):
            if not root.is_dir():
                continue
            for p in root.rglob(".*"):
                if not (p.name.endswith(".tmp") or ".tmp-" in p.name):
                    continue
                if p.is_dir():
                    shutil.rmtree(p)
                else:
                    p.unlink(missing_ok=True)
        if self.staging.is_dir():
            for d in self.staging.iterdir():
                if d.is_dir() and d.name.isdigit() and self.is_final(int(d.name)):
                    shutil.rmtree(d)

    def done(self) -> dict[int, dict[str, Any] | None]:
        """Index -> its staged result (None for items in finalised shards)."""
        out: dict[int, dict[str, Any] | None] = {}
        for shard in range(self.num_shards):
            if self.is_final(shard):
                out.update(dict.fromkeys(self.shard_indexes(shard)))
                continue
            folder = self.staging / f"{shard:05d}"
            if not folder.is_dir():
                continue
            for f in folder.glob("*.json"):
                if not f.stem.isdigit():
                    continue
                try:
                    out[int(f.stem)] = json.loads(f.read_text(encoding="utf-8"))
                except ValueError:
                    f.unlink()  # cannot happen with atomic writes; redo the image if it does
        return out

    # ----- writing -------------------------------------------------------------------------
    def stage(self, result: dict[str, Any]) -> None:
        write_json_atomic(self.staged(int(result["index"])), result)

    def shard_complete(self, shard: int) -> bool:
        return all(self.staged(i).is_file() for i in self.shard_indexes(shard))

    def finalise(self, shard: int) -> dict[str, Any]:
        """Build shard ``shard`` from its staged results, atomically; return its index."""
        results = [
            json.loads(self.staged(i).read_text(encoding="utf-8"))
            for i in self.shard_indexes(shard)
        ]
        members: list[tuple[str, bytes]] = []
        index: dict[str, Any] = {"shard": shard, "items": [], "failed": []}
        for r in results:
            item = self.items[int(r["index"]) - 1]
            if not r["ok"]:
                index["failed"].append(
                    {
                        "index": r["index"],
                        "key": item.key,
                        "source": item.source,
                        "reason": r["reason"],
                    }
                )
                continue
            name = self.names[item.key]
            members.append((name, json.dumps(r["doc"]).encode()))
            entry = {
                "index": r["index"],
                "key": item.key,
                "file": name,
                "masks": len(r["doc"]["annotations"]),
            }
            if self.with_images:
                image_name = str(PurePosixPath(name).parent / r["doc"]["image"]["file_name"])
                members.append((image_name, item.image.read()))
                entry["image"] = image_name
            index["items"].append(entry)
        members.append((SHARD_INDEX, json.dumps(index, indent=1).encode()))
        final = self.shard_path(shard)
        if self.shard_kind == "tar":
            with atomic_open(final, "wb") as f:
                with tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
                    for name, data in members:
                        info = tarfile.TarInfo(name)
                        info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
                        tar.addfile(info, io.BytesIO(data))
        else:
            tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
            if tmp.exists():
                shutil.rmtree(tmp)
            for name, data in members:
                target = tmp / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            os.rename(tmp, final)  # one step: the shard appears whole or not at all
        shutil.rmtree(self.staging / f"{shard:05d}", ignore_errors=True)
        return index

    def read_index(self, shard: int) -> dict[str, Any]:
        return json.loads(read_member(self.shard_path(shard), SHARD_INDEX))

    def collect(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The manifest (from the finalised shards' indexes) and the failures."""
        shards = []
        failed: list[dict[str, Any]] = []
        for shard in range(self.num_shards):
            idx = self.read_index(shard)
            failed.extend(idx["failed"])
            shards.append(
                {
                    "name": self.shard_path(shard).relative_to(self.out).as_posix(),
                    "items": idx["items"],
                    "failed": [f["index"] for f in idx["failed"]],
                }
            )
        manifest = {
            "format": FORMAT,
            "images": len(self.items),
            "annotated": sum(len(s["items"]) for s in shards),
            "failed": len(failed),
            "masks": sum(e["masks"] for s in shards for e in s["items"]),
            "shard_kind": self.shard_kind,
            "shards": shards,
        }
        return manifest, failed

    def write_final(
        self, manifest: dict[str, Any], failed: list[dict[str, Any]], summary: dict[str, Any]
    ) -> None:
        """errors.csv, summary.json, then manifest.json (last); remove the staging folder."""
        write_text_atomic(self.out / ERRORS, errors_csv(failed))
        write_json_atomic(self.out / SUMMARY, summary, indent=1)
        write_json_atomic(self.out / MANIFEST, manifest, indent=1)
        shutil.rmtree(self.staging, ignore_errors=True)


def errors_csv(failed: Iterable[dict[str, Any]]) -> str:
    import csv

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "reason"])
    for f in failed:
        w.writerow([f["source"], f["reason"]])
    return buf.getvalue()


def read_member(shard: Path, name: str) -> bytes:
    """One file of a shard (folder or tar)."""
    if shard.suffix == ".tar":
        with tarfile.open(shard, "r:") as tar:
            f = tar.extractfile(name)
            if f is None:
                raise InputError(f"{shard}: {name} is not a file")
            return f.read()
    return (shard / name).read_bytes()
