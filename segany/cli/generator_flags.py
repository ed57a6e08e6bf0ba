"""The MaskGenerator's options as command-line flags, shared by ``auto``, its ``amg.py`` mode
and ``engine``: one table, and the keywords a user gave (nothing else, so library defaults apply).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from segany.cli.common import (
    UsageError,
    finite_float,
    fraction,
    non_negative_int,
    positive_int,
)
from segany.errors import InputError
from segany.limits import MAX_PROMPTS_PER_IMAGE


def yes_no(text: str) -> bool:
    """A yes/no flag value: yes, no, true, false, 1 or 0 (any case)."""
    value = {"yes": True, "true": True, "1": True, "no": False, "false": False, "0": False}
    try:
        return value[text.strip().lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"expected yes or no, got {text!r}") from None


#: MaskGenerator keyword -> (type, help). Every option of the generator except ``output_mode``
#: (the CLI picks its own) and ``point_grids`` (``--point-grids FILE``). Defaults: the model's
#: (``MaskGenerator.for_model``).
GENERATOR_OPTIONS: dict[str, tuple[Any, str]] = {
    "points_per_side": (positive_int, "grid points along each image side"),
    "points_per_batch": (positive_int, "points decoded together (memory vs speed)"),
    "pred_iou_thresh": (finite_float, "keep masks whose predicted IoU is at least this"),
    "stability_score_thresh": (finite_float, "keep masks whose stability score is at least this"),
    "stability_score_offset": (finite_float, "logit offset used for the stability score"),
    "box_nms_thresh": (fraction, "box IoU above which duplicate masks are removed"),
    "crop_n_layers": (non_negative_int, "crop layers (layer i has (2^i)^2 crops)"),
    "crop_nms_thresh": (fraction, "box IoU for removing duplicates across crops"),
    "crop_overlap_ratio": (fraction, "crop overlap, a fraction of the image (e.g. 0.34, 512/1500)"),
    "crop_n_points_downscale_factor": (
        positive_int,
        "points per side shrink by this factor per crop layer",
    ),
    "min_mask_region_area": (non_negative_int, "remove holes and islands smaller than this"),
    "max_area_fraction": (fraction, "drop masks covering at least this fraction of the image"),
    "use_m2m": (yes_no, "SAM 2: refine each mask once from its own low-res logits (yes/no)"),
    "multimask_output": (yes_no, "SAM 2: three masks per point (yes) or one (no)"),
}


def metavar_of(kind: Any) -> str:
    """The metavar a flag of GENERATOR_OPTIONS shows in --help."""
    if kind is yes_no:
        return "yes|no"
    return "N" if kind in (positive_int, non_negative_int) else "X"


def generator_options(args: argparse.Namespace) -> dict[str, Any]:
    """The MaskGenerator keywords the user gave (nothing else, so library defaults apply)."""
    opts = {k: getattr(args, k) for k in GENERATOR_OPTIONS if getattr(args, k) is not None}
    if args.point_grids is not None:
        if "points_per_side" in opts:
            raise UsageError("give --points-per-side or --point-grids, not both")
        opts["points_per_side"] = None  # the generator wants exactly one of the two
        opts["point_grids"] = _load_point_grids(Path(args.point_grids))
    return opts


def _load_point_grids(path: Path) -> list[Any]:
    import numpy as np

    try:
        # mmap: a .npy header claiming a huge array is checked before anything is read.
        data = np.load(path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise InputError(f"--point-grids {path}: cannot read a .npy/.npz array ({e})") from None
    sizes = [data[k].size for k in data.files] if hasattr(data, "files") else [data.size]
    if sum(sizes) > 2 * MAX_PROMPTS_PER_IMAGE:
        raise InputError(
            f"--point-grids {path} holds {sum(sizes) // 2} points, more than the "
            f"{MAX_PROMPTS_PER_IMAGE} prompts per image allowed"
        )
    arrays = (
        [data[k] for k in data.files]
        if hasattr(data, "files")
        else list(data if data.ndim == 3 else data[None])
    )
    for a in arrays:
        if a.ndim != 2 or a.shape[1] != 2:
            raise InputError(f"--point-grids {path}: each grid must be N×2, got {a.shape}")
    return [np.asarray(a, dtype=np.float64) for a in arrays]
