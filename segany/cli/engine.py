"""``segany engine``: annotate whole collections (run), check (verify) and describe (stats)
the output, and improve the model on it (round).

``segany engine run SOURCE... -o OUT`` annotates every image of folders, globs, manifests
(.txt/.csv of paths) and SA-1B tar shards into sharded SA-1B JSON with a manifest, an errors
file and a run summary. Re-running the same command resumes an interrupted run.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from segany.cli.common import (
    EXIT_CODES_HELP,
    EXIT_OK,
    EXIT_PARTIAL,
    Console,
    UsageError,
    add_output_options,
    finite_float,
    fraction,
    non_negative_int,
    plain_doc,
    positive_int,
)
from segany.cli.generator_flags import GENERATOR_OPTIONS, generator_options, metavar_of
from segany.cli.outputs import stop_if_out_of_space
from segany.cli.tile_flags import add_tile_options
from segany.errors import InputError


def register(subparsers: Any) -> None:
    from segany.cli.common import SeganyArgumentParser

    top = subparsers.add_parser(
        "engine",
        help="the data engine: annotate collections at scale (local or Ray), verify, stats",
        description=plain_doc(__doc__),
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = top.add_subparsers(
        title="engine commands",
        metavar="COMMAND",
        dest="engine_command",
        parser_class=SeganyArgumentParser,
    )
    sub.required = True
    _register_run(sub)
    _register_plan(sub)
    p = sub.add_parser("verify", help="check an output: files parse, RLEs decode, ids, manifest")
    p.add_argument("out", metavar="OUT")
    add_output_options(p)
    p.set_defaults(run=run_verify)
    p = sub.add_parser("stats", help="masks per image and mask sizes of an output")
    p.add_argument("out", metavar="OUT")
    add_output_options(p)
    p.set_defaults(run=run_stats)
    _register_round(sub)


def add_engine_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``engine run`` and ``engine round``."""
    p.add_argument("--no-recursive", action="store_true", help="only the top of each folder")
    ex = p.add_argument_group("execution")
    ex.add_argument(
        "--executor",
        choices=("local", "ray", "serial"),
        default="local",
        help="local: worker processes (default); ray: Ray actors; serial: this process only",
    )
    ex.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    ex.add_argument(
        "-w",
        "--workers",
        type=workers_arg,
        default=1,
        metavar="N|auto",
        help="model copies (default 1); auto: as many as the memory and cores of this machine "
        "(or of each node of the Ray cluster) hold, memory per worker from the model's size",
    )
    ex.add_argument(
        "--memory-per-worker",
        type=size_arg,
        metavar="SIZE",
        help="memory one worker needs, e.g. 1.5G (default: estimated from the model's size; "
        "`segany engine plan` measures it)",
    )
    ex.add_argument(
        "--threads-per-worker",
        type=positive_int,
        metavar="N",
        help="torch threads in each worker (default: cores / workers)",
    )
    ex.add_argument("--max-pixels", type=positive_int, metavar="N", help="larger images fail")
    sh = p.add_argument_group("output shards")
    sh.add_argument("--shard-size", type=positive_int, default=1000, help="images per shard")
    sh.add_argument("--shard-format", choices=("folder", "tar"), default="folder")
    sh.add_argument(
        "--with-images", action="store_true", help="copy each image into its shard (SA-1B style)"
    )
    md = p.add_argument_group("mode")
    md.add_argument("--mode", choices=("auto", "semi"), default="auto")
    md.add_argument(
        "--existing",
        metavar="PATH",
        help="semi: existing annotations, a folder of SA-1B JSON named like the images or a "
        "COCO JSON (default: NAME.json beside each image, as in SA-1B folders and tars)",
    )
    md.add_argument(
        "--semi-max-overlap",
        type=fraction,
        metavar="X",
        help="semi: drop new masks with more than this fraction inside existing ones (0.5)",
    )
    gen = p.add_argument_group(
        "generator options (default: the model's own, MaskGenerator.for_model; the official "
        "values for the official weights)"
    )
    for name, (kind, text) in GENERATOR_OPTIONS.items():
        metavar = metavar_of(kind)
        gen.add_argument("--" + name.replace("_", "-"), type=kind, metavar=metavar, help=text)
    gen.add_argument("--preset", metavar="NAME", help="e.g. sa1b: the paper's SA-1B settings")
    gen.add_argument("--point-grids", metavar="FILE", help="grid points .npy/.npz in [0, 1]")
    add_tile_options(p)
    g = p.add_argument_group("model")
    g.add_argument("-m", "--model", metavar="NAME_OR_PATH", help="default: the bundled model")
    g.add_argument("--device", default="cpu", help="torch device of each worker")


