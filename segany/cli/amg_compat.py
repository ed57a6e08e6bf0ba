"""``segany auto`` with the official ``scripts/amg.py`` flags and outputs.

A script that runs ``python scripts/amg.py --input IN --output OUT --model-type vit_h
--checkpoint sam_vit_h.pth [--convert-to-rle] [generator flags]`` runs ``segany auto`` with the
same arguments. Any of amg.py's own flags (``--input``, ``--model-type``, ``--checkpoint``,
``--convert-to-rle``) selects amg.py's layout in ``OUT``, per image ``STEM`` (file name without
suffix):

- ``STEM/0.png, 1.png, ...`` (one 8-bit mask each, 255 inside) and ``STEM/metadata.csv``;
- or, with ``--convert-to-rle``, ``STEM.json``: a bare JSON list of the official records with
  COCO RLE segmentations.

``--input`` is an image or a folder (its files, not sub-folders; files that are not images are
skipped with a warning, as amg.py does). Unlike amg.py, an image whose output is already there
is skipped (``--overwrite`` redoes it), and ``--device`` defaults to the library's choice.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from segany.cli.common import (
    EXIT_OK,
    EXIT_PARTIAL,
    Console,
    exit_code_for,
    load_model_from_args,
    one_line,
)
from segany.cli.outputs import check_output_folder, stop_if_out_of_space
from segany.errors import InputError

#: amg.py's --model-type values and the variant each builds.
MODEL_TYPES = {
    "default": "vit_h",
    "vit_h": "vit_h",
    "vit_l": "vit_l",
    "vit_b": "vit_b",
    "vit_t": "vit_t",  # MobileSAM's scripts take it
}

#: segany's own output flags, which write segany's layout (not combined with amg.py's).
_SEGANY_OUTPUTS = ("masks", "label_map", "polygons", "overlay", "coco")


def add_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "official scripts/amg.py flags (any of these selects amg.py's output layout)"
    )
    group.add_argument(
        "--input",
        metavar="PATH",
        help="an image or a folder of images (its files only), instead of IMAGE_OR_FOLDER",
    )
    group.add_argument(
        "--model-type",
        choices=sorted(MODEL_TYPES),
        help="the variant of --checkpoint (default: vit_h); without --checkpoint, the official "
        "weights of that variant (downloaded once)",
    )
    group.add_argument(
        "--checkpoint", metavar="FILE", help="the weights file (any format --model reads)"
    )
    group.add_argument(
        "--convert-to-rle",
        action="store_true",
        help="write STEM.json, a list of records with COCO RLE masks, instead of STEM/*.png",
    )


def requested(args: argparse.Namespace) -> bool:
    """Whether the command line uses one of amg.py's own flags."""
    return bool(args.input or args.model_type or args.checkpoint or args.convert_to_rle)


def _targets(args: argparse.Namespace) -> list[Path]:
    if args.input and args.inputs:
        raise InputError("give the images as arguments or with --input, not both")
    paths = [Path(p) for p in ([args.input] if args.input else args.inputs)]
    if not paths:
        raise InputError("no input: give --input IMAGE_OR_FOLDER")
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if not p.is_dir())
        elif path.exists():
            found.append(path)
        else:
            raise InputError(f"{path}: no such file or folder")
    return found


def _load(args: argparse.Namespace, console: Console) -> Any:
    from segany.segment_anything.build_sam import check_variant, held_variant

    if args.checkpoint and args.model:
        raise InputError("--checkpoint and --model both name the weights; give one")
    variant = MODEL_TYPES[args.model_type] if args.model_type else None
    source = args.checkpoint or args.model or variant
    model = load_model_from_args(argparse.Namespace(**{**vars(args), "model": source}), console)
    if variant is not None and source != variant:
        held = held_variant(model)
        if held in MODEL_TYPES.values():
            check_variant(model, variant, str(source))
        elif held != variant:
            # A custom variant (e.g. the bundled tiny model) has no --model-type of its own.
            console.warn(f"{source} holds the custom variant {held!r}; --model-type ignored")
    return model


