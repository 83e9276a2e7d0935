"""Exact whitening from a triangular factor of the data (METRICS.md §3; docs/PRECISION.md "Dense mixing").

Whitening needs each side's small singular values, and second moments cannot hold them: XᵀX has the
*square* of X's condition, so once channels are nearly linear combinations of each other (condition
κ past ~1e8: redundant filters, wide layers at modest probe sizes) every digit below ε·σ_max² is lost
and the rank decision drops real directions. The scaled route of :mod:`engine.similarity.spectral`
removes *column scales*, not dense mixing. A QR factorisation of the data keeps them: it is
backward stable, R is the exact factor of data within c·ε·‖X‖, and its singular values are X's to
within that — error ε·κ, not ε·κ².

The factor is of the joint centred data [X Y] = Q R,

    R = [ R₁₁  R₁₂ ]      X = Q₁ R₁₁,   Y = Q₁ R₁₂ + Q₂ R₂₂,   Q = [Q₁ Q₂] orthonormal,
        [  0   R₂₂ ]

so with R₁₁ = P_x Σ_x T_xᵀ and [R₁₂; R₂₂] = P_y Σ_y T_yᵀ, X's left singular vectors are Q₁P_x and Y's
are Q P_y, and the unit-weight cross term every measure uses (spectral.py) is

    C = Σ_x P_xᵀ [I 0] P_y Σ_y,

formed from orthonormal factors alone: no product of quantities of different sizes. Centring is exact
and streams: the factor of [1 | X | Y] (a column of ones first) holds √m and √m·μᵀ in its first row
and the factor of the centred data in the rest, so rows are folded in batch by batch — a QR of the
factor so far stacked on the new rows — and never held together.

Which directions are numerically null is decided against the factor's own accuracy: a singular value
at most ε·max(m, p)·σ_max is indistinguishable from the backward error of the QR (the data, float32
activations taken exactly to float64, carry no error of their own), and a centred matrix has rank at
most m − 1.
"""

from __future__ import annotations

import torch

from engine.similarity.singular import singular_decomposition
from engine.similarity.spectral import SideSpectrum, structural_rank

# Rows gathered before they are folded into the factor: a QR of [R; rows] costs O((p + r)·p²), so
# folding at least p rows at a time keeps the p³ part to one per p rows.
FOLD_ROWS_PER_FEATURE = 1


def triangular_factor(rows: torch.Tensor) -> torch.Tensor:
    """R of a QR of ``rows`` (…, r, p) in float64, (…, min(r, p), p) upper triangular."""
    return torch.linalg.qr(rows.to(torch.float64), mode="r").R


