"""``--tile [SIDE]`` and ``--tile-overlap PX``: answer large images tile by tile
(``segany.tasks.tiles``), shared by ``segment`` and ``auto``."""

from __future__ import annotations

import argparse
from typing import Any

from segany.cli.common import non_negative_int

MODEL_SIZE = 0  # --tile without a number: tiles of the model's input size


def add_tile_options(parser: Any) -> None:
    group = parser.add_argument_group("large images (segany.tasks.tiles)")
    group.add_argument(
        "--tile",
        type=non_negative_int,
        nargs="?",
        const=MODEL_SIZE,
        metavar="SIDE",
        help="cut images into overlapping square tiles of SIDE px (default: the model's input "
        "size, so each tile is seen at full resolution); objects are answered on the tile "
        "that holds them, masks crossing a seam on a frame that holds them whole",
    )
    group.add_argument(
        "--tile-overlap",
        type=non_negative_int,
        metavar="PX",
        help="pixels neighbouring tiles share (default a quarter of a tile)",
    )


def tile_settings(args: argparse.Namespace) -> dict[str, int | None]:
    """--tile/--tile-overlap as keyword arguments (None: the library's default)."""
    tile = getattr(args, "tile", None)
    return {"tile": None if tile in (None, MODEL_SIZE) else int(tile), "overlap": args.tile_overlap}


def check_tile_args(args: argparse.Namespace) -> None:
    from segany.cli.common import UsageError

    if getattr(args, "tile", None) is None and getattr(args, "tile_overlap", None) is not None:
        raise UsageError("--tile-overlap goes with --tile")
