"""The exact computational core shared by every metric (METRICS.md §2–§3).

Every metric here depends on a pair of centred matrices X (m, p_x) and Y (m, p_y) only through
their second moments. We decompose each side once:

* **dual** (Gram) side: K = X Xᵀ = U diag(λ) Uᵀ, an m×m eigenproblem — cheap when p > m;
* **primal** (moment) side: XᵀX = V diag(λ) Vᵀ, a p×p eigenproblem — cheap when p ≤ m.

The non-zero eigenvalues λ are the same either way. The cross term of the two sides, written in
their eigenbases with unit weights, is

    C = diag(√λ_x) U_xᵀ U_y diag(√λ_y)      (dual: no raw cross product needed)
    C = V_xᵀ (XᵀY) V_y                       (primal; formed in scaled coordinates, below)

and ‖C‖_* = ‖XᵀY‖_*, ‖C‖_F = ‖XᵀY‖_F. Partial whitening only rescales C's rows and columns by
d = α + (1 − α) λ^(−1/2) (METRICS.md §2), so every PWSM α, Procrustes and CKA come from one C.

Null directions (the centring direction, rank deficiency, dead features) carry zero weight. Which
directions are null is decided by what can be told apart from rounding, never by a fixed fraction of
the largest eigenvalue: real activations put dead-ish ReLU channels (variance 1e-12) next to live ones
(variance 1e+2), and a relative cut-off drops those real directions, which full whitening weights as
much as any other (METRICS.md §3; docs/PRECISION.md "Wide column scales").

* **primal**: XᵀX is never decomposed as it stands — its eigenvalues can span more than 1/ε, so the
  small ones are rounding noise. With column scales d = √diag(XᵀX), the correlation matrix
  R = D⁻¹ XᵀX D⁻¹ = Q diag(ρ) Qᵀ is well scaled whatever the columns' units, so its rank is decided
  against ε·k·log₂ m. The factor G = diag(√ρ) Qᵀ D satisfies GᵀG = XᵀX and has the singular values of X
  (ratio √ of the eigenvalues'), so its SVD G = P diag(σ) Tᵀ resolves them; X's left singular
  vectors are X·D⁻¹ Q diag(ρ^(−1/2)) P, and the cross term is computed in scaled coordinates,

      C = diag(σ_x) B_xᵀ (D_x⁻¹ XᵀY D_y⁻¹) B_y diag(σ_y),    B = Q diag(ρ^(−1/2)) P,

  in which no product mixes quantities of different scales. Where a direct eigh of XᵀX already
  resolves every direction X can have (error bound ε·√k·√(λ_max/λ_min) ≤ DIRECT_EIGH_ERROR: the
  well-scaled case), it is used as it stands, with D = I and B = V diag(λ^(−1/2)).
* **dual**: the double-centred Gram is decomposed and eigenvalues below ε·m·log₂ p of the largest are
  rounding noise. Where that leaves fewer live directions than the data can have (min(m − 1, live
  features)) and the data is at hand, that side is decomposed again by an SVD of the data itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from engine.similarity.eigen import symmetric_eigh
from engine.similarity.singular import nuclear_norms, singular_decomposition

# netrep clips eigenvalues of the raw XᵀX at this absolute value (netrep.utils.whiten).
NETREP_EIGVAL_FLOOR = 1e-7
WHITENING_SCALES = ("mean_eig", "netrep")


@dataclass
class SideSpectrum:
    """The singular structure of one side's centred matrix X, batched over a leading dimension b.

    ``eigenvalues`` (b, k) are the eigenvalues σ² of XᵀX (float64), exactly 0 on null directions.
    ``basis`` maps to X's unit left singular vectors: in the dual form it is U itself (b, m, k); in the
    primal form it is B (b, p, k) with U = X D⁻¹ B, and ``scale`` holds the column scales d (b, p).
    ``n_features`` is p, the number of columns of X (the mean eigenvalue of XᵀX is Σλ / p).
    """

    basis: torch.Tensor
    eigenvalues: torch.Tensor
    n_features: int
    form: str  # "dual" or "primal"
    scale: torch.Tensor | None = None
    # (b,) bool, primal form from moments: every direction X can have was resolved to within the
    # tolerance asked (False: dense mixing past what XᵀX holds; engine.similarity.factor is exact there)
    resolved: torch.Tensor | None = None

    @property
    def total_variance(self) -> torch.Tensor:
        return self.eigenvalues.sum(-1)

    @property
    def live_count(self) -> torch.Tensor:
        return (self.eigenvalues > 0).sum(-1)

    def chunk(self, start: int, stop: int) -> "SideSpectrum":
        scale = None if self.scale is None else self.scale[start:stop]
        resolved = None if self.resolved is None else self.resolved[start:stop]
        return SideSpectrum(self.basis[start:stop], self.eigenvalues[start:stop], self.n_features, self.form, scale,
                            resolved)

    def take(self, rows: torch.Tensor, other: "SideSpectrum") -> None:
        """Batch items ``rows`` replaced by ``other``'s (same form and width), in place."""
        self.basis[rows], self.eigenvalues[rows] = other.basis, other.eigenvalues
        if self.scale is not None:
            self.scale[rows] = other.scale
        if self.resolved is not None:
            self.resolved[rows] = True


