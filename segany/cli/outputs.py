"""Output destinations checked before any work: one clear line instead of an errno deep in a
writer after minutes of segmenting.

A destination fails for three reasons a user can fix: a file stands where a folder is needed
(the destination itself or a folder above it), the place is not writable (read-only file
system, permissions), or a file name was expected and a folder is there.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from segany.errors import InputError


def check_output_folder(folder: str | os.PathLike[str], option: str) -> Path:
    """``folder`` as a Path, if it is (or can be created as) a writable folder."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{option} {folder} is a file, not a folder")
    _check_writable(folder, option, folder)
    return folder


def check_output_file(path: str | os.PathLike[str], option: str) -> Path:
    """``path`` as a Path, if a file can be written there (its folder may not exist yet)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{option} {path} is a folder; give a file name")
    _check_writable(path.parent, option, path)
    return path


def _check_writable(folder: Path, option: str, given: Path) -> None:
    # The nearest folder that exists is where the first file or sub-folder will be created.
    existing = folder
    while not existing.exists() and not existing.is_symlink() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "a broken symbolic link" if existing.is_symlink() else "a file"
        raise InputError(f"{option} {given}: {existing} is {what}, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(
            errno.EACCES,
            f"{option} {given}: cannot write in {existing} (read-only file system or no "
            "permission)",
        )


#: Errors that will fail every later write as well: the run stops at the first.
_OUT_OF_SPACE = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}


#: What a folder run that stopped for space keeps, and how to finish it.
IMAGES_KEPT = (
    "the images finished so far are complete and nothing half-written was left: free some "
    "space and run the same command again to finish"
)


def stop_if_out_of_space(
    error: BaseException, out: str | os.PathLike[str], kept: str = IMAGES_KEPT
) -> None:
    """Raise, for the whole run, the error that says the output device is full (``kept``: what
    is left and how to go on); do nothing for any other error."""
    if isinstance(error, OSError) and error.errno in _OUT_OF_SPACE:
        raise OSError(
            error.errno, f"{_OUT_OF_SPACE[error.errno]} while writing to {out}; {kept}"
        ) from error
