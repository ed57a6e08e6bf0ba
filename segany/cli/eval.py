"""``segany eval``: the paper's zero-shot protocols on a dataset, or two reports side by side.

Datasets: a COCO instances ``.json`` (images beside it, in ``images/`` or ``--images``), an
SA-1B-style folder (``NAME.jpg`` + ``NAME.json``), or a folder with ``images/`` and instance
label-map PNGs in ``labels/`` (or ``masks/``; or ``--images`` with ``--labels``).

Protocols:
- point: one click at the object's center (the pixel farthest from its boundary); mIoU of the
  top-scoring mask and of the best of the 3 (oracle).
- clicks: then a click at the center of the largest error region (positive in a missed
  region, negative in a false one), previous mask logits fed back; mIoU after 1, 2, 3, 5 and
  9 clicks, NoC@85 and NoC@90 (capped at --max-clicks, default 20).
- box: the tight ground-truth box, optionally jittered (--box-noise); mIoU. With ``--zoom``
  each box is answered on a crop around it that the model sees at its input size; with
  ``--zoom-clicks`` each corrective click is answered on a crop around the mask it corrects.
  ``--refine`` snaps every prompted mask to the image's edges (``segany.refine``).
- auto: generated masks scored by predicted IoU; average recall over IoU 0.50:0.95 (AR@100,
  AR@1000, by object size), computed with pycocotools.
- proposals: the paper's object proposals (§7.3): the same recall, at 1000 proposals per image
  by object size, of a generator started from the ``proposals`` preset
  (``segany.automatic.PRESETS``: tuned for recall); the generator flags below override it.
- instances: the paper's zero-shot instance segmentation (§7.3): a detector's boxes
  (``--detections``, COCO results JSON whose image ids are DATASET's) prompt the model, one
  mask per box, and COCO mask AP (AP, AP50, AP75, by size) scores them against DATASET (a COCO
  instances ``.json``); the detector's categories and scores are kept.
- all: point, clicks, box and auto (instances too when ``--detections`` is given); point,
  clicks and box share each image's embedding.

Baselines (``--baseline floodfill``, ``--baseline grabcut``, or ``all``): the classical tools a
user already has, run on the same objects and prompts (``segany.evaluate.baselines``): an
OpenCV flood fill from each click (±24 per channel; point and clicks) and GrabCut on a local crop
(box, and clicks re-running it with the clicks as sure labels). Their rows appear as
``floodfill:point`` etc., followed by a table of the model beside them.

Kinds (``--by-kind``): DATASET is a folder with one dataset per subfolder (one kind of
picture each: photos, text, silhouettes...): label maps, SA-1B pairs, or images/ beside one
COCO .json. Each kind is evaluated with the same model and
options and reported on its own: a table with one row per kind, the model's figures with the
baselines' beside each; the report (``-o``) holds each kind's full report.

Every figure comes with a 95 % bootstrap interval over objects; the report (``-o``) also holds
per-image and per-object rows and the seconds spent. ``--compare A.json B.json`` prints two
reports side by side; ``--plot`` draws mIoU against clicks (needs matplotlib: segany[eval]).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from segany.cli.common import (
    CLICK_ZOOM_MARGIN,
    EXIT_CODES_HELP,
    Console,
    add_model_options,
    add_output_options,
    add_refine_option,
    finite_float,
    fraction,
    non_negative_int,
    positive_int,
)
from segany.cli.outputs import check_output_file
from segany.errors import InputError

ZOOM_MARGIN = 2.0  # segany.zoom.DEFAULT_MARGIN (not imported here: it would import torch)

PROTOCOLS = ("point", "clicks", "box", "auto", "proposals", "instances", "all")
PROMPTED = ("point", "clicks", "box")


def _budgets(text: str) -> tuple[int, ...]:
    return tuple(positive_int(t) for t in text.split(","))


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "eval",
        help="zero-shot evaluation: point, clicks, box, automatic masks; compare reports",
        description=__doc__,
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dataset", nargs="?", metavar="DATASET", help="COCO .json or a folder")
    p.add_argument("--protocol", choices=PROTOCOLS, default="all", help="default: all")
    p.add_argument("-o", "--output", metavar="REPORT.json", help="write the JSON report here")
    p.add_argument("--plot", metavar="PNG", help="plot mIoU against clicks (clicks protocol)")
    p.add_argument(
        "--compare", nargs=2, metavar=("A.json", "B.json"), help="set two reports side by side"
    )
    data = p.add_argument_group("dataset")
    data.add_argument("--images", metavar="DIR", help="images folder (COCO or label maps)")
    data.add_argument("--labels", metavar="DIR", help="label-map PNG folder")
    data.add_argument(
        "--by-kind",
        action="store_true",
        help="DATASET holds one dataset per subfolder (a kind of picture): report each kind",
    )
    data.add_argument("--limit", type=positive_int, metavar="N", help="at most N images")
    data.add_argument("--seed", type=non_negative_int, help="seed of subsets, jitter, bootstrap")
    data.add_argument(
        "--objects-per-image", type=positive_int, metavar="N", help="prompt at most N per image"
    )
    prompts = p.add_argument_group("prompted protocols")
    prompts.add_argument("--max-clicks", type=positive_int, metavar="N", help="default 20")
    prompts.add_argument(
        "--click-region",
        choices=("area", "distance"),
        help="largest error region by area (default) or by depth (RITM)",
    )
    prompts.add_argument(
        "--box-noise", type=fraction, metavar="F", help="box jitter std, fraction of its side"
    )
    prompts.add_argument("--box-noise-max-px", type=finite_float, metavar="PX", help="default 20")
    prompts.add_argument("--bootstrap", type=non_negative_int, metavar="N", help="resamples")
    prompts.add_argument(
        "--baseline",
        action="append",
        choices=("floodfill", "grabcut", "all"),
        help="also run a classical baseline on the same prompts (repeatable)",
    )
    prompts.add_argument(
        "--zoom",
        type=finite_float,
        nargs="?",
        const=ZOOM_MARGIN,
        metavar="MARGIN",
        help="answer box prompts on a crop around the box (segany.zoom), MARGIN times the box's "
        f"side on each side (default {ZOOM_MARGIN})",
    )
    prompts.add_argument(
        "--zoom-clicks",
        type=finite_float,
        nargs="?",
        const=CLICK_ZOOM_MARGIN,
        metavar="MARGIN",
        help="answer each corrective click on a crop around the mask it corrects and the clicks "
        f"(segany.zoom), MARGIN times their box's side on each side (default {CLICK_ZOOM_MARGIN})",
    )
    add_refine_option(prompts)
    inst = p.add_argument_group("instances protocol")
    inst.add_argument(
        "--detections",
        metavar="FILE",
        help="a detector's boxes: COCO results JSON (image_id, bbox XYWH, score, category_id)",
    )
    inst.add_argument(
        "--min-score", type=finite_float, metavar="S", help="drop detections scored below S"
    )
    auto = p.add_argument_group("auto protocol (mask generator options)")
    auto.add_argument("--max-dets", type=_budgets, metavar="100,1000", help="AR budgets")
    auto.add_argument("--points-per-side", type=positive_int, metavar="N")
    auto.add_argument("--points-per-batch", type=positive_int, metavar="N")
    auto.add_argument("--pred-iou-thresh", type=finite_float, metavar="F")
    auto.add_argument("--stability-score-thresh", type=finite_float, metavar="F")
    auto.add_argument("--box-nms-thresh", type=finite_float, metavar="F")
    auto.add_argument("--crop-n-layers", type=non_negative_int, metavar="N")
    auto.add_argument("--min-mask-region-area", type=non_negative_int, metavar="PX")
    add_model_options(p)
    add_output_options(p)
    p.set_defaults(run=run)


def _given(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    """Options the user gave; the library's defaults stand for the rest."""
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


