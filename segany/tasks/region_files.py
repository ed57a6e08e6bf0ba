"""Large image files read by region, for tiled work (``segany.tasks.tiles``).

``open_regions(path)`` gives what ``TiledPredictor.set_image`` and ``generate_tiled`` read a
tile at a time:

- an uncompressed TIFF or BigTIFF (one contiguous block of interleaved pixels), or a ``.npy``
  file: ``FileRegions``, which reads each region with positioned reads (``os.pread``), so the
  pixels read do not stay in the process's memory the way a memory map's pages do;
- a compressed or tiled TIFF: its zarr store (``tifffile.imread(path, aszarr=True)``) when
  ``zarr`` is installed (``pip install 'segany[tiff]'``), else the whole image decoded, within
  the pixel limit (``segany.limits``);
- a pyramidal TIFF (a whole-slide image, a cloud-optimised GeoTIFF): level 0 as above, and each
  lower level that is the image shrunk by a whole factor kept in ``levels``, so that
  ``read_overview`` reads the whole-image overview from a level instead of level 0
  (``overview_factor`` picks a factor that a level serves);
- any other format (PNG, JPEG, ...): decoded whole through PIL, within the pixel limit.
  ``write_region_tiff`` converts such a file, once, into a tiled TIFF that is read by region
  (the annotation app does so for large photos, ``segany.server.windows``).

Every region comes back as h×w×3 uint8 RGB (grey repeated, alpha dropped, 16-bit scaled as
``segany.images`` states). A file that is not what it claims (a TIFF cut short, a header
tifffile cannot parse) is an ``InputError`` that names it. ``read_overview`` shrinks any such
source by an integer factor a strip at a time (block means).
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from segany.errors import InputError
from segany.images import check_image_path, read_image, to_rgb_uint8
from segany.limits import check_image_size

__all__ = [
    "FileRegions",
    "open_regions",
    "overview_factor",
    "read_overview",
    "reads_by_region",
    "write_region_tiff",
]

TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")  # TIFF and BigTIFF, both byte orders
NPY_MAGIC = b"\x93NUMPY"
STRIP_BYTES = 16 * 2**20  # read_overview reads about this many bytes of pixels at once


class RegionReader(ABC):
    """The array-like every region source here presents: ``shape`` (H, W, 3), ``dtype``
    uint8, and ``source[y0:y1, x0:x1]`` -> h×w×3 uint8 RGB."""

    shape: tuple[int, int, int]
    dtype = np.dtype(np.uint8)
    name: str
    #: (factor, reader) per lower pyramid level: the image shrunk ``factor`` times, each side
    #: rounded up or down (a pyramidal TIFF's; ``read_overview`` reads them)
    levels: list[tuple[int, RegionReader]]

    @abstractmethod
    def region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """The pixels of rows ``y0:y1`` and columns ``x0:x1`` (checked by ``__getitem__``),
        (y1-y0)×(x1-x0)×3 uint8 RGB."""

    def __getitem__(self, key: Any) -> np.ndarray:
        two = isinstance(key, tuple) and len(key) == 2
        if not (two and all(isinstance(k, slice) for k in key)):
            raise InputError(f"{self.name} is read by region: index it as [y0:y1, x0:x1]")
        h, w = self.shape[:2]
        (y0, y1, sy), (x0, x1, sx) = key[0].indices(h), key[1].indices(w)
        if sy != 1 or sx != 1 or y1 <= y0 or x1 <= x0:
            raise InputError(f"{self.name}: a region must be a non-empty [y0:y1, x0:x1], got {key}")
        return to_rgb_uint8(self.region(y0, y1, x0, x1))


class FileRegions(RegionReader):
    """H×W (grey) or H×W×C (C in 1, 3, 4) uint8/uint16 pixels stored uncompressed, row by row,
    from byte ``offset`` of the file at ``path``."""

    def __init__(
        self, path: str | os.PathLike[str], offset: int, shape: tuple[int, ...], dtype: Any
    ) -> None:
        self.path = Path(path)
        self.name = str(path)
        self.raw_dtype = np.dtype(dtype)
        if self.raw_dtype.newbyteorder("=") not in (np.dtype(np.uint8), np.dtype(np.uint16)):
            raise InputError(f"{path}: pixels of type {self.raw_dtype}; expected 8 or 16 bit")
        channels = 1 if len(shape) == 2 else int(shape[2])
        if len(shape) not in (2, 3) or channels not in (1, 3, 4):
            raise InputError(f"{path}: pixels of shape {tuple(shape)}; expected H×W or H×W×3/4")
        h, w = check_image_size(shape[0], shape[1], what=f"image {path}")
        self.levels = []
        self.offset = int(offset)
        self.channels = channels
        self.pixel_bytes = channels * self.raw_dtype.itemsize
        self.shape = (h, w, 3)
        size = self.path.stat().st_size
        need = self.offset + h * w * self.pixel_bytes
        if size < need:
            raise InputError(
                f"{path} is cut short: it holds {size} bytes, its {w}×{h} pixels need {need} "
                "(an interrupted copy or download?)"
            )

    def region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        w = self.shape[1]
        row = w * self.pixel_bytes
        fd = os.open(self.path, os.O_RDONLY)
        try:
            if x0 == 0 and x1 == w:  # whole rows: one read
                data = _pread(fd, (y1 - y0) * row, self.offset + y0 * row, self.name)
            else:
                width = (x1 - x0) * self.pixel_bytes
                start = self.offset + x0 * self.pixel_bytes
                parts = (_pread(fd, width, start + y * row, self.name) for y in range(y0, y1))
                data = b"".join(parts)
        finally:
            os.close(fd)
        pixels = np.frombuffer(data, self.raw_dtype).reshape(y1 - y0, x1 - x0, self.channels)
        return pixels if self.channels > 1 else pixels[:, :, 0]


def _pread(fd: int, size: int, at: int, name: str) -> bytes:
    data = os.pread(fd, size, at)
    if len(data) != size:
        raise InputError(f"{name} changed while it was read: {len(data)} of {size} bytes at {at}")
    return data


class ArrayRegions(RegionReader):
    """A zarr (or any sliceable) H×W or H×W×C uint8/uint16 array, read by region."""

    def __init__(self, array: Any, name: str) -> None:
        shape = tuple(int(v) for v in array.shape)
        if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in (1, 3, 4)):
            raise InputError(f"{name}: pixels of shape {shape}; expected H×W or H×W×3/4")
        h, w = check_image_size(shape[0], shape[1], what=f"image {name}")
        self.array = array
        self.name = name
        self.shape = (h, w, 3)
        self.levels = []

    def region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        try:
            return np.asarray(self.array[y0:y1, x0:x1])
        except Exception as e:  # noqa: BLE001 - a damaged tile, an unknown codec
            raise InputError(
                f"cannot read region [{y0}:{y1}, {x0}:{x1}] of {self.name}: {type(e).__name__}: {e}"
            ) from None


def _kind(path: str | os.PathLike[str]) -> str | None:
    """ "tiff" (TIFF or BigTIFF) or "npy" by the file's first bytes; None for any other file and
    for one that cannot be opened."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return None
    if head[:4] in TIFF_MAGIC:
        return "tiff"
    return "npy" if head[:6] == NPY_MAGIC else None


