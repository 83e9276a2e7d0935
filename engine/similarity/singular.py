"""Nuclear norms and singular decompositions of many matrices, exact, from batched symmetric eigensolvers.

Every per-filter measure ends in a nuclear norm ‖M‖_* = Σ σᵢ(M) of a k×k cross term (k = n images in
the dual form, h·w positions in the primal form), one per filter and per PWSM α. torch's CUDA SVD runs
one matrix at a time (30 ms for 512×512 in float64 on an H200); cuSOLVER's batched symmetric solver
(:mod:`engine.similarity.eigen`) takes a whole batch at once. Two exact ways from an eigensolver to σ:

* **Jordan–Wielandt.** The symmetric J = [[0, A], [Aᵀ, 0]] has eigenvalues ±σᵢ(A) (and |r − c| zeros).
  A backward-stable eigensolver returns each within c·ε·‖A‖₂ (Weyl), so ½ Σ|μᵢ(J)| is ‖A‖_* to within
  (r + c)·c·ε·‖A‖₂ — the accuracy of an SVD, for every matrix, at the price of a (r + c)-sized problem.
* **One-sided Gram.** AᵀA = V Λ Vᵀ (c×c), then B = A·V is computed from A itself and σ̂ᵢ = ‖bᵢ‖. Each
  σ̂ᵢ² is a Rayleigh quotient of AᵀA at vᵢ, so an error θ in vᵢ moves it by O(θ²), not O(θ), and
  directions whose eigenvalue AᵀA cannot resolve (below ε·λ_max) come out at the rounding level of A
  (≈ ε·σ_max), not at √ε·σ_max as √λ would. What the one-sided norms cannot show is two columns of B
  that are not orthogonal (vᵢ mixed where eigenvalues of AᵀA crowd together below its rounding). The
  route therefore brackets the nuclear norm, per matrix:

      Σᵢ Lᵢᵢ σ̂ᵢ  ≤  ‖A‖_*  ≤  Σᵢ σ̂ᵢ,      ŨᵀŨ = L Lᵀ (Cholesky),  Ũ = B diag(σ̂)⁻¹,

  (the upper bound: ‖A‖_* = ‖B‖_* ≤ Σ‖bᵢ‖ by the triangle inequality; the lower: B = Q·Lᵀdiag(σ̂)
  with Q orthonormal, and ‖R‖_* ≥ Σ|Rᵢᵢ| for any R). Columns at the rounding level of the largest
  (σ̂ᵢ ≤ c·ε·σ̂_max) are left out of the Cholesky: they are A's rounding, which an SVD returns as
  well. Where the width over the other columns exceeds GRAM_TOLERANCE·Σσ̂ plus that rounding level
  (c·ε·σ̂_max), or the Cholesky fails, that matrix is taken again by Jordan–Wielandt. The value returned is Σσ̂ᵢ,
  within the bracket.

On the CPU, LAPACK's SVD is as fast as the Gram route's eigh (and the threads of
:mod:`engine.similarity.parallel` already share the matrices), so ``svd`` stays the CPU route; the
batched routes are chosen where the batched solver is, and can be asked for anywhere (the tests do).
"""

from __future__ import annotations

import torch

from engine.similarity.eigen import batched_route, symmetric_eigh
from engine.similarity.parallel import run_in_parallel

NUCLEAR_ROUTES = ("svd", "gram", "jordan-wielandt")
# Width of the Gram route's bracket, relative to the nuclear norm, above which a matrix is redone
# by Jordan–Wielandt (beyond the rounding level of A that every route shares).
GRAM_TOLERANCE = 1e-13


def default_route(a: torch.Tensor) -> str:
    c = min(a.shape[-2:])
    return "gram" if batched_route(a.device, a.dtype, c, a.shape[0]) else "svd"


def jordan_wielandt(a: torch.Tensor) -> torch.Tensor:
    """J = [[0, A], [Aᵀ, 0]] for a batch A (b, r, c)."""
    b, r, c = a.shape
    top = torch.cat([a.new_zeros(b, r, r), a], -1)
    bottom = torch.cat([a.transpose(-1, -2), a.new_zeros(b, c, c)], -1)
    return torch.cat([top, bottom], -2)


