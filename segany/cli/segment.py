"""``segany segment``: masks from point and box prompts given on the command line.

Prompts (the same for every image):
- ``--point X,Y[,LABEL]`` (repeatable): pixel coordinates in the original image; LABEL 1/fg
  (default) marks the object, 0/bg the background. All points form one prompt.
- ``--box X0,Y0,X1,Y1`` (repeatable): one prompt per box; one box may be combined with points.
- ``--detections FILE|DIR``: a detector's boxes per image instead (the paper's zero-shot
  instance segmentation): a COCO results JSON (``image_id`` matched to the images by
  ``--coco-images`` ids, else by file name or numeric stem) or a folder of YOLO txt labels;
  each image is encoded once and its boxes decoded together; ``results.json`` holds every mask
  as a COCO results row (RLE, the detector's category and score). Images without detections
  are skipped and counted.

``--tile [SIDE]`` answers each prompt on an overlapping tile of the image at full resolution
(``segany.tasks.TiledPredictor``) instead of the whole image shrunk to the model's size: for
images much larger than the model's input, where small objects are lost. ``--max-pixels N``
(with ``--tile``) accepts images above the default pixel limit (2**27 px); such an image is read
by region (TIFF/BigTIFF and .npy; compressed TIFFs with zarr; other formats decoded whole) and
only ``STEM.json`` (masks as COCO RLE) and ``results.json`` are written for it: mask PNGs and
the overlay would be full-size arrays.

Outputs per image in ``--output``: ``STEM_mask{i}.png`` (8-bit, 255 inside), ``STEM.json`` (the
prompts, and per mask its prompt, candidate index, score, area, XYWH box, COCO RLE and file) and
``STEM_overlay.png`` (the best-scoring mask of each prompt, the points and boxes).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from segany.cli.common import (
    EXIT_CODES_HELP,
    EXIT_OK,
    EXIT_PARTIAL,
    Console,
    UsageError,
    add_model_options,
    add_output_options,
    add_refine_option,
    collect_images,
    exit_code_for,
    failure_line,
    finite_float,
    one_line,
    plain_doc,
)
from segany.cli.export import add_backend_options, onnx_predictor_from_args
from segany.cli.outputs import check_output_folder, stop_if_out_of_space
from segany.cli.tile_flags import (
    add_max_pixels_option,
    add_tile_options,
    check_tile_args,
    tile_settings,
)
from segany.errors import InputError
from segany.formats import output_set, prompted
from segany.inference.protocol import PredictorLike

_LABELS = {"1": 1, "fg": 1, "pos": 1, "+": 1, "0": 0, "bg": 0, "neg": 0, "-": 0}


def point_arg(text: str) -> tuple[float, float, int]:
    """``X,Y`` or ``X,Y,LABEL`` (LABEL 1/fg/pos/+ or 0/bg/neg/-)."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (2, 3):
        raise argparse.ArgumentTypeError(f"{text!r} is not X,Y or X,Y,LABEL")
    try:
        x, y = finite_float(parts[0]), finite_float(parts[1])
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not X,Y[,LABEL]: {e}") from None
    label = 1 if len(parts) == 2 else _LABELS.get(parts[2].lower())
    if label is None:
        raise argparse.ArgumentTypeError(
            f"{text!r}: LABEL must be 1 (foreground, also fg) or 0 (background, also bg)"
        )
    return x, y, label


