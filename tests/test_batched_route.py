"""The batched route of the per-filter measures (engine.similarity.eigen and .singular), checked on the
CPU: the suite has no GPU, so ``route("batched")`` runs the same arithmetic on torch's solver that
cuSOLVER's batched solver runs on a GPU. Every value is checked against float64 SVD references."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import similarity_reference as ref
from engine.similarity import eigen, layer_distance
from engine.similarity.singular import (
    GRAM_TOLERANCE,
    nuclear_gram,
    nuclear_jordan_wielandt,
    nuclear_norms,
)

TOL = 1e-10
METRICS = ("pwsm", "pwsm:1", "procrustes", "cka")


def svd_nuclear(m: torch.Tensor) -> np.ndarray:
    """The reference: numpy's SVD, one matrix at a time."""
    return np.array([np.linalg.svd(x, compute_uv=False).sum() for x in m.numpy()])


def graded(rng, b, k, decades, rank=None):
    """k×k matrices with singular values spread over ``decades`` (and rank < k when asked)."""
    u = np.linalg.qr(rng.normal(size=(b, k, k)))[0]
    v = np.linalg.qr(rng.normal(size=(b, k, k)))[0]
    sigma = np.logspace(0, -decades, k) * rng.uniform(0.5, 2.0, size=(b, k))
    if rank is not None:
        sigma[:, rank:] = 0.0
    return torch.from_numpy(u * sigma[:, None, :] @ v.transpose(0, 2, 1))


@pytest.mark.parametrize("decades", (0, 2, 4, 6, 8, 12))
@pytest.mark.parametrize("k", (7, 49, 96))
def test_nuclear_norms_exact_at_any_spread(decades, k):
    m = graded(np.random.default_rng(decades + k), 6, k, decades)
    expected = svd_nuclear(m)
    for route in ("gram", "jordan-wielandt"):
        got = nuclear_norms(m, route=route).numpy()
        assert np.abs(got - expected).max() <= 1e-13 * expected.max(), route


@pytest.mark.parametrize("shape,rank", [((30, 12), 5), ((12, 30), 0), ((40, 40), 39), ((20, 20), 1)])
def test_nuclear_norms_exact_on_rank_deficient_and_rectangular(shape, rank):
    rng = np.random.default_rng(rank)
    r, c = shape
    m = torch.from_numpy(rng.normal(size=(5, r, rank)) @ rng.normal(size=(5, rank, c)))
    expected = svd_nuclear(m)
    got = nuclear_norms(m, route="gram").numpy()
    assert np.abs(got - expected).max() <= 1e-13 * max(1.0, expected.max())


def test_a_matrix_that_needs_the_fallback():
    """Singular values spread over 1e10: the one-sided Gram norms are off beyond 1e-10 — the bracket
    says so, and the route's value (from Jordan–Wielandt) is exact."""
    m = graded(np.random.default_rng(3), 4, 64, 10)
    expected = svd_nuclear(m)
    estimate, held = nuclear_gram(m)
    assert not held.any()
    assert np.abs(estimate.numpy() - expected).max() > 1e-10 * expected.max()  # the Gram alone is wrong
    assert np.abs(nuclear_norms(m, route="gram").numpy() - expected).max() <= 1e-13 * expected.max()


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(2, 40), decades=st.floats(0.0, 14.0),
       rank_cut=st.floats(0.0, 1.0))
def test_gram_held_only_where_it_is_right(seed, k, decades, rank_cut):
    """Property: wherever the bracket holds, the one-sided Gram value is the SVD's to the tolerance;
    wherever the Gram value is wrong beyond it, the bracket fails (so the route falls back)."""
    rank = max(1, int(round(k * rank_cut)))
    m = graded(np.random.default_rng(seed), 3, k, decades, rank=rank)
    expected = svd_nuclear(m)
    estimate, held = nuclear_gram(m)
    error = np.abs(estimate.numpy() - expected)
    allowed = GRAM_TOLERANCE * expected + k * k * np.finfo(float).eps * np.abs(expected).max()
    assert (error[held.numpy()] <= allowed[held.numpy()]).all()
    assert nuclear_jordan_wielandt(m).numpy() == pytest.approx(expected, abs=1e-13 * max(1.0, expected.max()))


