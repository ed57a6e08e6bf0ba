"""Edge detection scores as the BSDS500 benchmark defines them: ODS, OIS and AP.

For each of ``thresholds`` levels t the edge map is binarised at ``>= t``, and its edge pixels
are matched one-to-one to ground-truth boundary pixels lying within ``max_dist`` × the image
diagonal (0.0075, the benchmark's tolerance). Per image and threshold that gives matched and
total predicted pixels (precision) and matched and total boundary pixels (recall).

- ODS: the F-measure at the one threshold best for the whole dataset (counts summed over
  images before dividing);
- OIS: each image at its own best threshold, counts summed;
- AP: the precision interpolated at recall 0, 0.01, ..., 1 (the best precision at that recall
  or higher), averaged.

The benchmark's matcher (``correspondPixels``) solves a min-cost assignment with the distance as
cost; here the matching is a maximum-cardinality one on the same within-tolerance graph
(scipy's Hopcroft-Karp), which gives the same counts whenever every pixel that can be matched
is: the counts, not the distances, enter the scores. The edge map is expected thin (as
``segany.tasks.edges`` makes it); BSDS itself is not bundled here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from segany.errors import InputError, MissingExtraError

__all__ = ["EdgeScores", "edge_counts", "edge_scores"]


@dataclass(frozen=True)
class EdgeScores:
    ods: float
    ois: float
    ap: float
    ods_threshold: float
    #: recall and precision per threshold over the dataset (for a PR plot)
    recall: tuple[float, ...]
    precision: tuple[float, ...]


def _match_count(pred: np.ndarray, gt: np.ndarray, radius: float) -> int:
    """Largest one-to-one matching between predicted and boundary pixels within ``radius``."""
    try:
        from scipy.sparse import csr_matrix
        from scipy.sparse.csgraph import maximum_bipartite_matching
        from scipy.spatial import cKDTree
    except ImportError as exc:
        raise MissingExtraError("edge scores (ODS/OIS/AP)", "eval", "scipy") from exc

    if len(pred) == 0 or len(gt) == 0:
        return 0
    near = cKDTree(gt).query_ball_point(pred, radius)
    rows = np.repeat(np.arange(len(pred)), [len(n) for n in near])
    cols = np.fromiter((c for n in near for c in n), np.int64, count=len(rows))
    if len(rows) == 0:
        return 0
    graph = csr_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(len(pred), len(gt)))
    match = maximum_bipartite_matching(graph, perm_type="column")
    return int((match >= 0).sum())


def edge_counts(
    edges: np.ndarray, boundary: np.ndarray, thresholds: np.ndarray, max_dist: float = 0.0075
) -> np.ndarray:
    """T×4 counts per threshold: matched predicted, predicted, matched boundary, boundary
    pixels. ``edges`` H×W in [0, 1]; ``boundary`` H×W bool ground truth."""
    if edges.shape != boundary.shape or edges.ndim != 2:
        raise InputError(
            f"edges and boundary must be H×W of one size, got {edges.shape} and {boundary.shape}"
        )
    radius = max_dist * float(np.hypot(*edges.shape))
    gt = np.argwhere(boundary).astype(np.float64)
    out = np.zeros((len(thresholds), 4), np.int64)
    for i, t in enumerate(thresholds):
        pred = np.argwhere(edges >= t).astype(np.float64) if t > 0 else np.zeros((0, 2))
        matched = _match_count(pred, gt, radius)
        out[i] = (matched, len(pred), matched, len(gt))
    return out


def _f(p: np.ndarray, r: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(p + r > 0, 2 * p * r / (p + r), 0.0)


def _pr(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(counts[..., 1] > 0, counts[..., 0] / np.maximum(counts[..., 1], 1), 1.0)
        r = np.where(counts[..., 3] > 0, counts[..., 2] / np.maximum(counts[..., 3], 1), 0.0)
    return p, r


def edge_scores(
    edge_maps: Sequence[np.ndarray],
    boundaries: Sequence[np.ndarray],
    *,
    thresholds: int = 99,
    max_dist: float = 0.0075,
) -> EdgeScores:
    """ODS, OIS and AP of ``edge_maps`` (H×W in [0, 1]) against ``boundaries`` (H×W bool)."""
    if len(edge_maps) != len(boundaries) or not edge_maps:
        raise InputError("give one boundary map per edge map (at least one)")
    levels = np.linspace(1 / (thresholds + 1), 1 - 1 / (thresholds + 1), thresholds)
    per_image = np.stack(
        [edge_counts(e, b, levels, max_dist) for e, b in zip(edge_maps, boundaries, strict=True)]
    )  # I×T×4
    total = per_image.sum(axis=0)
    p, r = _pr(total)
    f = _f(p, r)
    best = int(np.argmax(f))
    # OIS: each image's best threshold, its counts summed over images
    f_img = _f(*_pr(per_image))
    chosen = per_image[np.arange(len(per_image)), np.argmax(f_img, axis=1)]
    p_ois, r_ois = _pr(chosen.sum(axis=0))
    ois = float(_f(np.array(p_ois), np.array(r_ois)))
    ap = float(
        np.mean(
            [p[r >= level].max() if (r >= level).any() else 0.0 for level in np.linspace(0, 1, 101)]
        )
    )
    return EdgeScores(
        ods=float(f[best]),
        ois=ois,
        ap=ap,
        ods_threshold=float(levels[best]),
        recall=tuple(float(v) for v in r),
        precision=tuple(float(v) for v in p),
    )
