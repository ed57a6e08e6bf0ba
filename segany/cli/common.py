"""Shared pieces of the ``segany`` subcommands: options, messages, errors and exit codes.

Conventions every subcommand follows:
- results go to files (and, with ``--json``, one JSON summary object on stdout); human messages,
  warnings and progress bars go to stderr, so stdout stays machine-readable;
- an error is one line on stderr (``segany: error: ...``) and a distinct exit code, never a
  traceback (``--verbose`` adds the traceback for bug reports);
- options that mirror a library argument default to "not given" (``None``) and are passed on
  only when given, so the library's defaults stay the single source of truth.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import re
import sys
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any, NoReturn, TypeVar

from segany.errors import (
    CheckpointError,
    DownloadError,
    InputError,
    MissingExtraError,
    SeganyError,
)

T = TypeVar("T")

EXIT_OK = 0
EXIT_PARTIAL = 1  # a multi-image run finished but some inputs failed (reported, skipped)
EXIT_USAGE = 2  # bad command line: unknown option, malformed --point/--box, missing argument
EXIT_INPUT = 3  # bad input data: unreadable/corrupt image, point outside the image, bad value
EXIT_CHECKPOINT = 4  # the model/checkpoint cannot be loaded (not SAM, wrong keys, unsafe)
EXIT_DOWNLOAD = 5  # a checkpoint download failed or did not verify
EXIT_IO = 6  # reading or writing files failed (permissions, disk full, missing folder)
EXIT_MISSING_EXTRA = 7  # an optional dependency is not installed
EXIT_INTERNAL = 70  # a bug: please report it with the --verbose output
EXIT_INTERRUPTED = 130  # Ctrl-C

EXIT_CODES_HELP = """\
exit codes:
  0    success
  1    some inputs of a multi-image run failed (each reported on stderr; the rest were written)
  2    bad command line (unknown option, malformed --point/--box, missing argument)
  3    bad input (unreadable or corrupt image, point outside the image, invalid option value)
  4    the model or checkpoint cannot be loaded (not a SAM checkpoint, wrong or missing keys)
  5    a checkpoint download failed or its checksum did not match
  6    a file could not be read or written (permissions, disk full)
  7    an optional dependency is missing (the message names the extra to install)
  70   internal error (a bug; rerun with --verbose and report the traceback)
  130  interrupted
