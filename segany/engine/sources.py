"""Where the engine's images come from: folders, globs, manifests of paths, SA-1B tar shards.

Every source becomes a sorted list of ``Item``s. An item's ``key`` is stable across runs (the
path relative to the folder or manifest given, or ``TARSTEM/MEMBER`` for a tar member), so a
re-run of the same command finds the same items in the same order and can resume.

Tar shards are read as SA-1B ships them (``sa_000000.tar`` holding ``sa_N.jpg`` + ``sa_N.json``):
listing reads only the member headers, and an image's bytes are read from its offset when it
is processed, so a shard is never unpacked. Only uncompressed tars allow that; a compressed
tar is refused with a message saying so.
"""

from __future__ import annotations

import csv
import glob
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from segany.errors import InputError
from segany.formats.images import IMAGE_SUFFIXES

MANIFEST_SUFFIXES = (".txt", ".csv", ".lst")


@dataclass(frozen=True)
class Blob:
    """Bytes in a file: all of it (``size`` None) or ``size`` bytes at ``offset`` (a tar member)."""

    path: str
    offset: int = 0
    size: int | None = None

    def read(self) -> bytes:
        with open(self.path, "rb") as f:
            if self.size is None:
                return f.read()
            f.seek(self.offset)
            data = f.read(self.size)
        if len(data) != self.size:
            raise InputError(f"{self.path}: truncated tar member at byte {self.offset}")
        return data

    def stamp(self) -> list[int] | None:
        """The file's size, modification time (ns) and inode now; None when it cannot be
        seen. Taken before and after a read, it tells an image that changed while it was read;
        kept with a failure, it tells a re-run whether the file changed since (``retry``)."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return [st.st_size, st.st_mtime_ns, st.st_ino]


@dataclass(frozen=True)
class Item:
    """One image to annotate.

    key: stable id, ``/``-separated (unique in a run). source: what error reports show.
    image: where its bytes are. annotations: an SA-1B JSON beside it (``NAME.json`` next to
    ``NAME.jpg`` in a folder or tar), used by the semi-automatic mode.
    """

    key: str
    source: str
    image: Blob
    annotations: Blob | None = None

    @property
    def file_name(self) -> str:
        return PurePosixPath(self.key).name


def list_items(specs: list[str], *, recursive: bool = True) -> list[Item]:
    """The items of every source spec, sorted by key; duplicate keys are an ``InputError``.

    A spec is a folder (images found by suffix, in sub-folders too unless ``recursive`` is
    False), a ``.tar`` shard, a text/CSV manifest (``.txt``, ``.csv``, ``.lst``), a glob
    pattern (``photos/**/*.jpg``), or one image file.
    """
    items: dict[str, Item] = {}
    for spec in specs:
        for item in _items_of(spec, recursive):
            if item.key in items and items[item.key].source == item.source:
                raise InputError(
                    f"{item.source} comes twice (a manifest listing a path twice, or a tar "
                    "holding two files of that name); remove one"
                )
            if item.key in items:
                raise InputError(
                    f"two inputs have the key {item.key!r} ({items[item.key].source} and "
                    f"{item.source}); give them as separate runs or rename one"
                )
            items[item.key] = item
    if not items:
        raise InputError("no images found in " + ", ".join(specs))
    return [items[k] for k in sorted(items)]


def _items_of(spec: str, recursive: bool) -> list[Item]:
    path = Path(spec)
    if path.is_dir():
        return folder_items(path, recursive=recursive)
    if path.is_file() and _is_tar_name(path.name):
        return tar_items(path)
    if path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
        return manifest_items(path)
    if path.is_file() or path.is_symlink():
        return [_file_item(path, path.name)]
    if glob.has_magic(spec):
        return glob_items(spec)
    raise InputError(f"{spec}: no such file, folder or matching pattern")


def safe_key(text: str, where: str) -> str:
    """``text`` as a key that stays inside the output folder: ``/``-separated, without empty,
    ``.`` and ``..`` parts (so an absolute name or a tar member ``../../x.jpg`` cannot lead
    outside; names that meet after this are caught as duplicate keys)."""
    parts = [p for p in text.replace(os.sep, "/").split("/") if p not in ("", ".", "..")]
    if not parts or "\0" in text:
        raise InputError(f"{where}: {text!r} is not a usable name for an image")
    return "/".join(parts)


def _data_after(path: Path, offset: int) -> bool:
    """Whether ``path`` holds a non-zero byte past ``offset``."""
    with open(path, "rb") as f:
        f.seek(offset)
        while chunk := f.read(1 << 20):
            if chunk.count(0) != len(chunk):
                return True
    return False


def _is_tar_name(name: str) -> bool:
    low = name.lower()
    return low.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz"))


def _file_item(path: Path, key: str) -> Item:
    side = path.with_suffix(".json")
    return Item(
        key,
        str(path),
        Blob(str(path)),
        Blob(str(side)) if side.is_file() else None,
    )


def folder_items(folder: Path, *, recursive: bool = True) -> list[Item]:
    """Image files under ``folder`` (by suffix; hidden files skipped); keys relative to it."""
    pattern = "**/*" if recursive else "*"
    out = []
    for f in sorted(folder.glob(pattern)):
        rel = f.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
            out.append(_file_item(f, rel.as_posix()))
    return out


def glob_items(pattern: str) -> list[Item]:
    """Files matching ``pattern`` (``**`` recurses); keys relative to the pattern's fixed part."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    root = Path(*fixed) if fixed else Path(".")
    out = []
    for name in sorted(glob.glob(pattern, recursive=True)):
        p = Path(name)
        if p.is_file():
            out.append(_file_item(p, p.relative_to(root).as_posix()))
    return out


