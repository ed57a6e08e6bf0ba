"""Reading input images for the command line: one clear ``InputError`` for every bad file.

Images come back H×W×3 uint8 RGB with their EXIF orientation applied (what viewers show, and
what OpenCV's ``imread`` does), normalised by ``segany.images`` as the Predictor does (grayscale
to RGB, alpha dropped, 16-bit scaled by 255/65535).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from segany.errors import InputError

#: Suffixes a folder scan picks up (lower case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Load an image file as H×W×3 uint8 RGB, or raise ``InputError`` saying why not.

    The path checks (a missing file, a folder, a broken link, a device), the decoding and the
    normalisation are ``segany.images.read_image``'s (the Predictor's rules); this adds one
    message for a file that is not an image and one for a broken image file.
    """
    from segany.images import read_image as decode

    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns on odd EXIF; the pixels are fine
            image = decode(path)
    except InputError as e:
        if isinstance(e.__context__, UnidentifiedImageError) or "cannot identify" in str(e):
            raise InputError(f"{path}: not an image file or an unsupported format") from None
        raise
    except (Image.DecompressionBombError, ValueError, TypeError) as e:
        # Broken headers surface as ValueError/TypeError from deep inside PIL.
        raise InputError(f"{path}: cannot decode image ({e})") from None
    # PIL hands out read-only buffers; callers (and torch.as_tensor) expect to own the array.
    return image if image.flags.writeable else image.copy()


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
        if f.suffix.lower() not in IMAGE_SUFFIXES or f.name.startswith("."):
            continue
        # A broken link, a pipe or a device named like an image is yielded too, so that reading
        # it reports the problem and the run counts it, instead of skipping it silently.
        try:
            listed = f.is_file() or not f.is_dir()
        except OSError:  # a path longer than the system allows: reading it says so
            listed = True
        if listed:
            yield f
