"""The public matrix-level functions: distances between representation matrices X (m, p) and
Y (m, p'), or batches of them (b, m, p) — definitions in :mod:`engine.similarity.metrics`.

Batches take the same fast path as the `filter` view (:mod:`engine.similarity.batched`): chunked,
threaded, dual or primal, and one decomposition for every metric asked for at once — call
:func:`distances` with several metrics rather than each function in turn.
"""

from __future__ import annotations

from typing import Sequence

import torch

from engine.similarity.batched import DEFAULT_CHUNK_BYTES, batched_metric_values, filter_chunk_size
from engine.similarity.metrics import DEFAULT_ALPHA, Metric, as_tensor, parse_metrics


def distances(X, Y, metrics: Sequence[str | Metric] = ("pwsm", "procrustes", "cka"), alpha: float = DEFAULT_ALPHA,
              whitening_scale: str = "mean_eig", precision: str | None = None,
              chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> dict[str, float | torch.Tensor]:
    """Several metrics from one decomposition: {label: value} — a float for a pair of matrices,
    a length-b float64 tensor for batches (b, m, p). ``metrics`` as in :func:`parse_metric`
    ('pwsm' at ``alpha``, 'pwsm:0', 'procrustes', 'cka'). NaN where a side is dead."""
    x, y = as_tensor(X), as_tensor(Y)
    y = y.to(x.device)
    single = x.ndim == 2
    if single:
        x, y = x.unsqueeze(0), y.unsqueeze(0)
    if x.ndim != 3 or y.ndim != 3 or x.shape[:2] != y.shape[:2]:
        raise ValueError(f"X and Y must share their sample dimension; got shapes {tuple(X.shape)} and {tuple(Y.shape)}")
    parsed = parse_metrics(metrics, alpha)
    chunk = filter_chunk_size(x.shape[0], x.shape[1], max(x.shape[2], y.shape[2]), chunk_bytes)
    values, _, _ = batched_metric_values(x, y, parsed, whitening_scale, precision, chunk)
    return {label: float(v[0]) if single else v for label, v in values.items()}


def pwsm_distance(X, Y, alpha: float = DEFAULT_ALPHA, whitening_scale: str = "mean_eig",
                  precision: str | None = None):
    """Angular partial-whitening shape metric θ_α(X, Y) in radians, range [0, π/2].

    α = 1 is angular Procrustes; α = 0 full whitening (arccos of the mean canonical correlation),
    refused when samples − 1 ≤ features. ``whitening_scale="mean_eig"`` whitens with XᵀX / s_X
    (scale- and row-repetition-invariant); ``"netrep"`` reproduces netrep's
    ``LinearMetric(alpha, center_columns=True, score_method="angular")``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"PWSM α must lie in [0, 1], got {alpha:g}")
    metric = Metric("pwsm", float(alpha))
    return distances(X, Y, (metric,), whitening_scale=whitening_scale, precision=precision)[metric.label]


def procrustes_distance(X, Y, precision: str | None = None):
    """Squared orthogonal Procrustes distance 2 − 2‖XᵀY‖_* of centred, unit-norm X, Y; range [0, 2]."""
    return distances(X, Y, ("procrustes",), precision=precision)["procrustes"]


def cka_distance(X, Y, precision: str | None = None):
    """1 − linear CKA of the column-centred X, Y; range [0, 1]."""
    return distances(X, Y, ("cka",), precision=precision)["cka"]
