"""``segany edges``: zero-shot edge maps by the paper's §7.2 recipe (``segany.tasks.edges``).

    segany edges IMAGES... -o OUT [--points-per-side 16] [--raw] [--refine [RADIUS]]

One 8-bit PNG per image (edge strength 0-255, thinned unless ``--raw``), named after the
image; ``--refine`` (beyond the paper) snaps each mask to the image's edges with a guided filter
before its gradient is taken; ``--boundaries DIR`` scores them against ground-truth boundary
PNGs of the same names (non-zero = boundary) and prints ODS, OIS and AP as the BSDS benchmark
defines them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from segany.cli.common import (
    EXIT_OK,
    EXIT_PARTIAL,
    Console,
    add_model_options,
    add_output_options,
    add_refine_option,
    collect_images,
    failure_line,
    positive_int,
    predictor_from_args,
)
from segany.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "edges",
        help="zero-shot edge maps (the paper's §7.2 recipe), optionally scored (ODS/OIS/AP)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the PNGs")
    p.add_argument("--points-per-side", type=positive_int, default=16, metavar="N")
    p.add_argument("--raw", action="store_true", help="no edge thinning (non-maximum suppression)")
    p.add_argument(
        "--boundaries", metavar="DIR", help="ground-truth boundary PNGs (same stems) to score"
    )
    add_refine_option(p)
    add_model_options(p)
    add_output_options(p)
    p.set_defaults(run=run)


def _read_boundary(folder: Path, stem: str, shape: tuple[int, int]):
    import numpy as np

    from segany.images import read_image

    path = folder / f"{stem}.png"
    if not path.is_file():
        raise InputError(f"no ground-truth boundary {path}")
    gt = read_image(path)
    if gt.shape[:2] != shape:
        raise InputError(f"{path} is {gt.shape[1]}×{gt.shape[0]}, the image {shape[1]}×{shape[0]}")
    return np.asarray(gt).max(axis=-1) > 0


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from segany.atomic import atomic_open
    from segany.images import read_image
    from segany.tasks.edges import EdgeOptions, edge_map

    console = Console(args)
    out = Path(args.output)
    images = collect_images(args.images, exclude=out)
    if not images:
        raise InputError(f"no images found in {', '.join(args.images)}")
    options = EdgeOptions(
        points_per_side=args.points_per_side,
        thin=not args.raw,
        refine=args.refine is not None,
        refine_radius=None if args.refine in (None, "auto") else args.refine,
    )
    predictor = predictor_from_args(args, console)
    maps, truths, failed, written = [], [], 0, []
    for path, stem in console.progress(images, total=len(images), desc="edges"):
        try:
            rgb = read_image(path)
            edges = edge_map(predictor, rgb, options)
            truth = None
            if args.boundaries:
                truth = _read_boundary(Path(args.boundaries), stem, edges.shape)
        except (InputError, OSError) as e:
            console.failure(failure_line(path, e))
            failed += 1
            continue
        target = out / f"{stem}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(target, "wb") as f:
            Image.fromarray(np.round(edges * 255).astype(np.uint8)).save(f, format="PNG")
        written.append(str(target))
        if truth is not None:
            maps.append(edges)
            truths.append(truth)
    summary: dict[str, object] = {"images": len(images), "written": len(written), "failed": failed}
    if maps:
        from segany.evaluate.edges import edge_scores

        scores = edge_scores(maps, truths)
        summary.update(ods=scores.ods, ois=scores.ois, ap=scores.ap)
        console.info(f"ODS {scores.ods:.3f}  OIS {scores.ois:.3f}  AP {scores.ap:.3f}")
    console.info(f"wrote {len(written)} edge maps to {out}")
    console.summary(summary)
    return EXIT_PARTIAL if failed else EXIT_OK