def with_ones(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[1 | X | Y] in float64, rows (…, r, 1 + p_x + p_y)."""
    ones = torch.ones(*x.shape[:-1], 1, dtype=torch.float64, device=x.device)
    return torch.cat([ones, x.to(torch.float64), y.to(torch.float64)], -1)


def centred_part(factor: torch.Tensor) -> torch.Tensor:
    """The factor of the centred [X Y] from that of [1 | X | Y]: without its first row and column."""
    return factor[..., 1:, 1:]


def centred_factor_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """R of the centred [X Y] for a batch X (b, m, p_x), Y (b, m, p_y) held at once. The columns'
    means are taken off first (the column of ones then centres exactly what is left): a column that
    is constant at c would otherwise leave a residue of ε·c·√m, far above the rank decision's floor
    where the other columns are small."""
    x, y = x.to(torch.float64), y.to(torch.float64)
    return centred_part(triangular_factor(with_ones(x - x.mean(-2, keepdim=True), y - y.mean(-2, keepdim=True))))


class FactorAccumulator:
    """The triangular factor of [1 | X | Y] over rows added batch by batch (see the module docstring).

    Rows are the shifted ones a :class:`engine.similarity.streaming.MomentAccumulator` forms; the
    column of ones makes the shift irrelevant to the centred factor. Sharded over processes, every
    process folds its own rows and :meth:`reduce` stacks the factors on rank 0 and folds them once."""

    def __init__(self):
        self.factor: torch.Tensor | None = None
        self.pending: list[torch.Tensor] = []
        self.pending_rows = 0

    def add(self, xs: torch.Tensor, ys: torch.Tensor) -> None:
        self.pending.append(with_ones(xs, ys))
        self.pending_rows += xs.shape[0]
        if self.pending_rows >= FOLD_ROWS_PER_FEATURE * self.pending[0].shape[1]:
            self.fold()

    def fold(self) -> None:
        if not self.pending:
            return
        stacked = torch.cat(([self.factor] if self.factor is not None else []) + self.pending)
        self.factor = triangular_factor(stacked)
        self.pending, self.pending_rows = [], 0

    def reduce(self, processes) -> None:
        """Every process's factor on rank 0, folded into one (the others keep theirs, unused)."""
        self.fold()
        shares = processes.gather_objects(self.factor.cpu() if self.factor is not None else None)
        if shares is not None:
            found = [s for s in shares if s is not None]
            device = self.factor.device if self.factor is not None else torch.device("cpu")
            self.factor = triangular_factor(torch.cat(found).to(device)) if found else None

    def centred_factor(self) -> torch.Tensor:
        """R of the centred [X Y] over every row added."""
        self.fold()
        if self.factor is None:
            raise ValueError("no rows were added to the factor")
        return centred_part(self.factor)


def factor_sides(r: torch.Tensor, x_features: int, n_rows: int) -> tuple[SideSpectrum, SideSpectrum, torch.Tensor]:
    """Both sides' primal spectra and the unit-weight cross term C from R (b, k, p) of the centred
    [X Y] = Q R (module docstring; R₁₁ and [R₁₂; R₂₂] are R's first x_features columns and the rest).
    The bases are X's and Y's right singular vectors over σ (U = X·B), as the primal form of
    spectral.SideSpectrum has them, with unit column scales."""
    p_x, sigma_x, t_x = singular_parts(r[..., :x_features])
    p_y, sigma_y, t_y = singular_parts(r[..., x_features:])
    sigma_x = live_singular_values(sigma_x, n_rows, r.shape[-1], x_features)
    sigma_y = live_singular_values(sigma_y, n_rows, r.shape[-1], r.shape[-1] - x_features)
    cross = sigma_x.unsqueeze(-1) * (p_x.transpose(-1, -2) @ p_y) * sigma_y.unsqueeze(-2)
    y_features = r.shape[-1] - x_features
    cross = torch.nn.functional.pad(cross, (0, y_features - cross.shape[-1], 0, x_features - cross.shape[-2]))
    return side_from(t_x, sigma_x, x_features), side_from(t_y, sigma_y, y_features), cross


def singular_parts(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """a = P diag(σ) Tᵀ with σ descending: (P, σ, T), always on the CPU (torch's CUDA SVD loses relative
    accuracy on graded matrices, and the factor's batch is often a single matrix, which
    :func:`engine.similarity.singular.singular_decomposition` would leave on the GPU)."""
    return tuple(part.to(a.device) for part in singular_decomposition(a.cpu(), right=True))


def live_singular_values(sigma: torch.Tensor, n_rows: int, width: int, features: int) -> torch.Tensor:
    """σ with the numerically null ones (≤ ε·max(m, p)·σ_max, or past the structural rank m − 1) set to 0."""
    floor = torch.finfo(torch.float64).eps * max(n_rows, width) * sigma[..., :1]
    rank = torch.arange(sigma.shape[-1], device=sigma.device) < structural_rank(n_rows, features)
    return torch.where((sigma > floor) & rank, sigma, torch.zeros_like(sigma))


def side_from(t: torch.Tensor, sigma: torch.Tensor, features: int) -> SideSpectrum:
    """The primal spectrum (basis T diag(1/σ), eigenvalues σ²) padded to ``features`` directions."""
    missing = features - sigma.shape[-1]
    if missing > 0:  # fewer rows than features: the rest are null directions
        t = torch.cat([t, t.new_zeros(*t.shape[:-1], missing)], -1)
        sigma = torch.cat([sigma, sigma.new_zeros(*sigma.shape[:-1], missing)], -1)
    live = sigma > 0
    inverse = torch.where(live, sigma, torch.ones_like(sigma)).reciprocal() * live
    return SideSpectrum(t * inverse.unsqueeze(-2), sigma * sigma, features, "primal",
                        torch.ones(*t.shape[:-2], features, dtype=t.dtype, device=t.device))


__all__ = ["FactorAccumulator", "centred_factor_of", "factor_sides", "triangular_factor"]
