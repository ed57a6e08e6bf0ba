"""Turn what users hold (arrays of many dtypes, PIL images, paths) into H×W×3 uint8 RGB.

Normalisation, stated once:
- uint8: used as is. uint16: scaled by 255/65535 and rounded (full 16-bit range to 0-255).
- float: values in [0, 1] are scaled by 255; otherwise values must lie in [0, 255] and are
  taken as 8-bit intensities. Rounded to nearest, NaN or infinite values are rejected.
- H×W and H×W×1 (grayscale) are repeated to 3 channels; H×W×4 drops the alpha channel.
- ``image_format="BGR"`` reverses the channel order of 3/4-channel inputs.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from segany.errors import InputError
from segany.limits import check_image_size

ImageLike = Any  # np.ndarray | PIL.Image.Image | str | os.PathLike


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file into H×W×3 uint8 RGB, with EXIF orientation applied.

    The header's size is checked against ``segany.limits`` before any pixel is decoded, so a
    decompression bomb is an ``InputError`` like any other bad file."""
    from PIL import ImageOps

    p = check_image_path(path)
    try:
        with Image.open(p) as raw:
            check_image_size(raw.height, raw.width, what=f"image {p}")
            raw.load()
            return pil_to_array(ImageOps.exif_transpose(raw))
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InputError(f"cannot read image {p}: {exc}") from None


def oriented_size(im: Image.Image) -> tuple[int, int]:
    """(width, height) of an opened image as ``read_image`` returns it, from its header: its
    EXIF orientation applied (5–8 turn it a quarter, so the sides swap)."""
    width, height = im.size
    try:
        turned = im.getexif().get(0x0112) in (5, 6, 7, 8)  # the Orientation tag
    except Exception:  # noqa: BLE001 - a damaged EXIF block: PIL's transpose ignores it too
        turned = False
    tags = getattr(im, "tag_v2", None)  # a TIFF's: PIL gives its size turned already
    if turned and tags is not None and (tags.get(256), tags.get(257)) != (width, height):
        turned = False
    return (height, width) if turned else (width, height)


def check_image_path(path: str | os.PathLike[str]) -> Path:
    """``path`` if it is a regular file (or a link to one); else an ``InputError`` that tells
    a missing file from a folder, a broken link and a device or pipe."""
    p = Path(path)
    try:
        return _existing_file(p)
    except OSError as exc:  # a name the system cannot even look up
        shown = str(p) if len(str(p)) <= 80 else str(p)[:60] + "…" + str(p)[-15:]
        if exc.errno == errno.ENAMETOOLONG:
            raise InputError(
                f"the path {shown} ({len(str(p))} characters) is longer than this system allows "
                "for a file or folder name; give a shorter path"
            ) from None
        raise InputError(f"cannot look up {shown}: {exc.strerror or exc}") from None


def _existing_file(p: Path) -> Path:
    if p.is_file():
        return p
    if p.is_dir():
        raise InputError(f"{p} is a folder, not an image file; give an image file")
    if p.is_symlink():
        raise InputError(
            f"{p} is a broken symbolic link (its target is missing, or the links loop)"
        )
    if p.exists():
        raise InputError(f"{p} is not a regular file (a device, pipe or socket); give an image")
    raise InputError(f"image file not found: {p}")


def pil_to_array(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im)
        if arr.dtype != np.uint16:
            arr = np.clip(arr, 0, 65535).astype(np.uint16)
        return to_rgb_uint8(arr)
    if im.mode == "F":
        return to_rgb_uint8(np.asarray(im))
    return np.asarray(im.convert("RGB"))


def to_rgb_uint8(image: ImageLike, image_format: str = "RGB") -> np.ndarray:
    """Any supported image -> contiguous H×W×3 uint8 RGB (see the module doc for the rules)."""
    if image_format not in ("RGB", "BGR"):
        raise InputError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
    if isinstance(image, (str, os.PathLike)):
        arr = read_image(image)
        return arr
    if isinstance(image, Image.Image):
        arr = pil_to_array(image)
    else:
        if hasattr(image, "detach"):  # a torch tensor: H×W×C on any device
            image = tensor_to_numpy(image)
        if not isinstance(image, np.ndarray):
            raise TypeError(
                "image must be a numpy array, a PIL image or a file path, "
                f"got {type(image).__name__}"
            )
        if image.ndim in (2, 3) and image.size:
            check_image_size(image.shape[0], image.shape[1])
        arr = _to_uint8(image)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
            raise InputError(
                f"image must be H×W, H×W×1, H×W×3 or H×W×4, got shape {tuple(image.shape)}"
            )
        if arr.shape[2] == 4:
            arr = arr[:, :, :3]
        if image_format == "BGR" and arr.shape[2] == 3:
            arr = arr[:, :, ::-1]
        if arr.shape[2] == 1:
            arr = np.repeat(arr, 3, axis=2)
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"image is empty: shape {tuple(arr.shape)}")
    return np.ascontiguousarray(arr)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.size == 0:
        raise InputError(f"image is empty: shape {tuple(image.shape)}")
    if not image.dtype.isnative:  # big-endian 16-bit TIFF/FITS data, say: same values
        image = image.astype(image.dtype.newbyteorder("="))
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return np.round(image.astype(np.float32) * (255.0 / 65535.0)).astype(np.uint8)
    if image.dtype == np.bool_:
        return image.astype(np.uint8) * 255
    if np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all():
            raise InputError(
                "image contains NaN or infinite values; expected values in [0, 1] or [0, 255]"
            )
        lo, hi = float(image.min()), float(image.max())
        if lo < 0 or hi > 255:
            raise InputError(
                f"float image values must lie in [0, 1] or [0, 255], got [{lo:g}, {hi:g}]"
            )
        scaled = image * 255.0 if hi <= 1.0 else image
        return np.round(scaled).astype(np.uint8)
    raise TypeError(f"unsupported image dtype {image.dtype}: expected uint8, uint16, bool or float")


def tensor_to_numpy(t: Any) -> np.ndarray:
    """A torch tensor on any device as numpy; bfloat16/float16 widened to float32 (numpy has
    no bfloat16)."""
    import torch  # a tensor was given, so torch is loaded already

    if t.is_meta:
        raise InputError(
            "the image tensor is on the meta device and holds no values; give a tensor with "
            "data (on the CPU or a GPU), a numpy array, a PIL image or a path"
        )
    t = t.detach().cpu()
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.float()
    return np.asarray(t.numpy())
