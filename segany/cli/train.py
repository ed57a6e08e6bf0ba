"""``segany train``, ``segany synth`` and ``segany distill``: training from the command line.

Options mirror ``segany.train.TrainConfig``; those not given keep the library's defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import TYPE_CHECKING, cast

from segany.cli.common import (
    Console,
    add_output_options,
    finite_float,
    fraction,
    non_negative_int,
    positive_int,
)
from segany.cli.outputs import check_output_file, check_output_folder, stop_if_out_of_space

if TYPE_CHECKING:
    from segany.modeling import Sam
    from segany.train.datasets import MaskDataset
    from segany.train.embeddings import EmbeddingCache

# CLI option -> TrainConfig field (options left out keep the TrainConfig default).
_TRAIN_FIELDS = {
    "steps": "steps",
    "batch_size": "batch_size",
    "accumulate": "accumulate",
    "masks_per_image": "masks_per_image",
    "lr": "lr",
    "min_lr_ratio": "min_lr_ratio",
    "warmup": "warmup_steps",
    "weight_decay": "weight_decay",
    "layer_decay": "layer_decay",
    "drop_path": "drop_path",
    "clip_grad": "clip_grad",
    "rounds": "rounds",
    "grad_rounds": "grad_rounds",
    "box_prob": "box_prob",
    "box_noise": "box_noise",
    "box_max_noise": "box_max_noise",
    "click_mode": "click_mode",
    "freeze": "freeze",
    "device": "device",
    "seed": "seed",
    "val_every": "val_every",
    "val_images": "val_images",
    "ckpt_every": "ckpt_every",
    "log_every": "log_every",
}
_LOSS_FIELDS = {
    "focal_weight": "focal",
    "dice_weight": "dice",
    "iou_weight": "iou",
    "focal_alpha": "focal_alpha",
    "focal_gamma": "focal_gamma",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_train(subparsers)
    _register_synth(subparsers)
    _register_distill(subparsers)


def _register_train(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train or fine-tune a model (SAM's recipe) on SA-1B or COCO data",
        description="Train from scratch (--config) or fine-tune (--model) on an SA-1B folder "
        "or a COCO instances JSON (ANNOTATIONS.json[:IMAGES_DIR]).",
    )
    p.add_argument(
        "data", nargs="+", help="training data: SA-1B folder(s) or COCO JSON[:images dir]"
    )
    p.add_argument("--val", metavar="DATA", help="validation data (same forms)")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="run folder")
    start = p.add_mutually_exclusive_group()
    start.add_argument("-m", "--model", metavar="NAME_OR_PATH", help="fine-tune these weights")
    start.add_argument(
        "--config",
        metavar="NAME_OR_JSON",
        help="train from scratch: a variant name (tiny, vit_b, ...) or a SamConfig JSON file",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    p.add_argument("--export", metavar="PATH", help="also write the best weights here")
    p.add_argument("--half", action="store_true", help="export in fp16")
    g = p.add_argument_group("schedule")
    for name, kind in (
        ("steps", positive_int),
        ("batch-size", positive_int),
        ("accumulate", positive_int),
        ("masks-per-image", positive_int),
        ("lr", finite_float),
        ("min-lr-ratio", fraction),
        ("warmup", non_negative_int),
        ("weight-decay", finite_float),
        ("layer-decay", fraction),
        ("drop-path", fraction),
        ("clip-grad", finite_float),
        ("seed", non_negative_int),
        ("val-every", positive_int),
        ("val-images", positive_int),
        ("ckpt-every", positive_int),
        ("log-every", positive_int),
    ):
        g.add_argument(f"--{name}", type=kind)
    g = p.add_argument_group("prompts and loss")
    g.add_argument("--rounds", type=positive_int, help="prompt rounds per mask (paper: 11)")
    g.add_argument(
        "--grad-rounds", type=non_negative_int, help="rounds with gradients (0: all of them)"
    )
    g.add_argument("--box-prob", type=fraction, help="share of first prompts that are boxes")
    g.add_argument("--box-noise", type=fraction, help="box jitter std, fraction of the side")
    g.add_argument("--box-max-noise", type=finite_float, help="box jitter cap in pixels")
    g.add_argument(
        "--click-mode",
        choices=("uniform", "center", "mixed"),
        help="corrective clicks: uniform in the error region (paper), the center of the largest "
        "error region (segany eval's), or either per mask",
    )
    for name in ("focal-weight", "dice-weight", "iou-weight", "focal-alpha", "focal-gamma"):
        g.add_argument(f"--{name}", type=finite_float)
    g = p.add_argument_group("hardware")
    g.add_argument("--freeze", choices=("none", "encoder", "decoder-only"))
    g.add_argument(
        "--cache-embeddings",
        metavar="FILE",
        help="with --freeze: encode the training images once (and flipped) into FILE, built "
        "when missing, and train the decoder from it",
    )
    g.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when present)")
    g.add_argument("--no-amp", action="store_true", help="train in fp32 (default: bf16 autocast)")
    g.add_argument("--threads", type=positive_int, metavar="N", help="CPU threads for torch")
    add_output_options(p)
    p.set_defaults(run=run_train)


def _register_synth(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "synth",
        help="generate a synthetic SA-1B-style dataset (textured overlapping shapes)",
        description="Scenes of overlapping polygons, ellipses, blobs and thin strokes (with "
        "holes, nested parts and touching pieces) in flat, gradient or photo-texture fills "
        "(scikit-image's and matplotlib's photos), with soft edges, lighting, noise and JPEG "
        "artefacts, written as SA-1B image/JSON pairs.",
    )
    p.add_argument("out", help="output folder")
    p.add_argument("-n", "--count", type=positive_int, default=1000, help="number of images")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--size", type=positive_int, help="longest image side in pixels")
    p.add_argument(
        "--gray", type=fraction, default=0.0, metavar="SHARE", help="share of grey scenes (0)"
    )
    p.add_argument(
        "--kinds",
        metavar="KIND[,KIND...]",
        help="draw graphic kinds instead of textured scenes, in turn: flat, glyphs, tilings, "
        "outlines, grey, or 'all' (flat fills, printed glyphs, tilings and line art, grey "
        "scientific images; PNG files)",
    )
    add_output_options(p)
    p.set_defaults(run=run_synth)


def _register_distill(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "distill",
        help="train a small image encoder to reproduce a larger model's embeddings",
    )
    p.add_argument("images", help="folder of images (any SA-1B or plain image folder)")
    p.add_argument("-t", "--teacher", required=True, metavar="NAME_OR_PATH")
    p.add_argument("--student", required=True, metavar="NAME_OR_JSON", help="student config")
    p.add_argument("-o", "--out", required=True, metavar="PATH", help="student weights file")
    p.add_argument("--steps", type=positive_int)
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--lr", type=finite_float)
    p.add_argument("--device")
    add_output_options(p)
    p.set_defaults(run=run_distill)


# --------------------------------------------------------------------------------------------


def _model_config(spec: str):
    from pathlib import Path

    from segany.models import SamConfig, get_config
    from segany.train.recipes import NAMED_CONFIGS

    if spec in NAMED_CONFIGS:
        return NAMED_CONFIGS[spec]
    if Path(spec).is_file():
        return SamConfig.from_json(Path(spec).read_text())
    return get_config(spec)


def run_train(args: argparse.Namespace) -> int:
    import torch

    from segany.errors import InputError
    from segany.train.datasets import open_dataset, open_datasets
    from segany.train.losses import LossWeights
    from segany.train.trainer import TrainConfig, Trainer

    console = Console(args)
    check_output_folder(args.out, "--out")
    if args.export:
        check_output_file(args.export, "--export")
    if args.threads:
        torch.set_num_threads(args.threads)
    given = {f: getattr(args, o) for o, f in _TRAIN_FIELDS.items() if getattr(args, o) is not None}
    loss = {f: getattr(args, o) for o, f in _LOSS_FIELDS.items() if getattr(args, o) is not None}
    cfg = TrainConfig(
        out_dir=args.out,
        loss=LossWeights(**loss),
        amp=not args.no_amp,
        progress=not args.quiet,
        **given,
    )
    if args.model:
        from segany.checkpoints import load_model

        model = cast("Sam", load_model(args.model))
    else:
        from segany.models import build_sam

        if not args.config and not args.resume:
            raise InputError("give --model (fine-tune), --config (from scratch) or --resume")
        model = build_sam(_model_config(args.config or _resumed_config(args.out)))
    from segany.models import config_of

    msc = config_of(model)
    kw = {"pixel_mean": msc.pixel_mean, "pixel_std": msc.pixel_std}
    train = open_datasets(
        args.data, msc.image_size, masks_per_image=cfg.masks_per_image, flip=True, **kw
    )
    val = open_dataset(args.val, msc.image_size, masks_per_image=64, **kw) if args.val else None
    source: MaskDataset | EmbeddingCache = train
    if args.cache_embeddings:
        from segany.train.embeddings import open_cache

        if cfg.freeze == "none":
            raise InputError("--cache-embeddings needs --freeze encoder or decoder-only")
        console.info(f"embedding cache: {args.cache_embeddings}")
        source = open_cache(model, train, args.cache_embeddings, progress=not args.quiet)
    trainer = Trainer(model, cfg, source, val)
    if args.resume:
        trainer.resume()
        console.info(f"resumed at step {trainer.step}")
    nparams = sum(p.numel() for p in model.parameters())
    console.info(f"training {msc.name} ({nparams / 1e6:.2f} M parameters) on {len(train)} images")
    try:
        history = trainer.fit()
    except OSError as e:
        kept = "the last checkpoint there is whole: free some space and add --resume to go on"
        stop_if_out_of_space(e, args.out, kept)
        raise
    summary = {"out": args.out, "steps": trainer.step, "best_score": trainer.best_score}
    vals = [h for h in history if "point_miou" in h]
    if vals:
        summary["last_validation"] = vals[-1]
    if args.export:
        from segany.train.checkpointing import export

        src = trainer.out / ("best.safetensors" if vals else "checkpoint.safetensors")
        export(src, args.export, half=args.half)
        summary["export"] = args.export
    console.summary(summary)
    console.info(json.dumps(summary))
    return 0


def _resumed_config(out: str) -> str:
    from pathlib import Path

    from segany.errors import InputError
    from segany.train.checkpointing import load_state_dict

    path = Path(out) / "checkpoint.safetensors"
    if not path.exists():
        raise InputError(f"nothing to resume in {out}")
    cfg, _ = load_state_dict(path)
    from segany.atomic import write_text_atomic

    tmp = Path(out) / "model_config.json"
    write_text_atomic(tmp, cfg.to_json())
    return str(tmp)


def run_synth(args: argparse.Namespace) -> int:
    from segany.train.synth import SynthConfig, write_sa1b

    console = Console(args)
    check_output_folder(args.out, "OUT")
    if args.kinds:
        return _run_synth_kinds(args, console)
    cfg = SynthConfig()
    if args.size:  # keep the default aspect range (short side at least 3/4 of the long one)
        cfg = SynthConfig(long_side=args.size, min_short_side=max(1, args.size * 3 // 4))
    cfg = dataclasses.replace(cfg, gray_prob=args.gray)
    out = write_sa1b(args.out, args.count, args.seed, cfg, progress=not args.quiet)
    console.summary({"out": str(out), "count": args.count, "seed": args.seed})
    console.info(f"wrote {args.count} images to {out}")
    return 0


def _run_synth_kinds(args: argparse.Namespace, console: Console) -> int:
    from segany.errors import InputError
    from segany.train.synth_kinds import KINDS, write_kinds

    kinds = tuple(KINDS) if args.kinds == "all" else tuple(args.kinds.split(","))
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or args.gray:
        why = (
            f"unknown kind(s) {', '.join(unknown)}" if unknown else "--gray is for textured scenes"
        )
        raise InputError(f"--kinds: {why}; expected 'all' or some of {', '.join(KINDS)}")
    out = write_kinds(args.out, args.count, args.seed, kinds, args.size or 384)
    console.summary({"out": str(out), "count": args.count, "seed": args.seed, "kinds": kinds})
    console.info(f"wrote {args.count} images to {out}")
    return 0


def run_distill(args: argparse.Namespace) -> int:
    from segany.checkpoints import load_model
    from segany.models import build_sam
    from segany.train.distill import DistillConfig, distill_encoder, image_folder

    console = Console(args)
    check_output_file(args.out, "--out")
    teacher = cast("Sam", load_model(args.teacher, device=args.device or "cpu"))
    student = build_sam(_model_config(args.student))
    given = {k: getattr(args, k) for k in ("steps", "batch_size", "lr") if getattr(args, k)}
    cfg = DistillConfig(device=args.device or "auto", **given)
    history = distill_encoder(teacher, student, image_folder(args.images), cfg)
    from segany.checkpoints import save_model

    save_model(student, args.out)
    summary = {"out": args.out, "first_mse": history[0], "last_mse": history[-1]}
    console.summary(summary)
    console.info(json.dumps(summary))
    return 0