def filter_activations(seed, n, c, h, w, spread=0.0, dead=(), rank=None):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, c, h, w))
    if rank is not None:  # each filter's map is a product of `rank` patterns: rank-deficient
        a = np.einsum("nck,ckp->ncp", rng.normal(size=(n, c, rank)),
                      rng.normal(size=(c, rank, h * w))).reshape(n, c, h, w)
    b = 0.8 * a + 0.6 * rng.normal(size=a.shape)
    a, b = np.maximum(a + 0.2, 0), np.maximum(b, 0)
    if spread:  # per-position scales spread over 10^±spread (a column spread inside each filter)
        scales = 10.0 ** rng.uniform(-spread, spread, size=(1, 1, h, w))
        a, b = a * scales, b * scales[..., ::-1, :]
    for f in dead:
        a[:, f] = 0.0
    return a, b


@pytest.mark.parametrize("case", [
    dict(n=30, h=4, w=5, spread=0),   # primal, well scaled
    dict(n=12, h=4, w=5, spread=0),   # dual
    dict(n=21, h=4, w=5, spread=0),   # n = p + 1
    dict(n=19, h=4, w=5, spread=0),   # n = p − 1
    dict(n=30, h=4, w=5, spread=4),   # column spread 1e±4, primal
    dict(n=30, h=4, w=5, spread=8),   # column spread 1e±8, primal (the correlation-scaled route)
    dict(n=12, h=4, w=5, spread=8),   # column spread 1e±8, dual (the data SVD)
    dict(n=30, h=4, w=5, spread=0, rank=3),
    dict(n=12, h=4, w=5, spread=0, rank=2),
])
@pytest.mark.parametrize("view", ("filter", "filter-map"))
def test_filter_views_batched_route_equals_looped(case, view):
    """The whole filter view on the batched route against the per-matrix route (and, for the filter
    view, against the SVD references per filter), dead filters included."""
    a, b = filter_activations(7, c=5, dead=(1,), **case)
    with eigen.route("looped"):
        looped = layer_distance(a, b, METRICS, view=view)
    with eigen.route("batched"):
        batched = layer_distance(a, b, METRICS, view=view)
    assert batched.dead_filters == looped.dead_filters == 1
    for label, value in looped.values.items():
        assert batched.values[label] == pytest.approx(value, abs=TOL), label
        np.testing.assert_allclose(batched.per_filter[label], looped.per_filter[label], atol=TOL, equal_nan=True)
    if view == "filter":  # beyond 1e±4 the SVD-of-the-data reference loses digits: 50-digit arithmetic
        pwsm = ref.pwsm if case["spread"] <= 4 else ref.exact_pwsm
        for f in (0, 2):
            X = a[:, f].reshape(len(a), -1)
            Y = b[:, f].reshape(len(b), -1)
            assert batched.per_filter["procrustes"][f] == pytest.approx(ref.procrustes(X, Y), abs=TOL)
            assert batched.per_filter["pwsm:0.5"][f] == pytest.approx(pwsm(X, Y, 0.5), abs=TOL)


def test_symmetric_eigh_off_the_gpu_is_torchs():
    a = torch.randn(4, 9, 9, dtype=torch.float64)
    a = a @ a.transpose(1, 2)
    values, vectors = eigen.symmetric_eigh(a)
    expected_values, expected_vectors = torch.linalg.eigh(a)
    assert torch.equal(values, expected_values) and torch.equal(vectors, expected_vectors)
    assert eigen.symmetric_eigh(a, vectors=False)[1] is None


def test_unknown_routes_are_refused():
    with pytest.raises(ValueError, match="unknown eigen route"):
        with eigen.route("fast"):
            pass
    with pytest.raises(ValueError, match="unknown nuclear-norm route"):
        nuclear_norms(torch.eye(3, dtype=torch.float64)[None], route="fast")