"""


def exit_code_for(error: BaseException) -> int:
    """The exit code for an exception that reached the top of a subcommand."""
    # Order matters: DownloadError is an OSError, CheckpointError and InputError ValueErrors.
    for kind, code in (
        (UsageError, EXIT_USAGE),
        (DownloadError, EXIT_DOWNLOAD),
        (CheckpointError, EXIT_CHECKPOINT),
        (MissingExtraError, EXIT_MISSING_EXTRA),
        (SeganyError, EXIT_INPUT),
        (ValueError, EXIT_INPUT),
        (OSError, EXIT_IO),
    ):
        if isinstance(error, kind):
            return code
    return EXIT_INTERNAL


def one_line(error: BaseException) -> str:
    """An exception as one line (multi-line messages joined) for stderr."""
    if isinstance(error, OSError) and error.errno == errno.ENAMETOOLONG and error.filename:
        name = os.fsdecode(error.filename)
        shown = name if len(name) <= 80 else name[:60] + "…" + name[-15:]
        return (
            f"the path {shown} ({len(name)} characters) is longer than this system allows for "
            "a file or folder name; give a shorter path"
        )
    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, OSError) and error.filename and str(error.filename) not in text:
        text = f"{error.filename}: {text}"
    return text


def failure_line(path: object, error: BaseException) -> str:
    """``PATH: message`` for an input that failed, without naming the path twice."""
    text, name = one_line(error), str(path)
    if name in text:
        return text
    return f"{name if len(name) <= 200 else name[:120] + '…' + name[-40:]}: {text}"


class UsageError(InputError):
    """A command line that cannot work as given (missing prompt, conflicting options): exit 2."""


# A number list that starts with a minus (``--box -10,-5,90,80``, a box partly left of or above
# the image): argparse would take it for an option; read it as the option's value instead.
_NEGATIVE_VALUE = re.compile(r"^-\d+$|^-\d*\.\d+$|^-\d*\.?\d*(,-?\d*\.?\d*)+$")


class SeganyArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line usage error instead of the usage block, and comma-separated
    numbers that start with a minus read as values (argparse knows single negative numbers
    only)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_VALUE

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments"):
            # argparse reads a value that starts with '-' after an option as an option itself
            message += (
                ": this command does not take them (a value starting with '-' must be "
                "joined to its option with '=', as in --opt=-1)"
            )
        sys.stderr.write(f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
        sys.exit(EXIT_USAGE)


def run_guarded(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Call a subcommand; turn any exception into one stderr line and an exit code, and any
    warning into one ``segany: warning:`` line."""
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            # As Python's default filters do outside __main__ (and test runners do not):
            # deprecations inside libraries are for their developers, not for users.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            return int(run(args) or 0)
    except KeyboardInterrupt:
        sys.stderr.write("segany: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `segany ... --json | head`: the reader left; not our error
        return EXIT_OK
    except Exception as e:  # noqa: BLE001 - the one place every error becomes an exit code
        code = exit_code_for(e)
        verbose = bool(getattr(args, "verbose", False))
        if verbose:
            traceback.print_exc(file=sys.stderr)
        if code == EXIT_INTERNAL:
            hint = "" if verbose else " (rerun with --verbose to report)"
            sys.stderr.write(f"segany: internal error: {type(e).__name__}: {one_line(e)}{hint}\n")
        else:
            sys.stderr.write(f"segany: error: {one_line(e)}\n")
        return code


def _one_line_warning(message: Warning | str, *_: Any, **__: Any) -> None:
    # Python's default shows the warning's source file and line: two lines a user cannot use.
    _say(f"segany: warning: {' '.join(str(message).split())}")


# --------------------------------------------------------------------------------------------
# options


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """--quiet/--verbose/--json, on every subcommand."""
    group = parser.add_argument_group("messages")
    talk = group.add_mutually_exclusive_group()
    talk.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    talk.add_argument("-v", "--verbose", action="store_true", help="more detail, tracebacks")
    group.add_argument(
        "--json", action="store_true", help="print a machine-readable summary on stdout"
    )


# segany.inference.precision.PRECISIONS, spelled out so that --help does not import torch
# (tested equal)
PRECISION_CHOICES = ("fp32", "bf16", "fp16", "int8", "auto")


def add_precision_option(parser: Any, default: str | None = None) -> None:
    """--precision on a parser or argument group."""
    parser.add_argument(
        "--precision",
        choices=PRECISION_CHOICES,
        default=default,
        help="image encoder precision: fp32 (default, exact), bf16/fp16 (fast with hardware "
        "support), int8 (CPU), auto (the fastest this machine runs natively)",
    )


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--model/--device/--threads, on subcommands that run the model."""
    group = parser.add_argument_group("model")
    group.add_argument(
        "-m",
        "--model",
        metavar="NAME_OR_PATH",
        help="variant name (vit_b, vit_l, vit_h; downloaded once) or a checkpoint file or "
        "folder (official .pth, Hugging Face, segany .safetensors); default: the library's",
    )
    group.add_argument("--device", help="torch device, e.g. cpu, cuda, cuda:1, mps")
    group.add_argument(
        "--threads", type=positive_int, metavar="N", help="CPU threads for torch and OpenCV"
    )
    add_precision_option(group)
    group.add_argument(
        "--compile",
        action="store_true",
        help="run the image encoder through torch.compile (compiled on the first image, "
        "minutes on a small CPU; measured no faster on CPUs, may help on a GPU)",
    )
    add_cache_options(group)


def add_cache_options(parser: Any) -> None:
    """--cache DIR | --no-cache (the shared on-disk embedding cache)."""
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument(
        "--cache",
        metavar="DIR",
        help="keep image embeddings in DIR so a later run skips the encoder (default: "
        "$SEGANY_CACHE if set)",
    )
    cache.add_argument(
        "--no-cache", action="store_true", help="no embedding cache, even if $SEGANY_CACHE is set"
    )


def cache_from_args(args: argparse.Namespace) -> str | bool | None:
    """What ``Predictor(cache=...)`` takes for --cache/--no-cache (None: $SEGANY_CACHE)."""
    if getattr(args, "no_cache", False):
        return False
    return getattr(args, "cache", None)


def _refine_radius(text: str) -> int | str:
    return "auto" if text == "auto" else positive_int(text)


def add_refine_option(parser: Any) -> None:
    """--refine [RADIUS|auto]: masks snapped to the image's edges (segany.refine)."""
    parser.add_argument(
        "--refine",
        type=_refine_radius,
        nargs="?",
        const="auto",
        metavar="RADIUS",
        help="refine each mask with the image as guide (a colour guided filter of RADIUS px; "
        "default auto: 1/16 of the image's longer side), so that its edges follow the image's",
    )


def refined_from_args(predictor: Any, args: argparse.Namespace) -> Any:
    """``predictor`` wrapped in a RefinedPredictor when --refine was given."""
    if getattr(args, "refine", None) is None:
        return predictor
    from segany.refine import RefinedPredictor

    radius = None if args.refine == "auto" else args.refine
    return RefinedPredictor(predictor, radius=radius)


def plain_doc(doc: str | None) -> str:
    """A module docstring as --help text (reST double backticks dropped)."""
    return (doc or "").replace("``", "")


def positive_int(text: str) -> int:
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 1, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 0, got {text!r}")
    return value


CLICK_ZOOM_MARGIN = 1.0  # segany.zoom.DEFAULT_CLICK_MARGIN (not imported: it would import torch)


def finite_float(text: str) -> float:
    return _number(text, float)


def fraction(text: str) -> float:
    """A number in [0, 1]; also accepts ``A/B`` (``512/1500``, the official overlap)."""
    if "/" in text:
        num, _, den = text.partition("/")
        value = _number(num, float) / _number(den, float) if _number(den, float) else math.inf
    else:
        value = _number(text, float)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text!r}")
    return value


