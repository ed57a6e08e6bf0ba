"""Full-size masks made a block of columns at a time, for frames too large to hold them.

A box over most of a 20 000-px scan has a 400 MP mask; on a 60 000-px one, 3.6 GP. Callers that
want such a mask as COCO RLE (``segany.masks.place_rle``, column-major) or as a box and an area
(``ColumnMasks.stats``) read it by blocks of columns from the low-res logits, through the same
banded operators as ``segany.modeling.sam_upscale.upscale_logits``: the same values, never the
whole mask.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from segany.modeling.sam_upscale import (
    AxisOperator,
    axis_operator,
    cols_product,
    rows_product,
)

_COLUMN_BYTES = 16 << 20  # bytes of one mask's columns made at once by ColumnMasks.stats


class ColumnMasks:
    """The boolean masks ``upscale_logits(low_res, ...) > threshold`` (C×H×W, or one mask H×W
    with ``index``), made a block of columns at a time when read, never all at once: for a
    frame whose full-size masks would not fit in memory (a box over most of a large scan).

    Reads: ``masks[c]`` (one mask, made lazily too), ``mask[:, a:b]`` / ``masks[:, :, a:b]``
    (those columns, numpy bool; any row slice first), ``np.asarray`` (the whole: small
    frames, tests), ``stats()`` (one mask's box and area, in one pass). The column
    operator's product (C×s×W floats) is made once, the row operator's for each read.
    The values equal ``upscale_logits(..., threshold=threshold)``'s (the same products on the
    same operands, cut into blocks of columns)."""

    dtype = np.dtype(bool)

    def __init__(
        self,
        low_res: torch.Tensor,
        input_size: tuple[int, int],
        original_size: tuple[int, int],
        padded_size: int,
        threshold: float,
        *,
        index: int | None = None,
        _shared: tuple[torch.Tensor, AxisOperator] | None = None,
    ) -> None:
        self._sizes = (tuple(input_size), tuple(original_size), int(padded_size))
        self.threshold = float(threshold)
        self.index = index
        self._low_res = low_res
        big_h, big_w = int(original_size[0]), int(original_size[1])
        count = int(low_res.shape[0])
        self.shape: tuple[int, ...] = (big_h, big_w) if index is not None else (count, big_h, big_w)
        self._shared = _shared  # (low_res · Cᵀ: C×s×W, the row operator), made when first read
        self._stats: tuple[Any, int, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
        self._ones: dict[int, ColumnMasks] = {}  # masks[c], made once each

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def _made(self) -> tuple[torch.Tensor, AxisOperator]:
        if self._shared is None:
            (h_in, w_in), (big_h, big_w), padded = self._sizes
            s_h, s_w = int(self._low_res.shape[-2]), int(self._low_res.shape[-1])
            rows = axis_operator(s_h, padded, int(h_in), int(big_h))
            cols = axis_operator(s_w, padded, int(w_in), int(big_w))
            self._shared = (cols_product(self._low_res.float().reshape(-1, s_h, s_w), cols), rows)
        return self._shared

    def columns(self, c0: int, c1: int) -> torch.Tensor:
        """Columns c0..c1 of the masks: (C×)H×(c1-c0) bool."""
        y, rows = self._made()
        part = y[:, :, c0:c1] if self.index is None else y[self.index : self.index + 1, :, c0:c1]
        out = torch.empty(part.shape[0], rows.n_out, part.shape[2], dtype=torch.bool)
        rows_product(part.contiguous(), rows, out, self.threshold)
        return out if self.index is None else out[0]

    def __getitem__(self, key: Any) -> Any:
        if self.index is None and isinstance(key, int):
            count = self.shape[0]
            if not -count <= key < count:
                raise IndexError(f"mask {key} of {count}")
            key %= count
            if key not in self._ones:  # (kept: its summary is made once)
                low, size_in, size_out, padded, threshold = self._args()
                # the masks share the column operator's product, made once for all of them
                self._ones[key] = ColumnMasks(
                    low, size_in, size_out, padded, threshold, index=key, _shared=self._made()
                )
            return self._ones[key]
        *lead, cols = key if isinstance(key, tuple) else (key,)
        if not lead or not isinstance(cols, slice) or cols.step not in (None, 1):
            return self.__array__()[key]
        c0, c1, _ = cols.indices(self.shape[-1])
        return self.columns(c0, max(c0, c1)).numpy()[tuple(lead)]

    def _args(self) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int], int, float]:
        (h_in, w_in), (big_h, big_w), padded = self._sizes
        return (
            self._low_res,
            (int(h_in), int(w_in)),
            (int(big_h), int(big_w)),
            padded,
            self.threshold,
        )

    def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
        whole = self.columns(0, self.shape[-1]).numpy()
        return whole if dtype is None else whole.astype(dtype)

    def stats(self) -> tuple[tuple[int, int, int, int] | None, int]:
        """One mask's box (x0, y0, x1, y1, end-exclusive; None when empty) and its area."""
        return self._summary()[:2]  # type: ignore[return-value]

    def column_runs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One mask's runs of set pixels column by column, top to bottom (column, first row,
        row after the last): what ``segany.masks.place_rle`` makes its RLE from."""
        return self._summary()[2]  # type: ignore[return-value]

    def _summary(self) -> tuple[Any, int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(box, area, column runs) of one mask, in one pass over blocks of
        ``_COLUMN_BYTES`` of its columns, kept: each pass makes the whole mask once."""
        from segany.masks import column_runs

        if self.index is None:
            raise TypeError("a summary is per mask: masks[c].stats()")
        if self._stats is None:
            big_h, big_w = self.shape
            step = max(1, _COLUMN_BYTES // max(1, big_h))
            runs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
            for c0 in range(0, big_w, step):
                col, top, bottom = column_runs(self.columns(c0, min(big_w, c0 + step)))
                runs.append((col + c0, top, bottom))
            cols, tops, bottoms = (np.concatenate([r[k] for r in runs]) for k in range(3))
            area = int((bottoms - tops).sum())
            box = None
            if len(cols):  # (columns ascend; the rows' extremes from the runs' ends)
                box = (int(cols[0]), int(tops.min()), int(cols[-1]) + 1, int(bottoms.max()))
            self._stats = (box, area, (cols, tops, bottoms))
        return self._stats
