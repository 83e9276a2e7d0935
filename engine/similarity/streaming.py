"""Streaming second moments for the `positions` and `pooled` views (METRICS.md §3).

The metrics on these views depend only on c×c matrices (XᵀX, YᵀY, XᵀY after centring), so probe
batches are folded in one at a time: memory is O(c²) whatever n, h and w are.

Centring from raw sums (XᵀX − m μμᵀ) cancels catastrophically when the means are large against
the spread, so the moments are accumulated about a shift (the first batch's column means) and
corrected exactly at the end:  Σ(x−μ)(y−ν)ᵀ = Σ(x−a)(y−b)ᵀ − m (μ−a)(ν−b)ᵀ.
"""

from __future__ import annotations

import torch

from engine.similarity.metrics import PairedSpectra, compute_dtype_for, pair_from_moments


class MomentAccumulator:
    """Float64 moments of paired row batches X (r, c), Y (r, c') added with :meth:`update`."""

    def __init__(self, precision: str | None = None):
        self.precision = precision
        self.n_rows = 0
        self.identical = True
        self._shift_x = self._shift_y = None
        self._sum_x = self._sum_y = None
        self._sxx = self._syy = self._sxy = None
        self._dtype: torch.dtype | None = None

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
            raise ValueError(f"expected paired (rows, features) batches, got {tuple(x.shape)} and {tuple(y.shape)}")
        if self._dtype is None:
            self._dtype = compute_dtype_for(x.device, self.precision)
            self._shift_x = x.to(torch.float64).mean(0)
            self._shift_y = y.to(torch.float64).mean(0)
            self._sum_x = torch.zeros_like(self._shift_x)
            self._sum_y = torch.zeros_like(self._shift_y)
            self._sxx = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=x.device)
            self._syy = torch.zeros(y.shape[1], y.shape[1], dtype=torch.float64, device=x.device)
            self._sxy = torch.zeros(x.shape[1], y.shape[1], dtype=torch.float64, device=x.device)
        self.identical = self.identical and x.shape == y.shape and torch.equal(x, y)
        xs = x.to(self._dtype) - self._shift_x.to(self._dtype)
        ys = y.to(self._dtype) - self._shift_y.to(self._dtype)
        self._sum_x += xs.sum(0, dtype=torch.float64)
        self._sum_y += ys.sum(0, dtype=torch.float64)
        xt = xs.transpose(0, 1)
        self._sxx += (xt @ xs).to(torch.float64)
        self._syy += (ys.transpose(0, 1) @ ys).to(torch.float64)
        self._sxy += (xt @ ys).to(torch.float64)
        self.n_rows += x.shape[0]

    def centred_moments(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.n_rows == 0:
            raise ValueError("no batch was added to the accumulator")
        mx = self._sum_x / self.n_rows
        my = self._sum_y / self.n_rows
        m = self.n_rows
        return (self._sxx - m * torch.outer(mx, mx), self._syy - m * torch.outer(my, my),
                self._sxy - m * torch.outer(mx, my))

    def column_variances(self) -> tuple[torch.Tensor, torch.Tensor]:
        sxx, syy, _ = self.centred_moments()
        return sxx.diagonal().clamp_min(0), syy.diagonal().clamp_min(0)

    def paired_spectra(self) -> PairedSpectra:
        sxx, syy, sxy = self.centred_moments()
        identical = torch.tensor([self.identical], device=sxx.device)
        return pair_from_moments(sxx[None], syy[None], sxy[None], self.n_rows, identical, self._dtype)


def positions_rows(activations: torch.Tensor) -> torch.Tensor:
    """(n, c, h, w) → (n·h·w, c): every image × spatial position is a sample, channels the features."""
    n, c = activations.shape[:2]
    return activations.permute(0, 2, 3, 1).reshape(-1, c)


def pooled_rows(activations: torch.Tensor) -> torch.Tensor:
    """(n, c, h, w) → (n, c): spatial mean of each channel."""
    return activations.mean((2, 3))
