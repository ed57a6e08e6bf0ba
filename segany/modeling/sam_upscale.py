"""Low-res mask logits to the original image size in one step, with the official values.

The official postprocessing resizes each s×s logit map twice with bilinear interpolation
(``align_corners=False``): up to the padded S×S input square, crop the valid h×w region, then
to the original H×W. Each step is linear and acts on rows and columns separately, so the whole
chain is ``out = R · X · Cᵀ`` with R (H×s) and C (W×s) the two axes' composed operators.
Both are banded (an output row mixes a few neighbouring low-res rows), so they are applied in
blocks of output rows, each a small matmul over only the low-res rows it touches; the S×S
intermediate (1024² floats per mask) is never built, and with a threshold the full-size float
logits are never built either (each block is thresholded straight into the boolean output).

The operators come from running torch's own ``F.interpolate`` kernel on an identity matrix,
composed in float64, so results equal ``Sam.postprocess_masks`` to float rounding (~1e-7 of
the largest logit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch.nn import functional as F

_BLOCK = 64  # output rows per matmul: the block's temporary stays in cache


def _resize_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """n_out×n_in float64 matrix of one bilinear (align_corners=False) resize along an axis.

    Computed with torch's kernel in float32 (its source-index arithmetic included), by resizing
    the identity along one axis and keeping the other axis's size (an exact copy).
    """
    eye = torch.eye(n_in, dtype=torch.float32)[None, None]  # 1×1×n_in×n_in
    out = F.interpolate(eye, (n_out, n_in), mode="bilinear", align_corners=False)
    return out[0, 0].double()  # n_out×n_in: row o holds the weights of output o


@dataclass(frozen=True)
class AxisOperator:
    """A banded n_out×n_in linear map, stored as dense blocks of output rows:
    ``out[r0:r1] = block · x[lo:hi]`` for each (r0, r1, lo, hi, block (r1-r0)×(hi-lo))."""

    n_in: int
    n_out: int
    blocks: tuple[tuple[int, int, int, int, torch.Tensor], ...]


@lru_cache(maxsize=64)
def axis_operator(low: int, padded: int, valid: int, out: int) -> AxisOperator:
    """The composed map along one axis: low -> padded (resize), keep the first ``valid``,
    -> out (resize), from ``low`` inputs to ``out`` outputs."""
    if not 0 < valid <= padded or low <= 0 or out <= 0:
        raise ValueError(f"bad sizes: low {low}, padded {padded}, valid {valid}, out {out}")
    up = _resize_matrix(low, padded)[:valid]  # valid×low
    full = _resize_matrix(valid, out) @ up if valid != out else up  # out×low, float64
    nz = full != 0
    cols = torch.arange(low).expand(out, low)
    first = torch.where(nz, cols, low).min(dim=1).values
    last = torch.where(nz, cols, -1).max(dim=1).values
    blocks = []
    for r0 in range(0, out, _BLOCK):
        r1 = min(r0 + _BLOCK, out)
        lo, hi = int(first[r0:r1].min()), int(last[r0:r1].max()) + 1
        if hi <= lo:  # all-zero rows (cannot happen for a resize, kept total anyway)
            lo, hi = 0, 1
        blocks.append((r0, r1, lo, hi, full[r0:r1, lo:hi].float().contiguous()))
    return AxisOperator(low, out, tuple(blocks))


def rows_product(
    x: torch.Tensor,
    op: AxisOperator,
    out: torch.Tensor,
    threshold: float | None,
    counts: Sequence[tuple[float, torch.Tensor]] = (),
) -> None:
    """out (N×n_out×W) = op applied along the rows of x (N×n_in×W), thresholded if asked;
    with ``counts`` [(t, c)], each c (N int32) also gains the number of values above t."""
    for r0, r1, lo, hi, block in op.blocks:
        block = block.to(x.device)
        if threshold is None:
            torch.matmul(block, x[:, lo:hi, :], out=out[:, r0:r1])
            continue
        part = torch.matmul(block, x[:, lo:hi, :])  # N×(r1-r0)×W, used while in the cache
        torch.gt(part, threshold, out=out[:, r0:r1])
        for t, c in counts:
            c += (part > t).flatten(1).sum(1, dtype=torch.int32)


def cols_product(x: torch.Tensor, op: AxisOperator) -> torch.Tensor:
    """op applied along the last axis of x: N×R×n_in -> N×R×n_out."""
    out = x.new_empty(x.shape[0], x.shape[1], op.n_out)
    for r0, r1, lo, hi, block in op.blocks:
        out[:, :, r0:r1] = torch.matmul(x[:, :, lo:hi], block.to(x.device).T)
    return out


def upscale_logits(
    low_res: torch.Tensor,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
    padded_size: int,
    threshold: float | None = None,
) -> torch.Tensor:
    """…×s×s low-res logits -> …×H×W logits equal to ``Sam.postprocess_masks``, or with
    ``threshold`` the boolean masks ``logits > threshold`` (without building the logits).

    input_size (h, w): the resized image inside the padded ``padded_size`` square;
    original_size (H, W): the output size.
    """
    lead = low_res.shape[:-2]
    s_h, s_w = int(low_res.shape[-2]), int(low_res.shape[-1])
    big_h, big_w = int(original_size[0]), int(original_size[1])
    rows = axis_operator(s_h, padded_size, int(input_size[0]), big_h)
    cols = axis_operator(s_w, padded_size, int(input_size[1]), big_w)
    x = low_res.float().reshape(-1, s_h, s_w)
    dtype = torch.float32 if threshold is None else torch.bool
    out = torch.empty(x.shape[0], big_h, big_w, dtype=dtype, device=x.device)
    rows_product(cols_product(x, cols), rows, out, threshold)
    return out.reshape(*lead, big_h, big_w)


def upscale_with_stability(
    low_res: torch.Tensor,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
    padded_size: int,
    threshold: float,
    offset: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """N×s×s low-res logits -> (masks N×H×W bool, stability scores N): the values of
    ``upscale_logits(...) > threshold`` and ``masks.stability_score(upscale_logits(...),
    threshold, offset)``, in one pass over blocks of rows: each block is thresholded and
    counted as soon as it is computed, and the N×H×W float logits are never built (what the
    automatic generator needs for every mask whose predicted IoU passes)."""
    s_h, s_w = int(low_res.shape[-2]), int(low_res.shape[-1])
    big_h, big_w = int(original_size[0]), int(original_size[1])
    rows = axis_operator(s_h, padded_size, int(input_size[0]), big_h)
    cols = axis_operator(s_w, padded_size, int(input_size[1]), big_w)
    x = low_res.float().reshape(-1, s_h, s_w)
    n = x.shape[0]
    masks = torch.empty(n, big_h, big_w, dtype=torch.bool, device=x.device)
    high, low = (torch.zeros(n, dtype=torch.int32, device=x.device) for _ in range(2))
    rows_product(
        cols_product(x, cols),
        rows,
        masks,
        threshold,
        [(threshold + offset, high), (threshold - offset, low)],
    )
    return masks, high / low  # the high mask lies inside the low one; 0/0 is NaN
