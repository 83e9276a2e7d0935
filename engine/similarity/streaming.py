"""Streaming second moments for the `positions` and `pooled` views (METRICS.md §3).

The metrics on these views depend only on c×c matrices (XᵀX, YᵀY, XᵀY after centring), so probe
batches are folded in one at a time: memory is O(c²) whatever n, h and w are.

Centring from raw sums (XᵀX − m μμᵀ) cancels catastrophically when the means are large against
the spread, so the moments are accumulated about a shift (the first batch's column means) and
corrected exactly at the end:  Σ(x−μ)(y−ν)ᵀ = Σ(x−a)(y−b)ᵀ − m (μ−a)(ν−b)ᵀ.
"""

from __future__ import annotations

import torch

from engine.similarity.debiased import centred_row_products, debiased_similarity, unbiased_hsic
from engine.similarity.spectral import DIRECT_EIGH_ERROR, REPLICATE_EIGH_ERROR
from engine.similarity.metrics import PairedSpectra, compute_dtype_for, pair_from_moments


class MomentAccumulator:
    """Float64 moments of paired row batches X (r, c), Y (r, c') added with :meth:`update`.

    With ``groups`` G > 1 every row belongs to one of G groups (all the rows of one probe image to
    the same group) and the sums are kept per group, so the moments with one group left out — the
    jackknife's replicates (:mod:`engine.intervals`) — are the total less that group's sums: exact,
    and still one pass. ``row_terms`` adds the per-row norm sums debiased CKA needs
    (:func:`engine.similarity.debiased.centred_row_products`), which add over rows the same way.
    """

    def __init__(self, precision: str | None = None, groups: int = 1, row_terms: bool = False):
        self.precision = precision
        self.groups = groups
        self.row_terms = row_terms
        self.group_rows = [0] * groups
        self.identical = True
        self._shift_x = self._shift_y = None
        self._sums: dict[str, torch.Tensor] = {}  # name → (G, …) float64 sums about the shift
        self._total: dict[str, torch.Tensor] | None = None
        self._dtype: torch.dtype | None = None

    @property
    def n_rows(self) -> int:
        return sum(self.group_rows)

    def update(self, x: torch.Tensor, y: torch.Tensor, row_groups: torch.Tensor | None = None) -> None:
        """``row_groups`` (r,) gives each row's group (None: all in group 0)."""
        if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
            raise ValueError(f"expected paired (rows, features) batches, got {tuple(x.shape)} and {tuple(y.shape)}")
        if self._dtype is None:
            self._dtype = compute_dtype_for(x.device, self.precision)
            self._shift_x = x.to(torch.float64).mean(0)
            self._shift_y = y.to(torch.float64).mean(0)
        self.identical = self.identical and x.shape == y.shape and torch.equal(x, y)
        xs = x.to(self._dtype) - self._shift_x.to(self._dtype)
        ys = y.to(self._dtype) - self._shift_y.to(self._dtype)
        if row_groups is None or self.groups == 1:
            self.add(0, xs, ys)
            return
        for g in torch.unique(row_groups).tolist():
            rows = (row_groups == g).nonzero().flatten()
            self.add(g, xs.index_select(0, rows), ys.index_select(0, rows))

    def add(self, g: int, xs: torch.Tensor, ys: torch.Tensor) -> None:
        terms = {"sum_x": xs.sum(0), "sum_y": ys.sum(0), "sxx": xs.T @ xs, "syy": ys.T @ ys, "sxy": xs.T @ ys}
        if self.row_terms:
            rx, ry = xs.pow(2).sum(1), ys.pow(2).sum(1)
            terms.update(rxy=(rx * ry).sum(), rxx=(rx * rx).sum(), ryy=(ry * ry).sum(),
                         p_xy=ry @ xs, q_xy=rx @ ys, p_xx=rx @ xs, p_yy=ry @ ys)
        for name, value in terms.items():
            if name not in self._sums:
                self._sums[name] = torch.zeros((self.groups, *value.shape), dtype=torch.float64, device=value.device)
            self._sums[name][g] += value.to(torch.float64)
        self.group_rows[g] += xs.shape[0]
        self._total = None

    def replicates(self) -> list[int | None]:
        """None (every row) and, with groups, each group left out in turn — the order of the
        jackknife's replicates."""
        return [None] + (list(range(self.groups)) if self.groups > 1 else [])

    def rows_without(self, leave_out: int | None) -> int:
        return self.n_rows - (self.group_rows[leave_out] if leave_out is not None else 0)

    def sums(self, leave_out: int | None = None) -> tuple[dict[str, torch.Tensor], int]:
        """Every sum over the rows outside group ``leave_out`` (None: all rows), and their count."""
        if self.n_rows == 0:
            raise ValueError("no batch was added to the accumulator")
        if self._total is None:  # the replicates all start from the total: summed once
            self._total = {name: value.sum(0) for name, value in self._sums.items()}
        total = self._total
        if leave_out is None:
            return total, self.n_rows
        return ({name: total[name] - value[leave_out] for name, value in self._sums.items()},
                self.n_rows - self.group_rows[leave_out])

    def centred_moments(self, leave_out: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s, m = self.sums(leave_out)
        return centred_from_sums(s, m)

    def column_variances(self) -> tuple[torch.Tensor, torch.Tensor]:
        sxx, syy, _ = self.centred_moments()
        return sxx.diagonal().clamp_min(0), syy.diagonal().clamp_min(0)

    def paired_spectra(self, leave_out: list[int | None] = (None,), cache=None, cache_key: object = None) -> PairedSpectra:
        """The pair of spectra of every replicate in ``leave_out``, batched in that order. With a
        ``cache`` (:class:`engine.similarity.batched.SourceSpectrumCache`), X's decompositions are
        kept under ``cache_key`` and a checksum of X's sums, and reused while those do not change."""
        moments = [self.centred_moments(g) for g in leave_out]
        rows = {self.rows_without(g) for g in leave_out}
        if len(rows) != 1:  # replicates of unequal size cannot share a batch
            raise ValueError("replicates with different row counts must be decomposed one at a time")
        sxx, syy, sxy = (torch.stack(parts) for parts in zip(*moments))
        identical = torch.full((len(leave_out),), self.identical, device=sxx.device)
        key = None
        if cache is not None:
            total, _ = self.sums()
            checksum = (float(total["sxx"].sum()), float(total["sum_x"].sum()), tuple(self.group_rows))
            key = (cache_key, "moments", tuple(leave_out), checksum)
        source = cache.get(key) if key is not None else None
        tolerance = DIRECT_EIGH_ERROR if None in leave_out else REPLICATE_EIGH_ERROR
        pair = pair_from_moments(sxx, syy, sxy, rows.pop(), identical, self._dtype, source=source, tolerance=tolerance)
        if key is not None and source is None:
            cache.put(key, pair.x)
        return pair

    def debiased_cka(self, leave_out: int | None = None) -> float:
        """Debiased linear CKA of the rows outside ``leave_out``, from the streamed sums."""
        if not self.row_terms:
            raise ValueError("debiased CKA needs the accumulator built with row_terms=True")
        s, m = self.sums(leave_out)
        sxx, syy, sxy = centred_from_sums(s, m)
        b = lambda t: t[None]  # noqa: E731  (centred_row_products is batched)
        sx, sy = b(s["sum_x"]), b(s["sum_y"])
        nx, ny = b(s["sxx"].trace()), b(s["syy"].trace())
        r_xy = centred_row_products(b(s["rxy"]), b(s["p_xy"]), b(s["q_xy"]), b(s["sxy"]), sx, sy, nx, ny, m)
        r_xx = centred_row_products(b(s["rxx"]), b(s["p_xx"]), b(s["p_xx"]), b(s["sxx"]), sx, sx, nx, nx, m)
        r_yy = centred_row_products(b(s["ryy"]), b(s["p_yy"]), b(s["p_yy"]), b(s["syy"]), sy, sy, ny, ny, m)
        tx, ty = b(sxx.trace()), b(syy.trace())
        gram_x, gram_y = b(sxx.pow(2).sum()), b(syy.pow(2).sum())
        h_xy = unbiased_hsic(b(sxy.pow(2).sum()), r_xy, tx, ty, m)
        h_xx = unbiased_hsic(gram_x, r_xx, tx, tx, m)
        h_yy = unbiased_hsic(gram_y, r_yy, ty, ty, m)
        similarity = debiased_similarity(h_xy, h_xx, h_yy, gram_x, gram_y)
        if self.identical and not torch.isnan(similarity[0]):
            return 1.0
        return float(similarity[0])


def centred_from_sums(s: dict[str, torch.Tensor], m: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Σ(x−μ)(y−ν)ᵀ = Σ(x−a)(y−b)ᵀ − m (μ−a)(ν−b)ᵀ, and likewise for XᵀX and YᵀY."""
    mx, my = s["sum_x"] / m, s["sum_y"] / m
    return (s["sxx"] - m * torch.outer(mx, mx), s["syy"] - m * torch.outer(my, my),
            s["sxy"] - m * torch.outer(mx, my))


def positions_rows(activations: torch.Tensor) -> torch.Tensor:
    """(n, c, h, w) → (n·h·w, c): every image × spatial position is a sample, channels the features."""
    n, c = activations.shape[:2]
    return activations.permute(0, 2, 3, 1).reshape(-1, c)


def pooled_rows(activations: torch.Tensor) -> torch.Tensor:
    """(n, c, h, w) → (n, c): spatial mean of each channel."""
    return activations.mean((2, 3))
