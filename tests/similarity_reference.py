"""Straightforward float64 references for the metrics, written independently of engine/similarity:
explicit whitening matrices, explicit SVDs of XᵀY, one matrix at a time, numpy only."""

import numpy as np


def centre(X):
    X = np.asarray(X, dtype=np.float64)
    return X - X.mean(axis=0, keepdims=True)


def whitening_matrix(X, alpha):
    """netrep's Z with φ(X) = X Z: the raw XᵀX, eigenvalues clipped at 1e-7, no whitening at α = 1."""
    if alpha > 1 - 1e-7:
        return np.eye(X.shape[1])
    lam, V = np.linalg.eigh(X.T @ X)
    lam = np.maximum(lam, 1e-7)
    return V @ np.diag(alpha + (1 - alpha) / np.sqrt(lam)) @ V.T


def singular_parts(X):
    """SVD of the centred data with the directions rounding cannot tell from zero removed."""
    U, s, Vt = np.linalg.svd(X, full_matrices=False)
    live = s > max(X.shape) * np.finfo(np.float64).eps * s[0]
    live[min(X.shape[0] - 1, X.shape[1]):] = False  # a centred matrix has rank ≤ m − 1
    return U[:, live], s[live], Vt[live]


def whitened(X, alpha, netrep=False):
    """φ_α(X) from the SVD X = U Σ Vᵀ, with no eigen-decomposition of XᵀX at all:
    X S^(−1/2) = U Vᵀ, so φ_α(X) = α X + (1 − α) √s U Vᵀ with s = ‖X‖²_F / p (ftdyn's scale);
    netrep's scale whitens with max(σ², 1e-7) instead: φ = U diag(α σ + (1 − α) σ / max(σ, √1e-7)) Vᵀ."""
    U, s, Vt = singular_parts(X)
    if netrep:
        return (U * (alpha * s + (1 - alpha) * s / np.sqrt(np.maximum(s * s, 1e-7)))) @ Vt
    scale = np.sqrt(np.sum(s * s) / X.shape[1])
    return alpha * X + (1 - alpha) * scale * U @ Vt


def pwsm(X, Y, alpha, netrep=False):
    X, Y = centre(X), centre(Y)
    fx, fy = whitened(X, alpha, netrep), whitened(Y, alpha, netrep)
    nuclear = np.linalg.svd(fx.T @ fy, compute_uv=False).sum()
    return float(np.arccos(np.clip(nuclear / (np.linalg.norm(fx) * np.linalg.norm(fy)), -1, 1)))


def exact_pwsm(X, Y, alpha, digits=50):
    """PWSM in high-precision arithmetic (mpmath) with an explicit S^(−1/2), the float64 data taken
    as exact: the reference where float64 SVDs lose digits (singular values spread beyond 1e8)."""
    import mpmath

    mpmath.mp.dps = digits

    def whitened(A):
        A = mpmath.matrix(np.asarray(A, dtype=np.float64).tolist())
        for j in range(A.cols):  # centred in high precision: rounding would add a direction
            mean = sum(A[i, j] for i in range(A.rows)) / A.rows
            for i in range(A.rows):
                A[i, j] -= mean
        lam, V = mpmath.eigsy(A.T * A)
        s = sum(lam) / A.cols
        live = [v > mpmath.mpf(10) ** -(digits - 10) * max(lam) for v in lam]
        d = [alpha + (1 - alpha) / mpmath.sqrt(v / s) if ok else 0 for v, ok in zip(lam, live)]
        return A * V * mpmath.diag(d) * V.T

    fx, fy = whitened(X), whitened(Y)
    nuclear = sum(mpmath.svd_r(fx.T * fy, compute_uv=False))
    return float(mpmath.acos(min(1, nuclear / (mpmath.mnorm(fx, "f") * mpmath.mnorm(fy, "f")))))


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


def spread_pair(rng, m, p, decades):
    """Columns scaled by 10^U(−decades, decades): dead-ish ReLU channels next to live ones."""
    X, Y = random_pair(rng, m, p, noise=0.7)
    return X * 10.0 ** rng.uniform(-decades, decades, size=p), Y * 10.0 ** rng.uniform(-decades, decades, size=p)


def badly_scaled_pair(rng, m, p):
    # Columns spread over 2.5 decades and opposite global scales: the range in which netrep's
    # eigh of the raw XᵀX still agrees with the exact value to 1e-10.
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