def run(args: argparse.Namespace) -> int:
    console = Console(args)
    for option, value in (("--output", args.output), ("--plot", args.plot)):
        if value:
            check_output_file(value, option)
    if args.compare:
        if args.dataset:
            raise InputError("give either a DATASET to evaluate or --compare A.json B.json")
        return _compare(args, console)
    if not args.dataset:
        raise InputError("give a DATASET (COCO .json or a folder), or --compare A.json B.json")
    if args.protocol == "instances" and not args.detections:
        raise InputError("the instances protocol needs --detections FILE (COCO results JSON)")
    if args.detections and args.protocol not in ("instances", "all"):
        raise InputError(f"--detections is for the instances protocol, not {args.protocol}")
    if args.detections:
        for option in ("zoom", "zoom_clicks", "refine"):
            if getattr(args, option, None) is not None:
                raise InputError(
                    f"--{option.replace('_', '-')} does not apply to instances (the detector's "
                    "boxes are decoded together on the whole image)"
                )
    if args.protocol == "instances":
        return _instances(args, console)

    from segany.cli.common import predictor_from_args

    datasets = _open_datasets(args, console)  # every kind opened before any is measured
    predictor = predictor_from_args(args, console)  # --precision, --cache
    reports = [
        (name, _evaluate(args, console, data, path, predictor)) for name, path, data in datasets
    ]
    label = Path(args.model).stem if args.model else "default model"
    if not args.by_kind:
        report = reports[0][1]
        table = _table(args, report)
        return _finish(args, console, report, table, [(label, report)])
    from segany.evaluate.report import build_kinds_report, format_kinds_table

    combined = build_kinds_report(reports)
    return _finish(args, console, combined, format_kinds_table(combined), reports)


