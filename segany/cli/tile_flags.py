"""``--tile [SIDE]`` and ``--tile-overlap PX``: answer large images tile by tile
(``segany.tasks.tiles``), shared by ``segment`` and ``auto``; ``--max-pixels N`` (both, with
``--tile``): the pixel limit raised for tiled work (``segany.limits.pixel_limit``)."""

from __future__ import annotations

import argparse
from typing import Any

from segany.cli.common import non_negative_int, positive_int

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


def add_max_pixels_option(parser: Any) -> None:
    parser.add_argument(
        "--max-pixels",
        type=positive_int,
        metavar="N",
        help="with --tile: accept images of up to N pixels (default 2**27 = 134 MP, the limit "
        "for untiled work); a tiled run reads the image by region (uncompressed TIFF/BigTIFF "
        "and .npy files; compressed TIFFs need zarr: pip install 'segany[tiff]') and keeps "
        "masks as RLE, so a 20000×20000 scan stays within a few GB",
    )


def tile_settings(args: argparse.Namespace) -> dict[str, int | None]:
    """--tile/--tile-overlap as keyword arguments (None: the library's default)."""
    tile = getattr(args, "tile", None)
    return {"tile": None if tile in (None, MODEL_SIZE) else int(tile), "overlap": args.tile_overlap}


def check_tile_args(args: argparse.Namespace) -> None:
    from segany.cli.common import UsageError

    if getattr(args, "tile", None) is None and getattr(args, "tile_overlap", None) is not None:
        raise UsageError("--tile-overlap goes with --tile")
    if getattr(args, "tile", None) is None and getattr(args, "max_pixels", None) is not None:
        raise UsageError(
            "--max-pixels goes with --tile: untiled work holds full-size masks, a tiled run "
            "reads the image by region and keeps masks as RLE"
        )
