"""Typed results of a protocol run: estimates with bootstrap intervals, rows, timing."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DEFAULT_BOOTSTRAP = 1000


@dataclass(frozen=True)
class Estimate:
    """A mean over `n` objects with its 95 % bootstrap interval [low, high] (NaN when n == 0)."""

    value: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {"value": _num(self.value), "ci95": [_num(self.low), _num(self.high)], "n": self.n}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Estimate:
        low, high = d.get("ci95") or (None, None)
        return cls(_float(d.get("value")), _float(low), _float(high), int(d.get("n", 0)))


@dataclass
class EvalResult:
    """What one protocol measured.

    metrics: name -> Estimate (e.g. "miou", "oracle_miou", "miou@3", "noc@90", "ar@1000").
    series: named curves, e.g. "miou_by_clicks" (mIoU after 1, 2, ... clicks).
    per_image / per_object: JSON-ready rows. seconds: wall time the protocol took, and timing
    its parts (e.g. "load", "encode", "prompt"); protocols run together share the image loading
    and encoding, and each counts that shared time in its own seconds.
    """

    protocol: str
    metrics: dict[str, Estimate]
    per_image: list[dict[str, Any]] = field(default_factory=list)
    per_object: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)
    series: dict[str, list[float]] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)

    @property
    def miou(self) -> float:
        """The headline mIoU (top-scoring mask for points, the box mask for boxes)."""
        if "miou" not in self.metrics:
            raise AttributeError(f"the {self.protocol} protocol reports no plain 'miou'")
        return self.metrics["miou"].value

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "metrics": {k: v.to_dict() for k, v in self.metrics.items()},
            "seconds": round(self.seconds, 4),
            "timing": {k: round(v, 4) for k, v in self.timing.items()},
            "settings": self.settings,
            "series": {k: [_num(x) for x in v] for k, v in self.series.items()},
            "per_image": self.per_image,
            "per_object": self.per_object,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EvalResult:
        return cls(
            protocol=str(d["protocol"]),
            metrics={k: Estimate.from_dict(v) for k, v in d.get("metrics", {}).items()},
            per_image=list(d.get("per_image", [])),
            per_object=list(d.get("per_object", [])),
            seconds=float(d.get("seconds", 0.0)),
            timing={k: float(v) for k, v in d.get("timing", {}).items()},
            settings=dict(d.get("settings", {})),
            series={k: [_float(x) for x in v] for k, v in d.get("series", {}).items()},
        )


def estimates(
    columns: Mapping[str, Sequence[float]], n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0
) -> dict[str, Estimate]:
    """Mean of each column with a percentile bootstrap 95 % interval.

    All columns must have one value per object; the same resampled object sets are used for
    every column, so intervals of related figures (mIoU after 1 and 3 clicks) are paired.
    Objects are resampled independently; this ignores that objects of one image correlate.
    """
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in columns.items()}
    lengths = {a.size for a in arrays.values()}
    if len(lengths) > 1:
        raise ValueError(f"estimate columns differ in length: {sorted(lengths)}")
    n = lengths.pop() if lengths else 0
    if n == 0:
        nan = math.nan
        return {k: Estimate(nan, nan, nan, 0) for k in arrays}
    stacked = np.stack(list(arrays.values()))  # K×n, one row per column
    boot = np.empty((len(arrays), max(n_boot, 0)))  # K×n_boot resampled means
    rng = np.random.default_rng(seed)
    step = max(1, 500_000 // n)  # bound each block (K×step×n floats) on large datasets
    for start in range(0, n_boot, step):
        idx = rng.integers(0, n, size=(min(step, n_boot - start), n))
        boot[:, start : start + idx.shape[0]] = stacked[:, idx].mean(axis=2)
    out = {}
    for row, (k, a) in enumerate(arrays.items()):
        mean = float(a.mean())
        low, high = (mean, mean) if n_boot <= 0 else np.percentile(boot[row], [2.5, 97.5])
        out[k] = Estimate(mean, float(low), float(high), n)
    return out


def _num(x: float) -> float | None:
    """JSON has no NaN: write null instead; round to keep reports readable."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return round(float(x), 6)


def _float(x: Any) -> float:
    return math.nan if x is None else float(x)