def _open_datasets(args: argparse.Namespace, console: Console) -> list[tuple[str, Path, Any]]:
    """(name, path, dataset) to evaluate: DATASET, or with --by-kind each subfolder of it."""
    from segany.evaluate import open_dataset, subset

    seed = args.seed if args.seed is not None else 0
    if not args.by_kind:
        paths = [(str(args.dataset), Path(args.dataset))]
    else:
        root = Path(args.dataset)
        if not root.is_dir():
            raise InputError(f"{root}: --by-kind needs a folder with one dataset per subfolder")
        for option in ("images", "labels", "detections"):
            if getattr(args, option) is not None:
                raise InputError(f"--{option} does not apply with --by-kind (one per kind)")
        paths = [(d.name, d) for d in sorted(root.iterdir()) if d.is_dir()]
        paths = [(n, d) for n, d in paths if not n.startswith(".")]
        if not paths:
            raise InputError(f"{root} holds no subfolders: --by-kind reads one dataset from each")
    out = []
    for name, path in paths:
        if args.by_kind:
            path = _kind_dataset(path)
        try:
            data = open_dataset(path, images=args.images, labels=args.labels)
        except InputError as exc:
            raise InputError(f"kind {name!r}: {exc}" if args.by_kind else str(exc)) from exc
        data = subset(data, args.limit, seed)
        if len(data) == 0:
            raise InputError(f"{path} holds no images")
        console.info(f"{data.describe()['kind']} dataset {path}: {len(data)} image(s)")
        out.append((name, path, data))
    return out


def _kind_dataset(folder: Path) -> Path:
    """A kind's folder as ``open_dataset`` reads it; a COCO kind is a folder holding images/ and
    its one annotation .json (and no labels/), read as that file."""
    if (
        not (folder / "images").is_dir()
        or (folder / "labels").is_dir()
        or (folder / "masks").is_dir()
    ):
        return folder
    found = sorted(folder.glob("*.json"))
    return found[0] if len(found) == 1 else folder


def _evaluate(
    args: argparse.Namespace, console: Console, dataset: Any, path: Path, predictor: Any
) -> dict[str, Any]:
    """One dataset through the protocols (and baselines) the command line asks for: a report."""
    from segany.cli.common import refined_from_args
    from segany.evaluate import build_report

    described = dataset.describe() | {"path": str(path)}
    model = predictor.model
    prompted_with: Any = predictor
    if args.zoom is not None or args.zoom_clicks is not None:
        from segany.zoom import ZoomPredictor

        prompted_with = ZoomPredictor(predictor, args.zoom, click_margin=args.zoom_clicks)
    prompted_with = refined_from_args(prompted_with, args)  # --refine, after any zoom
    progress = not console.quiet and sys.stderr.isatty()
    common = _given(args, ("seed", "bootstrap"))
    protocols = PROTOCOLS[:4] if args.protocol == "all" else (args.protocol,)  # all: not
    # proposals (auto's recall with other settings) nor instances (it needs --detections)
    results: dict[str, Any] = {}
    prompted = tuple(p for p in protocols if p in PROMPTED)
    if prompted:
        from segany.evaluate import evaluate_prompts

        options = common | _given(
            args,
            ("max_clicks", "click_region", "box_noise", "box_noise_max_px", "objects_per_image"),
        )
        console.info(f"running {', '.join(prompted)}")
        results |= evaluate_prompts(prompted_with, dataset, prompted, progress=progress, **options)
        if args.baseline:
            from segany.evaluate.baselines import BASELINES, evaluate_baselines

            names = BASELINES if "all" in args.baseline else tuple(dict.fromkeys(args.baseline))
            console.info(f"running baselines {', '.join(names)}")
            results |= evaluate_baselines(dataset, prompted, names, progress=progress, **options)
    if "auto" in protocols:
        from segany.automatic import MaskGenerator
        from segany.evaluate import evaluate_auto

        generator = MaskGenerator.for_model(predictor, **_given(args, _GENERATOR_OPTIONS))
        console.info("running auto (automatic masks)")
        results["auto"] = evaluate_auto(
            generator, dataset, progress=progress, **common | _given(args, ("max_dets",))
        )
    if "proposals" in protocols:
        from segany.automatic import MaskGenerator
        from segany.evaluate import evaluate_proposals

        generator = MaskGenerator.for_model(
            predictor, "proposals", **_given(args, _GENERATOR_OPTIONS)
        )
        console.info("running proposals (automatic masks with the proposals preset)")
        results["proposals"] = evaluate_proposals(
            generator, dataset, progress=progress, **common | _given(args, ("max_dets",))
        )

    if args.detections:
        results["instances"] = _instance_result(args, predictor, progress)

    return build_report(
        results, model=_model_row(args, model), dataset=described, options=_options(args)
    )


