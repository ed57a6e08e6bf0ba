# ruff: noqa: E501 - one table row per line reads best
"""The hardening tally (issues 11 and 37): hostile and careless inputs through the Python API
and the ``segany`` command, each answer classified by one mechanical rule.

The filer's own 553-input harness is not in the repository, so this tally is rebuilt from what
is: every row of the fuzz tables (``test_fuzz_api``, ``test_fuzz_cli``), every input issues 11
and 37 name that those tables lack (``LISTED``), and generated rows: each public option,
argument and command-line flag given a fixed set of bad values (``generated_*``).

Each input ends as one of:

- ``crash``: a ``BaseException`` that is not an ``Exception`` (``MemoryError`` included), or
  no answer within ``TIMEOUT`` seconds;
- ``accepted``: no error (for a row that expects one: listed for review, not counted unclear);
- ``clear``: refused, and the answer passes all four tests below;
- ``unclear``: refused, and the answer fails at least one of them.

The rule, applied to the message (API: ``str(exception)``; CLI: stderr, with the exit code):

1. typed: API, the exception is a ``segany.errors.SeganyError`` or was raised by a line of
   ``segany/`` (not a raw numpy/torch/PIL/stdlib error passing through); CLI, the exit code is
   one the README documents for an error (1-7) and stderr is one line without a traceback;
2. names the input: the message contains one of the row's subject words (the parameter or
   flag name, the value given, or the file's name; for table rows, a word of 3+ letters of the
   row's id), case-insensitively;
3. says what is wrong or expected: the message matches ``EXPECT`` (expected, must, at most,
   one of, not found, is a folder, ...);
4. speaks the user's language: the message matches none of ``INTERNAL`` (``object has no
   attribute``, ``invalid literal``, ``[Errno 36]``, ``unpack``, ...).

``python tests/hostile_tally.py`` prints the tally and lists every unclear, accepted and crash
row; ``tests/test_fuzz_tally.py`` asserts the issue's targets on it.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import signal
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

TIMEOUT = 60  # seconds an input may take before it counts as a hang

EXPECT = re.compile(
    r"expect|must|should|\bneeds?\b|at (?:most|least)|one of|\bonly\b|\bgive\b|\bpass\b|\buse\b|"
    r"between|\bin \[|whole number|cannot|can't|no such|not found|does not exist|too (?:large|long|many|big|small)|"
    r"longer than|exceed|outside|is empty|empty file|an? (?:folder|file)\b|\bnot (?:an?|one)\b|broken|refus|not allowed|"
    r"unsupported|damaged|cut short|truncated|holds no|limit|invalid choice|invalid \w+ value|"
    r"no (?:images?|prompt|model)|either|not both|together|required|missing|unknown|allowed|"
    r"\bis not\b|≤|>=|<=",
    re.IGNORECASE,
)
INTERNAL = re.compile(
    r"object has no attribute|not supported between|invalid literal for|unsupported operand|"
    r"\[Errno \d+\] (?:No such|File exists|File name too long|Not a directory|Is a directory|"
    r"Permission denied|No space|Read-only)|modulo by zero|division by zero|values to unpack|codec can't|"
    r"object is not (?:subscriptable|iterable|callable)|'NoneType'|index \d+ is out of bounds|"
    r"list index out of range|Cannot copy out of meta|must be real number, not|"
    r"positional argument|unexpected keyword|Traceback|internal error|"
    r"can't convert np\.ndarray|setting an array element with a sequence|"
    r"could not convert string to float|'(?:str|int|float|list|dict)' object",
)
WORD = re.compile(r"[A-Za-z0-9.]{3,}")
STOP = {"the", "and", "not", "for", "with", "into", "under", "one", "two", "all", "bad", "too"}
DOCUMENTED_ERROR_CODES = {1, 2, 3, 4, 5, 6, 7}


@dataclass
class Row:
    """One input: where it comes from, a call (API: ``call(ctx)``; CLI: argv templates), the
    words that name it, and whether it must be refused (``None``: either way is fine)."""

    id: str
    origin: str  # "api table", "cli table", "listed", "generated"
    kind: str  # "api" or "cli"
    call: Any
    subjects: tuple[str, ...]
    refuse: bool | None = True


@dataclass
class Outcome:
    row: Row
    verdict: str  # clear, unclear, accepted, crash, ok
    message: str = ""
    failed_tests: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# the rule


def classify_message(message: str, subjects: tuple[str, ...], typed: bool) -> list[str]:
    """The tests (1-4 above) a refusal's message fails; [] when clear."""
    failed = []
    if not typed:
        failed.append("typed")
    low = message.lower()
    if not any(s and s.lower() in low for s in subjects):
        failed.append("names the input")
    if not EXPECT.search(message):
        failed.append("says what is expected")
    if INTERNAL.search(message):
        failed.append("user's language")
    return failed


