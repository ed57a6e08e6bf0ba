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
    .staging/00000/N.img     with --with-images: the image's bytes, staged beside its result
    .staging/run.id          the run's marker: workers check they see the same folder

Item ``N`` (1-based, in key order) goes to shard ``(N - 1) // shard_size``. Each result is
written atomically to ``.staging`` by the worker that made it (``shards``); the worker whose
result completes a shard builds it under a temporary name and renames it into place (one atomic
step), then removes its staging. The driver stages only results that never reached a worker
(unreadable inputs) and commits only shards left complete but uncommitted (a worker lost
between the two steps), then writes the manifest from the shards' indexes.
A re-run reads what is there: finalised shards and staged results are kept, temporary leftovers
are deleted, and only the missing images are processed, so each image is annotated once.
A failure is kept with its file's stamp (size, mtime, inode) after the read; a re-run turns a
shard back into staged results to do again an image whose file changed while it was read or
since (``retry_wanted``): a changed image is not a bad one. Unchanged bad images stay failed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from segany.atomic import write_json_atomic, write_text_atomic
from segany.engine.shards import (
    SHARD_INDEX,
    OutputSpec,
    commit_shard,
    is_final,
    read_member,
    shard_ready,
    stage_record,
    write_marker,
)
from segany.engine.sources import Item
from segany.errors import InputError