def _table(args: argparse.Namespace, report: dict[str, Any]) -> str:
    from segany.evaluate import format_table

    table = format_table(report)
    if args.baseline and any(p in report["protocols"] for p in PROMPTED):
        from segany.evaluate.baselines import format_against_baselines

        table += "\n\n" + format_against_baselines(report)
    return table


def _model_row(args: argparse.Namespace, model: Any) -> dict[str, Any]:
    return {
        "model": args.model or "(default)",
        "config": model.config.name,
        "device": str(next(model.parameters()).device),
    }


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if v is not None and not callable(v)}


def _instance_result(args: argparse.Namespace, predictor: Any, progress: bool) -> Any:
    """COCO mask AP of the model's masks for the detector's boxes (segany.evaluate.instances)."""
    from segany.evaluate.instances import evaluate_instances

    bar = None
    if progress:
        from tqdm import tqdm

        def bar(items: Any) -> Any:
            return tqdm(items, desc="instances", unit="img", file=sys.stderr)

    return evaluate_instances(
        predictor,
        args.dataset,
        args.detections,
        images=args.images,
        progress=bar,
        **_given(args, ("min_score",)),
    )


def _instances(args: argparse.Namespace, console: Console) -> int:
    """The instances protocol alone: DATASET is the COCO ground truth, read by pycocotools."""
    from segany.evaluate import build_report, format_table

    gt = Path(args.dataset)
    if gt.suffix.lower() != ".json" or not gt.is_file():
        raise InputError(f"{gt}: the instances protocol needs a COCO instances .json file")
    for option in ("labels", "limit", "objects_per_image"):
        if getattr(args, option) is not None:
            raise InputError(f"--{option.replace('_', '-')} does not apply to instances")
    from segany.cli.common import predictor_from_args

    predictor = predictor_from_args(args, console)
    progress = not console.quiet and sys.stderr.isatty()
    console.info(f"running instances: {args.detections} against {gt}")
    result = _instance_result(args, predictor, progress)
    report = build_report(
        {"instances": result},
        model=_model_row(args, predictor.model),
        dataset={"kind": "coco", "path": str(gt), "num_images": result.settings["images"]},
        options=_options(args),
    )
    label = Path(args.model).stem if args.model else "default model"
    return _finish(args, console, report, format_table(report), [(label, report)])


_GENERATOR_OPTIONS = (
    "points_per_side",
    "points_per_batch",
    "pred_iou_thresh",
    "stability_score_thresh",
    "box_nms_thresh",
    "crop_n_layers",
    "min_mask_region_area",
)


def _compare(args: argparse.Namespace, console: Console) -> int:
    from segany.evaluate import format_comparison, load_report
    from segany.evaluate.report import KINDS_FORMAT, format_kinds_comparison

    a, b = (load_report(p, kinds=True) for p in args.compare)
    labels = (Path(args.compare[0]).stem, Path(args.compare[1]).stem)
    if labels[0] == labels[1]:
        labels = ("A", "B")
    per_kind = [r["format"] == KINDS_FORMAT for r in (a, b)]
    if per_kind[0] != per_kind[1]:
        raise InputError(
            "compare two per-kind reports (--by-kind) or two plain ones, not one of each"
        )
    if per_kind[0]:
        runs = [
            (f"{labels[i]} {k}", r) for i, rep in enumerate((a, b)) for k, r in rep["kinds"].items()
        ]
        return _finish(args, console, None, format_kinds_comparison(a, b, labels), runs)
    table = format_comparison(a, b, labels)
    return _finish(args, console, None, table, [(labels[0], a), (labels[1], b)])


def _finish(
    args: argparse.Namespace,
    console: Console,
    report: dict[str, Any] | None,
    table: str,
    reports: list[tuple[str, dict[str, Any]]],
) -> int:
    """Write the report and plot, then the table on stdout (or, with --json, the figures as
    JSON on stdout and the table on stderr)."""
    from segany.evaluate import plot_clicks, write_report

    if report is not None and args.output:
        console.info(f"report -> {write_report(report, args.output)}")
    if args.plot:
        console.info(f"plot -> {plot_clicks(reports, args.plot)}")
    if args.json:
        console.info(table)
        figures = [
            {
                "label": label,
                "protocols": {
                    name: {k: v["value"] for k, v in proto["metrics"].items()}
                    | {"seconds": proto["seconds"]}
                    for name, proto in rep["protocols"].items()
                },
            }
            for label, rep in reports
        ]
        console.summary({"command": "eval", "report": args.output, "runs": figures})
    elif not console.quiet:
        print(table, flush=True)
    return 0
