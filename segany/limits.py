"""Upper bounds on every size segany accepts from a caller or a file, stated once.

Each bound is checked before anything of that size is allocated, and the error names the bound,
so a typo (``points_per_side=3000``) or a hostile file (an RLE claiming 10^10 pixels) gets a
clear ``InputError`` instead of minutes of work or a MemoryError. The numbers are generous: far
above what SAM is used with, far below what exhausts a machine.
"""

from __future__ import annotations

from typing import Any

from segany.errors import InputError

#: Longest image side (also of ``original_size`` and of an RLE's size).
MAX_IMAGE_SIDE = 2**15
#: Pixels of one image or mask (134 MP); a full-size mask set is a few GB at this size.
MAX_IMAGE_PIXELS = 2**27
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


def check_image_size(
    height: Any, width: Any, *, what: str = "image", allow_empty: bool = False
) -> tuple[int, int]:
    """(H, W) as ints if both are in [1, MAX_IMAGE_SIDE] (0 too with ``allow_empty``) and
    H·W <= MAX_IMAGE_PIXELS; else an ``InputError`` naming ``what`` and the bound."""
    lo = 0 if allow_empty else 1
    try:
        h, w = _whole(height), _whole(width)
    except (TypeError, ValueError, AttributeError, OverflowError):
        raise InputError(
            f"{what} must be two whole numbers (H, W), got ({height!r}, {width!r})"
        ) from None
    if not (lo <= h <= MAX_IMAGE_SIDE and lo <= w <= MAX_IMAGE_SIDE):
        raise InputError(
            f"{what} {h}×{w} is outside the supported range: each side must be {lo} to "
            f"{MAX_IMAGE_SIDE} pixels (downscale the image)"
        )
    if h * w > MAX_IMAGE_PIXELS:
        raise InputError(
            f"{what} {h}×{w} has {h * w} pixels, more than the {MAX_IMAGE_PIXELS} "
            "segany accepts (downscale or tile the image)"
        )
    return h, w


def _whole(value: Any) -> int:
    if isinstance(value, bool) or value is None:
        raise TypeError
    if isinstance(value, float) or hasattr(value, "dtype"):
        as_float = float(value)
        if not as_float.is_integer():
            raise ValueError
        return int(as_float)
    return int(value.__index__())


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
