"""Reports: one JSON file per run, a terminal table, two runs side by side, the clicks plot."""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from segany.atomic import atomic_open, write_text_atomic
from segany.errors import InputError, MissingExtraError
from segany.evaluate.results import EvalResult

REPORT_FORMAT = "segany-eval/1"
KINDS_FORMAT = "segany-eval-kinds/1"  # segany eval --by-kind: one report per kind


def build_report(
    results: Mapping[str, EvalResult],
    *,
    model: Mapping[str, Any] | None = None,
    dataset: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A JSON-ready report: what was measured (model, dataset, run options), each protocol."""
    return {
        "format": REPORT_FORMAT,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": dict(model or {}),
        "dataset": dict(dataset or {}),
        "options": dict(options or {}),
        "seconds": round(sum(r.seconds for r in results.values()), 4),
        "protocols": {name: r.to_dict() for name, r in results.items()},
    }


def write_report(report: Mapping[str, Any], path: str | Path) -> Path:
    out = Path(path)
    write_text_atomic(out, json.dumps(report, indent=1, allow_nan=False, default=_jsonable) + "\n")
    return out


def _jsonable(x: Any) -> Any:
    if hasattr(x, "item"):  # numpy scalars in rows
        return x.item()
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, bytes):  # RLE counts, should any reach a row
        return x.decode()
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


def load_report(path: str | Path, kinds: bool = False) -> dict[str, Any]:
    """Read a report written by `write_report` (with ``kinds``, also a per-kind report of
    `build_kinds_report`); InputError when it is not one."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read report {path}: {exc}") from exc
    formats = (REPORT_FORMAT, KINDS_FORMAT) if kinds else (REPORT_FORMAT,)
    if not isinstance(data, dict) or data.get("format") not in formats:
        raise InputError(f"{path} is not a segany eval report (format {' or '.join(formats)})")
    if data["format"] == KINDS_FORMAT and not isinstance(data.get("kinds"), dict):
        raise InputError(f"{path}: a per-kind report without its kinds")
    return data


