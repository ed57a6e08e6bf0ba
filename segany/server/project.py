"""The project folder and its rules: where files live, what an acceptable image is.

Layout: ``images/`` (uploads and copied images), ``embeddings/`` (``segany.server.embeddings``),
``models/`` (retrained versions), ``exports/``, ``train/``, and ``annotations.db`` (SQLite
default). Every path that comes from a request goes through ``inside``: it is resolved and
refused unless it stays in the project folder, so ``..``, absolute paths and symlinks out of
the folder are all turned away.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import re
import shutil
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from segany.atomic import atomic_path, write_bytes_atomic
from segany.errors import InputError
from segany.formats.images import IMAGE_SUFFIXES
from segany.images import oriented_size
from segany.tasks.region_files import TIFF_MAGIC
from segany.tasks.region_files import reads_by_region as reads_by_region_path


class NotFound(InputError):
    """An id or path that does not exist (HTTP 404)."""


class TooLarge(InputError):
    """An upload over the size limit (HTTP 413)."""


class Conflict(InputError):
    """A stale edit (HTTP 409); ``current`` is the state the client should merge with."""

    def __init__(self, message: str, current: object) -> None:
        super().__init__(message)
        self.current = current


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    sha256: str


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_CONVERTING = threading.Lock()  # large non-TIFF images are decoded one at a time


class ProjectFolder:
    def __init__(
        self,
        root: Path,
        *,
        max_pixels: int,
        max_upload_bytes: int,
        max_large_pixels: int = 0,
        max_convert_pixels: int = 0,
    ) -> None:
        """``max_large_pixels``: images above ``max_pixels`` and up to this many, TIFFs read by
        region, are accepted and worked on by windows (``segany.server.windows``; 0: none).
        ``max_convert_pixels``: such images in other formats (PNG, JPEG, ...) up to this many
        (and ``max_large_pixels``) are decoded once into a tiled TIFF kept in ``large/``
        (``region_file``; 0: none)."""
        from segany.server.windows import LargeImages

        self.root = Path(root).resolve()
        self.max_pixels = max_pixels
        self.max_upload_bytes = max_upload_bytes
        self.large = LargeImages(max_pixels, max_large_pixels)
        self.max_convert_pixels = min(max_convert_pixels, self.large.max_large_pixels)
        if max_large_pixels <= max_pixels:
            self.max_convert_pixels = 0  # (large images are off)
        for sub in ("images", "embeddings", "models", "exports", "train"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    @property
    def images(self) -> Path:
        return self.root / "images"

    def inside(self, relative: str) -> Path:
        """``relative`` (POSIX, from a request) resolved in the project, or an InputError."""
        if not relative or "\x00" in relative or "\\" in relative:
            raise InputError(f"not a usable relative path: {relative!r}")
        rel = PurePosixPath(relative)
        if rel.is_absolute() or ".." in rel.parts:
            raise InputError(f"paths must stay inside the project folder, got {relative!r}")
        path = (self.root / rel).resolve()
        if path != self.root and self.root not in path.parents:
            raise InputError(f"{relative!r} leads outside the project folder")
        return path

    def relative(self, path: Path) -> str:
        return path.resolve().relative_to(self.root).as_posix()

    # ----- images -------------------------------------------------------------------------
    def check_image(self, data: bytes, name: str) -> ImageInfo:
        """Size and hash of an encoded image, or an InputError saying what is wrong with it.

        The pixel limit is checked from the header, before any pixel is decoded."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data)) as im:
                    width, height = oriented_size(im)  # (as read_image turns it)
                    if width * height > self.max_pixels:
                        raise InputError(
                            f"{name}: {width}×{height} = {width * height} pixels is over the "
                            f"limit of {self.max_pixels} (a decompression bomb or a huge scan)"
                            + (_LARGE_HINT if self.large.max_large_pixels > self.max_pixels else "")
                        )
                    im.load()
        except InputError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise InputError(f"{name}: refused as a decompression bomb ({e})") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise InputError(f"{name}: not an image file or a broken one ({e})") from None
        if width < 1 or height < 1:
            raise InputError(f"{name}: the image is empty")
        return ImageInfo(width, height, hashlib.sha256(data).hexdigest())

    def check_file(self, path: Path) -> ImageInfo:
        """``check_image`` for a file on disk; a TIFF above ``max_pixels`` is checked from its
        header and hashed a block at a time (never read whole), and accepted up to
        ``max_large_pixels`` as a large image (``segany.server.windows``)."""
        from segany.limits import pixel_limit
        from segany.tasks.region_files import open_regions, reads_by_region, region_shape

        if not reads_by_region(path):
            size = self._header_size(path)
            if size is not None and size[0] * size[1] > self.max_pixels and self._converts():
                return self._converted(path, size)
            return self.check_image(path.read_bytes(), path.name)  # (PIL, within max_pixels)
        if importlib.util.find_spec("tifffile") is None:
            return self.check_image(path.read_bytes(), path.name)
        limit = self.large.max_large_pixels
        try:
            with pixel_limit(limit):
                height, width = region_shape(path)
        except InputError:  # a TIFF tifffile does not read: as before, through PIL
            return self.check_image(path.read_bytes(), path.name)
        if width * height <= self.max_pixels:
            return self.check_image(path.read_bytes(), path.name)
        if width * height > limit:
            raise InputError(
                f"{path.name}: {width}×{height} = {width * height} pixels is over the limit "
                f"of {limit}"
                + (" for large images (worked on by windows)" if limit > self.max_pixels else "")
            )
        try:  # the first pixels can be read: the layout tifffile found holds together
            with pixel_limit(limit):
                source = open_regions(path)
                np.asarray(source[0 : min(height, 64), 0 : min(width, 64)])
        except InputError as e:
            raise InputError(f"{path.name}: {e}") from None
        return ImageInfo(width, height, _file_sha256(path))

    def _converts(self) -> bool:
        """Whether large images in formats not read by region are converted (on, and the tiff
        extra's tifffile and zarr installed)."""
        return self.max_convert_pixels > 0 and all(
            importlib.util.find_spec(m) is not None for m in ("tifffile", "zarr")
        )

    def _header_size(self, file: Path | io.BytesIO) -> tuple[int, int] | None:
        """(width, height) of an image (a file, or an upload's bytes) as ``read_image`` turns
        it, from its header alone (None: not an image PIL opens; ``check_image`` then says
        what is wrong)."""
        from segany.limits import pixel_limit

        try:
            with pixel_limit(self.large.max_large_pixels), Image.open(file) as im:
                return oriented_size(im)
        except (
            UnidentifiedImageError,
            OSError,
            SyntaxError,
            ValueError,
            InputError,
            Image.DecompressionBombError,
        ):
            return None

    def _converted(self, path: Path, size: tuple[int, int]) -> ImageInfo:
        """A large image in a format not read by region, checked and converted into the tiled
        TIFF ``region_file`` reads (once per content: kept under its sha256)."""
        width, height = size
        if width * height > self.max_convert_pixels:
            raise InputError(
                f"{path.name}: {width}×{height} = {width * height} pixels is over the limit of "
                f"{self.max_convert_pixels} for a large image that is not a TIFF (it is decoded "
                "whole once, about 6 bytes a pixel): raise --max-convert-pixels, or save it as "
                "a tiled TIFF, which is read by region"
            )
        sha256 = _file_sha256(path)
        self._convert(path, sha256, width * height)
        return ImageInfo(width, height, sha256)

    def _convert(self, path: Path, sha256: str, pixels: int) -> Path:
        from segany.limits import pixel_limit
        from segany.tasks.region_files import write_region_tiff

        target = self.root / "large" / f"{sha256}.tif"
        if target.is_file():  # (made: reads of converted images never wait for a conversion)
            return target
        # One conversion at a time: each holds the decoded image (about 6 bytes a pixel, up
        # to max_convert_pixels), so uploads at once cannot add those up.
        with _CONVERTING:
            if not target.is_file():
                target.parent.mkdir(exist_ok=True)
                try:
                    with pixel_limit(max(pixels, self.max_pixels)):
                        write_region_tiff(path, target)
                except InputError as e:
                    raise InputError(f"{path.name}: {e}") from None
        return target

    def region_file(self, row: Any) -> Path:
        """The file a large image (``row``: its ``path``, ``sha256``, size) is read by region
        from: the image's own for a TIFF, else its conversion in ``large/`` (made again from
        the image if it was removed). Any other image: its own file."""
        path = self.inside(row.path)
        if not self.large.is_large(row) or reads_by_region_path(path):
            return path
        if not path.is_file():
            raise NotFound(f"the file of image {row.id} is missing from the project")
        return self._convert(path, row.sha256, int(row.width) * int(row.height))

    def safe_name(self, name: str) -> str:
        """A file name for an upload: the base name, safe characters, an image suffix."""
        base = PurePosixPath(name.replace("\\", "/")).name
        stem, dot, suffix = base.rpartition(".")
        if not dot or f".{suffix.lower()}" not in IMAGE_SUFFIXES:
            raise InputError(
                f"{name!r}: the file name must end in one of {', '.join(IMAGE_SUFFIXES)}"
            )
        stem = _UNSAFE.sub("_", stem).strip("._-")[:100] or "image"
        return f"{stem}.{suffix.lower()}"

    def store_upload(self, data: bytes, name: str) -> tuple[str, ImageInfo]:
        """Check and write an uploaded image under ``images/``; returns its relative path."""
        if len(data) > self.max_upload_bytes:
            raise TooLarge(f"{name}: {len(data)} bytes is over the {self.max_upload_bytes} limit")
        safe = self.safe_name(name)
        tiff = data[:4] in TIFF_MAGIC and importlib.util.find_spec("tifffile") is not None
        size = None if tiff or not self._converts() else self._header_size(io.BytesIO(data))
        if tiff or (size is not None and size[0] * size[1] > self.max_pixels):
            # maybe a large image, checked by its header: as a hidden file (scans skip it),
            # dropped after; the upload is written below as any other
            with tempfile.NamedTemporaryFile(dir=self.images, prefix=".upload-") as tmp:
                tmp.write(data)
                tmp.flush()
                info = self.check_file(Path(tmp.name))
        else:
            info = self.check_image(data, safe)
        target = self.images / safe
        stem, suffix = target.stem, target.suffix
        n = 1
        while target.exists():
            if _file_sha256(target) == info.sha256:
                return self.relative(target), info  # the same file again
            target = self.images / f"{stem}-{n}{suffix}"
            n += 1
        write_bytes_atomic(target, data)
        return self.relative(target), info

    def scan(self, folder: str) -> list[tuple[str, ImageInfo]]:
        """Images found in a project sub-folder (not recursive); bad files are skipped."""
        root = self.inside(folder)
        if not root.is_dir():
            raise NotFound(f"{folder!r} is not a folder in the project")
        found = []
        for path in sorted(root.iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
                continue
            if not path.is_file() or self.root not in path.resolve().parents:
                continue  # a symlink out of the project
            try:
                info = self.check_file(path)
            except InputError:
                continue
            found.append((self.relative(path), info))
        return found

    def copy_in(self, folder: Path) -> tuple[list[Path], list[Path]]:
        """Copy the images of an outside folder (given on the command line) into ``images/``:
        (copied, already there). A file whose bytes are in ``images/`` already is not copied
        again; another file of the same name is copied under a new name (``NAME-1.png``)."""
        if not Path(folder).is_dir():
            raise InputError(f"{folder}: not a folder of images")
        copied, present = [], []
        for path in sorted(Path(folder).iterdir()):
            if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            digest = _file_sha256(path)
            safe = self.safe_name(path.name)
            target = self.images / safe
            stem, suffix = target.stem, target.suffix
            n = 1
            while target.exists():
                if _file_sha256(target) == digest:
                    break
                target = self.images / f"{stem}-{n}{suffix}"
                n += 1
            if target.exists():
                present.append(target)
            else:
                with atomic_path(target) as tmp:
                    shutil.copyfile(path, tmp)
                copied.append(target)
        return copied, present


#: What a refusal at the pixel limit adds: how a scan that large is taken in.
_LARGE_HINT = (
    "; an image that large is worked on by windows when the tiff extra is installed (pip "
    "install 'segany[server,tiff]'): a TIFF or BigTIFF read by region, another format "
    "converted once into one (up to --max-convert-pixels)"
)


def _file_sha256(path: Path) -> str:
    """A file's sha256, read a block at a time (a large scan is gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()
