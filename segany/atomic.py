"""Atomic file writes: a reader never sees a half-written output file.

The one scheme every writer in segany uses (formats, weights files, training checkpoints,
downloads): write to a temporary name in the destination folder, flush it to disk (``fsync``),
then rename it over the final name with ``os.replace`` (atomic on POSIX and Windows when both
names are on the same file system, which a sibling temporary file guarantees). A crash or Ctrl-C
leaves either the old file or the new one, never a truncated one, so a folder run can trust that
an existing output is complete.

- ``atomic_open(path, mode)``: a file object to write into.
- ``atomic_path(path)``: a temporary path, for writers that want a file name
  (``safetensors.save_file``, ``torch.save``).
- ``atomic_paths(*paths)``: several files that change together or not at all (a training
  checkpoint's weights and state).
- ``publish(tmp, path)``: the last step alone, for a file written elsewhere (a verified download).
- ``write_bytes_atomic``, ``write_text_atomic``, ``write_json_atomic``: one-call helpers.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

#: Every temporary file ends with this, so a later run can find and remove those a kill left.
TEMP_SUFFIX = ".segany.tmp"


def _temp_prefix(name: str) -> str:
    """``.NAME.`` (so a stray temporary file says what it was for), or just ``.`` when that
    would make the temporary name longer than the 255 bytes a file name may have."""
    prefix = f".{name}."
    if len(prefix.encode("utf-8", "surrogateescape")) + 8 + len(TEMP_SUFFIX) > 255:
        return "."
    return prefix


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; rename it to ``path`` on success.

    ``mode`` is ``"w"`` (text, UTF-8, ``\\n`` newlines) or ``"wb"``. Parent folders are created.
    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open mode must be 'w' or 'wb', got {mode!r}")
    target = Path(path)
    make_folder(target.parent)
    fd, tmp = tempfile.mkstemp(
        prefix=_temp_prefix(target.name), suffix=TEMP_SUFFIX, dir=target.parent
    )
    try:
        kwargs: dict[str, Any] = {"encoding": "utf-8", "newline": "\n"} if mode == "w" else {}
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
        publish(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary sibling path of ``path`` to write to; published as ``path`` on success.

    For writers that take a file name. Parent folders are created; on an exception the
    temporary file is removed and ``path`` is left untouched.
    """
    with atomic_paths(path) as (tmp,):
        yield tmp


@contextlib.contextmanager
def atomic_paths(*paths: str | os.PathLike[str]) -> Iterator[list[Path]]:
    """Temporary sibling paths of several files, published together: all are flushed to disk
    before the first is renamed, so a write that fails (a full disk) changes none of them."""
    targets = [Path(p) for p in paths]
    temps: list[Path] = []
    try:
        for target in targets:
            make_folder(target.parent)
            fd, name = tempfile.mkstemp(
                prefix=_temp_prefix(target.name), suffix=TEMP_SUFFIX, dir=target.parent
            )
            os.close(fd)
            temps.append(Path(name))
        yield temps
        for tmp in temps:
            _flush(tmp)
        for tmp, target in zip(temps, targets, strict=True):
            os.replace(tmp, target)
    except BaseException:
        for tmp in temps:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise


def make_folder(folder: str | os.PathLike[str]) -> None:
    """``mkdir -p folder``; when a file stands where a folder is needed, the error names it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:
        blocker = next((p for p in (folder, *folder.parents) if p.is_file()), None)
        if blocker is None:
            raise
        where = "" if blocker == folder else f"cannot create the folder {folder}: "
        raise NotADirectoryError(
            errno.ENOTDIR, f"{where}{blocker} is a file, not a folder to write into"
        ) from e


def publish(tmp: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Flush the finished file ``tmp`` to disk and rename it over ``path`` (same folder)."""
    _flush(tmp)
    os.replace(tmp, path)


def _flush(tmp: str | os.PathLike[str]) -> None:
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    # mkstemp creates 0600 files; give outputs the permissions open() would have given.
    os.chmod(tmp, 0o666 & ~_umask())


@functools.cache
def _umask() -> int:
    # Reading the umask means setting it; do it once, not on every write.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def write_json_atomic(path: str | os.PathLike[str], obj: Any, *, indent: int | None = None) -> None:
    """Write ``obj`` as JSON; numpy scalars and arrays are converted to plain Python."""
    write_text_atomic(path, json.dumps(obj, indent=indent, default=_json_default))


def _json_default(obj: Any) -> Any:
    # numpy values reach us from records built with numpy; json cannot encode them itself.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, bytes):
        return obj.decode("ascii")
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")