def nuclear_jordan_wielandt(a: torch.Tensor) -> torch.Tensor:
    eigenvalues, _ = symmetric_eigh(jordan_wielandt(a), vectors=False)
    return 0.5 * eigenvalues.abs().sum(-1)


def nuclear_gram(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σσ̂ᵢ, whether the bracket held) per matrix of A (b, r, c), c ≤ r (module docstring)."""
    c = a.shape[-1]
    eps = torch.finfo(a.dtype).eps
    _, basis = symmetric_eigh(a.transpose(-1, -2) @ a)
    columns = a @ basis
    norms = columns.norm(dim=-2)  # σ̂ (b, c)
    estimate = norms.sum(-1)
    largest = norms.amax(-1, keepdim=True)
    rounding = c * eps * largest
    kept = norms > rounding
    unit = columns / torch.where(kept, norms, torch.ones_like(norms)).unsqueeze(-2) * kept.unsqueeze(-2)
    overlap = unit.transpose(-1, -2) @ unit
    eye = torch.eye(c, dtype=a.dtype, device=a.device)
    overlap = torch.where(kept.unsqueeze(-1) & kept.unsqueeze(-2), overlap, eye)
    factor, info = torch.linalg.cholesky_ex(overlap)
    # the bracket's width over the kept columns; the others are at A's rounding level, as in an SVD
    width = (norms * (1.0 - factor.diagonal(dim1=-2, dim2=-1)) * kept).sum(-1)
    held = (info == 0) & torch.isfinite(width) & (width <= GRAM_TOLERANCE * estimate + rounding.squeeze(-1))
    return estimate, held


def nuclear_norms(m: torch.Tensor, route: str | None = None) -> torch.Tensor:
    """‖M‖_* for every matrix of a batch M (b, r, c), in M's dtype (float64 for exactness)."""
    route = route or default_route(m)
    if route not in NUCLEAR_ROUTES:
        raise ValueError(f"unknown nuclear-norm route {route!r}; use one of {NUCLEAR_ROUTES}")
    if m.shape[0] == 0 or min(m.shape[-2:]) == 0:
        return m.new_zeros(m.shape[0])
    if route == "svd":
        return torch.linalg.svdvals(m).sum(-1)
    if route == "jordan-wielandt":
        return nuclear_jordan_wielandt(m)
    a = m if m.shape[-1] <= m.shape[-2] else m.transpose(-1, -2)
    values, held = nuclear_gram(a)
    again = (~held).nonzero().flatten()
    if len(again):
        values[again] = nuclear_jordan_wielandt(a[again])
    return values


def singular_decomposition(a: torch.Tensor, right: bool = False) -> tuple[torch.Tensor, ...]:
    """(U, σ) of a batch A (b, r, c) as ``torch.linalg.svd(A, full_matrices=False)`` gives them; with
    ``right`` (U, σ, V) — the right singular vectors as columns.

    These are the sides whose columns' scales spread beyond what a Gram resolves
    (:mod:`engine.similarity.spectral`): their small singular values are needed to *relative*
    accuracy, which LAPACK's SVD of such column-graded matrices gives and Jordan–Wielandt (accurate
    to ε·σ_max) does not. So a CUDA batch is decomposed by LAPACK on the CPU's cores, the matrices
    shared over threads, instead of by torch's CUDA SVD one matrix at a time (30 ms each at 512×512).
    """
    kept = 3 if right else 2
    if a.device.type != "cuda" or a.shape[0] < 2:
        found = torch.linalg.svd(a, full_matrices=False)
        return (*found[:2], found[2].transpose(-1, -2))[:kept]
    host = a.cpu()
    share = -(-len(host) // max(1, torch.get_num_threads()))
    spans = [(start, min(len(host), start + share)) for start in range(0, len(host), share)]
    parts = run_in_parallel(lambda span: torch.linalg.svd(host[span[0]:span[1]], full_matrices=False)[:kept],
                            spans, len(spans))
    found = [torch.cat([part[i] for part in parts]).to(a.device) for i in range(kept)]
    if right:
        found[2] = found[2].transpose(-1, -2)
    return tuple(found)