def _number(text: str, kind: type) -> Any:
    try:
        value = kind(text.strip())
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


# --------------------------------------------------------------------------------------------
# messages


class Console:
    """Human messages and progress bars on stderr, the JSON summary on stdout."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.quiet = bool(getattr(args, "quiet", False))
        self.verbose = bool(getattr(args, "verbose", False))
        self.json = bool(getattr(args, "json", False))

    def info(self, message: str) -> None:
        if not self.quiet:
            _say(message)

    def detail(self, message: str) -> None:
        if self.verbose:
            _say(message)

    def warn(self, message: str) -> None:
        _say(f"segany: warning: {message}")

    def failure(self, message: str) -> None:
        """An input that failed and was skipped (always shown, even with --quiet)."""
        _say(f"segany: error: {message}")

    def progress(self, items: Iterable[T], *, total: int | None = None, desc: str) -> Iterator[T]:
        """tqdm over ``items`` on stderr; hidden with --quiet or when stderr is not a terminal."""
        from tqdm import tqdm

        disable = True if self.quiet else None  # None: tqdm hides itself on non-terminals
        yield from tqdm(items, total=total, desc=desc, unit="img", disable=disable, leave=False)

    def summary(self, data: dict[str, Any]) -> None:
        """Print the --json summary on stdout (nothing without --json)."""
        if self.json:
            json.dump(data, sys.stdout, indent=2, default=str)
            sys.stdout.write("\n")
            sys.stdout.flush()


def _say(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)  # above a running progress bar, not through it
    sys.stderr.flush()


# --------------------------------------------------------------------------------------------
# the model


def load_model_from_args(args: argparse.Namespace, console: Console) -> Any:
    """Apply --threads and load --model on --device (library defaults when not given)."""
    set_threads(getattr(args, "threads", None))
    from segany.checkpoints import load_model

    kwargs: dict[str, Any] = {"progress": not console.quiet}
    if args.device is not None:  # not given: the library's default device
        kwargs["device"] = check_device(args.device)
    console.detail(f"loading model {args.model or '(default)'}")
    try:
        return load_model(args.model, **kwargs)
    except CheckpointError as e:
        if args.model is None or str(args.model) in str(e):
            raise
        # Name the file: the library's message may only describe the tensors it found.
        raise CheckpointError(f"--model {args.model}: {one_line(e)}") from e


def predictor_from_args(args: argparse.Namespace, console: Console) -> Any:
    """A Predictor over the --model, with --precision and --cache/--no-cache applied."""
    from segany.inference.predictor import Predictor

    model = load_model_from_args(args, console)
    kwargs: dict[str, Any] = {}
    if getattr(args, "precision", None) is not None:
        kwargs["precision"] = args.precision
    if getattr(args, "compile", False):
        kwargs["compile"] = True
    if cache_from_args(args) is not None:
        kwargs["cache"] = cache_from_args(args)
    predictor = Predictor(model, **kwargs)
    compiled = ", torch.compile" if predictor.compile else ""
    console.detail(
        f"encoder precision {predictor.precision}{compiled}, cache {predictor.disk_cache}"
    )
    return predictor


def check_device(name: str) -> str:
    """``name`` if torch can use that device here, else an InputError saying why not."""
    from segany.devices import check_device as check

    try:
        check(name)
    except InputError as e:
        raise InputError(f"--{e}") from None
    return name


def set_threads(threads: int | None) -> None:
    if threads is None:
        return
    import cv2
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)


# --------------------------------------------------------------------------------------------
# inputs and output names


def resolve_path(path: Path) -> Path:
    """``path`` with links resolved; a looping link stays as given (reading it reports it)."""
    try:
        return path.resolve()
    except (RuntimeError, OSError):  # "Symlink loop" on Python < 3.13
        return Path(os.path.abspath(path))


def collect_images(
    inputs: Iterable[str], *, recursive: bool = False, exclude: str | Path | None = None
) -> list[tuple[Path, str]]:
    """(image path, output stem) for every input file and image found in input folders.

    The stem is the path relative to the named folder (or the file name) without its suffix,
    ``/``-separated; names that would collide keep their suffix (``a.jpg`` and ``a.png`` give
    ``a.jpg`` and ``a.png``).

    Files under ``exclude`` (the output folder) are skipped when it lies inside a named folder,
    so a re-run never reads its own outputs as inputs; an output folder that *is* a named
    folder is refused for the same reason.
    """
    from segany.formats import find_images

    skip = resolve_path(Path(exclude)) if exclude is not None else None
    found: dict[Path, tuple[Path, PurePosixPath]] = {}  # keyed by resolved path: no repeats
    for text in inputs:
        root = Path(text)
        if root.is_dir():
            if skip is not None and skip == resolve_path(root):
                raise InputError(
                    f"the output folder is the input folder {root}; choose another --output "
                    "(outputs there would be read as images on the next run)"
                )
            pairs = [(p, p.relative_to(root)) for p in find_images([root], recursive=recursive)]
            if skip is not None and resolve_path(root) in skip.parents:
                pairs = [(p, rel) for p, rel in pairs if skip not in resolve_path(p).parents]
        else:
            pairs = [(p, Path(p.name)) for p in find_images([root])]
        for path, rel in pairs:
            found.setdefault(resolve_path(path), (path, PurePosixPath(rel.as_posix())))
    entries = list(found.values())
    bare = [rel.with_suffix("").as_posix() for _, rel in entries]
    stems = [
        rel.as_posix() if bare.count(stem) > 1 else stem
        for stem, (_, rel) in zip(bare, entries, strict=True)
    ]
    dupes = sorted({s for s in stems if stems.count(s) > 1})
    if dupes:
        raise InputError(
            f"several inputs would write the same outputs ({', '.join(dupes[:3])}); "
            "give their folder instead of the files, or run them separately"
        )
    return [(path, stem) for (path, _), stem in zip(entries, stems, strict=True)]