def box_arg(text: str) -> tuple[float, float, float, float]:
    """``X0,Y0,X1,Y1`` with X1 > X0 and Y1 > Y0."""
    parts = text.split(",")
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"{text!r} is not X0,Y0,X1,Y1")
    try:
        x0, y0, x1, y1 = (finite_float(p) for p in parts)
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not X0,Y0,X1,Y1: {e}") from None
    if x1 <= x0 or y1 <= y0:
        raise argparse.ArgumentTypeError(f"{text!r}: needs X1 > X0 and Y1 > Y0")
    return x0, y0, x1, y1


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "segment",
        help="masks from point/box prompts",
        description=plain_doc(__doc__),
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    prompts = p.add_argument_group("prompts")
    prompts.add_argument(
        "-p", "--point", action="append", type=point_arg, default=[], metavar="X,Y[,LABEL]"
    )
    prompts.add_argument(
        "-b", "--box", action="append", type=box_arg, default=[], metavar="X0,Y0,X1,Y1"
    )
    prompts.add_argument(
        "--multimask",
        action="store_true",
        help="write the model's 3 candidate masks per prompt instead of its single mask",
    )
    prompts.add_argument(
        "--detections",
        metavar="FILE_OR_DIR",
        help="boxes from a detector: COCO results JSON, or a folder of YOLO txt labels",
    )
    prompts.add_argument(
        "--coco-images",
        metavar="JSON",
        help="a COCO annotation file whose 'images' map the detections' image_id to files",
    )
    prompts.add_argument(
        "--min-score", type=finite_float, default=0.0, help="drop detections scored below this"
    )
    add_refine_option(prompts)
    p.add_argument("--no-overlay", action="store_true", help="do not write STEM_overlay.png")
    add_tile_options(p)
    add_max_pixels_option(p)
    add_model_options(p)
    add_backend_options(p)
    add_output_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.max_pixels is None:
        return _run(args)
    check_tile_args(args)
    from segany.limits import pixel_limit

    with pixel_limit(args.max_pixels):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    console = Console(args)
    if args.detections is not None and (args.point or args.box):
        raise UsageError("--detections gives the boxes: no --point or --box beside it")
    if args.coco_images is not None and args.detections is None:
        raise UsageError("--coco-images goes with --detections")
    if not args.point and not args.box and args.detections is None:
        raise UsageError(
            "give at least one --point X,Y or --box X0,Y0,X1,Y1 (or --detections FILE)"
        )
    if len(args.box) > 1 and args.point:
        raise UsageError("--point can be combined with one --box only (several boxes: no points)")
    check_tile_args(args)
    if args.tile is not None and (args.backend == "onnx" or args.onnx_dir is not None):
        raise UsageError("--tile runs with the torch backend, not onnx")
    out = check_output_folder(args.output, "--output")
    images = collect_images(args.images, exclude=out)
    if not images:
        raise InputError("no images found in " + ", ".join(args.images))
    images = [(path, output_set.output_stem(stem)) for path, stem in images]
    detections = None
    if args.detections is not None:
        detections = _read_detections(args, [p for p, _ in images])
        skipped = [p for p, _ in images if p not in detections]
        images = [(p, stem) for p, stem in images if p in detections]
        if skipped:
            console.info(f"{len(skipped)} image(s) without detections: skipped")
    per_image = {
        str(path): (len(detections[path]) if detections is not None else max(1, len(args.box)))
        * (3 if args.multimask else 1)
        for path, _ in images
    }
    output_set.check_collisions(
        {
            str(path): prompted.output_paths(
                out, stem, per_image[str(path)], overlay=not args.no_overlay
            )
            for path, stem in images
        },
        [] if detections is None else [out / _RESULTS],
    )
    output_set.recover(out)

    from segany.cli.common import predictor_from_args, refined_from_args

    if args.backend == "onnx" or args.onnx_dir is not None:
        predictor: PredictorLike = onnx_predictor_from_args(args, console)
    else:
        predictor = predictor_from_args(args, console)  # --precision, --cache
        if args.tile is not None:
            from segany.tasks.tiles import TiledPredictor

            tiles = tile_settings(args)
            predictor = TiledPredictor(predictor, tile=tiles["tile"], overlap=tiles["overlap"])
    predictor = refined_from_args(predictor, args)  # --refine
    results, failures = [], []
    rows: list[dict[str, Any]] = []
    for path, stem in console.progress(images, total=len(images), desc="segment"):
        try:
            dets = None if detections is None else detections[path]
            results.append(_segment_one(predictor, path, stem, out, args, dets, rows))
        except Exception as e:  # noqa: BLE001 - one image's failure never stops the run
            stop_if_out_of_space(e, out)
            if len(images) == 1:
                raise
            console.failure(failure_line(path, e))
            failures.append({"file": str(path), "error": one_line(e), "code": exit_code_for(e)})
    if detections is not None:
        from segany.atomic import write_json_atomic

        write_json_atomic(out / _RESULTS, rows)
        console.info(f"{len(rows)} masks as COCO results -> {out / _RESULTS}")
    for r in results:
        best = max(r["masks"], key=lambda m: m["score"])
        console.info(
            f"{r['image']['file_name']}: {len(r['masks'])} mask(s), best score "
            f"{best['score']:.3f} -> {out / r['json']}"
        )
    console.summary(
        {
            "command": "segment",
            "output": str(out),
            "images": len(images),
            "written": len(results),
            "failed": len(failures),
            "failures": failures,
            "results": [_brief(r) for r in results],
        }
    )
    return EXIT_PARTIAL if failures else EXIT_OK


_RESULTS = "results.json"  # --detections: every mask as a COCO results row


