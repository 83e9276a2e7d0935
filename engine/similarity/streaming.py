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
from engine.similarity.factor import FactorAccumulator, factor_sides
from engine.similarity.spectral import DIRECT_EIGH_ERROR, REPLICATE_EIGH_ERROR
from engine.similarity.metrics import PairedSpectra, compute_dtype_for, pair_from_moments


class MomentAccumulator:
    """Float64 moments of paired row batches X (r, c), Y (r, c') added with :meth:`update`.

    With ``groups`` G > 1 every row belongs to one of G groups (all the rows of one probe image to
    the same group) and the sums are also kept per group, so the moments with one group left out —
    the jackknife's replicates (:mod:`engine.intervals`) — are the total less that group's sums: one
    pass, exact in float64. ``group_dtype`` float32 halves the per-group memory of wide layers; the
    total stays float64, so the value itself is unchanged and only the replicates carry the group
    sums' float32 rounding (measured by benchmarks/bench_intervals.py). ``row_terms`` adds the per-row
    norm sums debiased CKA needs (:func:`engine.similarity.debiased.centred_row_products`), which add
    over rows the same way.

    Sharded over processes (:mod:`engine.distributed`), every process adds its own rows about one
    shared shift (rank 0's first batch's means, given to the others by ``processes.broadcast``), so
    that the sums add: :meth:`reduce` adds them over the processes in float64.
    """

    def __init__(self, precision: str | None = None, groups: int = 1, row_terms: bool = False,
                 group_dtype: torch.dtype = torch.float64, processes=None, factor: bool = False):
        self.processes = processes  # engine.distributed.Processes, when rows are sharded over processes
        # whitened measures: the exact value comes from a triangular factor of the rows (engine.similarity.factor)
        self.factor = FactorAccumulator() if factor else None
        self.precision = precision
        self.groups = groups
        self.row_terms = row_terms
        self.group_dtype = group_dtype
        self.group_rows = [0] * groups
        self.identical = True
        self._shift_x = self._shift_y = None
        self._total: dict[str, torch.Tensor] = {}  # name → float64 sums about the shift, every row
        self._groups: dict[str, torch.Tensor] = {}  # name → (G, …) the same sums per group (G > 1)
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
            if self.processes is not None:  # one shift for every process's rows: their sums then add
                self.processes.broadcast(self._shift_x)
                self.processes.broadcast(self._shift_y)
        self.identical = self.identical and x.shape == y.shape and torch.equal(x, y)
        # slices of rows keep the shifted copies small whatever the batch (a wide layer's positions)
        step = max(1, ROW_SLICE_BYTES // (8 * max(x.shape[1], y.shape[1], 1)))
        for start in range(0, x.shape[0], step):
            xs = x[start:start + step].to(self._dtype) - self._shift_x.to(self._dtype)
            ys = y[start:start + step].to(self._dtype) - self._shift_y.to(self._dtype)
            if self.factor is not None:  # float64 rows whatever the moments' precision: the factor is the exact route
                exact = self._dtype == torch.float64
                self.factor.add(xs if exact else x[start:start + step].to(torch.float64) - self._shift_x,
                                ys if exact else y[start:start + step].to(torch.float64) - self._shift_y)
            if row_groups is None or self.groups == 1:
                self.add(0, xs, ys)
                continue
            part = row_groups[start:start + step]
            for g in torch.unique(part).tolist():
                rows = (part == g).nonzero().flatten()
                self.add(g, xs.index_select(0, rows), ys.index_select(0, rows))

    def add(self, g: int, xs: torch.Tensor, ys: torch.Tensor) -> None:
        terms = {"sum_x": xs.sum(0), "sum_y": ys.sum(0), "sxx": xs.T @ xs, "syy": ys.T @ ys, "sxy": xs.T @ ys}
        if self.row_terms:
            rx, ry = xs.pow(2).sum(1), ys.pow(2).sum(1)
            terms.update(rxy=(rx * ry).sum(), rxx=(rx * rx).sum(), ryy=(ry * ry).sum(),
                         p_xy=ry @ xs, q_xy=rx @ ys, p_xx=rx @ xs, p_yy=ry @ ys)
        for name, value in terms.items():
            value = value.to(torch.float64)
            if name not in self._total:
                self._total[name] = torch.zeros_like(value)
                if self.groups > 1:
                    self._groups[name] = torch.zeros((self.groups, *value.shape), dtype=self.group_dtype,
                                                     device=value.device)
            self._total[name] += value
            if self.groups > 1:
                self._groups[name][g] += value.to(self.group_dtype)
        self.group_rows[g] += xs.shape[0]

    def reduce(self) -> None:
        """Every process's sums and row counts added over the processes in float64 (all hold them after)."""
        processes = self.processes
        if self.factor is not None:
            self.factor.reduce(processes)
        for name in sorted(self._total):
            processes.sum(self._total[name])
        for name in sorted(self._groups):  # a group at a time: wide layers keep float32 group sums
            for g in range(self.groups):
                processes.sum_float64(self._groups[name][g])
        counts = torch.tensor([*self.group_rows, int(not self.identical)], dtype=torch.float64,
                              device=processes.device())
        processes.sum(counts)
        self.group_rows = [int(v) for v in counts[:-1].tolist()]
        self.identical = counts[-1].item() == 0

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
        if leave_out is None:
            return self._total, self.n_rows
        return ({name: total - self._groups[name][leave_out].to(torch.float64) for name, total in self._total.items()},
                self.n_rows - self.group_rows[leave_out])

    def centred_moments(self, leave_out: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s, m = self.sums(leave_out)
        # a replicate's sums are fresh tensors: centred in place (a 2048-channel layer's three are 96 MiB)
        return centred_from_sums(s, m, in_place=leave_out is not None)

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
        sxx, syy, sxy = (parts[0][None] if len(parts) == 1 else torch.stack(parts) for parts in zip(*moments))
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

    def factor_spectra(self) -> PairedSpectra:
        """The pair of spectra of every row from the triangular factor: exact whitening however
        the channels are mixed (engine.similarity.factor); needs the accumulator built with ``factor``."""
        r = self.factor.centred_factor()
        x_features = self._shift_x.shape[0]
        x, y, cross = factor_sides(r[None], x_features, self.n_rows)
        return PairedSpectra(x, y, cross, self.n_rows, torch.tensor([self.identical], device=r.device))

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


# The largest shifted copy of a batch's rows update() makes at once.
ROW_SLICE_BYTES = 16 * 2**20


def centred_from_sums(s: dict[str, torch.Tensor], m: int,
                      in_place: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Σ(x−μ)(y−ν)ᵀ = Σ(x−a)(y−b)ᵀ − m (μ−a)(ν−b)ᵀ, and likewise for XᵀX and YᵀY (``in_place``:
    overwriting the sums in ``s``)."""
    mx, my = s["sum_x"] / m, s["sum_y"] / m
    centre = (lambda t, u, v: t.sub_(m * torch.outer(u, v))) if in_place else \
        (lambda t, u, v: t - m * torch.outer(u, v))
    return centre(s["sxx"], mx, mx), centre(s["syy"], my, my), centre(s["sxy"], mx, my)


def positions_rows(activations: torch.Tensor) -> torch.Tensor:
    """(n, c, h, w) → (n·h·w, c): every image × spatial position is a sample, channels the features."""
    n, c = activations.shape[:2]
    return activations.permute(0, 2, 3, 1).reshape(-1, c)


def pooled_rows(activations: torch.Tensor) -> torch.Tensor:
    """(n, c, h, w) → (n, c): spatial mean of each channel."""
    return activations.mean((2, 3))