def reads_by_region(path: str | os.PathLike[str]) -> bool:
    """Whether ``open_regions`` may read ``path`` by region (a TIFF/BigTIFF or a ``.npy`` file)
    rather than decode it whole."""
    return _kind(path) is not None


def open_regions(path: str | os.PathLike[str]) -> RegionReader | np.ndarray:
    """An image file as a region source (see the module's notes), or H×W×3 uint8 RGB when the
    format is read whole. The size is checked against the pixel limit in force first."""
    p = check_image_path(path)
    kind = _kind(p)
    if kind == "tiff":
        return _open_tiff(p)
    if kind == "npy":
        return _open_npy(p)
    return read_image(p)


class _Level(NamedTuple):
    """Where one level of a TIFF is, for reading it by region."""

    shape: tuple[int, ...]
    axes: str
    dtype: np.dtype
    offset: int | None  # the first byte of its pixels when stored as one uncompressed block
    zarr_key: dict[str, int]  # tifffile's selection of it (``imread(..., aszarr=True, **key)``)


def region_shape(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(H, W) of a file ``reads_by_region`` accepts (a TIFF or ``.npy``), from its header
    alone: no pixel is decoded, so a caller can choose between a region read and a whole one
    first (a compressed TIFF without zarr is otherwise decoded whole by ``open_regions``)."""
    p = check_image_path(path)
    if _kind(p) == "tiff":
        shape = _tiff_levels(p)[0].shape
    else:
        shape = _open_npy(p).shape
    return int(shape[0]), int(shape[1])


def _tiff_levels(p: Path) -> list[_Level]:
    """The TIFF's image as levels (level 0 first; a pyramid's lower levels after it), from
    its header; an InputError for a file tifffile cannot read or axes other than YX/YXS."""
    try:
        import tifffile
    except ImportError:
        raise InputError(
            f"{p} is a TIFF: reading it needs tifffile (pip install 'segany[tiff]')"
        ) from None
    try:
        with tifffile.TiffFile(p) as tif:
            series = tif.series[0]
            if series.axes in ("YX", "YXS"):  # one image, with its pyramid's levels if any
                levels = [
                    _level_layout(tif, level.keyframe, level, {"series": 0, "level": k})
                    for k, level in enumerate(series.levels)
                ]
            else:  # pages stacked in one series (a multi-page TIFF): its first page
                page = tif.pages.first
                levels = [_level_layout(tif, page, page, {"key": 0})]
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - tifffile raises many kinds on a damaged file
        raise InputError(f"cannot read TIFF {p}: {type(e).__name__}: {e}") from None
    shape, axes = levels[0].shape, levels[0].axes
    if axes not in ("YX", "YXS"):
        raise InputError(f"{p}: a TIFF with axes {axes} (shape {shape}); expected YX or YXS")
    return levels


def _open_tiff(p: Path) -> RegionReader | np.ndarray:
    levels = _tiff_levels(p)
    import tifffile

    zarr: Any = None
    with contextlib.suppress(ImportError):
        zarr = importlib.import_module("zarr")  # (optional: the tiff extra)
    shape = levels[0].shape
    check_image_size(shape[0], shape[1], what=f"image {p}")
    source = _level_reader(p, levels[0], zarr, str(p))
    if source is None:  # compressed or tiled, and no zarr: the whole image, within the limit
        from segany.limits import MAX_IMAGE_PIXELS

        if shape[0] * shape[1] > MAX_IMAGE_PIXELS:
            raise InputError(
                f"{p} is a compressed or tiled TIFF of {shape[1]}×{shape[0]} px: reading it by "
                "region needs zarr (pip install 'segany[tiff]'), or save it uncompressed"
            )
        try:
            return to_rgb_uint8(tifffile.imread(p, key=0))
        except Exception as e:  # noqa: BLE001 - a damaged strip or tile, an unknown codec
            raise InputError(f"cannot read TIFF {p}: {type(e).__name__}: {e}") from None
    source.levels = _lower_levels(p, levels, zarr)
    return source


def _lower_levels(p: Path, levels: list[_Level], zarr: Any) -> list[tuple[int, RegionReader]]:
    """A pyramid's lower levels that are level 0 shrunk by a whole factor, each side rounded up
    or down (``read_overview`` reads them), as (factor, reader); a level of another size,
    layout or pixel type, or one that cannot be opened, is left out: it only speeds up the
    overview."""
    h, w = levels[0].shape[:2]
    found = []
    for index, level in enumerate(levels[1:], start=1):
        lh, lw = level.shape[:2]
        factor = max(1, round(w / max(1, lw)))
        same = level.axes == levels[0].axes and level.shape[2:] == levels[0].shape[2:]
        if factor < 2 or not same or level.dtype != levels[0].dtype:
            continue
        if lh not in (h // factor, -(-h // factor)) or lw not in (w // factor, -(-w // factor)):
            continue
        with contextlib.suppress(InputError):
            reader = _level_reader(p, level, zarr, f"{p} (pyramid level {index})")
            if reader is not None:
                found.append((factor, reader))
    return found


def _level_layout(tif: Any, page: Any, level: Any, zarr_key: dict[str, int]) -> _Level:
    """``level`` (a series level or a page) of ``tif``, whose first page is ``page``."""
    offsets, counts = list(page.dataoffsets), list(page.databytecounts)
    contiguous = (
        page.compression == 1
        and page.planarconfig == 1
        and not page.is_tiled
        and all(o + c == n for o, c, n in zip(offsets, counts, offsets[1:], strict=False))
    )
    return _Level(
        tuple(int(v) for v in level.shape),
        level.axes,
        np.dtype(page.dtype).newbyteorder(tif.byteorder),
        offsets[0] if contiguous and offsets else None,
        zarr_key,
    )


def _level_reader(p: Path, level: _Level, zarr: Any, name: str) -> RegionReader | None:
    """``level`` of the TIFF read by region: positioned reads when it is stored as one
    uncompressed block, else through tifffile's zarr store; None without zarr."""
    if level.offset is not None:
        reader: RegionReader = FileRegions(p, level.offset, level.shape, level.dtype)
        reader.name = name
        return reader
    if zarr is None:
        return None
    import tifffile

    try:
        imread: Any = tifffile.imread  # (its overloads do not take a ** selection)
        store = imread(p, aszarr=True, **level.zarr_key)
        return ArrayRegions(zarr.open(store, mode="r"), name)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - an unknown codec, a damaged index, a zarr too old
        hint = ""
        if "zarr" in str(e):  # tifffile refuses a zarr it does not support
            hint = " (pip install -U 'segany[tiff]' for a zarr that tifffile reads)"
        raise InputError(f"cannot read TIFF {name}: {type(e).__name__}: {e}{hint}") from None