def _read_detections(args: argparse.Namespace, paths: list[Path]) -> dict[Path, Any]:
    """--detections as {image path: Detections}: a YOLO folder or a COCO results file."""
    import json

    from segany.tasks import read_coco_detections, read_yolo_detections

    source = Path(args.detections)
    if source.is_dir():
        from PIL import Image

        sizes = {}
        for p in paths:
            try:
                with Image.open(p) as im:
                    sizes[p] = (im.height, im.width)
            except OSError:
                continue  # unreadable: reported when the image itself is read
        return read_yolo_detections(source, sizes, min_score=args.min_score)
    listed = None
    if args.coco_images is not None:
        try:
            listed = json.loads(Path(args.coco_images).read_text(encoding="utf-8"))["images"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(
                f"--coco-images {args.coco_images}: not a COCO file with 'images' ({e})"
            ) from None
    return read_coco_detections(source, paths, coco_images=listed, min_score=args.min_score)


def _segment_one(
    predictor: PredictorLike,
    path: Path,
    stem: str,
    out: Path,
    args: argparse.Namespace,
    detections: Any = None,
    rows: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    image, source = _read(path, tiled=args.tile is not None)
    shape = source.shape if image is None else image.shape
    height, width = int(shape[0]), int(shape[1])
    points = np.array([p[:2] for p in args.point], dtype=np.float64).reshape(-1, 2)
    labels = np.array([p[2] for p in args.point], dtype=np.int64)
    boxes = np.array(args.box, dtype=np.float64).reshape(-1, 4)
    if detections is not None:
        detections, _ = detections.clipped(height, width, str(path))
        boxes = detections.boxes
    _check_inside(points, boxes, width, height)
    prompts = {
        "point_coords": points if len(points) else None,
        "point_labels": labels if len(points) else None,
        "box": (boxes[0] if len(boxes) == 1 else boxes) if len(boxes) else None,
        "multimask_output": args.multimask,
    }

    def document(prompt_count: int, overlay: bool) -> dict[str, Any]:
        return prompted.prompted_document(
            str(path),
            (height, width),
            points,
            labels,
            boxes,
            prompt_count=prompt_count,
            multimask=args.multimask,
            stem=stem,
            overlay=overlay,
        )

    write: Callable[[Callable[[Path], Path]], None]
    if image is None:  # above the default pixel limit: each answer kept in its tile's frame
        # Answers are made one at a time, tile by tile, and kept as RLE only: one prompt's
        # masks in memory.
        answers = _framed_answers(predictor, source, path, prompts)
        entries = prompted.framed_entries(
            ((a.prompt, a.frame, a.masks, a.scores) for a in answers), (height, width)
        )
        per_prompt: dict[int, list[dict[str, Any]]] = {}
        for entry in entries:
            per_prompt.setdefault(entry["prompt"], []).append(entry)
        # per prompt: its best entry (its one mask without --multimask), its first score
        picked = [(max(e, key=lambda m: m["score"]), e[0]["score"]) for e in per_prompt.values()]
        if detections is not None and rows is not None:  # (its best with --multimask)
            rles = [best["segmentation"] for best, _ in picked]
            _add_rows(rows, detections, stem, rles, np.array([s for _, s in picked]))
        result = document(len(picked), overlay=False)

        def write(where: Callable[[Path], Path]) -> None:
            prompted.write_prompted_framed(out, result, entries, where=where)

    else:
        predictor.set_image(image)
        result = document(max(1, len(boxes)), overlay=not args.no_overlay)

        def write(where: Callable[[Path], Path]) -> None:
            answers = _answers(predictor, prompts, (height, width))
            best = prompted.write_prompted_answers(out, stem, result, answers, image, where=where)
            if detections is not None and rows is not None:  # (its best with --multimask)
                rles = [rle for rle, _ in best]
                _add_rows(rows, detections, stem, rles, np.array([s for _, s in best]))

    # All files of the image are staged, then moved in place together (see output_set).
    unit = output_set.OutputSet(out, stem)
    unit.begin()
    try:
        write(unit.staged)
        # an earlier run's mask PNGs beyond this run's (all of them for a framed image, which
        # has none), and its overlay when this run writes none (a framed image, --no-overlay):
        # what is left in OUT is this run's output alone
        pngs = sum(m["file"] is not None for m in result["masks"])
        stale = prompted.stale_masks(out, stem, pngs)
        overlay = out / prompted.overlay_name(stem)
        if result["overlay"] is None and overlay.exists():
            stale.append(overlay)
        unit.commit(last=out / result["json"], remove=stale)
    except BaseException:
        unit.abandon()
        raise
    return result


def _add_rows(
    rows: list[dict[str, Any]], detections: Any, stem: str, rles: list[Any], scores: np.ndarray
) -> None:
    """The image's masks (one RLE per box, its first candidate's score) as COCO results rows."""
    from segany.tasks import InstanceMasks, coco_instance_results

    found = InstanceMasks(detections, rles, np.asarray(scores, dtype=np.float64))
    image_id = detections.image_id if detections.image_id is not None else stem
    rows.extend(coco_instance_results(image_id, found))


def _read(path: Path, *, tiled: bool) -> tuple[np.ndarray | None, Any]:
    """(the image whole, None), or with --tile for an image above the default pixel limit
    (None, the image as a region source: read by region when its format allows, a TIFF or a
    .npy file; other formats decoded whole, within --max-pixels). An image within the limit
    is always read whole, by PIL as without --tile."""
    from segany.formats import read_image
    from segany.limits import MAX_IMAGE_PIXELS
    from segany.tasks.region_files import open_regions, reads_by_region, region_shape

    if tiled and reads_by_region(path):
        height, width = region_shape(path)  # its header alone
        if height * width > MAX_IMAGE_PIXELS:
            return None, open_regions(path)
    image = read_image(path)
    large = tiled and image.shape[0] * image.shape[1] > MAX_IMAGE_PIXELS
    return (None, image) if large else (image, None)


def _answers(
    predictor: PredictorLike, prompts: dict[str, Any], size: tuple[int, int]
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Per prompt its index, masks C×H×W and scores C, made a few prompts at a time (hundreds
    of a detector's boxes on a large photo would be gigabytes of masks at once): boxes as
    many a call as keep its masks within ``segany.limits.MASK_PIXELS_PER_BATCH``; with
    ``--tile``, one box at a time grouped by tile (in tile order, not the boxes')."""
    from segany.limits import prompts_per_call
    from segany.tasks.tiles import TiledPredictor

    boxes = prompts["box"]
    if boxes is None or np.ndim(boxes) == 1:  # one prompt
        pred = predictor.predict(**prompts)
        yield 0, np.asarray(pred.masks), np.asarray(pred.scores)
        return
    if isinstance(predictor, TiledPredictor):
        for answer in predictor.iter_framed(**prompts, ordered=False):
            pasted = answer.pasted()
            yield answer.prompt, pasted.masks, pasted.scores
        return
    step = prompts_per_call(3 if prompts["multimask_output"] else 1, *size)
    for start in range(0, len(boxes), step):
        pred = predictor.predict(**{**prompts, "box": boxes[start : start + step]})
        masks, scores = np.asarray(pred.masks), np.asarray(pred.scores)
        if masks.ndim == 3:  # one box answers unbatched (C×H×W), as the official predictor
            masks, scores = masks[None], scores[None]
        for k in range(len(masks)):
            yield start + k, masks[k], scores[k]


def _framed_answers(
    predictor: PredictorLike, source: Any, path: Path, prompts: dict[str, Any]
) -> Iterator[Any]:
    """The tiled predictor's answers on an image above the default pixel limit, each in its
    frame and made when read, tile by tile (``TiledPredictor.iter_framed`` not ``ordered``:
    each answer has its ``prompt`` index; each tile is encoded once): no full-size mask is made,
    though a prompt larger than a tile is answered on a crop around it (read shrunk when it is
    many model sizes long; its masks that crop's size)."""
    from segany.limits import MAX_IMAGE_PIXELS
    from segany.tasks.tiles import TiledPredictor

    if not isinstance(predictor, TiledPredictor):  # (--refine wraps it: it needs the image)
        height, width = (int(v) for v in source.shape[:2])
        raise InputError(
            f"{path} is {width}×{height} px, above {MAX_IMAGE_PIXELS}: only a plain --tile run "
            "answers it (--refine needs the image whole)"
        )
    predictor.set_image(source)
    return predictor.iter_framed(**prompts, ordered=False)


def _brief(result: dict[str, Any]) -> dict[str, Any]:
    """A result for the --json summary: the files and scores, without the RLE masks."""
    masks = [{k: v for k, v in m.items() if k != "segmentation"} for m in result["masks"]]
    return {**{k: v for k, v in result.items() if k != "prompts"}, "masks": masks}


def _check_inside(points: np.ndarray, boxes: np.ndarray, width: int, height: int) -> None:
    for x, y in points:
        if not (0 <= x <= width and 0 <= y <= height):
            raise InputError(f"point {x:g},{y:g} lies outside the {width}×{height} image")
    for x0, y0, x1, y1 in boxes:
        if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
            raise InputError(
                f"box {x0:g},{y0:g},{x1:g},{y1:g} lies outside the {width}×{height} image"
            )
