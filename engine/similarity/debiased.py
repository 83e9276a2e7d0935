"""Debiased linear CKA (ANALYSES.md §7): linear CKA with HSIC replaced by its unbiased estimator.

Biased linear CKA is inflated when features outnumber samples. Song et al. (2012) give an unbiased
HSIC estimator; for linear kernels and column-centred X (m, p), Y (m, p') it reads, in feature
space (Kornblith et al.'s form; the U-statistic up to the factor m(m−3), which cancels in the ratio):

    h(X, Y) = ‖XᵀY‖²_F − m/(m−2) · Σᵢ ‖xᵢ‖²‖yᵢ‖² + ‖X‖²_F ‖Y‖²_F / ((m−1)(m−2))
    CKA_debiased(X, Y) = h(X, Y) / √(h(X, X) h(Y, Y))        distance: 1 − CKA_debiased

xᵢ are the *centred* rows. With Grams K = XXᵀ, L = YYᵀ of the centred data the same terms are
Σ K∘L, Σᵢ Kᵢᵢ Lᵢᵢ and tr K · tr L, which is how the Gram-based views compute it. The streaming
views expand the centred row norms over sums that add over rows (:func:`centred_row_products`).

Unlike biased CKA, the debiased value can leave [0, 1] by sampling noise (it is unbiased for the
population ratio's parts, not bounded); it is undefined (NaN) below 4 samples or where h(X, X) or
h(Y, Y) is not positive. Minibatch CKA (Nguyen et al. 2021), which averages unbiased HSIC over
fixed-size batches before the ratio, is a different estimator and not this one.
"""

from __future__ import annotations

import math

import torch

DEBIASED = "cka-debiased"
MIN_ROWS = 4  # the U-statistic needs four distinct samples


def unbiased_hsic(cross_sq: torch.Tensor, row_products: torch.Tensor, total_x: torch.Tensor,
                  total_y: torch.Tensor, m: int) -> torch.Tensor:
    """h(X, Y) from ‖XᵀY‖²_F, Σᵢ‖xᵢ‖²‖yᵢ‖², ‖X‖²_F and ‖Y‖²_F of the centred data (m rows)."""
    if m < MIN_ROWS:
        return torch.full_like(cross_sq, math.nan)
    return cross_sq - m / (m - 2) * row_products + total_x * total_y / ((m - 1) * (m - 2))


# h(X, X) within this fraction of ‖XᵀX‖²_F of zero is rounding of an exact zero (one non-constant
# sample, say): the ratio is 0/0 there, not a number.
UNDEFINED_RELATIVE = 1e-10


def debiased_similarity(h_xy: torch.Tensor, h_xx: torch.Tensor, h_yy: torch.Tensor,
                        scale_x: torch.Tensor, scale_y: torch.Tensor) -> torch.Tensor:
    """h(X, Y) / √(h(X, X) h(Y, Y)); NaN where h(X, X) or h(Y, Y) is not clearly positive against its
    scale ‖XᵀX‖²_F, ‖YᵀY‖²_F."""
    positive = (h_xx > UNDEFINED_RELATIVE * scale_x) & (h_yy > UNDEFINED_RELATIVE * scale_y)
    norm = (h_xx * h_yy).clamp_min(torch.finfo(h_xx.dtype).tiny)
    return torch.where(positive, h_xy / norm.sqrt(), torch.full_like(h_xy, math.nan))


def debiased_from_grams(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """CKA_debiased of batches of centred Grams K, L (b, m, m)."""
    m = k.shape[-1]
    dk, dl = k.diagonal(dim1=-2, dim2=-1), l.diagonal(dim1=-2, dim2=-1)
    tk, tl = dk.sum(-1), dl.sum(-1)
    h = lambda a, b, da, db, ta, tb: unbiased_hsic((a * b).sum((-1, -2)), (da * db).sum(-1), ta, tb, m)  # noqa: E731
    return debiased_similarity(h(k, l, dk, dl, tk, tl), h(k, k, dk, dk, tk, tk), h(l, l, dl, dl, tl, tl),
                               k.pow(2).sum((-1, -2)), l.pow(2).sum((-1, -2)))


def debiased_from_centred(xc: torch.Tensor, yc: torch.Tensor) -> torch.Tensor:
    """CKA_debiased of batches of centred data X (b, m, p), Y (b, m, p'), float64: feature space
    when the features are fewer than the rows, else through the m×m Grams."""
    m = xc.shape[1]
    if max(xc.shape[2], yc.shape[2]) > m:
        return debiased_from_grams(xc @ xc.transpose(1, 2), yc @ yc.transpose(1, 2))
    rx, ry = xc.pow(2).sum(-1), yc.pow(2).sum(-1)
    tx, ty = rx.sum(-1), ry.sum(-1)
    xt, yt = xc.transpose(1, 2), yc.transpose(1, 2)
    gram_x, gram_y = (xt @ xc).pow(2).sum((1, 2)), (yt @ yc).pow(2).sum((1, 2))
    h_xy = unbiased_hsic((xt @ yc).pow(2).sum((1, 2)), (rx * ry).sum(-1), tx, ty, m)
    h_xx = unbiased_hsic(gram_x, (rx * rx).sum(-1), tx, tx, m)
    h_yy = unbiased_hsic(gram_y, (ry * ry).sum(-1), ty, ty, m)
    return debiased_similarity(h_xy, h_xx, h_yy, gram_x, gram_y)


def centred_row_products(a: torch.Tensor, p: torch.Tensor, q: torch.Tensor, s_uv: torch.Tensor,
                         sum_u: torch.Tensor, sum_v: torch.Tensor, norm_u: torch.Tensor, norm_v: torch.Tensor,
                         m: int) -> torch.Tensor:
    """Σᵢ ‖xᵢ − x̄‖² ‖yᵢ − ȳ‖² from sums that add over rows, for rows u, v (x, y less any fixed shift):

        A = Σ‖u‖²‖v‖²,  P = Σ‖v‖² u,  Q = Σ‖u‖² v,  S_uv = Σ u vᵀ,  Σu = m ū,  Σv = m v̄,  N_u = Σ‖u‖²,  N_v = Σ‖v‖²

    Expanding ‖u − ū‖² = ‖u‖² − 2u·ū + ‖ū‖² (and likewise for v) and summing over the rows:

        A − 2 ū·P − 2 v̄·Q + 4 ūᵀ S_uv v̄ + ‖v̄‖² N_u + ‖ū‖² N_v − 3m ‖ū‖²‖v̄‖²

    Batched over a leading dimension (b, …). The shift keeps the terms small (no cancellation of
    raw sums about a far-away mean), as for the moments themselves."""
    u_bar, v_bar = sum_u / m, sum_v / m
    uu, vv = u_bar.pow(2).sum(-1), v_bar.pow(2).sum(-1)
    cross = torch.einsum("bi,bij,bj->b", u_bar, s_uv, v_bar)
    return (a - 2 * (u_bar * p).sum(-1) - 2 * (v_bar * q).sum(-1) + 4 * cross
            + vv * norm_u + uu * norm_v - 3 * m * uu * vv)
