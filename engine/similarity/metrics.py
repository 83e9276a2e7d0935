"""Feature-distance metrics between two representation matrices (METRICS.md §2).

All three are distances: 0 for identical representations (up to rotation), larger when further
apart. Inputs are X (m, p) and Y (m, p') with the same m rows (samples), as numpy arrays or torch
tensors; a leading batch dimension (b, m, p) gives a length-b tensor. Columns are centred first.

* PWSM, angular (Williams et al. 2021):
      S = XᵀX / s_X,  s_X = ‖X‖²_F / p (mean eigenvalue),  φ_α(X) = X (α I + (1 − α) S^(−1/2))
      θ_α = arccos( ‖φ_α(X)ᵀ φ_α(Y)‖_* / (‖φ_α(X)‖_F ‖φ_α(Y)‖_F) )          ∈ [0, π/2]
  ``whitening_scale="netrep"`` whitens with the raw XᵀX as netrep's LinearMetric does.
* Orthogonal Procrustes (Ding et al. 2021), squared:  X, Y centred and scaled to unit Frobenius norm,
      d_OP = 2 − 2 ‖XᵀY‖_*                                                     ∈ [0, 2]
* Linear CKA (Kornblith et al. 2019) as a distance:
      d_CKA = 1 − ‖XᵀY‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F)                                 ∈ [0, 1]

A side whose centred matrix is zero (a dead or constant feature set) has no representation: its
distance is NaN here and the layer-level code excludes and counts it (METRICS.md §4).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

from engine.similarity.debiased import debiased_from_centred
from engine.similarity.factor import centred_factor_of, factor_sides
from engine.similarity.singular import nuclear_norms
from engine.similarity.spectral import (
    DIRECT_EIGH_ERROR,
    WHITENING_SCALES,
    SideSpectrum,
    cka_similarity,
    decompose_data,
    decompose_gram,
    decompose_moments,
    direct_eigh_bound,
    double_centre,
    dual_cross,
    primal_cross,
    structural_rank,
    whitened_cosine,
)

METRIC_NAMES = ("pwsm", "procrustes", "cka", "cka-debiased")
DEFAULT_ALPHA = 0.5
# Below this α, in the degenerate regime, PWSM values are squeezed towards 0 (METRICS.md §2).
SMALL_ALPHA = 0.05


class DegenerateWhiteningError(ValueError):
    """Full whitening (α = 0) of a matrix with full row rank makes every pair identical."""


class DegenerateWhiteningWarning(UserWarning):
    """Small α in the degenerate regime compresses every PWSM value towards 0."""


@dataclass(frozen=True)
class Metric:
    """One metric with its parameter: PWSM carries α, the others none."""

    name: str
    alpha: float | None = None

    @property
    def label(self) -> str:
        return f"pwsm:{self.alpha:g}" if self.name == "pwsm" else self.name


def parse_metric(text: str, default_alpha: float = DEFAULT_ALPHA) -> Metric:
    """'pwsm' → PWSM at ``default_alpha``; 'pwsm:0' → PWSM at α = 0; 'procrustes'; 'cka'; 'cka-debiased'."""
    name, _, param = text.strip().lower().partition(":")
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric {text!r}; choose from {', '.join(METRIC_NAMES)} (e.g. pwsm:0.5)")
    if name != "pwsm":
        if param:
            raise ValueError(f"metric {name!r} takes no parameter (got {text!r})")
        return Metric(name)
    try:
        alpha = float(param) if param else float(default_alpha)
    except ValueError:
        raise ValueError(f"PWSM α must be a number in [0, 1], got {param!r} in {text!r}") from None
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"PWSM α must lie in [0, 1], got {alpha:g}")
    return Metric("pwsm", alpha)


def parse_metrics(items: Iterable[str | Metric], default_alpha: float = DEFAULT_ALPHA) -> tuple[Metric, ...]:
    metrics = tuple(m if isinstance(m, Metric) else parse_metric(m, default_alpha) for m in items)
    if not metrics:
        raise ValueError("no metric requested; choose from " + ", ".join(METRIC_NAMES))
    return tuple(dict.fromkeys(metrics))


def check_whitening(alpha: float, n_rows: int, n_features: int, where: str = "") -> None:
    """Refuse α = 0 when the centred matrix can have full row rank (n_rows − 1 ≤ n_features).

    There, full whitening maps every representation onto the same subspace: θ = 0 for any pair,
    even independent noise. Small α is allowed but flagged.
    """
    if n_rows - 1 > n_features:
        return
    context = f" ({where})" if where else ""
    other_view = "" if "positions" in where else "the 'positions' view, "
    if alpha == 0.0:
        raise DegenerateWhiteningError(
            f"PWSM with alpha=0 is meaningless here{context}: {n_rows} samples and {n_features} features "
            f"(samples − 1 ≤ features), so full whitening makes every pair identical (distance 0). "
            f"Use more probe images (> {n_features + 1} samples), {other_view}or alpha > 0 (e.g. 0.5)."
        )
    if alpha < SMALL_ALPHA:
        warnings.warn(
            f"PWSM alpha={alpha:g} with {n_rows} samples ≤ {n_features} features + 1{context}: near-full "
            f"whitening compresses every distance towards 0; prefer alpha ≥ {SMALL_ALPHA} or more samples.",
            DegenerateWhiteningWarning,
            stacklevel=3,
        )


# --------------------------------------------------------------------------------------------
# Pairs of spectra: the shared intermediate of every metric.


@dataclass
class PairedSpectra:
    """Both sides' spectra, their unit-weight cross term C, and bookkeeping, batched over b."""

    x: SideSpectrum
    y: SideSpectrum
    cross: torch.Tensor
    n_rows: int
    identical: torch.Tensor  # (b,) bool: the two inputs were bitwise equal → distance exactly 0

    @property
    def live(self) -> torch.Tensor:
        """(b,) bool: both centred matrices are non-zero, so every metric is defined."""
        return (self.x.total_variance > 0) & (self.y.total_variance > 0)