def build_kinds_report(reports: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """One report per kind of picture (``segany eval --by-kind``), kept whole under its name;
    the model and options are the runs' (one model, one set of options for every kind)."""
    if not reports:
        raise InputError("a per-kind report needs at least one kind")
    first = reports[0][1]
    return {
        "format": KINDS_FORMAT,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": dict(first.get("model", {})),
        "options": dict(first.get("options", {})),
        "seconds": round(sum(float(r.get("seconds", 0.0)) for _, r in reports), 4),
        "kinds": {name: dict(r) for name, r in reports},
    }


# (heading, protocol, metric): the model's figure, then the baselines' on the same prompts
KIND_COLUMNS = (
    ("point", "point", "miou"),
    ("flood fill point", "floodfill:point", "miou"),
    ("GrabCut point", "grabcut:point", "miou"),
    ("box", "box", "miou"),
    ("GrabCut box", "grabcut:box", "miou"),
    ("1 click", "clicks", "miou@1"),
    ("3 clicks", "clicks", "miou@3"),
    ("flood fill 3 clicks", "floodfill:clicks", "miou@3"),
    ("GrabCut 3 clicks", "grabcut:clicks", "miou@3"),
    ("NoC@85", "clicks", "noc@85"),
    ("flood fill NoC@85", "floodfill:clicks", "noc@85"),
    ("GrabCut NoC@85", "grabcut:clicks", "noc@85"),
    ("AR@100", "auto", "ar@100"),
    ("proposals AR@1000", "proposals", "ar@1000"),
)


def format_kinds_table(kinds_report: Mapping[str, Any]) -> str:
    """One row per kind: images, objects, then each figure any kind has, the model's with the
    baselines' beside it (mIoU; NoC@85 in clicks; AR for the automatic protocols)."""
    kinds = kinds_report["kinds"]

    def value(report: Mapping[str, Any], protocol: str, metric: str) -> float | None:
        found = report.get("protocols", {}).get(protocol, {}).get("metrics", {}).get(metric)
        return None if found is None else float(found["value"])

    columns = [
        c for c in KIND_COLUMNS if any(value(r, c[1], c[2]) is not None for r in kinds.values())
    ]
    rows = []
    for name, report in kinds.items():
        counts = [
            m["n"]
            for p in ("point", "clicks", "box")
            for m in report.get("protocols", {}).get(p, {}).get("metrics", {}).values()
        ]
        images = report.get("dataset", {}).get("num_images")
        cells = [name, "-" if images is None else str(images), str(max(counts)) if counts else "-"]
        for _, protocol, metric in columns:
            cells.append(_fmt(value(report, protocol, metric), _metric_digits(metric) - 1))
        rows.append(cells)
    return _render(["kind", "images", "objects", *(c[0] for c in columns)], rows)


def format_kinds_comparison(
    a: Mapping[str, Any], b: Mapping[str, Any], labels: tuple[str, str] = ("A", "B")
) -> str:
    """`format_comparison` for each kind both per-kind reports hold."""
    shared = [k for k in a["kinds"] if k in b["kinds"]]
    if not shared:
        raise InputError("the two per-kind reports share no kind")
    parts = [f"{k}\n{format_comparison(a['kinds'][k], b['kinds'][k], labels)}" for k in shared]
    only = sorted(set(a["kinds"]) ^ set(b["kinds"]))
    tail = f"\n(kinds only in one report: {', '.join(only)})" if only else ""
    return "\n\n".join(parts) + tail


def report_results(report: Mapping[str, Any]) -> dict[str, EvalResult]:
    return {k: EvalResult.from_dict(v) for k, v in report.get("protocols", {}).items()}


def _fmt(x: float | None, digits: int = 4) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def _metric_digits(name: str) -> int:
    return 2 if name.startswith("noc") else 4


def _render(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_table(report: Mapping[str, Any]) -> str:
    """One line per metric: value, 95 % bootstrap interval, objects, seconds per protocol."""
    rows = []
    for name, res in report_results(report).items():
        for i, (metric, est) in enumerate(res.metrics.items()):
            d = _metric_digits(metric)
            ci = f"[{_fmt(est.low, d)}, {_fmt(est.high, d)}]"
            secs = f"{res.seconds:.1f}" if i == 0 else ""
            rows.append([name if i == 0 else "", metric, _fmt(est.value, d), ci, str(est.n), secs])
    return _render(["protocol", "metric", "value", "95% CI", "n", "seconds"], rows)


def format_comparison(
    a: Mapping[str, Any], b: Mapping[str, Any], labels: tuple[str, str] = ("A", "B")
) -> str:
    """Each metric both runs report, side by side with B - A; then the seconds and their
    ratio B / A."""
    ra, rb = report_results(a), report_results(b)
    rows = []
    for name in [p for p in ra if p in rb]:
        ma, mb = ra[name].metrics, rb[name].metrics
        shared = [m for m in ma if m in mb]
        for i, metric in enumerate(shared):
            d = _metric_digits(metric)
            va, vb = ma[metric].value, mb[metric].value
            delta = vb - va
            sign = "+" if delta >= 0 else ""
            rows.append(
                [
                    name if i == 0 else "",
                    metric,
                    _fmt(va, d),
                    _fmt(vb, d),
                    "-" if math.isnan(delta) else f"{sign}{delta:.{d}f}",
                ]
            )
        sa, sb = ra[name].seconds, rb[name].seconds
        ratio = f"x{sb / sa:.2f}" if sa > 0 else "-"
        rows.append(["" if shared else name, "seconds", f"{sa:.1f}", f"{sb:.1f}", ratio])
    only = sorted(set(ra) ^ set(rb))
    table = _render(["protocol", "metric", labels[0], labels[1], f"{labels[1]}-{labels[0]}"], rows)
    return table + (f"\n(only in one report: {', '.join(only)})" if only else "")


def plot_clicks(reports: Sequence[tuple[str, Mapping[str, Any]]], path: str | Path) -> Path:
    """PNG of mIoU against the number of clicks, one line per report that ran `clicks`."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError as exc:
        raise MissingExtraError("the clicks plot", "eval", "matplotlib") from exc
    curves = []
    for label, report in reports:
        clicks = report.get("protocols", {}).get("clicks")
        series = (clicks or {}).get("series", {}).get("miou_by_clicks") or []
        if series:
            curves.append((label, series))
    if not curves:
        raise InputError("no report holds a clicks protocol run to plot")
    fig = Figure(figsize=(6, 4), dpi=100)  # no pyplot: no global state, no display needed
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, series in curves:
        xs = range(1, len(series) + 1)
        ax.plot(xs, [math.nan if v is None else v for v in series], marker="o", ms=3, label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("clicks")
    ax.set_ylabel("mIoU")
    ax.set_ylim(0, 1)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    out = Path(path)
    # The format from the name, as savefig(path) would; the temporary file's name has none.
    with atomic_open(out, "wb") as f:
        fig.savefig(f, format=out.suffix[1:].lower() or None)
    return out
