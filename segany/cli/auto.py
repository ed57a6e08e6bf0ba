"""``segany auto``: segment everything in images or folders and write the results.

Per image ``STEM`` (the image's path relative to the folder given, without suffix) in
``--output``:
- ``STEM.json``: SA-1B JSON (image info + one annotation per mask, COCO RLE), always; it is
  written last, so its presence marks the image as done;
- ``STEM/`` with ``0.png, 1.png, ...`` and ``metadata.csv`` (``--masks``, the official
  ``amg.py`` layout);
- ``STEM_labels.png``: 16-bit label map, 0 background, ``id + 1`` per mask, smaller masks over
  larger ones (``--label-map``);
- ``STEM.geojson``: polygons with holes (``--polygons``);
- ``STEM_overlay.png``: the image with the masks drawn (``--overlay``);
and for the run ``coco_instances.json`` (``--coco [FILE]``), a COCO instances file.

An image's files are written as one set (staged in ``--output``/.segany/, then moved in place),
so a killed run leaves each image's old or new set, never a mix; the next run finishes or drops
what was interrupted. Stems too long for a file name are shortened (``~`` and a hash). A file
that fails is reported and counted, and the run goes on (exit code 1).

The official ``scripts/amg.py`` flags (``--input``, ``--model-type``, ``--checkpoint``,
``--convert-to-rle``) select amg.py's own output layout instead (``segany.cli.amg_compat``).

Re-running skips images whose outputs all exist (write them again with ``--overwrite``); an
extra output asked for later is derived from the existing ``STEM.json`` without the model.
Generator options left out keep the library's defaults (``segany.MaskGenerator``).

``--tile [SIDE]``: for images much larger than the model's input, the grid is decoded on
overlapping tiles at full resolution and on the whole image; masks cut by a tile's inner edge
are dropped and duplicates across seams removed by box NMS (``--crop-nms-thresh``), as SAM's
crop layers do (``segany.tasks.generate_tiled``). It replaces the crop layers. Each finished
tile is saved in ``--output``/.segany/tiles/STEM/, so a run that is killed resumes tile by tile
(removed once STEM.json is written). ``--max-pixels N`` accepts images larger than the default
limit (134 MP): uncompressed TIFF/BigTIFF and .npy files are read by region and masks kept as
RLE; for such images only STEM.json and --coco are written (the other outputs are full-size
arrays).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from segany.cli import amg_compat
from segany.cli.common import (
    EXIT_CODES_HELP,
    EXIT_OK,
    EXIT_PARTIAL,
    Console,
    add_model_options,
    add_output_options,
    collect_images,
    exit_code_for,
    failure_line,
    one_line,
    plain_doc,
    predictor_from_args,
)
from segany.cli.generator_flags import GENERATOR_OPTIONS, generator_options, metavar_of
from segany.cli.outputs import check_output_file, check_output_folder, stop_if_out_of_space
from segany.cli.tile_flags import (
    add_max_pixels_option,
    add_tile_options,
    check_tile_args,
    tile_settings,
)
from segany.errors import InputError
from segany.formats import output_set


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "auto",
        help="segment everything; SA-1B, COCO, PNG, label-map, polygon, overlay outputs",
        description=plain_doc(__doc__),
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="*", metavar="IMAGE_OR_FOLDER")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    p.add_argument("-r", "--recursive", action="store_true", help="look in sub-folders too")
    p.add_argument("--overwrite", action="store_true", help="redo images already done")
    out = p.add_argument_group("outputs (STEM.json, SA-1B, is always written)")
    out.add_argument("--masks", action="store_true", help="STEM/{i}.png + metadata.csv")
    out.add_argument("--label-map", action="store_true", help="STEM_labels.png (16-bit)")
    out.add_argument("--polygons", action="store_true", help="STEM.geojson")
    out.add_argument("--overlay", action="store_true", help="STEM_overlay.png")
    out.add_argument(
        "--coco",
        nargs="?",
        const="coco_instances.json",
        metavar="FILE",
        help="COCO instances JSON of the run (default name coco_instances.json, in --output)",
    )
    gen = p.add_argument_group(
        "generator options (default: the model's own, MaskGenerator.for_model; the official "
        "values for the official weights)"
    )
    for name, (kind, text) in GENERATOR_OPTIONS.items():
        metavar = metavar_of(kind)
        gen.add_argument("--" + name.replace("_", "-"), type=kind, metavar=metavar, help=text)
    gen.add_argument(
        "--preset",
        metavar="NAME",
        help="start from a named option set of segany.automatic.PRESETS (e.g. sa1b: the "
        "paper's SA-1B settings, 2 crop layers); the flags above override it",
    )
    gen.add_argument(
        "--point-grids",
        metavar="FILE",
        help="a .npy (L×N×2, or N×2 for one layer) or .npz (one array per crop layer) of "
        "grid points in [0, 1]; replaces --points-per-side",
    )
    add_tile_options(p)
    add_max_pixels_option(p)
    add_model_options(p)
    amg_compat.add_options(p)
    add_output_options(p)
    p.set_defaults(run=run)


#: The settings of the last run in an output folder (to warn when a re-run changes them) live
#: in the reserved .segany/ folder, where no image's outputs can go.
RUN_FILE = output_set.RUN_FILE


def _compare_settings(
    out: Path, settings: dict[str, Any], args: argparse.Namespace, console: Console
) -> None:
    import json

    path = out / RUN_FILE
    if args.overwrite or not path.is_file():
        return
    try:
        before = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    changed = sorted(k for k in settings if before.get(k) != settings[k])
    if changed:
        console.warn(
            f"{out} holds results made with other {' and '.join(changed)}; images already "
            "done keep them (pass --overwrite to redo them)"
        )


class _Outputs:
    """The files of one image and which of them are still to be written."""

    def __init__(self, out: Path, stem: str, args: argparse.Namespace) -> None:
        self.sa1b = out / f"{stem}.json"
        self.extras: dict[str, Path] = {}
        if args.masks:
            self.extras["masks"] = out / stem / "metadata.csv"
        if args.label_map:
            self.extras["label_map"] = out / f"{stem}_labels.png"
        if args.polygons:
            self.extras["polygons"] = out / f"{stem}.geojson"
        if args.overlay:
            self.extras["overlay"] = out / f"{stem}_overlay.png"

    def done(self) -> bool:
        """Whether the image's JSON exists; a path the system cannot look up (too long) is
        not done, and processing the image reports why."""
        try:
            return self.sa1b.exists()
        except OSError:
            return False

    def missing_extras(self) -> list[str]:
        return [k for k, p in self.extras.items() if not p.exists()]

    def paths(self) -> list[Path]:
        return [self.sa1b, *self.extras.values()]

    def stale_masks(self, count: int) -> list[Path]:
        """Mask PNGs of an older, larger set in the mask folder (``{i}.png`` with i >= count)."""
        return output_set.stale_numbered(self.extras["masks"].parent, "", count)


def run(args: argparse.Namespace) -> int:
    if amg_compat.requested(args):  # the official scripts/amg.py flags and output layout
        return amg_compat.run(args)
    if args.max_pixels is None:
        return _run(args)
    check_tile_args(args)
    from segany.limits import pixel_limit

    with pixel_limit(args.max_pixels):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    if not args.inputs:
        raise InputError("no input: give images or folders (or --input PATH)")
    console = Console(args)
    check_tile_args(args)
    if args.tile is not None:
        from segany.automatic.generator import PRESETS

        if args.crop_n_layers or PRESETS.get(args.preset or "", {}).get("crop_n_layers"):
            raise InputError("--tile replaces the crop layers: no --crop-n-layers, no crop preset")
    out = check_output_folder(args.output, "--output")
    images = collect_images(args.inputs, recursive=args.recursive, exclude=out)
    if not images:
        raise InputError("no images found in " + ", ".join(args.inputs))
    images = [(path, output_set.output_stem(stem)) for path, stem in images]
    coco_path = None
    if args.coco:
        coco_path = Path(args.coco) if Path(args.coco).is_absolute() else out / args.coco
        check_output_file(coco_path, "--coco")
    output_set.check_collisions(
        {str(path): _Outputs(out, stem, args).paths() for path, stem in images},
        [] if coco_path is None else [coco_path],
    )
    cleaned = output_set.recover(out)
    if any(cleaned.values()):
        console.detail(f"{out}: finished or dropped interrupted writes ({cleaned})")
    options = generator_options(args)
    settings = {
        "model": None if args.model is None else str(args.model),
        "options": {k: v for k, v in options.items() if k != "point_grids"},
        "point_grids": None if args.point_grids is None else str(args.point_grids),
        "preset": args.preset,
    }
    if args.tile is not None:  # (absent otherwise: earlier runs' settings stay comparable)
        settings["tile"] = tile_settings(args)
    _compare_settings(out, settings, args, console)
    state: dict[str, Any] = {}  # the generator, created on first need (re-runs may not need it)

    def generator() -> Any:
        if "generator" not in state:
            from segany.automatic import MaskGenerator

            model = predictor_from_args(args, console)  # --precision, --cache
            # coco_rle: the SA-1B JSON stores RLE; the other outputs decode it when needed.
            try:
                made = MaskGenerator.for_model(
                    model, args.preset, output_mode="coco_rle", **options
                )
            except InputError as e:  # the library's check, in the command line's words
                name = str(e).split(" ", 1)[0]
                if name not in GENERATOR_OPTIONS:
                    raise
                raise InputError(f"--{name.replace('_', '-')}: {e}") from None
            own = {k: v for k, v in model.model.generator_defaults.items() if k not in options}
            if own:  # not the official value: say so, once
                said = ", ".join(f"--{k.replace('_', '-')} {v:g}" for k, v in own.items())
                console.info(f"the model's own thresholds apply: {said}")
            state["generator"] = made
        return state["generator"]

    if args.overwrite or not all(_Outputs(out, s, args).done() for _, s in images):
        generator()  # fail fast on a bad model or option, before any image is read

    docs, failures = [], []
    counts = {"written": 0, "skipped": 0, "derived": 0, "masks": 0}
    started = time.perf_counter()
    for index, (path, stem) in enumerate(
        console.progress(images, total=len(images), desc="auto"), start=1
    ):
        try:
            doc, how = _process(path, stem, index, out, args, generator, console)
        except Exception as e:  # noqa: BLE001 - one image's failure never stops the run
            stop_if_out_of_space(e, out)
            if len(images) == 1:
                raise
            console.failure(failure_line(path, e))
            failures.append({"file": str(path), "error": one_line(e), "code": exit_code_for(e)})
            continue
        counts[how] += 1
        counts["masks"] += len(doc.annotations)
        if args.coco:
            docs.append(doc)

    from segany.atomic import write_json_atomic

    try:
        if coco_path is not None:
            from segany.formats import coco_dataset, write_coco

            write_coco(coco_path, coco_dataset(docs))
        write_json_atomic(out / RUN_FILE, settings, indent=1)
    except OSError as e:
        stop_if_out_of_space(e, out)
        raise
    seconds = time.perf_counter() - started
    console.info(
        f"{len(images)} image(s): {counts['written']} segmented, {counts['skipped']} already done"
        + (f", {counts['derived']} completed from their JSON" if counts["derived"] else "")
        + f", {len(failures)} failed; {counts['masks']} masks -> {out}"
    )
    if counts["written"] and not counts["masks"] and "generator" in state:
        made = state["generator"]
        console.warn(
            f"no mask passed the quality thresholds (--pred-iou-thresh {made.pred_iou_thresh:g},"
            f" --stability-score-thresh {made.stability_score_thresh:g}); lower them to keep"
            " more (0 keeps every mask the point grid finds, overlaps still removed)"
        )
    console.summary(
        {
            "command": "auto",
            "output": str(out),
            "images": len(images),
            **counts,
            "failed": len(failures),
            "failures": failures,
            "coco": None if coco_path is None else str(coco_path),
            "options": settings["options"],
            "seconds": round(seconds, 3),
        }
    )
    return EXIT_PARTIAL if failures else EXIT_OK


def _process(
    path: Path,
    stem: str,
    index: int,
    out: Path,
    args: argparse.Namespace,
    generator: Any,
    console: Console,
) -> tuple[Any, str]:
    """Segment (or reuse) one image; returns (its SA-1B document, what was done)."""
    from segany.formats import read_image, read_sa1b, sa1b_document

    files = _Outputs(out, stem, args)
    doc, image = None, None
    if not args.overwrite and files.sa1b.exists():
        try:
            doc = read_sa1b(files.sa1b)
        except (InputError, OSError) as e:
            console.warn(f"{files.sa1b} is unreadable ({one_line(e)}); segmenting again")
    if doc is not None:
        todo = files.missing_extras()
        if not todo:
            console.detail(f"{path}: done already")
            return doc, "skipped"
        how = "derived"
    else:
        todo, how = list(files.extras), "written"
        t0 = time.perf_counter()
        if args.tile is not None:
            records, (height, width) = _tiled(path, stem, out, args, generator(), todo)
        else:
            image = read_image(path)
            records = generator().generate(image)
            height, width = image.shape[:2]
        doc = sa1b_document(
            records,
            file_name=path.name,
            width=width,
            height=height,
            image_id=index,
        )
        console.detail(f"{path}: {len(records)} masks in {time.perf_counter() - t0:.2f}s")
    if "overlay" in todo and image is None:
        image = read_image(path)
    # Every file of the image goes to a staging folder first, then all are moved in place.
    unit = output_set.OutputSet(out, stem)
    unit.begin()
    try:
        _write_extras(doc, image, files, todo, unit.staged)
        if how == "written":
            from segany.formats import write_sa1b

            write_sa1b(unit.staged(files.sa1b), doc)
        stale = files.stale_masks(len(doc.annotations)) if "masks" in todo else []
        unit.commit(last=files.sa1b, remove=stale)  # the JSON last: it marks the image done
    except BaseException:
        unit.abandon()
        raise
    if args.tile is not None:
        from segany.tasks.tiled_generate import clear_progress

        clear_progress(_progress_folder(out, stem))
    return doc, how


def _progress_folder(out: Path, stem: str) -> Path:
    return out / output_set.RESERVED / "tiles" / stem


def _tiled(
    path: Path, stem: str, out: Path, args: argparse.Namespace, generator: Any, todo: list[str]
) -> tuple[list[Any], tuple[int, int]]:
    """Segment everything tile by tile, reading the image by region, resumable."""
    from segany.limits import MAX_IMAGE_PIXELS
    from segany.tasks.region_files import open_regions
    from segany.tasks.tiled_generate import generate_tiled

    source = open_regions(path)
    height, width = (int(v) for v in source.shape[:2])
    if todo and height * width > MAX_IMAGE_PIXELS:
        flags = ", ".join("--" + k.replace("_", "-") for k in todo)
        raise InputError(
            f"{path} is {width}×{height} px: {flags} would hold full-size masks; above "
            f"{MAX_IMAGE_PIXELS} px only STEM.json (SA-1B, RLE) and --coco are written"
        )
    tiles = tile_settings(args)
    records = generate_tiled(
        generator,
        source,
        tile=tiles["tile"],
        overlap=tiles["overlap"],
        progress=_progress_folder(out, stem),
    )
    return records, (height, width)


def _write_extras(
    doc: Any, image: Any, files: _Outputs, todo: list[str], where: Callable[[Path], Path]
) -> None:
    import numpy as np

    from segany.formats import (
        label_map,
        write_label_map,
        write_mask_folder,
        write_overlay,
        write_polygons,
    )

    # (decoded only for the outputs that draw them: N full-size masks are N·H·W bytes)
    masks = doc.masks() if {"label_map", "overlay"} & set(todo) else np.zeros((0, 1, 1), bool)
    if "masks" in todo:
        write_mask_folder(where(files.extras["masks"]).parent, doc.annotations)
    if "label_map" in todo:
        write_label_map(where(files.extras["label_map"]), label_map(masks))
    if "polygons" in todo:
        write_polygons(where(files.extras["polygons"]), doc)
    if "overlay" in todo:
        write_overlay(where(files.extras["overlay"]), image, masks)