def structural_rank(n_rows: int, n_features: int) -> int:
    """Largest rank a column-centred (n_rows × n_features) matrix can have."""
    return max(0, min(n_rows - 1, n_features))


def rounding_floor(dtype: torch.dtype, size: int, n_terms: int) -> float:
    """Relative size below which an eigenvalue of a well-scaled k×k matrix of sums of ``n_terms``
    products is indistinguishable from rounding: ε · k · log₂(n_terms). Blocked and pairwise
    summation (BLAS, torch) make an entry's relative error grow like ε·log₂ n, and ‖δ‖₂ ≤ k·max|δᵢⱼ|."""
    return torch.finfo(dtype).eps * size * max(1.0, math.log2(max(2, n_terms)))


def symmetric(moment: torch.Tensor) -> torch.Tensor:
    moment = moment.to(torch.float64)
    return 0.5 * (moment + moment.transpose(-1, -2))


# The direct eigen-decomposition of XᵀX is used where its error bound on the metrics,
# ε·√k·√(λ_max / λ_min), is below this; elsewhere the correlation-scaled route (module docstring).
DIRECT_EIGH_ERROR = 1e-12
# The jackknife's replicates (engine.intervals) enter an interval only through their spread about
# each other, which is orders of magnitude above this; a looser bound keeps them on the direct route
# where samples barely outnumber features (the scaled route costs an extra eigh and SVD).
REPLICATE_EIGH_ERROR = 1e-9


def direct_eigh_bound(eigenvalues: torch.Tensor, live: torch.Tensor, size: int) -> torch.Tensor:
    """ε·√k·√(λ_max/λ_min) over the live eigenvalues: what a direct eigh of a k×k second moment can
    put into the metrics; inf where a live eigenvalue is not positive, 0 where none is live."""
    smallest = torch.where(live, eigenvalues, torch.full_like(eigenvalues, math.inf)).amin(-1)
    largest = torch.where(live, eigenvalues, torch.zeros_like(eigenvalues)).amax(-1)
    ratio = largest / smallest.clamp_min(torch.finfo(eigenvalues.dtype).tiny)
    bound = torch.finfo(torch.float64).eps * math.sqrt(size) * ratio.sqrt()
    return torch.where(smallest > 0, bound, torch.full_like(bound, math.inf))


def decompose_moments(moment: torch.Tensor, n_rows: int, source_dtype: torch.dtype,
                      column_floor: torch.Tensor | None = None, tolerance: float = DIRECT_EIGH_ERROR) -> SideSpectrum:
    """Primal spectrum of centred second moments XᵀX (b, p, p), exact at any column scales.

    A column whose variance is 0 (or at most ``column_floor``, the rounding level of its values)
    is dead: a null direction. Where every direction X can have is resolved by a direct eigh of
    XᵀX to within ``tolerance`` (DIRECT_EIGH_ERROR), that is used (the common, well-scaled case); the
    other items of the batch take the correlation-scaled route.
    """
    moment = symmetric(moment)
    p = moment.shape[-1]
    variance = moment.diagonal(dim1=-2, dim2=-1)
    dead = variance <= (0.0 if column_floor is None else column_floor)
    possible = (~dead).sum(-1).clamp(max=structural_rank(n_rows, p))
    eigenvalues, vectors = symmetric_eigh(moment)  # ascending
    live = torch.arange(p, device=moment.device) >= (p - possible).unsqueeze(-1)
    resolved = direct_eigh_bound(eigenvalues, live, p) <= tolerance
    eigenvalues = torch.where(live, eigenvalues, torch.zeros_like(eigenvalues))
    inverse_root = torch.where(live, eigenvalues, torch.ones_like(eigenvalues)).rsqrt() * live
    side = SideSpectrum(vectors * inverse_root.unsqueeze(-2), eigenvalues, p, "primal", torch.ones_like(variance),
                        resolved.clone())
    again = (~resolved).nonzero().flatten()
    if len(again):
        scaled = decompose_scaled(moment[again], dead[again], n_rows, source_dtype, tolerance)
        side.basis[again], side.eigenvalues[again], side.scale[again], side.resolved[again] = scaled
    return side


