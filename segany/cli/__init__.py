"""The ``segany`` command: one parser, subcommands registered by the modules listed below.

Each module in ``SUBCOMMANDS`` exposes ``register(subparsers)``, which adds its subcommand(s)
with ``set_defaults(run=function)``; ``function(args) -> int`` does the work. Modules keep
torch and the model imports inside their run functions so ``segany --help`` stays instant.
To add a subcommand, write ``segany/cli/NAME.py`` and add one line to ``SUBCOMMANDS``.

Exit codes are documented in ``segany.cli.common`` (``EXIT_*``) and in ``segany --help``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from segany.cli.common import EXIT_CODES_HELP, SeganyArgumentParser, run_guarded

#: Modules that register subcommands, in the order ``--help`` lists them.
SUBCOMMANDS: tuple[str, ...] = (
    "segany.cli.segment",  # segment: masks from point/box prompts
    "segany.cli.auto",  # auto: segment everything, SA-1B/COCO/PNG/polygons/overlays
    "segany.cli.models",  # download, models, info, convert
    "segany.cli.eval",  # eval: zero-shot protocols (point, clicks, box, auto), compare reports
    "segany.cli.edges",  # edges: zero-shot edge maps (the paper's §7.2), ODS/OIS/AP
    "segany.cli.train",  # train, synth, distill: training (issue 6)
    "segany.cli.export",  # export-onnx: decoder (official web-demo interface) and encoder
    "segany.cli.engine",  # engine run/verify/stats/round: the data engine at scale (issue 13)
    "segany.cli.serve",  # serve: the annotation app (issue 12)
)


def build_parser() -> argparse.ArgumentParser:
    from segany import __version__

    parser = SeganyArgumentParser(
        prog="segany",
        description="Segment Anything in pure PyTorch: prompt, segment everything, convert.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"segany {__version__}")
    subparsers = parser.add_subparsers(
        title="commands", metavar="COMMAND", dest="command", parser_class=SeganyArgumentParser
    )
    subparsers.required = True
    for name in SUBCOMMANDS:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``segany`` with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_guarded(args.run, args)


if __name__ == "__main__":  # python -m segany.cli
    sys.exit(main())
