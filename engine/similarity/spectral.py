"""The exact computational core shared by every metric (METRICS.md §2–§3).

Every metric here depends on a pair of centred matrices X (m, p_x) and Y (m, p_y) only through
their second moments. We decompose each side once:

* **dual** (Gram) side: K = X Xᵀ = U diag(λ) Uᵀ, an m×m eigenproblem — cheap when p > m;
* **primal** (moment) side: XᵀX = V diag(λ) Vᵀ, a p×p eigenproblem — cheap when p ≤ m.

The non-zero eigenvalues λ are the same either way. The cross term of the two sides, written in
their eigenbases with unit weights, is

    C = diag(√λ_x) U_xᵀ U_y diag(√λ_y)      (dual: no raw cross product needed)
    C = V_xᵀ (XᵀY) V_y                       (primal)

and ‖C‖_* = ‖XᵀY‖_*, ‖C‖_F = ‖XᵀY‖_F. Partial whitening only rescales C's rows and columns by
d = α + (1 − α) λ^(−1/2) (METRICS.md §2), so every PWSM α, Procrustes and CKA come from one C.

Null directions (the centring direction, rank deficiency, dead features) carry zero weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Eigenvalues below this fraction of the largest are numerical zeros (METRICS.md §3).
RELATIVE_EIGEN_TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-6}
# netrep clips eigenvalues of the raw XᵀX at this absolute value (netrep.utils.whiten).
NETREP_EIGVAL_FLOOR = 1e-7
WHITENING_SCALES = ("mean_eig", "netrep")


@dataclass
class SideSpectrum:
    """Eigen-decomposition of one side's second moments, batched over a leading dimension b.

    ``basis`` is U (b, m, k) for the dual form or V (b, p, k) for the primal form; ``eigenvalues``
    (b, k) are float64, ascending, with null directions set to exactly 0. ``n_features`` is p, the
    number of columns of the representation matrix (the mean eigenvalue of XᵀX is Σλ / p).
    """

    basis: torch.Tensor
    eigenvalues: torch.Tensor
    n_features: int
    form: str  # "dual" or "primal"

    @property
    def total_variance(self) -> torch.Tensor:
        return self.eigenvalues.sum(-1)

    def chunk(self, start: int, stop: int) -> "SideSpectrum":
        return SideSpectrum(self.basis[start:stop], self.eigenvalues[start:stop], self.n_features, self.form)


def structural_rank(n_rows: int, n_features: int) -> int:
    """Largest rank a column-centred (n_rows × n_features) matrix can have."""
    return max(0, min(n_rows - 1, n_features))


def decompose(moment: torch.Tensor, n_rows: int, n_features: int, form: str,
              source_dtype: torch.dtype) -> SideSpectrum:
    """Eigen-decompose a batch of symmetric PSD second-moment matrices (b, k, k) in float64.

    The bottom ``k − structural_rank`` eigenpairs are the structural null space (the centring
    direction and, in the dual form, the m − p directions a p-column matrix cannot span); they are
    zeroed outright, because in float32 the centring direction otherwise leaks in (METRICS.md §3).
    Remaining eigenvalues below a relative tolerance are numerical zeros and are zeroed too.
    """
    moment = moment.to(torch.float64)
    moment = 0.5 * (moment + moment.transpose(-1, -2))
    eigenvalues, basis = torch.linalg.eigh(moment)
    k = eigenvalues.shape[-1]
    n_null = k - structural_rank(n_rows, n_features)
    eigenvalues = eigenvalues.clamp_min(0.0)
    if n_null > 0:
        eigenvalues[..., :n_null] = 0.0
    largest = eigenvalues[..., -1:]
    tolerance = RELATIVE_EIGEN_TOLERANCE.get(source_dtype, 1e-10)
    eigenvalues = torch.where(eigenvalues > tolerance * largest, eigenvalues, torch.zeros_like(eigenvalues))
    return SideSpectrum(basis, eigenvalues, n_features, form)


def double_centre(gram: torch.Tensor) -> torch.Tensor:
    """H K H with H = I − 11ᵀ/m, done in float64 so the ones vector is an exact null direction."""
    gram = gram.to(torch.float64)
    return (gram - gram.mean(-1, keepdim=True) - gram.mean(-2, keepdim=True)
            + gram.mean((-1, -2), keepdim=True))


def dual_cross(x: SideSpectrum, y: SideSpectrum) -> torch.Tensor:
    """C = diag(√λ_x) U_xᵀ U_y diag(√λ_y): the unit-weight cross term from the two Grams alone."""
    return (x.eigenvalues.sqrt().unsqueeze(-1) * (x.basis.transpose(-1, -2) @ y.basis)
            * y.eigenvalues.sqrt().unsqueeze(-2))


def primal_cross(x: SideSpectrum, y: SideSpectrum, cross_moment: torch.Tensor) -> torch.Tensor:
    """C = V_xᵀ (XᵀY) V_y, with rows/columns of null directions zeroed."""
    c = x.basis.transpose(-1, -2) @ cross_moment.to(torch.float64) @ y.basis
    return c * (x.eigenvalues > 0).unsqueeze(-1) * (y.eigenvalues > 0).unsqueeze(-2)


def whitening_diagonal(side: SideSpectrum, alpha: float, whitening_scale: str) -> torch.Tensor:
    """d = α + (1 − α) λ̃^(−1/2) per eigen-direction, 0 on null directions.

    ``mean_eig`` (ftdyn): λ̃ = λ / s with s = Σλ / p, the mean eigenvalue of XᵀX, so α means the same
    whatever the activations' scale or the number of rows. ``netrep``: λ̃ = max(λ, 1e−7) on the raw
    moments, exactly as netrep's ``whiten`` (its variance-preserving rescale cannot change an angle).
    """
    lam = side.eigenvalues
    live = lam > 0
    if alpha >= 1.0:
        return live.to(lam.dtype)
    if whitening_scale == "mean_eig":
        scale = (side.total_variance / side.n_features).unsqueeze(-1)
        normalised = lam / torch.where(scale > 0, scale, torch.ones_like(scale))
    elif whitening_scale == "netrep":
        normalised = lam.clamp_min(NETREP_EIGVAL_FLOOR)
    else:
        raise ValueError(f"unknown whitening_scale {whitening_scale!r}; use one of {WHITENING_SCALES}")
    d = alpha + (1.0 - alpha) * normalised.clamp_min(torch.finfo(lam.dtype).tiny).rsqrt()
    return torch.where(live, d, torch.zeros_like(d))


def whitened_cosine(cross: torch.Tensor, x: SideSpectrum, y: SideSpectrum, alpha: float,
                    whitening_scale: str) -> torch.Tensor:
    """cos θ_α = ‖φ_α(X)ᵀ φ_α(Y)‖_* / (‖φ_α(X)‖_F ‖φ_α(Y)‖_F), from the unit-weight cross term.

    ‖φ(X)‖²_F = Σ λ d²; the nuclear norm is that of diag(d_x) C diag(d_y).
    """
    dx = whitening_diagonal(x, alpha, whitening_scale)
    dy = whitening_diagonal(y, alpha, whitening_scale)
    nuclear = torch.linalg.svdvals(dx.unsqueeze(-1) * cross * dy.unsqueeze(-2)).sum(-1)
    norm_x = (x.eigenvalues * dx * dx).sum(-1).sqrt()
    norm_y = (y.eigenvalues * dy * dy).sum(-1).sqrt()
    return (nuclear / (norm_x * norm_y)).clamp(-1.0, 1.0)


def cka_similarity(cross: torch.Tensor, x: SideSpectrum, y: SideSpectrum) -> torch.Tensor:
    """Linear CKA = ‖XᵀY‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) = ‖C‖²_F / (‖λ_x‖₂ ‖λ_y‖₂)."""
    numerator = (cross * cross).sum((-1, -2))
    denominator = x.eigenvalues.norm(dim=-1) * y.eigenvalues.norm(dim=-1)
    return (numerator / denominator).clamp(0.0, 1.0)