RUN_FILE = "engine_run.json"
MANIFEST = "manifest.json"
SUMMARY = "summary.json"
ERRORS = "errors.csv"
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
        self.spec = OutputSpec(
            str(self.out),
            len(items),
            shard_size,
            shard_kind,
            with_images,
            token=os.urandom(16).hex(),
        )

    def start(self) -> None:
        """Mark the folder as this run's (the marker every worker checks it can see)."""
        write_marker(self.spec)

    # ----- naming --------------------------------------------------------------------------
    @property
    def num_shards(self) -> int:
        return (len(self.items) + self.shard_size - 1) // self.shard_size

    def shard_of(self, index: int) -> int:
        return self.spec.shard_of(index)

    def shard_indexes(self, shard: int) -> range:
        return self.spec.shard_indexes(shard)

    def shard_path(self, shard: int) -> Path:
        return self.spec.shard_path(shard)

    def staged(self, index: int) -> Path:
        return self.spec.staged(index)

    # ----- run settings --------------------------------------------------------------------
    def check_settings(self, settings: dict[str, Any]) -> None:
        """Record the settings, or refuse when the folder holds a run made with others."""
        changed = self.settings_changed(settings)
        if changed and {"fingerprint", "items"} & set(changed):
            before = json.loads((self.out / RUN_FILE).read_text(encoding="utf-8")).get("items")
            raise InputError(
                f"{self.out} holds an engine run over other images: its sources listed "
                f"{before} image(s) then and list {len(self.items)} now (images added, "
                "removed or renamed since, e.g. one deleted while the run read it); restore "
                "them to resume that run, or choose another output folder for these images"
            )
        if changed:
            raise InputError(
                f"{self.out} holds an engine run with other {', '.join(changed)}; re-run "
                "the same command to resume it, or choose another output folder"
            )
        if changed is None:  # no run recorded yet (or an unreadable record)
            write_json_atomic(self.out / RUN_FILE, self._run_record(settings), indent=1)

    def settings_changed(self, settings: dict[str, Any]) -> list[str] | None:
        """What differs from the run the folder holds ([] when the same; None when the folder
        holds no readable run record). Reads only."""
        path = self.out / RUN_FILE
        if not path.is_file():
            return None
        try:
            before = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            return None
        record = json.loads(json.dumps(self._run_record(settings)))
        if not isinstance(before, dict):
            return None
        return sorted(k for k in record if json.dumps(before.get(k)) != json.dumps(record[k]))

    def _run_record(self, settings: dict[str, Any]) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "settings": settings,
            "items": len(self.items),
            "fingerprint": fingerprint(self.items),
            "shard_size": self.shard_size,
            "shard_kind": self.shard_kind,
            "with_images": self.with_images,
        }

    # ----- resume --------------------------------------------------------------------------
    def is_final(self, shard: int) -> bool:
        return is_final(self.spec, shard)

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
                    record = json.loads(f.read_text(encoding="utf-8"))
                except ValueError:
                    f.unlink()  # cannot happen with atomic writes; redo the image if it does
                    continue
                if not record.get("ok", True) and self.retry_wanted(record):
                    f.unlink()  # failed as its file changed: done again
                    continue
                if "member" not in record:  # staged by an engine before workers wrote shards
                    record = self.record(record)
                    write_json_atomic(f, record)
                out[int(f.stem)] = record
        return out

    # ----- retrying images that changed ----------------------------------------------------
    def retry_wanted(self, failed: dict[str, Any]) -> bool:
        """Whether a re-run retries this failure: its file changed while it was read, or has
        changed since (its stamp now differs from the one recorded). A changed image is not a
        bad one; an image that failed on bytes that stayed the same (corrupt, too large) is
        kept as failed, as is a failure recorded without a stamp."""
        if "stamp" not in failed:
            return False
        if failed.get("changed"):
            return True
        return self.items[int(failed["index"]) - 1].image.stamp() != failed["stamp"]

    def reopen_changed(self) -> list[int]:
        """Turn each finalised shard holding a failure ``retry_wanted`` back into staged
        results (its other images kept as they are, the failure dropped), so this run does
        that image again; return the indexes to retry. The manifest goes first (the run is
        no longer complete), the shard last; killed in between, the shard still stands and
        ``clean_leftovers`` drops its staging, so the next run starts this over."""
        again: list[int] = []
        for shard in range(self.num_shards):
            if not self.is_final(shard):
                continue  # staged failures are looked at by ``done``
            index = self.read_index(shard)
            retry = {int(f["index"]) for f in index["failed"] if self.retry_wanted(f)}
            if not retry:
                continue
            (self.out / MANIFEST).unlink(missing_ok=True)
            self._unfinalise(shard, index, retry)
            again.extend(sorted(retry))
        return again

    def _unfinalise(self, shard: int, index: dict[str, Any], retry: set[int]) -> None:
        path = self.shard_path(shard)
        members = _shard_files(path)
        for entry in index["items"]:
            doc = json.loads(members[entry["file"]])
            image = members[entry["image"]] if "image" in entry else None
            result = {"index": entry["index"], "ok": True, "doc": doc}
            stage_record(self.spec, self.record(result), image)
        for f in index["failed"]:
            if int(f["index"]) not in retry:
                stage_record(self.spec, self.record({**f, "ok": False}))
        if self.shard_kind == "tar":
            path.unlink()
        else:  # renamed out of view in one step, then removed (a leftover if killed)
            gone = path.parent / f".{path.name}.tmp-reopen-{os.urandom(4).hex()}"
            os.rename(path, gone)
            shutil.rmtree(gone)

    # ----- writing (the driver's part: results that never reached a worker) ---------------
    def record(self, result: dict[str, Any]) -> dict[str, Any]:
        """A result as staged: with the key, member name and source its shard index needs."""
        item = self.items[int(result["index"]) - 1]
        return {**result, "key": item.key, "member": self.names[item.key], "source": item.source}

    def stage(self, result: dict[str, Any]) -> None:
        item = self.items[int(result["index"]) - 1]
        image = item.image.read() if self.with_images and result["ok"] else None
        stage_record(self.spec, self.record(result), image)

    def shard_complete(self, shard: int) -> bool:
        return shard_ready(self.spec, shard)

    def finalise(self, shard: int) -> dict[str, Any]:
        """Build shard ``shard`` from its staged results, atomically; return its index."""
        return commit_shard(self.spec, shard)

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


class _FolderFiles(dict[str, bytes]):
    """A folder shard's files, read when asked for."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    def __missing__(self, name: str) -> bytes:
        return (self.folder / name).read_bytes()


def _shard_files(shard: Path) -> dict[str, bytes]:
    """Name -> bytes of a shard's files: a tar read in one pass, a folder's on demand."""
    if shard.suffix != ".tar":
        return _FolderFiles(shard)
    with tarfile.open(shard, "r:") as tar:
        out = {}
        for m in tar:
            f = tar.extractfile(m)
            if f is not None:
                out[m.name] = f.read()
        return out


def errors_csv(failed: Iterable[dict[str, Any]]) -> str:
    import csv

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "reason"])
    for f in failed:
        w.writerow([f["source"], f["reason"]])
    return buf.getvalue()
