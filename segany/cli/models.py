"""``segany download | models | info | convert``: get, list, inspect and convert weights.

All the work is ``segany.checkpoints``'s; these subcommands only format what it returns.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from segany.cli.common import (
    EXIT_CODES_HELP,
    EXIT_OK,
    Console,
    add_output_options,
    resolve_path,
)
from segany.cli.outputs import check_output_file, check_output_folder, stop_if_out_of_space
from segany.errors import InputError

# The names of segany.checkpoints.download.CHECKPOINTS, written out so that the command line
# starts without importing torch (segany.checkpoints does); a test keeps the two equal.
_VARIANT_NAMES = (
    "vit_b",
    "vit_l",
    "vit_h",
    "vit_t",
    "efficientvit_sam_l0",
    "efficientvit_sam_l1",
    "efficientvit_sam_l2",
    "efficientvit_sam_xl0",
    "efficientvit_sam_xl1",
    "sam_hq_vit_b",
    "sam_hq_vit_l",
    "sam_hq_vit_h",
    "sam_hq_vit_tiny",
    "sam2.1_hiera_tiny",
    "sam2.1_hiera_small",
    "sam2.1_hiera_base_plus",
    "sam2.1_hiera_large",
    "sam2_hiera_tiny",
    "sam2_hiera_small",
    "sam2_hiera_base_plus",
    "sam2_hiera_large",
)


def register(subparsers: Any) -> None:
    def add(name: str, help_text: str, description: str) -> argparse.ArgumentParser:
        return subparsers.add_parser(
            name,
            help=help_text,
            description=description,
            epilog=EXIT_CODES_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    p = add(
        "download",
        "download official checkpoints into the cache",
        "Download official SAM checkpoints into the cache ($SEGANY_HOME, else the user cache "
        "folder): streamed with a progress bar, resumed after an interruption, checked against "
        "the published sha256 (vit_t: the blob id in MobileSAM's repository), and renamed "
        "into place only when whole.",
    )
    p.add_argument(
        "names",
        nargs="+",
        choices=(*_VARIANT_NAMES, "all"),
        metavar="NAME",
        help="vit_b, vit_l, vit_h, vit_t (MobileSAM) or all",
    )
    add_output_options(p)
    p.set_defaults(run=run_download)

    p = add(
        "models",
        "list known models, what is cached, sizes",
        "List the official variants and the bundled model: size, cached or not, path.",
    )
    add_output_options(p)
    p.set_defaults(run=run_models)

    p = add(
        "info",
        "describe a checkpoint: variant, parameters, format",
        "Describe a weights file or folder in any supported format (read by content).",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT")
    add_output_options(p)
    p.set_defaults(run=run_info)

    p = add(
        "convert",
        "convert weights between official .pth, Hugging Face and segany formats",
        "Convert weights. The source format is read from its content; the destination "
        "format is --format, or follows from OUT: .safetensors -> segany, .pth/.pt -> official, "
        "a folder or a name without suffix -> hf (transformers' save_pretrained layout).",
    )
    p.add_argument("source", metavar="IN")
    p.add_argument("destination", metavar="OUT")
    p.add_argument("--format", choices=("segany", "official", "hf"), dest="fmt")
    p.add_argument("--half", action="store_true", help="store floating-point weights as fp16")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    add_output_options(p)
    p.set_defaults(run=run_convert)


def run_download(args: argparse.Namespace) -> int:
    from segany.checkpoints import ensure_checkpoint

    console = Console(args)
    names = list(_VARIANT_NAMES) if "all" in args.names else list(dict.fromkeys(args.names))
    paths = {}
    for name in names:
        console.info(f"{name}: checking the cache")
        paths[name] = ensure_checkpoint(name, progress=not console.quiet)
        console.info(f"{name}: {paths[name]}")
    console.summary({"command": "download", "models": {k: str(v) for k, v in paths.items()}})
    return EXIT_OK


def run_models(args: argparse.Namespace) -> int:
    from segany.checkpoints import cache_dir, cached_models

    console = Console(args)
    rows = cached_models()
    if console.json:
        console.summary(
            {
                "command": "models",
                "cache": str(cache_dir()),
                "models": [
                    {
                        "name": r.name,
                        "description": r.description,
                        "bytes": r.num_bytes,
                        "cached": r.cached,
                        "partial_bytes": r.partial_bytes,
                        "path": str(r.path),
                    }
                    for r in rows
                ],
            }
        )
        return EXIT_OK
    table = [("NAME", "SIZE", "CACHED", "DESCRIPTION", "PATH")]
    for r in rows:
        cached = (
            "yes"
            if r.cached
            else (f"partial {_size(r.partial_bytes)}" if r.partial_bytes else "no")
        )
        table.append((r.name, _size(r.num_bytes), cached, r.description, str(r.path)))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    for row in table:
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=False)] + [row[-1]]
        sys.stdout.write("  ".join(cells).rstrip() + "\n")
    console.info(f"cache folder: {cache_dir()} (set SEGANY_HOME to move it)")
    return EXIT_OK


def run_info(args: argparse.Namespace) -> int:
    from segany.checkpoints import describe, load_state_dict, read_weights

    console = Console(args)
    path = Path(args.checkpoint)
    if path.is_symlink() and not path.exists():
        raise InputError(
            f"{path} is a broken symbolic link (its target is missing, or the links loop)"
        )
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    kind = read_weights(path).kind  # the format, told from the content
    config, state = load_state_dict(path)
    learned = _parameter_names(config)  # buffers (pixel stats, Fourier matrix) are not counted
    params = {
        part: sum(t.numel() for k, t in state.items() if k in learned and k.startswith(part + "."))
        for part in ("image_encoder", "prompt_encoder", "mask_decoder")
    }
    total = sum(t.numel() for k, t in state.items() if k in learned)
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in state.values()})
    size = (
        sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        if path.is_dir()
        else path.stat().st_size
    )
    info = {
        "path": str(path),
        "format": kind,
        "variant": config.name,
        "description": describe(config),
        "parameters": total,
        "parameters_by_part": params,
        "dtypes": dtypes,
        "bytes": size,
        "config": _config_dict(config),
    }
    if console.json:
        console.summary({"command": "info", **info})
        return EXIT_OK
    lines = [
        f"path        {path}",
        f"format      {kind}",
        f"variant     {describe(config)}",
        f"parameters  {total / 1e6:.2f} M (image encoder {params['image_encoder'] / 1e6:.2f} M, "
        f"prompt encoder {params['prompt_encoder'] / 1e6:.3f} M, "
        f"mask decoder {params['mask_decoder'] / 1e6:.2f} M)",
        f"dtypes      {', '.join(dtypes)}",
        f"size        {_size(size)}",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK


def run_convert(args: argparse.Namespace) -> int:
    from segany.checkpoints import convert, destination_format

    console = Console(args)
    src, dst = Path(args.source), Path(args.destination)
    if not src.exists():
        raise InputError(f"{src}: no such file or folder")
    try:
        fmt = args.fmt or destination_format(dst)
    except InputError:  # the library's words name its fmt= argument; here it is --format
        raise InputError(
            f"cannot tell the output format from {dst.name!r}: name it .safetensors, .pth or "
            "a folder, or give --format segany|official|hf"
        ) from None
    if dst.exists() and not args.overwrite:
        raise InputError(f"{dst} exists; pass --overwrite to replace it")
    if resolve_path(dst) == resolve_path(src):
        raise InputError("IN and OUT are the same path")
    if fmt == "hf":
        check_output_folder(dst, "OUT")
    else:
        check_output_file(dst, "OUT")
    try:
        config, written = convert(src, dst, fmt, half=args.half)
    except OSError as e:
        stop_if_out_of_space(e, dst, "nothing was written there: free some space and run again")
        raise
    console.info(f"wrote {config.name} weights as {fmt} to {written}")
    console.summary(
        {
            "command": "convert",
            "source": str(src),
            "destination": str(written),
            "format": fmt,
            "variant": config.name,
            "half": bool(args.half),
        }
    )
    return EXIT_OK


def _parameter_names(config: Any) -> set[str]:
    import torch

    from segany.models import build_sam

    with torch.device("meta"):  # shapes only: no memory, instant even for vit_h
        model = build_sam(config)
    return {name for name, _ in model.named_parameters()}


def _config_dict(config: Any) -> dict[str, Any]:
    import json

    return json.loads(config.to_json())


def _size(num_bytes: int | None) -> str:
    if num_bytes is None:
        return "-"
    value = float(num_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"