# The precision of moments and Grams when none is asked for, on every device. float32 moments
# (with float64 decompositions) are an opt-in: measured by benchmarks/float32_error.py, they stay
# within FLOAT32_WELL_CONDITIONED_BOUND of float64 only on well-conditioned data, and reach
# 4e-2 rad with channel scales spread over 1e±4 (docs/PRECISION.md). Products of float32
# activations are exact in float64, so the default loses nothing to the activations' precision.
DEFAULT_PRECISION = "float64"
# Measured worst |float32 − float64| on well-conditioned data (ReLU activations, channel scales
# within a factor 10, samples well above features): 3.5e-7 idle, 1.07e-6 on a loaded machine;
# the bound keeps a margin of 10 over the worst seen.
FLOAT32_WELL_CONDITIONED_BOUND = 1e-5
# The worst |value − exact| measured for each precision, recorded with every run (docs/PRECISION.md):
# float64 against 50-digit arithmetic over column spreads up to 1e±8, primal and dual
# (benchmarks/column_spread.py), away from the near-identical floor (|Δθ| ≈ 4e-9 at θ ≈ 1e-7);
# float32 against float64 over the adversarial cases of benchmarks/float32_error.py.
MEASURED_WORST_ERROR = {"float64": 4.4e-12, "float32": 4.4e-2}


def compute_dtype_for(device: torch.device, precision: str | None) -> torch.dtype:
    """The dtype moments and Grams are built in: float64 unless float32 is asked for (any device)."""
    if precision is None:
        precision = DEFAULT_PRECISION
    if precision not in ("float64", "float32"):
        raise ValueError(f"precision must be 'float64' or 'float32', got {precision!r}")
    return torch.float64 if precision == "float64" else torch.float32


def as_tensor(a, device: torch.device | str | None = None) -> torch.Tensor:
    t = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.asarray(a))
    if not t.is_floating_point():
        t = t.to(torch.float64)
    return t.to(device) if device is not None else t


def choose_form(n_rows: int, n_features_x: int, n_features_y: int) -> str:
    """Dual (m×m Grams) when the feature side is larger, primal (p×p moments) otherwise."""
    return "dual" if max(n_features_x, n_features_y) > n_rows else "primal"


def spectrum_from_gram(gram: torch.Tensor, n_rows: int, n_features: int, source_dtype: torch.dtype) -> SideSpectrum:
    return decompose_gram(double_centre(gram), n_rows, n_features, source_dtype)


def pair_from_moments(sxx: torch.Tensor, syy: torch.Tensor, sxy: torch.Tensor, n_rows: int,
                      identical: torch.Tensor, source_dtype: torch.dtype = torch.float64,
                      column_floors: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None),
                      source: SideSpectrum | None = None, tolerance: float = DIRECT_EIGH_ERROR) -> PairedSpectra:
    """Primal pair from centred second moments (b, p, p) — the streaming views end here.

    ``column_floors`` are per-column variances at or below which a column is rounding noise of a
    constant (None: only an exactly zero variance is). ``source``, when given, is the decomposition
    of ``sxx`` from an earlier call (the source model's moments do not change between epochs).
    ``tolerance``: the direct eigh's error bound accepted (:func:`decompose_moments`)."""
    x = source if source is not None else decompose_moments(sxx, n_rows, source_dtype, column_floors[0], tolerance)
    y = decompose_moments(syy, n_rows, source_dtype, column_floors[1], tolerance)
    return PairedSpectra(x, y, primal_cross(x, y, sxy), n_rows, identical)