def raised_by_segany(error: BaseException) -> bool:
    from segany.errors import SeganyError

    if isinstance(error, SeganyError):
        return True
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return False
    last = frames[-1].filename.replace(os.sep, "/")
    return "/segany/" in last and "site-packages" not in last


def words(text: str) -> set[str]:
    """Words of 3+ letters, digits or dots (``load_model`` gives load and model)."""
    return {w for w in WORD.findall(text) if w.lower() not in STOP}


def call_words(call: Any, ctx: dict[str, Any]) -> set[str]:
    """What a table row's call hands over: its keyword names, strings and numbers of 3+
    characters, and the file names of the context's files it reads (``c["fifo"]``)."""
    code = getattr(call, "__code__", None)
    found: set[str] = set()
    if code is None:
        return found
    for const in code.co_consts:
        for c in const if isinstance(const, tuple) else (const,):
            if isinstance(c, str):
                found |= {c} | words(c)
                value = ctx.get(c)
                if isinstance(value, Path):
                    found.add(value.name)
            elif isinstance(c, (int, float)) and not isinstance(c, bool) and len(str(c)) >= 3:
                found.add(str(c))
    return found


# --------------------------------------------------------------------------------------------
# running


@contextlib.contextmanager
def _time_limit(seconds: int) -> Iterator[None]:
    def on_alarm(signum: int, frame: Any) -> None:
        raise TimeoutError(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


class _Hang(Exception):
    pass


def run_api(row: Row, ctx: dict[str, Any]) -> Outcome:
    import warnings

    if row.origin == "api table":  # what the call hands over names it too
        row.subjects = (*row.subjects, *sorted(call_words(row.call, ctx)))

    try:
        with _time_limit(TIMEOUT), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            row.call(ctx)
    except TimeoutError as e:
        if "no answer within" in str(e):
            return Outcome(row, "crash", str(e))
        return _refused(row, e)
    except Exception as e:  # noqa: BLE001 - classifying every error is the point
        return _refused(row, e)
    except BaseException as e:  # noqa: BLE001 - MemoryError, RecursionError, SystemExit ...
        if isinstance(e, KeyboardInterrupt):
            raise
        return Outcome(row, "crash", f"{type(e).__name__}: {e}")
    return Outcome(row, "accepted" if row.refuse else "ok")


def _refused(row: Row, e: BaseException) -> Outcome:
    message = str(e)
    if row.refuse is False:
        return Outcome(row, "unclear", message, ["valid input refused"])
    failed = classify_message(message, row.subjects, raised_by_segany(e))
    return Outcome(row, "unclear" if failed else "clear", f"{type(e).__name__}: {message}", failed)


def run_cli(row: Row, fill: dict[str, str], out: Path) -> Outcome:
    from segany.cli import main

    argv = [a.format(**fill, out=str(out)) for a in row.call]
    subjects = [w.format(**fill, out=str(out)) if "{" in w else w for w in row.subjects]
    row.subjects = (*subjects, *(Path(w).name for w in subjects if "/" in w))
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        with (
            _time_limit(TIMEOUT),
            contextlib.redirect_stdout(stdout),
            contextlib.redirect_stderr(stderr),
        ):
            try:
                code = main(argv)
            except SystemExit as e:
                code = int(e.code or 0) if not isinstance(e.code, str) else 2
    except TimeoutError as e:
        return Outcome(row, "crash", str(e))
    except BaseException as e:  # noqa: BLE001
        if isinstance(e, KeyboardInterrupt):
            raise
        return Outcome(row, "crash", f"{type(e).__name__}: {e}")
    err = stderr.getvalue().strip()
    if code == 0:
        return Outcome(row, "accepted" if row.refuse else "ok", err)
    if row.refuse is False:
        return Outcome(row, "unclear", f"exit {code}: {err}", ["valid input refused"])
    lines = [ln for ln in err.splitlines() if ln.strip()]
    typed = code in DOCUMENTED_ERROR_CODES and len(lines) == 1 and "Traceback" not in err
    failed = classify_message(err, row.subjects, typed)
    return Outcome(row, "unclear" if failed else "clear", f"exit {code}: {err}", failed)


# --------------------------------------------------------------------------------------------
# the inputs


BAD_SCALARS: list[tuple[str, Any]] = [
    ("-1", -1),
    ("'abc'", "abc"),
    ("nan", math.nan),
    ("inf", math.inf),
    ("10**30", 10**30),
    ("1+2j", 1 + 2j),
    ("[1]", [1]),
    ("object()", object()),
]
GENERATOR_OPTIONS = [
    "points_per_side", "points_per_batch", "pred_iou_thresh", "stability_score_thresh",
    "stability_score_offset", "box_nms_thresh", "crop_n_layers", "crop_nms_thresh",
    "crop_overlap_ratio", "crop_n_points_downscale_factor", "min_mask_region_area",
    "output_mode", "max_area_fraction", "precision",
]  # fmt: skip
BAD_ARRAYS: list[tuple[str, Any]] = [
    ("'abc'", "abc"),
    ("None inside", [[None, 1]]),
    ("3-D", np.zeros((1, 1, 1, 2))),
    ("nan", [[math.nan, 1.0]]),
    ("inf", [[math.inf, 1.0]]),
    ("1e39", [[1e39, 1.0]]),
    ("complex", np.array([[1j, 1]])),
    ("ragged", [[1, 2], [3]]),
    ("empty", np.zeros((0, 2))),
    ("object", np.array([object(), object()], dtype=object)),
]
BAD_IMAGES: list[tuple[str, Any]] = [
    ("a string", "no/such/image.png"),
    ("None", None),
    ("1-D", np.zeros(10, np.uint8)),
    ("4 channels of 5", np.zeros((10, 10, 5), np.uint8)),
    ("0×0", np.zeros((0, 0, 3), np.uint8)),
    ("nan float", np.full((8, 8, 3), np.nan, np.float32)),
    ("complex", np.zeros((8, 8, 3), np.complex64)),
    ("object", np.empty((8, 8, 3), dtype=object)),
    ("5-D", np.zeros((1, 1, 8, 8, 3), np.uint8)),
    ("a list of lists", [[1, 2], [3]]),
    ("torch int64 -5", torch.full((8, 8, 3), -5, dtype=torch.int64)),
]
BAD_RLE: list[tuple[str, Any]] = [
    ("not a dict", "counts"),
    ("no size", {"counts": "0"}),
    ("no counts", {"size": [2, 2]}),
    ("size a string", {"size": "2x2", "counts": "0"}),
    ("size of 3", {"size": [2, 2, 2], "counts": "0"}),
    ("negative size", {"size": [-2, 2], "counts": []}),
    ("float size", {"size": [2.5, 2], "counts": [5]}),
    ("counts an int", {"size": [2, 2], "counts": 4}),
    ("counts non-ASCII", {"size": [2, 2], "counts": "é"}),
    ("counts negative", {"size": [2, 2], "counts": [-1, 5]}),
    ("counts too long", {"size": [2, 2], "counts": [3, 3]}),
    ("counts too short", {"size": [2, 2], "counts": [1]}),
    ("counts floats", {"size": [2, 2], "counts": [1.5, 2.5]}),
    ("counts junk string", {"size": [2, 2], "counts": "\x00\x01"}),
    ("counts None", {"size": [2, 2], "counts": None}),
]


def _gen(ctx: dict[str, Any], **kw: Any) -> Any:
    from segany.automatic import MaskGenerator

    return MaskGenerator(ctx["model"], **kw)


def _predict(ctx: dict[str, Any], **kw: Any) -> Any:
    return ctx["p"].predict(**kw)


def _set_image(ctx: dict[str, Any], image: Any) -> None:
    from segany.inference.predictor import Predictor

    Predictor(ctx["model"]).set_image(image)


def generated_api() -> list[Row]:
    from segany.checkpoints import load_model
    from segany.inference.predictor import Predictor
    from segany.masks import decode_rle

    rows = []
    for opt in GENERATOR_OPTIONS:
        for label, value in BAD_SCALARS:
            rows.append(
                Row(
                    f"MaskGenerator({opt}={label})",
                    "generated",
                    "api",
                    lambda c, o=opt, v=value: _gen(c, **{o: v}),
                    (opt, label.strip("'")),
                )
            )
    good = {"point_coords": [[3, 4]], "point_labels": [1]}
    for arg in ("point_coords", "point_labels", "box", "mask_input"):
        for label, value in BAD_ARRAYS:
            kw = dict(good) if arg in ("point_coords", "point_labels") else {}
            kw[arg] = value
            rows.append(
                Row(
                    f"predict({arg}={label})",
                    "generated",
                    "api",
                    lambda c, k=kw: _predict(c, **k),
                    (arg, label),
                )
            )
    for arg in ("multimask_output", "return_logits", "hq_token_only"):
        for label, value in (("'yes'", "yes"), ("2", 2), ("None", None), ("[True]", [True])):
            rows.append(
                Row(
                    f"predict({arg}={label})",
                    "generated",
                    "api",
                    lambda c, a=arg, v=value: _predict(c, **good, **{a: v}),
                    (arg,),
                )
            )
    for label, value in BAD_IMAGES:
        rows.append(
            Row(
                f"set_image({label})",
                "generated",
                "api",
                lambda c, v=value: _set_image(c, v),
                ("image", label),
            )
        )
    # A bool image is a supported input (False -> 0, True -> 255): either answer is fine.
    bool_image = np.zeros((8, 8, 3), bool)
    rows.append(
        Row("set_image(bool)", "generated", "api", lambda c: _set_image(c, bool_image), (), None)
    )
    for label, value in (("'BGRA'", "BGRA"), ("None", None), ("3", 3)):
        rows.append(
            Row(
                f"set_image(image_format={label})",
                "generated",
                "api",
                lambda c, v=value: c["p"].set_image(np.zeros((8, 8, 3), np.uint8), v),
                ("image_format",),
            )
        )
    for label, value in BAD_SCALARS:
        rows.append(
            Row(
                f"Predictor(cache_size={label})",
                "generated",
                "api",
                lambda c, v=value: Predictor(c["model"], cache_size=v),
                ("cache_size",),
            )
        )
    for label, value in (("'fp64'", "fp64"), ("None", None), ("3", 3)):
        rows.append(
            Row(
                f"Predictor(precision={label})",
                "generated",
                "api",
                lambda c, v=value: Predictor(c["model"], precision=v),
                ("precision",),
            )
        )
    for label, value in (
        ("'nope'", "vit_nope"),
        ("missing path", "no/such/weights.pth"),
        ("123", 123),
        ("bytes", b"vit_b"),
        ("a list", ["vit_b"]),
        ("'.'", "."),
        ("' '", " "),
        ("'\\0'", "a\0b"),
    ):
        rows.append(
            Row(
                f"load_model({label})",
                "generated",
                "api",
                lambda c, v=value: load_model(v),
                ("model", "weights", "checkpoint", str(value), repr(value)[1:-1]),
            )
        )
    for label, value in (
        ("'gpu'", "gpu"),
        ("5", 5),
        ("'cuda:x'", "cuda:x"),
        ("None", None),
        ("'cpu:-1'", "cpu:-1"),
    ):
        rows.append(
            Row(
                f"load_model(device={label})",
                "generated",
                "api",
                lambda c, v=value: load_model(device=v),
                ("device", label.strip("'")),
            )
        )
    for label, value in (("torch.int8", torch.int8), ("'fp16'", "fp16"), ("5", 5)):
        rows.append(
            Row(
                f"load_model(dtype={label})",
                "generated",
                "api",
                lambda c, v=value: load_model(dtype=v),
                ("dtype",),
            )
        )
    for label, value in BAD_RLE:
        rows.append(
            Row(
                f"decode_rle({label})",
                "generated",
                "api",
                lambda c, v=value: decode_rle(v),
                ("RLE", "size", "counts"),
            )
        )
    emb_size = (1, 256, 16, 16)  # the small model's embedding
    for label, value in (
        ("(0, 10)", (0, 10)),
        ("(-5, 10)", (-5, 10)),
        ("None", None),
        ("'10x10'", "10x10"),
        ("(nan, 10)", (math.nan, 10)),
    ):
        rows.append(
            Row(
                f"set_image_embedding(original_size={label})",
                "generated",
                "api",
                lambda c, v=value: Predictor(c["model"]).set_image_embedding(
                    torch.zeros(emb_size), v
                ),
                ("original_size",),
            )
        )
    return rows


def _fifo(folder: Path) -> Path:
    p = folder / "pipe2.png"
    if not p.exists():
        os.mkfifo(p)
    return p


def listed_api() -> list[Row]:
    """Inputs issues 11 and 37 name that the API table has no row for."""
    from segany.automatic import MaskGenerator
    from segany.checkpoints import load_model
    from segany.images import read_image
    from segany.inference.predictor import Predictor
    from segany.masks import decode_rle

    def meta(c: dict[str, Any], name: str) -> Any:
        return load_model(c["meta"][name])

    return [
        Row("Predictor('vit_b') with no such file", "listed", "api", lambda c: Predictor("no_such_variant"), ("no_such_variant",)),
        Row("MaskGenerator('vit_b') unknown", "listed", "api", lambda c: MaskGenerator("no_such_variant"), ("no_such_variant",)),
        Row("rle counts non-ASCII", "listed", "api", lambda c: decode_rle({"size": [2, 2], "counts": "ü4"}), ("counts",)),
        Row("rle negative list counts", "listed", "api", lambda c: decode_rle({"size": [2, 2], "counts": [-2, 6]}), ("counts",)),
        Row("metadata patch size 0", "listed", "api", lambda c: meta(c, "patch0"), ("patch_size",)),
        Row("metadata heads 0", "listed", "api", lambda c: meta(c, "heads0"), ("num_heads",)),
        Row("metadata decoder heads 3", "listed", "api", lambda c: meta(c, "dheads3"), ("num_heads",)),
        Row("image file name 300 bytes", "listed", "api", lambda c: read_image(c["dir"] / ("n" * 300 + ".png")), ("nnnnnnnn",)),
        Row("image a text file", "listed", "api", lambda c: read_image(c["text_png"]), ("text.png",)),
        Row("image a second fifo", "listed", "api", lambda c: read_image(_fifo(c["dir"])), ("pipe2.png",)),
        Row("aspect 400:1 image", "listed", "api", lambda c: _set_image(c, np.zeros((1, 400, 3), np.uint8)), (), refuse=False),
    ]  # fmt: skip


def _ctx(folder: Path) -> dict[str, Any]:
    """The API rows' context: the table's (as ``test_fuzz_api``'s fixture builds it), plus
    the files the listed rows read."""
    sys.path.insert(0, str(Path(__file__).parent))
    import test_fuzz_api
    from helpers import seeded_model
    from safetensors.torch import save_file

    from segany.checkpoints import save_model
    from segany.inference.predictor import Predictor

    model = seeded_model()
    predictor = Predictor(model)
    predictor.set_image(np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8))
    ctx: dict[str, Any] = {"model": model, "p": predictor, "dir": folder}
    ctx.update(test_fuzz_api._hostile_files(folder, model))
    save_model(model, folder / "meta_src.safetensors")
    real = test_fuzz_api._metadata(folder / "meta_src.safetensors")
    from safetensors import safe_open

    with safe_open(str(folder / "meta_src.safetensors"), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
    cfg = json.loads(real["segany.config"])
    ctx["meta"] = {}
    for name, part, key, value in (
        ("patch0", "encoder", "patch_size", 0),
        ("heads0", "encoder", "num_heads", 0),
        ("dheads3", "decoder", "num_heads", 3),
    ):
        lie = {**cfg, part: {**cfg.get(part, {}), key: value}}
        path = folder / f"{name}.safetensors"
        save_file(state, str(path), metadata={**real, "segany.config": json.dumps(lie)})
        ctx["meta"][name] = path
    ctx["text_png"] = folder / "text.png"
    ctx["text_png"].write_text("this is not a picture\n")
    return ctx


def table_api() -> list[Row]:
    sys.path.insert(0, str(Path(__file__).parent))
    import test_fuzz_api

    rows = []
    for row_id, _category, call, expected in test_fuzz_api.CASES:
        refuse = expected != test_fuzz_api.OK
        if not refuse:
            rows.append(Row(row_id, "api table", "api", call, (), refuse=False))
        else:
            rows.append(Row(row_id, "api table", "api", call, tuple(words(row_id))))
    return rows


# --- the command line


BASE_WORDS = {
    "segment",
    "auto",
    "engine",
    "run",
    "-o",
    "{out}",
    "-m",
    "{model}",
    "{img}",
    "-q",
    "-p",
    "1,1",
}
SEG = ["segment", "{img}", "-o", "{out}", "-m", "{model}", "-q"]
AUTO = ["auto", "{img}", "-o", "{out}", "-m", "{model}", "-q", "--points-per-side", "2"]
ENGINE = [
    "engine",
    "run",
    "{imgdir}",
    "-o",
    "{out}/e",
    "-m",
    "{model}",
    "--executor",
    "serial",
    "-q",
    "--points-per-side",
    "2",
]
BAD_CLI_VALUES = ["abc", "", "nan", "1e400", "-1e9"]
CLI_FLAGS = {
    "segment": (SEG + ["-p", "3,4"], ["--point", "--box", "--min-score", "--threads", "--precision", "--device", "--tile", "--tile-overlap", "--refine"]),
    "auto": (AUTO, ["--points-per-side", "--points-per-batch", "--pred-iou-thresh", "--stability-score-thresh", "--stability-score-offset", "--box-nms-thresh", "--crop-n-layers", "--crop-nms-thresh", "--crop-overlap-ratio", "--crop-n-points-downscale-factor", "--min-mask-region-area", "--threads"]),
    "engine run": (ENGINE, ["--workers", "--shard-size", "--max-pixels", "--threads-per-worker", "--pred-iou-thresh"]),
    "engine plan": (["engine", "plan", "{imgdir}", "-m", "{model}", "-q"], ["--sample", "--target-hours", "--target-images", "--memory-per-worker", "--max-pixels"]),
    "eval": (["eval", "{dir}/sa", "-m", "{model}", "-o", "{out}/r.json", "-q", "--protocol", "point"], ["--limit", "--seed", "--objects-per-image", "--max-clicks", "--box-noise", "--box-noise-max-px", "--bootstrap", "--min-score", "--max-dets"]),
    "train": (["train", "{dir}/sa", "-m", "{model}", "-o", "{out}/run", "-q", "--steps", "1", "--batch-size", "1"], ["--steps", "--batch-size", "--accumulate", "--masks-per-image", "--lr", "--min-lr-ratio", "--warmup", "--weight-decay", "--layer-decay", "--drop-path", "--clip-grad", "--rounds", "--box-prob", "--box-noise", "--focal-alpha", "--focal-gamma"]),
    "export-onnx": (["export-onnx", "-m", "{model}", "-o", "{out}/d.onnx"], ["--opset"]),
    "synth": (["synth", "{out}/s", "-q"], ["-n", "--seed", "--size", "--gray"]),
}  # fmt: skip


def generated_cli() -> list[Row]:
    rows = []
    for command, (base, flags) in CLI_FLAGS.items():
        for flag in flags:
            for value in BAD_CLI_VALUES:
                argv = [*base, flag, value]
                rows.append(
                    Row(
                        f"{command} {flag} {value!r}",
                        "generated",
                        "cli",
                        argv,
                        (flag, flag.lstrip("-").replace("-", "_"), value or flag),
                    )
                )
    return rows


def listed_cli() -> list[Row]:
    """Command-line inputs issues 11 and 37 name that the CLI table has no row for."""
    return [
        Row("segment --box partly outside", "listed", "cli", [*SEG, "-b", "-5,-5,10,10"], (), refuse=False),
        Row("segment --model unknown", "listed", "cli", [*SEG, "-p", "3,4", "-m", "vit_nope"], ("vit_nope",)),
        Row("info heads 0", "listed", "cli", ["info", "{heads0}"], ("num_heads",)),
        Row("segment -m patch 0", "listed", "cli", [*SEG, "-p", "3,4", "-m", "{patch0}"], ("patch_size",)),
        Row("segment a dangling link", "listed", "cli", ["segment", "{dangling}", "-p", "3,4", "-o", "{out}", "-m", "{model}"], ("gone.png",)),
        Row("auto a missing image", "listed", "cli", ["auto", "{dir}/nope.png", "-o", "{out}", "-m", "{model}"], ("nope.png",)),
    ]  # fmt: skip


def table_cli() -> list[Row]:
    sys.path.insert(0, str(Path(__file__).parent))
    import test_fuzz_cli

    rows = []
    for row_id, _category, argv, _code, _fragment in test_fuzz_cli.CASES:
        typed = [a for a in argv if a not in BASE_WORDS]
        rows.append(Row(row_id, "cli table", "cli", argv, tuple(words(row_id)) + tuple(typed)))
    return rows


def _cli_files(folder: Path, ctx: dict[str, Any]) -> dict[str, str]:
    sys.path.insert(0, str(Path(__file__).parent))
    import test_fuzz_cli

    files = test_fuzz_cli.files.__wrapped__(_Factory(folder))  # type: ignore[attr-defined]
    imgdir = folder / "imgdir"
    imgdir.mkdir()
    test_fuzz_cli._image(imgdir / "a.png")
    return {
        "img": str(files["img"]),
        "dir": str(files["dir"]),
        "model": str(files["model"]),
        "imgdir": str(imgdir),
        "dangling": str(ctx["dangling"]),
        "heads0": str(ctx["meta"]["heads0"]),
        "patch0": str(ctx["meta"]["patch0"]),
    }


class _Factory:
    """What ``tmp_path_factory.mktemp`` gives the CLI table's file fixture."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def mktemp(self, name: str) -> Path:
        p = self.root / name
        p.mkdir()
        return p


# --------------------------------------------------------------------------------------------


def all_rows() -> list[Row]:
    return (
        table_api() + listed_api() + generated_api() + table_cli() + listed_cli() + generated_cli()
    )


def tally(folder: Path, rows: list[Row] | None = None) -> list[Outcome]:
    rows = all_rows() if rows is None else rows
    (folder / "api").mkdir(exist_ok=True)
    ctx = _ctx(folder / "api")
    fill = _cli_files(folder, ctx)
    outcomes = []
    for i, row in enumerate(rows):
        if row.kind == "api":
            outcomes.append(run_api(row, ctx))
        else:
            out = folder / "out" / str(i)
            outcomes.append(run_cli(row, fill, out))
    return outcomes


def summarise(outcomes: list[Outcome]) -> dict[str, Any]:
    counts: dict[str, Any] = {"inputs": len(outcomes)}
    for verdict in ("clear", "unclear", "accepted", "ok", "crash"):
        counts[verdict] = sum(o.verdict == verdict for o in outcomes)
    counts["unclear_percent"] = round(100 * counts["unclear"] / max(1, len(outcomes)), 1)
    by_origin: dict[str, dict[str, int]] = {}
    for o in outcomes:
        d = by_origin.setdefault(f"{o.row.kind} {o.row.origin}", {})
        d[o.verdict] = d.get(o.verdict, 0) + 1
    counts["by_origin"] = by_origin
    return counts


def main() -> int:
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="segany-tally-") as tmp:
        outcomes = tally(Path(tmp))
    counts = summarise(outcomes)
    if args.json:
        print(json.dumps(counts, indent=1))
        return 0
    for verdict in ("unclear", "crash", "accepted"):
        for o in outcomes:
            if o.verdict == verdict:
                print(
                    f"{verdict:9} {o.row.kind} {o.row.origin:9} {o.row.id}: {o.message[:300]!r} {o.failed_tests}"
                )
    print()
    for origin, d in sorted(counts.pop("by_origin").items()):
        print(f"{origin:16} " + "  ".join(f"{k} {v}" for k, v in sorted(d.items())))
    print(" ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
