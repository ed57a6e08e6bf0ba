"""Upper bounds on every size segany accepts from a caller or a file, stated once.

Each bound is checked before anything of that size is allocated, and the error names the bound,
so a typo (``points_per_side=3000``) or a hostile file (an RLE claiming 10^10 pixels) gets a
clear ``InputError`` instead of minutes of work or a MemoryError. The numbers are generous: far
above what SAM is used with, far below what exhausts a machine.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

from segany.errors import InputError

#: Longest image side (also of ``original_size`` and of an RLE's size).
MAX_IMAGE_SIDE = 2**15
#: Pixels of one image or mask (134 MP); a full-size mask set is a few GB at this size. Tiled
#: work, which never holds a full-size mask, may raise it explicitly (``pixel_limit``).
MAX_IMAGE_PIXELS = 2**27
#: The most ``pixel_limit`` accepts: COCO RLE counts (pycocotools) are 32-bit.
MAX_RAISED_PIXELS = 2**32 - 1
#: The longest side while the pixel limit is raised.
MAX_RAISED_SIDE = 2**20
#: |x|, |y| of a point or box corner, in pixels (far outside any image, still exact in float32).
MAX_COORDINATE = 2.0**20
#: The automatic generator: points along a grid side, crop layers, and prompts per image
#: (grid points of every crop of every layer together).
MAX_POINTS_PER_SIDE = 1024
MAX_CROP_LAYERS = 6
MAX_PROMPTS_PER_IMAGE = 2**20
#: Prompts the generator decodes together (each holds a few MB of decoder activations).
MAX_POINTS_PER_BATCH = 1024
#: Points in one prompt of ``Predictor.predict`` (each is a token the decoder attends over).
MAX_POINTS_PER_PROMPT = 4096
#: Mask pixels one ``Predictor.predict`` call upscales (prompts × masks × H × W; float logits).
MAX_MASK_PIXELS_PER_CALL = 2**31
#: Mask pixels a caller that batches many prompts (a detector's boxes) asks of one call
#: (``prompts_per_call``): a photo's boxes 64 at a time, a 12 MP image's one at a time. On a
#: large image the masks' upscaling dominates and larger batches only add memory: 64 boxes on
#: a 4000×3000 photo in one call took 17.3 s and 2.66 GB, one to eight a call 2.4–2.6 s and
#: 0.46–0.76 GB.
MASK_PIXELS_PER_BATCH = 2**24


# The limits pixel_limit() set, innermost last: each thread its own, so a server's request
# that raises the limit for a large image neither raises nor lowers another request's.
_local = threading.local()
# Every thread's raised limits at once, for PIL's one process-wide limit (the largest of them,
# and PIL's own again when none is left); guarded by _pil_lock.
_active: Counter[int] = Counter()
_pil_lock = threading.Lock()
_pil_saved: list[Any] = []  # PIL's limit before the first of the active ones


def _stack() -> list[int]:
    stack = getattr(_local, "raised", None)
    if stack is None:
        stack = _local.raised = []
    return stack  # type: ignore[no-any-return]


def current_pixel_limit() -> int:
    """The pixel limit in force in this thread: ``MAX_IMAGE_PIXELS``, or the one
    ``pixel_limit`` set."""
    stack = _stack()
    return stack[-1] if stack else MAX_IMAGE_PIXELS


def current_side_limit() -> int:
    return MAX_RAISED_SIDE if current_pixel_limit() > MAX_IMAGE_PIXELS else MAX_IMAGE_SIDE


@contextlib.contextmanager
def pixel_limit(pixels: int) -> Iterator[None]:
    """Accept images and masks of up to ``pixels`` inside the block (sides up to
    ``MAX_RAISED_SIDE`` when above the default), PIL's ``Image.MAX_IMAGE_PIXELS`` included.

    For tiled work on large images (``segany.tasks.generate_tiled``), which reads the image by
    region and keeps masks as RLE; untiled work on such an image allocates full-size arrays.
    The command line's ``--max-pixels``. For the thread that runs the block (other threads
    keep theirs); PIL's own process-wide limit is kept at the largest limit any thread has
    raised, and restored when the last block ends (ours is checked before PIL's anyway)."""
    from PIL import Image

    if isinstance(pixels, bool) or not isinstance(pixels, int) or not 1 <= pixels:
        raise InputError(f"the pixel limit must be a positive whole number, got {pixels!r}")
    if pixels > MAX_RAISED_PIXELS:
        raise InputError(
            f"the pixel limit can be at most {MAX_RAISED_PIXELS} (COCO RLE counts are 32-bit), "
            f"got {pixels}"
        )
    stack = _stack()
    stack.append(pixels)
    with _pil_lock:
        if not _active:
            _pil_saved[:] = [Image.MAX_IMAGE_PIXELS]
        _active[pixels] += 1
        # PIL warns above its limit and refuses above twice it.
        Image.MAX_IMAGE_PIXELS = max(max(_active), _pil_saved[0] or 0)
    try:
        yield
    finally:
        stack.pop()
        with _pil_lock:
            _active[pixels] -= 1
            if not _active[pixels]:
                del _active[pixels]
            saved = _pil_saved[0] if _pil_saved else None
            Image.MAX_IMAGE_PIXELS = max(max(_active), saved or 0) if _active else saved


def check_image_size(
    height: Any, width: Any, *, what: str = "image", allow_empty: bool = False
) -> tuple[int, int]:
    """(H, W) as ints if both are in [1, MAX_IMAGE_SIDE] (0 too with ``allow_empty``) and
    H·W <= MAX_IMAGE_PIXELS (or the limits ``pixel_limit`` set); else an ``InputError``
    naming ``what`` and the bound."""
    lo = 0 if allow_empty else 1
    max_side, max_pixels = current_side_limit(), current_pixel_limit()
    try:
        h, w = _whole(height), _whole(width)
    except (TypeError, ValueError, AttributeError, OverflowError):
        raise InputError(
            f"{what} must be two whole numbers (H, W), got ({height!r}, {width!r})"
        ) from None
    if not (lo <= h <= max_side and lo <= w <= max_side):
        raise InputError(
            f"{what} {h}×{w} is outside the supported range: each side must be {lo} to "
            f"{max_side} pixels ({_HOW_LARGER})"
        )
    if h * w > max_pixels:
        raise InputError(
            f"{what} {h}×{w} has {h * w} pixels, more than the {max_pixels} segany accepts "
            f"({_HOW_LARGER})"
        )
    return h, w


_HOW_LARGER = (
    "downscale the image, or segment it tile by tile with --tile and raise the limit with "
    "--max-pixels; in Python: segany.limits.pixel_limit(n) around segany.tasks.generate_tiled"
)


def _whole(value: Any) -> int:
    if isinstance(value, bool) or value is None:
        raise TypeError
    if isinstance(value, float) or hasattr(value, "dtype"):
        as_float = float(value)
        if not as_float.is_integer():
            raise ValueError
        return int(as_float)
    return int(value.__index__())


def prompts_per_call(masks: int, height: int, width: int, *, most: int = 64) -> int:
    """How many prompts of ``masks`` masks each on an H×W image to decode in one call: as
    many as keep the call's full-size masks within ``MASK_PIXELS_PER_BATCH``, at least 1 and
    at most ``most``."""
    return max(1, min(most, MASK_PIXELS_PER_BATCH // max(1, masks * height * width)))


def check_mask_volume(prompts: int, masks: int, height: int, width: int) -> None:
    """Refuse a predict call whose full-size masks would exceed ``MAX_MASK_PIXELS_PER_CALL``."""
    volume = prompts * masks * height * width
    if volume > MAX_MASK_PIXELS_PER_CALL:
        raise InputError(
            f"{prompts} prompts × {masks} masks of {height}×{width} pixels is {volume} mask "
            f"pixels, more than the {MAX_MASK_PIXELS_PER_CALL} one call may produce: pass the "
            "prompts in smaller batches"
        )


def check_size_pair(value: Any, *, what: str) -> tuple[int, int]:
    """A (H, W) pair such as ``original_size``, checked like ``check_image_size``."""
    try:
        pair = tuple(value)
    except TypeError:
        pair = ()
    if len(pair) != 2:
        raise InputError(f"{what} must be a pair (H, W), got {value!r:.80}")
    return check_image_size(pair[0], pair[1], what=what)
