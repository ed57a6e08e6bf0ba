"""``segany export-onnx``: write the prompt encoder + mask decoder (and optionally the image
encoder) as ONNX files.

The decoder has the official web-demo interface (inputs image_embeddings, point_coords,
point_labels, mask_input, has_mask_input, orig_im_size; outputs masks, iou_predictions,
low_res_masks), so the official notebook and web demo run it unchanged; a SAM-HQ model's also
takes interm_embeddings, as SAM-HQ's export script names it. The encoder takes the
normalised, zero-padded 1×3×S×S image and returns the 1×256×64×64 embedding (SAM-HQ: and
interm_embeddings).
Also here: the onnxruntime predictor that ``segany segment --backend onnx`` uses.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from segany.cli.common import (
    EXIT_CODES_HELP,
    EXIT_OK,
    Console,
    add_model_options,
    add_output_options,
    load_model_from_args,
    plain_doc,
    positive_int,
)
from segany.cli.outputs import check_output_file
from segany.errors import InputError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "export-onnx",
        help="export the decoder (and encoder) to ONNX",
        description=plain_doc(__doc__),
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "-o", "--output", required=True, metavar="FILE.onnx", help="the decoder's .onnx file"
    )
    p.add_argument(
        "--encoder-output", metavar="FILE.onnx", help="also write the image encoder to this file"
    )
    p.add_argument("--opset", type=positive_int, help="ONNX opset (default 17)")
    p.add_argument(
        "--return-single-mask",
        action="store_true",
        help="output only the best mask (as the official web demo), not all 4 mask tokens",
    )
    p.add_argument(
        "--multimask-output",
        action="store_true",
        help="SAM-HQ models with --return-single-mask: SAM's best multimask mask plus the HQ "
        "mask (default: SAM's single mask plus the HQ mask), as SAM-HQ's export script",
    )
    p.add_argument(
        "--hq-token-only",
        action="store_true",
        help="SAM-HQ models with --return-single-mask: the HQ mask alone",
    )
    p.add_argument(
        "--quantize", action="store_true", help="int8 dynamic quantisation of the weights"
    )
    p.add_argument(
        "--use-stability-score",
        action="store_true",
        help="score masks by stability instead of the predicted IoU",
    )
    p.add_argument(
        "--return-extra-metrics",
        action="store_true",
        help="also output stability_scores and areas of the upscaled masks",
    )
    add_model_options(p)
    add_output_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from segany.export.exporters import export_decoder, export_encoder

    console = Console(args)
    for name in (args.output, args.encoder_output):
        if name is not None and Path(name).suffix != ".onnx":
            raise InputError(f"ONNX output names end in .onnx, got {name!r}")
    for option, name in (("--output", args.output), ("--encoder-output", args.encoder_output)):
        if name is not None:
            check_output_file(name, option)
    model = load_model_from_args(args, console).cpu().float()
    common: dict[str, Any] = {"quantize": args.quantize}
    if args.opset is not None:
        common["opset"] = args.opset
    decoder = export_decoder(
        model,
        args.output,
        return_single_mask=args.return_single_mask,
        use_stability_score=args.use_stability_score,
        return_extra_metrics=args.return_extra_metrics,
        multimask_output=args.multimask_output,
        hq_token_only=args.hq_token_only,
        **common,
    )
    console.info(f"decoder -> {decoder}")
    encoder = None
    if args.encoder_output is not None:
        encoder = export_encoder(model, args.encoder_output, **common)
        console.info(f"encoder -> {encoder}")
    console.summary(
        {
            "command": "export-onnx",
            "decoder": str(decoder),
            "encoder": None if encoder is None else str(encoder),
            "quantized": bool(args.quantize),
            "return_single_mask": bool(args.return_single_mask),
        }
    )
    return EXIT_OK


def add_backend_options(parser: argparse.ArgumentParser) -> None:
    """--backend/--onnx-dir, for subcommands that run a predictor."""
    group = parser.add_argument_group("backend")
    group.add_argument(
        "--backend",
        choices=("torch", "onnx"),
        default="torch",
        help="torch (default) or onnx: onnxruntime, models exported from --model on the fly "
        "or read from --onnx-dir",
    )
    group.add_argument(
        "--onnx-dir",
        metavar="DIR",
        help="encoder.onnx and decoder.onnx (multimask) written by segany.export.export_pair; "
        "implies --backend onnx",
    )


def onnx_predictor_from_args(args: argparse.Namespace, console: Console) -> Any:
    """An ``OnnxPredictor`` from --onnx-dir, or exported from --model into a temporary folder
    (onnxruntime reads the files when the sessions are created; the folder is then removed)."""
    from segany.export.runtime import OnnxPredictor

    threads = getattr(args, "threads", None)
    if args.onnx_dir is not None:
        return OnnxPredictor.from_dir(args.onnx_dir, threads=threads)
    from segany.export.exporters import export_pair

    model = load_model_from_args(args, console).cpu().float()
    console.detail("exporting the model to ONNX")
    with tempfile.TemporaryDirectory(prefix="segany-onnx-") as tmp:
        export_pair(model, tmp)
        return OnnxPredictor.from_dir(tmp, threads=threads)