def manifest_items(manifest: Path) -> list[Item]:
    """Paths listed one per line (``.txt``/``.lst``) or in a CSV's ``path`` column (else its
    first column; an optional ``id`` column gives the key). Relative paths are relative to the
    manifest's folder; keys are the paths as written. Blank lines and ``#`` comments are skipped.
    A listed file that is missing still becomes an item, so the run reports it as an error."""
    try:  # utf-8-sig: a byte-order mark (as spreadsheet programs save) is not text
        text = manifest.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(
            f"{manifest}: not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8"
        ) from None
    if "\0" in text:
        raise InputError(f"{manifest}: holds a NUL character; a manifest is text, a path a line")
    rows: list[tuple[str, str]] = []  # (path, key)
    if manifest.suffix.lower() == ".csv":
        reader = csv.reader(text.splitlines())
        table = [r for r in reader if r and any(c.strip() for c in r)]
        if not table:
            raise InputError(f"{manifest}: the manifest is empty")
        header = [c.strip().lower() for c in table[0]]
        if "path" in header:
            col, key_col = header.index("path"), header.index("id") if "id" in header else None
            body = table[1:]
        else:
            col, key_col, body = 0, None, table
        for r in body:
            if len(r) <= col or not r[col].strip():
                raise InputError(f"{manifest}: a row has no path: {r}")
            value = r[col].strip()
            key = r[key_col].strip() if key_col is not None and len(r) > key_col else value
            rows.append((value, key))
    else:
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                rows.append((line, line))
    base = manifest.parent
    out = []
    for value, key in rows:
        p = Path(value) if Path(value).is_absolute() else base / value
        out.append(_file_item(p, safe_key(key, str(manifest))))
    return out


def tar_items(tar_path: Path) -> list[Item]:
    """Image members of an uncompressed tar, keyed ``TARSTEM/MEMBER``; ``NAME.json`` members
    beside ``NAME.jpg`` become the item's annotations. Reads headers only."""
    stem = tar_path.name.split(".tar")[0] if ".tar" in tar_path.name else tar_path.stem
    members: list[tarfile.TarInfo] = []
    try:
        with tarfile.open(tar_path, "r:") as tar:
            members.extend(m for m in tar if m.isfile())
            end = tar.offset
        # tarfile ends its listing quietly at a damaged or cut header after the first: what
        # follows the end it found must be the zero blocks a tar ends with, else files are lost.
        if _data_after(tar_path, end):
            raise tarfile.ReadError(f"no tar header at byte {end}")
    except tarfile.ReadError as e:
        if tar_path.name.lower().endswith((".gz", ".tgz", ".bz2", ".xz")):
            raise InputError(
                f"{tar_path}: compressed tars cannot be streamed by offset; give an "
                "uncompressed .tar (SA-1B shards are uncompressed)"
            ) from None
        if members:  # headers were read, then the file ended or turned to junk
            raise InputError(
                f"{tar_path}: the tar is cut short or damaged after {len(members)} file(s) "
                f"({e}); copy or download it again"
            ) from None
        raise InputError(f"{tar_path}: not a readable tar file ({e})") from None
    by_name = {m.name: m for m in members}
    out = []
    for m in members:
        name = PurePosixPath(m.name)
        if name.suffix.lower() not in IMAGE_SUFFIXES or name.name.startswith("."):
            continue
        side = by_name.get(str(name.with_suffix(".json")))
        out.append(
            Item(
                safe_key(f"{stem}/{name.as_posix()}", str(tar_path)),
                f"{tar_path}:{m.name}",
                Blob(str(tar_path), m.offset_data, m.size),
                None if side is None else Blob(str(tar_path), side.offset_data, side.size),
            )
        )
    return out