def run(args: argparse.Namespace) -> int:
    """``segany auto`` in amg.py's layout (called by ``segany.cli.auto.run``)."""
    from segany.cli.generator_flags import generator_options
    from segany.formats import read_image

    console = Console(args)
    given = [f"--{k.replace('_', '-')}" for k in _SEGANY_OUTPUTS if getattr(args, k)]
    if given:
        raise InputError(
            f"{', '.join(given)} write segany's layout; amg.py's flags (--input, --model-type, "
            "--checkpoint, --convert-to-rle) write amg.py's: use one or the other"
        )
    targets = _targets(args)
    out = check_output_folder(args.output, "--output")
    rle = bool(args.convert_to_rle)
    options = generator_options(args)
    state: dict[str, Any] = {}

    def generator() -> Any:
        if "generator" not in state:
            from segany.automatic import MaskGenerator

            model = _load(args, console)
            mode = "coco_rle"  # PNGs are decoded from the RLE: no full-size masks held
            state["generator"] = MaskGenerator.for_model(
                model, args.preset, output_mode=mode, **options
            )
        return state["generator"]

    def done(stem: str) -> Path:
        return out / f"{stem}.json" if rle else out / stem / "metadata.csv"

    if args.overwrite or any(not done(p.stem).exists() for p in targets):
        generator()  # fail fast on a bad model or option
    counts = {"written": 0, "skipped": 0, "unreadable": 0, "masks": 0}
    failures: list[dict[str, Any]] = []
    started = time.perf_counter()
    for path in console.progress(targets, total=len(targets), desc="auto"):
        if not args.overwrite and done(path.stem).exists():
            counts["skipped"] += 1
            continue
        try:
            image = read_image(path)
        except InputError as e:  # amg.py skips files it cannot read as images
            console.warn(f"could not load {path} as an image, skipping ({one_line(e)})")
            counts["unreadable"] += 1
            continue
        try:
            n = _process(path, image, out, rle, generator(), console)
        except OSError as e:
            stop_if_out_of_space(e, out)
            raise
        except ValueError as e:  # InputError included: report, skip, carry on
            console.failure(f"{path}: {one_line(e)}")
            failures.append({"file": str(path), "error": one_line(e), "code": exit_code_for(e)})
            continue
        counts["written"] += 1
        counts["masks"] += n
    console.info(
        f"{len(targets)} file(s): {counts['written']} segmented, {counts['skipped']} already "
        f"done, {counts['unreadable']} not images, {len(failures)} failed; "
        f"{counts['masks']} masks -> {out}"
    )
    console.summary(
        {
            "command": "auto",
            "layout": "amg",
            "output": str(out),
            "images": len(targets),
            **counts,
            "failed": len(failures),
            "failures": failures,
            "options": {k: v for k, v in options.items() if k != "point_grids"},
            "seconds": round(time.perf_counter() - started, 3),
        }
    )
    return EXIT_PARTIAL if failures else EXIT_OK


def _process(path: Path, image: Any, out: Path, rle: bool, generator: Any, console: Console) -> int:
    """Segment one image and write its amg.py output; returns the number of masks."""
    import json

    from segany.atomic import write_text_atomic
    from segany.formats import write_mask_folder

    t0 = time.perf_counter()
    records = generator.generate(image)
    console.detail(f"{path}: {len(records)} masks in {time.perf_counter() - t0:.2f}s")
    out.mkdir(parents=True, exist_ok=True)
    if rle:
        # json.dump's default separators, as amg.py writes it
        write_text_atomic(out / f"{path.stem}.json", json.dumps([r.to_dict() for r in records]))
    else:
        write_mask_folder(out / path.stem, records)  # metadata.csv last: marks it done
    return len(records)
