"""Straightforward float64 references for the metrics, written independently of engine/similarity:
explicit whitening matrices, explicit SVDs of XᵀY, one matrix at a time, numpy only."""

import numpy as np


def centre(X):
    X = np.asarray(X, dtype=np.float64)
    return X - X.mean(axis=0, keepdims=True)


def whitening_matrix(X, alpha, netrep=False):
    """Z with φ(X) = X Z. ftdyn: eigen-decompose S = XᵀX / (‖X‖²/p), null directions get no weight.
    netrep: the raw XᵀX, eigenvalues clipped at 1e-7 (and no whitening at all for α = 1)."""
    if netrep and alpha > 1 - 1e-7:
        return np.eye(X.shape[1])
    S = X.T @ X
    if not netrep:
        S = S / (np.sum(X * X) / X.shape[1])
    lam, V = np.linalg.eigh(S)
    if netrep:
        lam = np.maximum(lam, 1e-7)
        d = alpha + (1 - alpha) / np.sqrt(lam)
    else:
        live = lam > 1e-10 * lam.max()
        d = np.where(live, alpha + (1 - alpha) / np.sqrt(np.where(live, lam, 1.0)), 0.0)
    return V @ np.diag(d) @ V.T


def pwsm(X, Y, alpha, netrep=False):
    X, Y = centre(X), centre(Y)
    fx = X @ whitening_matrix(X, alpha, netrep)
    fy = Y @ whitening_matrix(Y, alpha, netrep)
    nuclear = np.linalg.svd(fx.T @ fy, compute_uv=False).sum()
    return float(np.arccos(np.clip(nuclear / (np.linalg.norm(fx) * np.linalg.norm(fy)), -1, 1)))


def netrep_linear_metric(X, Y, alpha):
    """netrep's LinearMetric(alpha, center_columns=True, score_method='angular'), step by step:
    centre, whiten with variance preservation, align by orthogonal Procrustes, angle between."""
    def whiten(Z):
        if alpha > 1 - 1e-7:
            return Z
        lam, V = np.linalg.eigh(Z.T @ Z)
        lam = np.maximum(lam, 1e-7)
        d = alpha + (1 - alpha) * lam ** -0.5
        new_var = np.sum(alpha ** 2 * lam + 2 * alpha * (1 - alpha) * lam ** 0.5 + (1 - alpha) ** 2)
        d = d * np.sqrt(np.sum(lam) / new_var)
        return Z @ (V * d) @ V.T

    xw, yw = whiten(centre(X)), whiten(centre(Y))
    U, _, Vt = np.linalg.svd(xw.T @ yw)
    xa, ya = xw @ U, yw @ Vt.T
    cos = np.sum(xa * ya) / (np.linalg.norm(xa) * np.linalg.norm(ya))
    return float(np.arccos(np.clip(cos, -1, 1)))


def procrustes(X, Y):
    X, Y = centre(X), centre(Y)
    X, Y = X / np.linalg.norm(X), Y / np.linalg.norm(Y)
    return float(2 - 2 * np.linalg.svd(X.T @ Y, compute_uv=False).sum())


def cka(X, Y):
    X, Y = centre(X), centre(Y)
    num = np.linalg.norm(X.T @ Y) ** 2
    return float(1 - num / (np.linalg.norm(X.T @ X) * np.linalg.norm(Y.T @ Y)))


# ---------------------------------------------------------------------------------------------
# Test data of the kinds activations take.


def random_pair(rng, m, p, noise=1.0):
    X = rng.normal(size=(m, p))
    Y = X @ rng.normal(size=(p, p)) / np.sqrt(p) + noise * rng.normal(size=(m, p))
    return X, Y


def low_rank_pair(rng, m, p, rank):
    X = rng.normal(size=(m, rank)) @ rng.normal(size=(rank, p))
    Y = (X + 0.5 * rng.normal(size=(m, rank)) @ rng.normal(size=(rank, p)))
    return X, Y


def relu_pair(rng, m, p):
    X, Y = random_pair(rng, m, p, noise=0.7)
    return np.maximum(X + 0.3, 0), np.maximum(Y - 0.2, 0)


def badly_scaled_pair(rng, m, p):
    # Columns spread over 2.5 decades (5 in variance) and opposite global scales. Wider spreads
    # make any float64 eigen-solver of XᵀX, the reference's included, lose the 1e-10 agreement.
    X, Y = random_pair(rng, m, p)
    scales = 10.0 ** rng.uniform(-1.25, 1.25, size=p)
    return X * scales * 1e3, Y * scales[::-1] * 1e-3


def dead_column_pair(rng, m, p):
    X, Y = relu_pair(rng, m, p)
    X[:, 0] = 0.0
    Y[:, 0] = 0.0
    X[:, 1] = 3.5  # constant, not zero
    Y[:, 2] = 0.0  # dead in one model only
    return X, Y


DATA_KINDS = {
    "random": lambda rng, m, p: random_pair(rng, m, p),
    "low-rank": lambda rng, m, p: low_rank_pair(rng, m, p, max(1, min(m, p) // 3)),
    "relu": relu_pair,
    "badly-scaled": badly_scaled_pair,
    "dead-columns": dead_column_pair,
}