def _open_npy(p: Path) -> RegionReader:
    try:
        with open(p, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read(f)
            offset = f.tell()
    except (ValueError, OSError, SyntaxError) as e:
        raise InputError(f"cannot read {p} as a .npy array: {e}") from None
    if fortran:
        raise InputError(f"{p} is stored column-major (Fortran order); save it in C order")
    return FileRegions(p, offset, shape, dtype)


def overview_factor(source: Any, side: int, least: int) -> int:
    """The factor ``read_overview`` shrinks ``source`` by so that its long side is at most
    ``side``: the smallest that does, or, for a pyramid, a multiple of one of its levels'
    factors when that is less than twice as large and leaves the long side at least ``least``
    px (so the overview is read from that level: a g-times smaller level holds 1/g² of the
    pixels)."""
    long = max(int(v) for v in source.shape[:2])
    smallest = max(1, math.ceil(long / side))
    best = smallest
    for g, _ in sorted(getattr(source, "levels", [])):
        f = g * math.ceil(smallest / g)
        if f < 2 * smallest and math.ceil(long / f) >= least:
            best = f
    return best


def read_overview(source: Any, factor: int) -> np.ndarray:
    """``source`` (H×W×3 uint8, or a region source) shrunk ``factor`` times:
    ceil(H/f)×ceil(W/f)×3 uint8, read a strip of rows at a time. Each pixel is the mean of a
    factor×factor block (cut at the image's edge), or, when the source is a pyramid with a
    level whose factor divides ``factor``, the block mean over the largest such level (the
    level's own pixels when the factors are equal; a level whose sides were rounded down gets
    its last row or column repeated; a level that cannot be read falls back to level 0)."""
    h, w = (int(v) for v in source.shape[:2])
    f = int(factor)
    if f < 1:
        raise InputError(f"the overview factor must be at least 1, got {factor}")
    oh, ow = math.ceil(h / f), math.ceil(w / f)
    usable = [(g, level) for g, level in getattr(source, "levels", []) if f % g == 0]
    if usable:
        g, level = max(usable, key=lambda item: item[0])
        with contextlib.suppress(InputError):  # a damaged level: level 0's block means
            small = read_overview(level, f // g)
            # a level rounded down lacks the image's last partial block: repeat its edge
            pad = ((0, oh - small.shape[0]), (0, ow - small.shape[1]), (0, 0))
            return np.pad(small, pad, mode="edge") if pad[0][1] or pad[1][1] else small
    out = np.empty((oh, ow, 3), np.uint8)
    rows_at_once = max(1, STRIP_BYTES // max(1, w * 3 * f))  # overview rows per read
    for r0 in range(0, oh, rows_at_once):
        r1 = min(oh, r0 + rows_at_once)
        strip = np.asarray(source[r0 * f : min(h, r1 * f), 0:w]).astype(np.float32)
        pad_h, pad_w = (r1 - r0) * f - strip.shape[0], ow * f - w
        # Blocks cut by the image's edge average only the pixels they hold.
        ones = np.ones(strip.shape[:2], np.float32)
        if pad_h or pad_w:
            strip = np.pad(strip, ((0, pad_h), (0, pad_w), (0, 0)))
            ones = np.pad(ones, ((0, pad_h), (0, pad_w)))
        sums = strip.reshape(r1 - r0, f, ow, f, 3).sum(axis=(1, 3))
        counts = ones.reshape(r1 - r0, f, ow, f).sum(axis=(1, 3))
        out[r0:r1] = np.round(sums / counts[:, :, None]).astype(np.uint8)
    return out


CONVERT_TILE = 512  # the side of the tiles ``write_region_tiff`` writes


def write_region_tiff(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> tuple[int, int]:
    """Write the image file ``src`` (a format PIL reads: PNG, JPEG, WebP, ...; EXIF orientation
    applied, as ``segany.images.read_image`` applies it) as a tiled TIFF at ``dst`` that
    ``open_regions`` reads by region: 512-px tiles of RGB, zlib-compressed (level 1; reading
    it by region needs zarr, ``pip install 'segany[tiff]'``). The file is decoded whole once,
    within the pixel limit in force (``segany.limits.pixel_limit``; about 6 bytes a pixel at
    the peak, 8 when its EXIF orientation turns it), and written a row of tiles at a time
    beside ``dst``, flushed to disk, then renamed into place: a half-written file is never
    left at ``dst``. Returns the image's (H, W)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        import tifffile
    except ImportError:
        raise InputError("writing a TIFF needs tifffile (pip install 'segany[tiff]')") from None
    from segany.atomic import publish
    from segany.images import pil_to_array

    p, out = check_image_path(src), Path(dst)
    try:
        im = Image.open(p)
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise InputError(f"cannot read image {p}: {e}") from None
    try:
        check_image_size(im.height, im.width, what=f"image {p}")
        im.load()
        ImageOps.exif_transpose(im, in_place=True)  # (no copy of an upright image)
    except (OSError, SyntaxError, ValueError, InputError) as e:
        im.close()
        raise InputError(f"cannot read image {p}: {e}") from None
    w, h = im.size
    t = CONVERT_TILE

    def tiles() -> Any:
        for y in range(0, h, t):
            strip = pil_to_array(im.crop((0, y, w, min(h, y + t))))  # rows×W×3 uint8 RGB
            for x in range(0, w, t):
                tile = np.zeros((t, t, 3), np.uint8)  # (edge tiles padded, as TIFF stores them)
                part = strip[:, x : x + t]
                tile[: part.shape[0], : part.shape[1]] = part
                yield tile

    part_file = out.with_name(f".{out.name}.{os.getpid()}.part")
    try:
        tifffile.imwrite(
            part_file,
            tiles(),
            shape=(h, w, 3),
            dtype=np.uint8,
            photometric="rgb",
            tile=(t, t),
            compression="zlib",
            compressionargs={"level": 1},
            bigtiff=h * w * 3 > 2**31,
        )
        publish(part_file, out)  # (flushed to disk first: a crash leaves no torn file at dst)
    finally:
        with contextlib.suppress(FileNotFoundError):
            part_file.unlink()
        im.close()
    return h, w
