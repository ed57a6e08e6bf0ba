"""Reading input images for the command line: one clear ``InputError`` for every bad file.

Images come back H×W×3 uint8 RGB with their EXIF orientation applied (what viewers show, and
what OpenCV's ``imread`` does). Grayscale, palette and RGBA images are converted to RGB (alpha
dropped); 16-bit images are scaled by 255/65535.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from segany.errors import InputError

#: Suffixes a folder scan picks up (lower case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Load an image file as H×W×3 uint8 RGB, or raise ``InputError`` saying why not."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not an image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns on odd EXIF; the pixels are fine
            with Image.open(path) as img:
                img.load()  # decode now: a truncated file fails here, not later
                img = ImageOps.exif_transpose(img)
                return _to_rgb(img)
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image file or an unsupported format") from None
    except (OSError, SyntaxError, ValueError) as e:
        # PIL raises OSError for truncated data, SyntaxError/ValueError for broken headers.
        raise InputError(f"{path}: cannot decode image ({e})") from None


def _to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        arr = np.clip(arr * (255.0 / 65535.0) + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        scale = 255.0 if np.nanmax(arr, initial=0.0) <= 1.0 else 1.0  # 0..1 floats or 0..255
        arr = np.clip(np.nan_to_num(arr) * scale + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    if arr.size == 0:
        raise InputError("image has no pixels")
    return arr


def find_images(paths: Iterable[str | os.PathLike[str]], *, recursive: bool = False) -> list[Path]:
    """Files named directly plus image files found in named folders, sorted, no duplicates.

    A named file is always returned (even with an odd suffix) so that reading it reports the
    problem; folders contribute only files with an image suffix. A missing path raises.
    """
    seen: dict[Path, None] = {}
    for p in paths:
        path = Path(p)
        if path.is_dir():
            for f in _scan(path, recursive):
                seen.setdefault(f, None)
        elif path.exists() or path.is_symlink():
            seen.setdefault(path, None)
        else:
            raise InputError(f"{path}: no such file or folder")
    return list(seen)


def _scan(folder: Path, recursive: bool) -> Iterator[Path]:
    pattern = "**/*" if recursive else "*"
    for f in sorted(folder.glob(pattern)):
        if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."):
            yield f