def bitwise_equal(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if x.shape != y.shape:
        return torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    return (x == y).flatten(1).all(1)


def centred(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The batch X (b, m, p) in ``dtype`` with each column's mean over the m rows removed."""
    x = x.to(dtype)
    return x - x.mean(1, keepdim=True)


def constant_column_floor(raw: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(b, p) variance a constant column of ``raw`` (b, m, p) can show after centring in ``dtype``:
    m residuals of a few ε times the column's magnitude each."""
    m = raw.shape[1]
    return m * (4 * torch.finfo(dtype).eps * raw.abs().amax(1).to(torch.float64)) ** 2


def dual_spectrum(centred: torch.Tensor, raw: torch.Tensor, dtype: torch.dtype) -> SideSpectrum:
    """One side's dual spectrum from its Gram, resolved by :func:`resolve_dual`."""
    b, m, p = centred.shape
    side = spectrum_from_gram(centred @ centred.transpose(1, 2), m, p, dtype)
    live_columns = lambda rows: (centred[rows].to(torch.float64).pow(2).sum(1)  # noqa: E731
                                 > constant_column_floor(raw[rows], dtype)).sum(-1)
    return resolve_dual(side, m, p, live_columns, lambda rows: centred[rows])


def resolve_dual(side: SideSpectrum, m: int, p: int, live_columns, data) -> SideSpectrum:
    """Sides whose Gram cannot resolve every direction the data can have — fewer live eigenvalues
    than min(m − 1, live features), or an accuracy bound ε·√m·√(λ_max/λ_min) above
    DIRECT_EIGH_ERROR (column scales spread beyond about 1e±3) — are decomposed again by an SVD of
    the data. ``live_columns(rows)`` counts the live features of those batch rows, ``data(rows)``
    gives their centred matrices; both are only called for the rows that need them."""
    unresolved = direct_eigh_bound(side.eigenvalues, side.eigenvalues > 0, m) > DIRECT_EIGH_ERROR
    short = (side.live_count < structural_rank(m, p)).nonzero().flatten()
    if len(short):  # rank-deficient: real (dead or collinear features) or unresolved?
        unresolved[short] |= side.live_count[short] < live_columns(short).clamp(max=structural_rank(m, p))
    again = unresolved.nonzero().flatten()
    if len(again):
        redone = decompose_data(data(again))
        side.basis[again] = redone.basis
        side.eigenvalues[again] = redone.eigenvalues
    return side


def pair_spectra(x: torch.Tensor, y: torch.Tensor, precision: str | None = None,
                 form: str | None = None, source: SideSpectrum | None = None) -> PairedSpectra:
    """Decompose a batch of paired matrices X (b, m, p), Y (b, m, p').

    ``source``, when given, is X's spectrum from an earlier call (dual form only): the source model
    never changes, so its decomposition is reused and only Y's Gram is formed and decomposed.
    """
    if x.ndim != 3 or y.ndim != 3 or x.shape[:2] != y.shape[:2]:
        raise ValueError(f"X and Y must share their sample dimension; got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    b, m, px = x.shape
    py = y.shape[-1]
    dtype = compute_dtype_for(x.device, precision)
    form = form or choose_form(m, px, py)
    xc, yc = centred(x, dtype), centred(y, dtype)
    identical = bitwise_equal(x, y)
    if form == "dual":
        sx = source if source is not None else dual_spectrum(xc, x, dtype)
        sy = dual_spectrum(yc, y, dtype)
        return PairedSpectra(sx, sy, dual_cross(sx, sy), m, identical)
    if source is not None:
        raise ValueError("a cached source spectrum is only reusable in the dual form")
    xt = xc.transpose(1, 2)
    floors = (constant_column_floor(x, dtype), constant_column_floor(y, dtype))
    pair = pair_from_moments(xt @ xc, yc.transpose(1, 2) @ yc, xt @ yc, m, identical, dtype, floors)
    unresolved = (~(pair.x.resolved & pair.y.resolved)).nonzero().flatten()
    if len(unresolved):  # dense mixing past what the moments hold: the data's own triangular factor
        exact_x, exact_y, cross = factor_sides(centred_factor_of(x[unresolved], y[unresolved]), px, m)
        pair.x.take(unresolved, exact_x)
        pair.y.take(unresolved, exact_y)
        pair.cross[unresolved] = cross
    return pair


def metric_values(pair: PairedSpectra, metrics: Sequence[Metric], whitening_scale: str = "mean_eig",
                  debiased=None) -> dict[str, torch.Tensor]:
    """Every requested metric for every pair in the batch: {label: (b,) float64 tensor}.

    NaN where a side is dead (undefined), exactly 0 where the inputs were identical. Debiased CKA is
    not a function of the spectra: ``debiased()`` gives its (b,) similarity from the data's own sums.
    """
    if whitening_scale not in WHITENING_SCALES:
        raise ValueError(f"unknown whitening_scale {whitening_scale!r}; use one of {WHITENING_SCALES}")
    for metric in metrics:
        if metric.name == "pwsm":
            check_whitening(metric.alpha, pair.n_rows, max(pair.x.n_features, pair.y.n_features))
    cos_by_alpha: dict[float, torch.Tensor] = {}

    def cosine(alpha: float) -> torch.Tensor:
        if alpha not in cos_by_alpha:
            cos_by_alpha[alpha] = whitened_cosine(pair.cross, pair.x, pair.y, alpha, whitening_scale)
        return cos_by_alpha[alpha]

    return values_from(metrics, cosine, lambda: cka_similarity(pair.cross, pair.x, pair.y), pair.live,
                       pair.identical, debiased)


def values_from(metrics: Sequence[Metric], cosine, cka, live: torch.Tensor,
                identical: torch.Tensor, debiased=None) -> dict[str, torch.Tensor]:
    """The metrics from cos θ_α (``cosine(α)``), the CKA similarity (``cka()``) and the debiased CKA
    similarity (``debiased()``), as METRICS.md §2 and ANALYSES.md §7 write them; exactly 0 where the
    inputs were identical, NaN where a side is dead."""
    out: dict[str, torch.Tensor] = {}
    for metric in metrics:
        if metric.name == "pwsm":
            value = torch.arccos(cosine(metric.alpha))
        elif metric.name == "procrustes":
            value = (2.0 - 2.0 * cosine(1.0)).clamp(0.0, 2.0)
        elif metric.name == "cka":
            value = 1.0 - cka()
        elif metric.name == "cka-debiased" and debiased is not None:
            value = 1.0 - debiased()  # not clamped: an unbiased estimate may leave [0, 1] by noise
        else:  # parse_metric guards the names; kept for Metric objects built by hand
            raise ValueError(f"metric {metric.name!r} cannot be computed here")
        value = torch.where(identical, torch.zeros_like(value), value)
        out[metric.label] = torch.where(live | identical, value, torch.full_like(value, math.nan))
    return out


def needs_whitening(metrics: Sequence[Metric]) -> bool:
    """Only PWSM with α < 1 needs the eigen-decompositions; Procrustes, CKA and PWSM at α = 1 are
    functions of XᵀY, XᵀX and YᵀY alone."""
    return any(m.name == "pwsm" and m.alpha < 1.0 for m in metrics)


def unwhitened_values(x: torch.Tensor, y: torch.Tensor, metrics: Sequence[Metric],
                      precision: str | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Procrustes, CKA and PWSM at α = 1 of a batch X (b, m, p), Y (b, m, p') straight from their
    definitions — ‖XᵀY‖_* by one SVD, no decomposition of either side — for p, p' ≤ m (the
    `filter-map` view's small maps). Returns the values and both sides' ‖X‖²_F, as :func:`metric_values`
    and ``total_variance`` would, with the same NaN for dead sides and 0 for identical inputs."""
    dtype = compute_dtype_for(x.device, precision)
    xc, yc = centred(x, dtype), centred(y, dtype)
    xt = xc.transpose(1, 2)
    cross = (xt @ yc).to(torch.float64)
    power_x = xc.to(torch.float64).pow(2).sum((1, 2))
    power_y = yc.to(torch.float64).pow(2).sum((1, 2))
    live = (power_x > 0) & (power_y > 0)
    safe = lambda v: torch.where(live, v, torch.ones_like(v))  # noqa: E731
    cos = (nuclear_norms(cross) / safe((power_x * power_y).sqrt())).clamp(-1.0, 1.0)

    def cka() -> torch.Tensor:
        gram_x = (xt @ xc).to(torch.float64).norm(dim=(1, 2))
        gram_y = (yc.transpose(1, 2) @ yc).to(torch.float64).norm(dim=(1, 2))
        return (cross.pow(2).sum((1, 2)) / safe(gram_x * gram_y)).clamp(0.0, 1.0)

    # only α = 1 reaches here (needs_whitening): the cosine of angular Procrustes
    debiased = lambda: debiased_from_centred(xc.to(torch.float64), yc.to(torch.float64))  # noqa: E731
    return values_from(metrics, lambda alpha: cos, cka, live, bitwise_equal(x, y), debiased), power_x, power_y
