"""Write one image's output files as a unit: a kill leaves the old set or the new one, never a mix.

An output folder ``OUT`` of ``segany auto``/``segany segment`` reserves one name, ``OUT/.segany/``
(image outputs never start with a dot, so no image can write there):

- ``.segany/run.json``: the settings of the last run;
- ``.segany/staging/KEY/``: the new files of one image while they are written (same relative
  paths as their final places);
- ``.segany/journal/KEY.json``: written atomically once every staged file is complete; it lists
  the moves (and stale files to delete) that install the set. Its presence is the commit point.

A kill before the journal exists leaves the old set untouched (the staging folder is dropped by
the next run); a kill after it leaves a journal that the next run replays to the end (moves are
idempotent). ``recover`` does both, and removes temporary files that killed atomic writes left.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from segany.atomic import TEMP_SUFFIX, write_json_atomic
from segany.errors import InputError

RESERVED = ".segany"
RUN_FILE = f"{RESERVED}/run.json"

#: File names longer than this (in UTF-8 bytes) cannot be created on common file systems.
NAME_MAX = 255
#: Bytes kept free in a stem's last part for the longest suffix an output adds
#: (``_overlay.png``, ``_mask999.png``, ``.geojson``, ...).
_SUFFIX_ROOM = 24


def output_stem(stem: str) -> str:
    """``stem`` (``/``-separated) with every part short enough for its output names: a part too
    long is cut on a character boundary and given ``~`` and 8 hex digits of its hash, so two long
    names that share a beginning still get different outputs."""
    parts = stem.split("/")
    out = []
    for i, part in enumerate(parts):
        room = NAME_MAX - (_SUFFIX_ROOM if i == len(parts) - 1 else 0)
        raw = part.encode("utf-8", "surrogateescape")
        if len(raw) > room:
            digest = hashlib.sha1(raw).hexdigest()[:8]
            cut = raw[: room - 9].decode("utf-8", "ignore")
            part = f"{cut}~{digest}"
        out.append(part)
    return "/".join(out)


def check_collisions(planned: dict[str, Sequence[Path]], run_files: Iterable[Path]) -> None:
    """Refuse a run where two images, or an image and the run's own files, would write the same
    path (``planned``: input name -> its output paths; ``run_files``: e.g. the COCO file)."""
    owner: dict[Path, str] = {}
    for path in run_files:
        owner[Path(os.path.abspath(path))] = "the run's own output"
    for name, paths in planned.items():
        for path in paths:
            key = Path(os.path.abspath(path))
            if RESERVED in key.parts:
                raise InputError(f"{name} would write into the reserved folder {RESERVED}/")
            if key in owner:
                raise InputError(
                    f"{name} would write {path}, which {owner[key]} also writes: rename the "
                    "image, or choose another name for the run's file (e.g. --coco OTHER.json)"
                )
            owner[key] = str(name)


def stale_numbered(folder: Path, prefix: str, count: int, suffix: str = ".png") -> list[Path]:
    """Files ``PREFIX{i}SUFFIX`` in ``folder`` with i >= ``count``: the numbered outputs of an
    earlier, larger set (``STEM_mask{i}.png`` of ``segment``, ``STEM/{i}.png`` of ``auto``),
    to remove when a set with ``count`` of them is installed."""
    if not folder.is_dir():
        return []
    stale = []
    for path in folder.iterdir():
        name = path.name
        number = name[len(prefix) : len(name) - len(suffix)]
        # isascii: "²".isdigit() is true, but int("²") fails; such a file is no output of ours.
        numbered = name.startswith(prefix) and name.endswith(suffix)
        if numbered and number.isascii() and number.isdigit() and int(number) >= count:
            stale.append(path)
    return sorted(stale)


class OutputSet:
    """The files of one image, staged and then installed together (see the module doc)."""

    def __init__(self, out: Path, key: str) -> None:
        self.out = out
        self.key = hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        self.staging = out / RESERVED / "staging" / self.key
        self.journal = out / RESERVED / "journal" / f"{self.key}.json"

    def staged(self, final: Path) -> Path:
        """Where to write the new version of ``final`` (a path inside ``out``)."""
        return self.staging / final.relative_to(self.out)

    def begin(self) -> None:
        """Start from an empty staging folder (a previous attempt's files are dropped)."""
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True, exist_ok=True)

    def commit(self, *, last: Path | None = None, remove: Iterable[Path] = ()) -> None:
        """Install every staged file over its final path, ``last`` after all others (the file
        whose presence marks the image done), then delete ``remove`` (stale files of the old
        set). Journaled first, so a kill part-way is finished by the next ``recover``."""
        staged = sorted(p for p in self.staging.rglob("*") if p.is_file())
        rel = [p.relative_to(self.staging).as_posix() for p in staged]
        if last is not None:
            tail = last.relative_to(self.out).as_posix()
            rel = [r for r in rel if r != tail] + ([tail] if tail in rel else [])
        keep = set(rel)
        gone = [p.relative_to(self.out).as_posix() for p in remove]
        plan = {
            "staging": self.staging.relative_to(self.out).as_posix(),
            "moves": rel,
            "remove": [g for g in gone if g not in keep],
        }
        write_json_atomic(self.journal, plan)  # the commit point
        _replay(self.out, self.journal)

    def abandon(self) -> None:
        """Drop the staged files (the old set stays as it was)."""
        shutil.rmtree(self.staging, ignore_errors=True)


def _replay(out: Path, journal: Path) -> None:
    plan = json.loads(journal.read_text(encoding="utf-8"))
    staging = out / plan["staging"]
    for rel in plan["moves"]:
        src, dst = staging / rel, out / rel
        if src.is_file():  # already moved when a replay was interrupted
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
    for rel in plan["remove"]:
        with contextlib.suppress(FileNotFoundError):
            (out / rel).unlink()
    shutil.rmtree(staging, ignore_errors=True)
    journal.unlink()
    _remove_empty(out)


def _remove_empty(out: Path) -> None:
    """Drop the reserved folders when nothing is left in them (a tidy output folder)."""
    reserved = out / RESERVED
    for folder in (reserved / "journal", reserved / "staging", reserved):
        with contextlib.suppress(OSError):  # not empty, or already gone
            folder.rmdir()


def recover(out: Path) -> dict[str, int]:
    """Finish installs that a killed run committed, drop sets it had not committed, and remove
    temporary files of interrupted writes. Returns what was done (counts)."""
    done = {"completed": 0, "dropped": 0, "temp_files": 0}
    reserved = out / RESERVED
    if not out.is_dir():
        return done
    journals = sorted((reserved / "journal").glob("*.json")) if reserved.is_dir() else []
    for journal in journals:
        try:
            _replay(out, journal)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(
                f"cannot finish the interrupted write recorded in {journal} ({e}); delete that "
                "file and re-run with --overwrite"
            ) from None
        done["completed"] += 1
    staging = reserved / "staging"
    if staging.is_dir():
        for leftover in staging.iterdir():
            shutil.rmtree(leftover, ignore_errors=True)
            done["dropped"] += 1
    _remove_empty(out)
    for dirpath, _dirs, names in os.walk(out):
        for name in names:
            if name.endswith(TEMP_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(dirpath, name))
                done["temp_files"] += 1
    return done