def decompose_scaled(moment: torch.Tensor, dead: torch.Tensor, n_rows: int, source_dtype: torch.dtype,
                     tolerance: float = DIRECT_EIGH_ERROR):
    """The correlation-scaled route: (B, σ², d, resolved) with U = X D⁻¹ B (module docstring).
    ``resolved``: the correlation's eigh kept every direction the live columns can have, to within
    ``tolerance`` — what column scales alone spread; dense mixing of the columns spreads the
    correlation itself, past what its eigh can resolve."""
    p = moment.shape[-1]
    variance = moment.diagonal(dim1=-2, dim2=-1)
    scale = torch.where(dead, torch.ones_like(variance), variance.clamp_min(0.0)).sqrt()
    live_col = (~dead).to(moment.dtype)
    correlation = moment / (scale.unsqueeze(-1) * scale.unsqueeze(-2))
    correlation = correlation * live_col.unsqueeze(-1) * live_col.unsqueeze(-2)
    rho, q = symmetric_eigh(correlation)
    n_null = p - structural_rank(n_rows, p)
    rank_limit = torch.arange(p, device=moment.device) >= n_null  # the bottom n_null are structural zeros
    floor = rounding_floor(source_dtype, p, n_rows) * rho[..., -1:].clamp_min(0.0)
    live = rank_limit & (rho > floor)
    rho = torch.where(live, rho, torch.zeros_like(rho))
    factor = rho.sqrt().unsqueeze(-1) * q.transpose(-1, -2) * scale.unsqueeze(-2)  # G, GᵀG = XᵀX
    p_left, sigma = singular_decomposition(factor)
    ranked = torch.arange(p, device=moment.device) < live.sum(-1, keepdim=True)  # σ descending
    inverse_root = torch.where(live, rho, torch.ones_like(rho)).rsqrt() * live
    basis = (q * inverse_root.unsqueeze(-2)) @ p_left
    basis = basis * ranked.unsqueeze(-2) * live_col.unsqueeze(-1)
    possible = (~dead).sum(-1).clamp(max=structural_rank(n_rows, p))
    resolved = (live.sum(-1) == possible) & (direct_eigh_bound(rho, live, p) <= tolerance)
    return basis, torch.where(ranked, sigma * sigma, torch.zeros_like(sigma)), scale, resolved


def decompose_gram(gram: torch.Tensor, n_rows: int, n_features: int, source_dtype: torch.dtype) -> SideSpectrum:
    """Dual spectrum of double-centred Grams XXᵀ (b, m, m).

    The bottom ``m − structural_rank`` eigenpairs are the structural null space (the centring
    direction and the m − p directions a p-column matrix cannot span); they are zeroed outright,
    because in float32 the centring direction otherwise leaks in. Eigenvalues at the rounding level
    of the largest are zeroed too.
    """
    eigenvalues, basis = symmetric_eigh(symmetric(gram))
    m = eigenvalues.shape[-1]
    n_null = m - structural_rank(n_rows, n_features)
    floor = rounding_floor(source_dtype, m, n_features) * eigenvalues[..., -1:].clamp_min(0.0)
    live = (torch.arange(m, device=gram.device) >= n_null) & (eigenvalues > floor)
    return SideSpectrum(basis, torch.where(live, eigenvalues, torch.zeros_like(eigenvalues)), n_features, "dual")


def decompose_data(centred: torch.Tensor) -> SideSpectrum:
    """Dual spectrum from an SVD of the column-centred data X (b, m, p) itself, for sides whose
    Gram cannot resolve their smallest directions (column scales spread beyond 1/√ε)."""
    u, sigma = singular_decomposition(centred.to(torch.float64))
    b, m, p = centred.shape
    k = sigma.shape[-1]
    floor = torch.finfo(torch.float64).eps * max(m, p) * sigma[..., :1]
    live = (sigma > floor) & (torch.arange(k, device=centred.device) < structural_rank(m, p))
    eigenvalues = torch.where(live, sigma * sigma, torch.zeros_like(sigma))
    if k < m:  # p < m: pad to the m directions of the dual form
        u = torch.cat([u, u.new_zeros(b, m, m - k)], -1)
        eigenvalues = torch.cat([eigenvalues, eigenvalues.new_zeros(b, m - k)], -1)
    return SideSpectrum(u, eigenvalues, p, "dual")


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
    """C = diag(σ_x) B_xᵀ (D_x⁻¹ XᵀY D_y⁻¹) B_y diag(σ_y): the same unit-weight cross term, formed in
    scaled coordinates so that it is exact whatever the columns' scales."""
    scaled = cross_moment.to(torch.float64) / (x.scale.unsqueeze(-1) * y.scale.unsqueeze(-2))
    unit = x.basis.transpose(-1, -2) @ scaled @ y.basis
    return x.eigenvalues.sqrt().unsqueeze(-1) * unit * y.eigenvalues.sqrt().unsqueeze(-2)


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
    nuclear = nuclear_norms(dx.unsqueeze(-1) * cross * dy.unsqueeze(-2))
    norm_x = (x.eigenvalues * dx * dx).sum(-1).sqrt()
    norm_y = (y.eigenvalues * dy * dy).sum(-1).sqrt()
    return (nuclear / (norm_x * norm_y)).clamp(-1.0, 1.0)


def cka_similarity(cross: torch.Tensor, x: SideSpectrum, y: SideSpectrum) -> torch.Tensor:
    """Linear CKA = ‖XᵀY‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) = ‖C‖²_F / (‖λ_x‖₂ ‖λ_y‖₂)."""
    numerator = (cross * cross).sum((-1, -2))
    denominator = x.eigenvalues.norm(dim=-1) * y.eigenvalues.norm(dim=-1)
    return (numerator / denominator).clamp(0.0, 1.0)