def _register_run(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="annotate a collection (folders, globs, manifests, tar shards)",
        description=plain_doc(__doc__),
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder")
    add_engine_options(p)
    add_output_options(p)
    p.set_defaults(run=run_engine_command)


def _register_plan(sub: Any) -> None:
    p = sub.add_parser(
        "plan",
        help="what a run would do: images, shards, what is done, workers, an estimated time",
        description=plain_doc(
            "Lists the images as `engine run` would, reads what OUT already holds (nothing is "
            "written), sizes the workers (this machine, or the Ray cluster at --address), and "
            "times the model on --sample images in a worker like the run's: seconds and peak "
            "memory per image, images/hour, the run's estimated time, and with --target-hours "
            "the workers a collection needs. Takes the options of `engine run`."
        ),
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE")
    p.add_argument(
        "-o", "--output", metavar="OUT", help="the run's output folder, to count what is done"
    )
    p.add_argument(
        "--sample",
        type=non_negative_int,
        default=3,
        metavar="N",
        help="images to time (default 3; 0: counts and sizing only)",
    )
    p.add_argument("--target-hours", type=finite_float, metavar="H", help="finish within H hours")
    p.add_argument(
        "--target-images",
        type=positive_int,
        metavar="N",
        help="with --target-hours: a collection of N images (default: the images left to do)",
    )
    add_engine_options(p)
    add_output_options(p)
    p.set_defaults(run=run_plan)


def run_plan(args: argparse.Namespace) -> int:
    import tempfile

    from segany.engine.plan import plan_run
    from segany.engine.sizing import fmt_bytes

    console = Console(args)
    with tempfile.TemporaryDirectory(prefix="segany-plan") as empty:
        # Without -o, an empty folder stands for a new run's output (nothing is written).
        config = engine_config(args, args.sources, args.output or empty, console)
        config.progress = False
        plan = plan_run(
            config,
            sample=args.sample,
            target_hours=args.target_hours,
            target_images=args.target_images,
        )
    if args.output is None:
        plan["output"] = None
    if console.json:
        console.summary({"command": "engine plan", **plan})
        return EXIT_OK
    finished = f" ({plan['finished_shards']} shard(s) finished)" if plan["finished_shards"] else ""
    if plan["settings_differ"]:
        state = f"; OUT holds a run with other {', '.join(plan['settings_differ'])}: refused"
    elif plan["resumable"]:
        state = "; a run resumes from there"
    else:
        state = ""
    console.info(
        f"{plan['images']} image(s) in {plan['shards']} shard(s) of up to {plan['shard_size']}; "
        f"{plan['done']} done{finished}, {plan['todo']} to do{state}"
    )
    if "refused" in plan:
        console.failure(f"the run would be refused: {plan['refused']}")
    fit = ", ".join(f"{k}: {v}" for k, v in plan["fit_per_node"].items())
    console.info(
        f"workers: {plan['workers']} × {plan['threads_per_worker']} thread(s), "
        f"{fmt_bytes(plan['memory_per_worker'])} each ({plan['memory_source']}); "
        f"fit per node: {fit}"
    )
    s = plan.get("sample")
    if s:
        load = s["load_average"][0] if s["load_average"] else "?"
        console.info(
            f"sample: {s['annotated']} of {s['images']} image(s) annotated in "
            f"{s['wall_seconds']} s by {s['workers']} worker(s) at once: "
            f"{s['seconds_per_image']} s/image, "
            f"{s['masks_per_image']} masks/image; model load {s['load_seconds']} s; peak "
            f"memory {fmt_bytes(s['peak_memory'])} per worker (load average {load})"
        )
        for failed in s["failed"]:
            console.failure(f"sample image failed: {failed}")
    if "estimated_seconds" in plan:
        console.info(
            f"estimate: {plan['images_per_hour_per_worker']} images/hour per worker, "
            f"{plan['images_per_hour']} with {plan['workers']}; {plan['todo']} image(s) to do: "
            f"about {_duration(plan['estimated_seconds'])}; the measured memory allows "
            f"{plan.get('workers_by_measured_memory', '?')} worker(s)"
        )
    if "target" in plan:
        t = plan["target"]
        console.info(
            f"target: {t['images']} image(s) in {t['hours']} h need {t['workers']} worker(s) "
            f"({t['machines_like_these']} × what was sized here)"
        )
    return EXIT_OK


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _register_round(sub: Any) -> None:
    p = sub.add_parser(
        "round",
        help="model in the loop: annotate, fine-tune on the result, annotate again",
        description=plain_doc(
            "Round r annotates SOURCES with model r into OUT/round_r/annotations and measures "
            "it on the held-out set (single-point mIoU, automatic AR@100); before the last "
            "round the model is fine-tuned on that output (segany train's recipe) into "
            "OUT/round_r/model.safetensors. OUT/rounds.json holds the table. Resumable."
        ),
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder")
    p.add_argument(
        "--heldout", required=True, metavar="DATA", help="SA-1B folder or COCO JSON to score"
    )
    p.add_argument("--heldout-limit", type=positive_int, metavar="N", help="at most N images")
    p.add_argument("--rounds", type=non_negative_int, default=1, help="fine-tunings (default 1)")
    t = p.add_argument_group("fine-tuning (TrainConfig; default: the library's)")
    t.add_argument("--train-steps", type=positive_int, metavar="N")
    t.add_argument("--train-batch-size", type=positive_int, metavar="N")
    t.add_argument("--train-lr", type=finite_float, metavar="X")
    t.add_argument("--train-masks-per-image", type=positive_int, metavar="N")
    t.add_argument("--train-freeze", choices=("none", "encoder", "decoder-only"))
    t.add_argument("--no-amp", action="store_true", help="train in fp32 (default: bf16)")
    add_engine_options(p)
    add_output_options(p)
    p.set_defaults(run=run_round)


def run_round(args: argparse.Namespace) -> int:
    from segany.engine.rounds import RoundConfig, run_rounds

    console = Console(args)
    train: dict[str, Any] = {"amp": not args.no_amp}
    for opt, name in (
        ("train_steps", "steps"),
        ("train_batch_size", "batch_size"),
        ("train_lr", "lr"),
        ("train_masks_per_image", "masks_per_image"),
        ("train_freeze", "freeze"),
    ):
        if getattr(args, opt) is not None:
            train[name] = getattr(args, opt)
    config = RoundConfig(
        engine=engine_config(args, args.sources, args.output, console),
        out=args.output,
        heldout=args.heldout,
        rounds=args.rounds,
        train=train,
        heldout_limit=args.heldout_limit,
    )
    rows = run_rounds(config)
    for row in rows:
        console.info(
            f"round {row['round']}: {row['masks_per_image']} masks/image, held-out point mIoU "
            f"{row['point_miou']}, AR@100 {row['ar@100']}"
        )
    console.summary({"command": "engine round", "output": args.output, "rounds": rows})
    return EXIT_OK


def engine_config(args: argparse.Namespace, sources: list[str], out: str, console: Console) -> Any:
    from segany.engine import EngineConfig, WorkerSpec, default_threads

    if args.preset is not None:
        from segany.automatic import PRESETS

        if args.preset not in PRESETS:
            raise InputError(f"unknown preset {args.preset!r}; known: {', '.join(PRESETS)}")
    spec_kw: dict[str, Any] = {
        "model": args.model,
        "device": args.device,
        "preset": args.preset,
        "options": generator_options(args),
        "threads": args.threads_per_worker
        or (1 if args.workers == "auto" else default_threads(args.workers)),
    }
    if args.max_pixels is not None:
        spec_kw["max_pixels"] = args.max_pixels
    if args.tile is not None:
        spec_kw.update(_tile_spec(args))
    elif args.tile_overlap is not None:
        raise UsageError("--tile-overlap goes with --tile")
    if args.semi_max_overlap is not None:
        spec_kw["semi_max_overlap"] = args.semi_max_overlap
    return EngineConfig(
        sources=sources,
        out=out,
        spec=WorkerSpec(**spec_kw),
        workers=args.workers,
        memory_per_worker=args.memory_per_worker,
        auto_threads=args.threads_per_worker is None,
        executor=args.executor,
        address=args.address,
        shard_size=args.shard_size,
        shard_kind=args.shard_format,
        with_images=args.with_images,
        mode=args.mode,
        existing=args.existing,
        recursive=not args.no_recursive,
        progress=not console.quiet,
    )


def _tile_spec(args: argparse.Namespace) -> dict[str, Any]:
    """--tile [SIDE] / --tile-overlap: each worker segments its images tile by tile."""
    from segany.automatic import PRESETS

    if args.mode != "auto":
        raise UsageError("--tile goes with --mode auto (semi-automatic runs are untiled)")
    if args.crop_n_layers or PRESETS.get(args.preset or "", {}).get("crop_n_layers"):
        raise UsageError("--tile replaces the crop layers: no --crop-n-layers, no crop preset")
    return {"tile": args.tile, "tile_overlap": args.tile_overlap}


def workers_arg(text: str) -> int | str:
    """``--workers``: a whole number ≥ 1 or ``auto``."""
    from segany.engine.sizing import parse_workers

    try:
        return parse_workers(text)
    except InputError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number ≥ 1 or 'auto', got {text!r}"
        ) from None


def size_arg(text: str) -> int:
    """``--memory-per-worker``: 1500M, 2G, 2.5GiB or bytes."""
    from segany.engine.sizing import parse_size

    try:
        return parse_size(text)
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


#: What an engine run that stopped for space keeps, and how to finish it.
SHARDS_KEPT = (
    "the shards finished so far are complete and nothing half-written was left in their "
    "place: free some space and run the same command again to finish"
)


def run_engine_command(args: argparse.Namespace) -> int:
    from segany.engine import run_engine

    console = Console(args)
    config = engine_config(args, args.sources, args.output, console)
    try:
        summary = run_engine(config)
    except OSError as e:  # a full disk: one line that says so, and how to finish
        stop_if_out_of_space(e, args.output, SHARDS_KEPT)
        raise
    console.info(
        f"{summary['images']} image(s): {summary['annotated']} annotated, {summary['failed']} "
        f"failed (see errors.csv); {summary['masks']} masks, {summary['masks_per_image']} per "
        f"image; {summary['images_per_hour']} images/hour this run -> {args.output}"
    )
    if "sizing" in summary:
        from segany.engine.sizing import fmt_bytes

        sz = summary["sizing"]
        console.info(
            f"{summary['workers']} worker(s) × {summary['threads_per_worker']} thread(s), "
            f"{fmt_bytes(sz['memory_per_worker'])} each ({sz['memory_source']})"
        )
    console.summary({"command": "engine run", "output": args.output, **summary})
    return EXIT_PARTIAL if summary["failed"] else EXIT_OK


def run_verify(args: argparse.Namespace) -> int:
    from segany.engine.check import verify

    console = Console(args)
    problems = verify(args.out)
    for p in problems:
        console.failure(p)
    if not problems:
        console.info(f"{args.out}: complete and sound")
    console.summary({"command": "engine verify", "output": args.out, "problems": problems})
    return EXIT_OK if not problems else 3


def run_stats(args: argparse.Namespace) -> int:
    from segany.engine.check import stats
    from segany.engine.output import MANIFEST

    console = Console(args)
    try:
        result = stats(args.out)
    except FileNotFoundError:
        raise InputError(f"{args.out}: no {MANIFEST}; finish the run first") from None
    if console.json:
        console.summary({"command": "engine stats", "output": args.out, **result})
    elif not console.quiet:
        print(json.dumps(result, indent=1))
    return EXIT_OK
