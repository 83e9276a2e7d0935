"""Matrix-level metrics against independent float64 references, and their mathematical properties."""

import math
import warnings
import zlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import similarity_reference as ref
from engine.similarity import (
    distances,
    DegenerateWhiteningError,
    DegenerateWhiteningWarning,
    MomentAccumulator,
    cka_distance,
    parse_metric,
    procrustes_distance,
    pwsm_distance,
)
from engine.similarity.metrics import FLOAT32_WELL_CONDITIONED_BOUND, Metric, metric_values, pair_spectra

TOL = 1e-10
SHAPES = [(200, 12), (60, 40), (24, 50)]  # primal, near-square, dual (features > samples)


def alphas_for(m, p):
    """α = 0 is only defined outside the degenerate regime (samples − 1 > features)."""
    return [1.0, 0.5, 0.1] + ([0.0] if m - 1 > p else [])


@pytest.mark.parametrize("kind", list(ref.DATA_KINDS))
@pytest.mark.parametrize("m,p", SHAPES)
def test_metrics_match_reference(kind, m, p):
    rng = np.random.default_rng(zlib.crc32(f"{kind}-{m}-{p}".encode()))
    X, Y = ref.DATA_KINDS[kind](rng, m, p)
    for alpha in alphas_for(m, p):
        assert pwsm_distance(X, Y, alpha) == pytest.approx(ref.pwsm(X, Y, alpha), abs=TOL), alpha
    assert procrustes_distance(X, Y) == pytest.approx(ref.procrustes(X, Y), abs=TOL)
    assert cka_distance(X, Y) == pytest.approx(ref.cka(X, Y), abs=TOL)


@pytest.mark.parametrize("kind", ["random", "relu", "badly-scaled"])
@pytest.mark.parametrize("m,p", [(200, 12), (80, 30)])
def test_netrep_scale_reproduces_netrep(kind, m, p):
    rng = np.random.default_rng(7)
    X, Y = ref.DATA_KINDS[kind](rng, m, p)
    for alpha in alphas_for(m, p):
        expected = ref.netrep_linear_metric(X, Y, alpha)
        assert pwsm_distance(X, Y, alpha, whitening_scale="netrep") == pytest.approx(expected, abs=TOL)
        # and the explicit-whitening reference agrees with netrep's own pipeline
        assert ref.pwsm(X, Y, alpha, netrep=True) == pytest.approx(expected, abs=TOL)


@pytest.mark.parametrize("decades", (0, 2, 4))
@pytest.mark.parametrize("m,p", [(200, 12), (30, 40)])
def test_exact_at_any_column_spread(decades, m, p):
    """Dead-ish channels next to live ones: every metric equals the SVD-of-the-data reference
    (which never forms XᵀX), primal and dual, netrep's scale included. Beyond 1e±4 the reference
    itself loses digits (singular values spread beyond 1e8); the next test takes over there."""
    rng = np.random.default_rng(100 + decades + m)
    X, Y = ref.spread_pair(rng, m, p, decades)
    for alpha in alphas_for(m, p):
        assert pwsm_distance(X, Y, alpha) == pytest.approx(ref.pwsm(X, Y, alpha), abs=TOL), alpha
        assert pwsm_distance(X, Y, alpha, whitening_scale="netrep") == pytest.approx(
            ref.pwsm(X, Y, alpha, netrep=True), abs=TOL), alpha
    assert procrustes_distance(X, Y) == pytest.approx(ref.procrustes(X, Y), abs=TOL)
    assert cka_distance(X, Y) == pytest.approx(ref.cka(X, Y), abs=TOL)
    # streaming moments (the positions view's path) agree as well
    acc = MomentAccumulator()
    for rows in np.array_split(np.arange(m), 3):
        acc.update(torch.from_numpy(X[rows]), torch.from_numpy(Y[rows]))
    if m - 1 > p:
        streamed = metric_values(acc.paired_spectra(), [Metric("pwsm", 0.0)])["pwsm:0"]
        assert float(streamed[0]) == pytest.approx(ref.pwsm(X, Y, 0.0), abs=TOL)


@pytest.mark.parametrize("decades", (6, 8))
@pytest.mark.parametrize("m,p", [(60, 8), (12, 20)])
def test_exact_at_wide_spread_against_high_precision_arithmetic(decades, m, p):
    pytest.importorskip("mpmath")
    rng = np.random.default_rng(decades + p)
    X, Y = ref.spread_pair(rng, m, p, decades)
    for alpha in alphas_for(m, p)[1:]:
        assert pwsm_distance(X, Y, alpha) == pytest.approx(ref.exact_pwsm(X, Y, alpha), abs=TOL), alpha
    assert procrustes_distance(X, Y) == pytest.approx(ref.procrustes(X, Y), abs=TOL)
    assert cka_distance(X, Y) == pytest.approx(ref.cka(X, Y), abs=TOL)


@pytest.mark.parametrize("case", ["rows = features + 1", "near-identical", "tiny maps"])
def test_float64_default_on_adversarial_cases(case):
    """The default path against 50-digit arithmetic where float32 fails (docs/PRECISION.md).
    Near-identical pairs: θ comes from 1 − cos θ, which rounding floors near √ε·… (measured 4e-9 at
    θ ≈ 1e-7); every other case to TOL."""
    pytest.importorskip("mpmath")
    rng = np.random.default_rng(3)
    if case == "rows = features + 1":
        X, Y = ref.random_pair(rng, 13, 12, noise=0.3)
        alphas, tol = (0.1, 0.5, 1.0), TOL
    elif case == "near-identical":
        X = rng.normal(size=(200, 12))
        Y = X + 1e-7 * rng.normal(size=X.shape)
        alphas, tol = (0.0, 0.5, 1.0), 1e-8
    else:  # one 3×3 ReLU map as a matrix, the filter-map view's unit
        X = np.maximum(rng.normal(size=(3, 3)), 0) + np.eye(3)
        Y = X + 0.2 * rng.normal(size=(3, 3))
        alphas, tol = (1.0,), TOL
    for alpha in alphas:
        assert pwsm_distance(X, Y, alpha) == pytest.approx(ref.exact_pwsm(X, Y, alpha), abs=tol), alpha


@pytest.mark.parametrize("m,p", [(60, 12), (20, 45)])
def test_several_metrics_from_one_call_equal_each_function_and_each_matrix(m, p):
    """The public batched path (chunked, threaded) gives each matrix's own values, whatever the chunk."""
    rng = np.random.default_rng(m + p)
    pairs = [ref.DATA_KINDS[kind](rng, m, p) for kind in ("random", "relu", "dead-columns", "low-rank", "random")]
    X = np.stack([x for x, _ in pairs])
    Y = np.stack([y for _, y in pairs])
    labels = ["pwsm:0.5", "pwsm:0.1", "procrustes", "cka"]
    tiny_chunks = distances(X, Y, labels, chunk_bytes=1)  # one matrix per chunk
    whole = distances(X, Y, labels)
    for label in labels:
        assert torch.equal(torch.nan_to_num(tiny_chunks[label], -1.0), torch.nan_to_num(whole[label], -1.0))
    for i, (x, y) in enumerate(pairs):
        single = distances(x, y, labels)
        assert single["pwsm:0.5"] == pytest.approx(pwsm_distance(x, y, 0.5), abs=1e-12)
        assert single["procrustes"] == pytest.approx(procrustes_distance(x, y), abs=1e-12)
        assert single["cka"] == pytest.approx(cka_distance(x, y), abs=1e-12)
        for label in labels:
            assert float(whole[label][i]) == pytest.approx(single[label], abs=1e-12, nan_ok=True)
        assert single["pwsm:0.1"] == pytest.approx(ref.pwsm(x, y, 0.1), abs=TOL)


def test_netrep_pipeline_loses_directions_at_wide_spreads_where_we_do_not():
    """netrep eigen-decomposes the raw XᵀX: at 1e±6 its smallest eigenvalues are rounding noise.
    We state the disagreement rather than reproduce it."""
    rng = np.random.default_rng(5)
    X, Y = ref.spread_pair(rng, 200, 12, 5)
    exact = ref.pwsm(X, Y, 0.0, netrep=True)
    assert pwsm_distance(X, Y, 0.0, whitening_scale="netrep") == pytest.approx(exact, abs=TOL)
    assert abs(ref.netrep_linear_metric(X, Y, 0.0) - exact) > 1e-2  # measured: 0.22 rad


def test_netrep_intermediate_alpha_depends_on_scale_ours_does_not():
    rng = np.random.default_rng(3)
    X, Y = ref.random_pair(rng, 150, 20)
    ours = [pwsm_distance(X * s, Y * s, 0.5) for s in (1e-3, 1.0, 1e3)]
    theirs = [pwsm_distance(X * s, Y * s, 0.5, whitening_scale="netrep") for s in (1e-3, 1.0, 1e3)]
    assert max(ours) - min(ours) < 1e-12
    assert max(theirs) - min(theirs) > 1e-3
    # at α = 0 and α = 1 both scalings agree
    for alpha in (0.0, 1.0):
        assert pwsm_distance(X, Y, alpha) == pytest.approx(pwsm_distance(X, Y, alpha, "netrep"), abs=TOL)


def test_repeating_rows_leaves_mean_eig_pwsm_unchanged():
    rng = np.random.default_rng(4)
    X, Y = ref.random_pair(rng, 100, 10)
    once = pwsm_distance(X, Y, 0.5)
    twice = pwsm_distance(np.vstack([X, X]), np.vstack([Y, Y]), 0.5)
    assert twice == pytest.approx(once, abs=1e-12)
    assert pwsm_distance(np.vstack([X, X]), np.vstack([Y, Y]), 0.5, "netrep") != pytest.approx(
        pwsm_distance(X, Y, 0.5, "netrep"), abs=1e-6)


def test_procrustes_is_two_minus_two_cos_of_angular_procrustes():
    rng = np.random.default_rng(5)
    X, Y = ref.relu_pair(rng, 90, 15)
    assert procrustes_distance(X, Y) == pytest.approx(2 - 2 * math.cos(pwsm_distance(X, Y, 1.0)), abs=TOL)


def test_alpha_zero_is_arccos_of_mean_canonical_correlation():
    rng = np.random.default_rng(6)
    X, Y = ref.random_pair(rng, 300, 8)
    qx, _ = np.linalg.qr(ref.centre(X))
    qy, _ = np.linalg.qr(ref.centre(Y))
    canonical = np.linalg.svd(qx.T @ qy, compute_uv=False)
    assert pwsm_distance(X, Y, 0.0) == pytest.approx(math.acos(canonical.mean()), abs=TOL)


def test_degenerate_alpha_zero_is_refused_with_a_reason():
    rng = np.random.default_rng(8)
    X, Y = ref.random_pair(rng, 30, 40)
    with pytest.raises(DegenerateWhiteningError, match="more probe images|alpha > 0"):
        pwsm_distance(X, Y, 0.0)
    with pytest.warns(DegenerateWhiteningWarning):
        pwsm_distance(X, Y, 0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pwsm_distance(X, Y, 0.5)  # a sensible α is not flagged
        pwsm_distance(*ref.random_pair(rng, 100, 10), 0.0)  # α = 0 is fine with enough samples


def test_identical_inputs_give_exactly_zero_and_dead_inputs_nan():
    rng = np.random.default_rng(9)
    X, _ = ref.relu_pair(rng, 50, 10)
    for fn in (lambda a, b: pwsm_distance(a, b, 0.5), procrustes_distance, cka_distance):
        assert fn(X, X.copy()) == 0.0
        assert math.isnan(fn(np.ones((50, 10)), X))


def test_torch_and_numpy_inputs_and_batched_output():
    rng = np.random.default_rng(10)
    pairs = [ref.random_pair(rng, 40, 6) for _ in range(5)]
    X = np.stack([p[0] for p in pairs])
    Y = np.stack([p[1] for p in pairs])
    batched = pwsm_distance(torch.from_numpy(X), torch.from_numpy(Y), 0.5)
    assert isinstance(batched, torch.Tensor) and batched.shape == (5,)
    looped = [pwsm_distance(x, y, 0.5) for x, y in zip(X, Y)]
    np.testing.assert_allclose(batched.numpy(), looped, atol=1e-13)
    assert isinstance(procrustes_distance(X[0], Y[0]), float)


@pytest.mark.parametrize("m,p", [(120, 16), (20, 60)])
def test_primal_equals_dual(m, p):
    rng = np.random.default_rng(11)
    x, y = (torch.from_numpy(a)[None] for a in ref.relu_pair(rng, m, p))
    metrics = [parse_metric(s) for s in ("pwsm:1", "pwsm:0.5", "pwsm:0.2", "procrustes", "cka")]
    primal = metric_values(pair_spectra(x, y, form="primal"), metrics)
    dual = metric_values(pair_spectra(x, y, form="dual"), metrics)
    for label in primal:
        assert float(primal[label]) == pytest.approx(float(dual[label]), abs=TOL), label


def test_streaming_equals_all_at_once():
    rng = np.random.default_rng(12)
    X, Y = ref.relu_pair(rng, 500, 20)
    X = X + 50.0  # large means: naive XᵀX − mμμᵀ would lose digits
    acc = MomentAccumulator()
    for start in range(0, 500, 77):
        acc.update(torch.from_numpy(X[start:start + 77]), torch.from_numpy(Y[start:start + 77]))
    metrics = [parse_metric(s) for s in ("pwsm:0", "pwsm:0.5", "procrustes", "cka")]
    streamed = metric_values(acc.paired_spectra(), metrics)
    assert float(streamed["pwsm:0"]) == pytest.approx(ref.pwsm(X, Y, 0.0), abs=TOL)
    assert float(streamed["pwsm:0.5"]) == pytest.approx(ref.pwsm(X, Y, 0.5), abs=TOL)
    assert float(streamed["procrustes"]) == pytest.approx(ref.procrustes(X, Y), abs=TOL)
    assert float(streamed["cka"]) == pytest.approx(ref.cka(X, Y), abs=TOL)


@pytest.mark.parametrize("m,p", [(400, 24), (64, 196)])
def test_float32_path_within_its_stated_bound(m, p):
    rng = np.random.default_rng(13)
    X, Y = ref.relu_pair(rng, m, p)
    x32, y32 = np.float32(X), np.float32(Y)
    for alpha in alphas_for(m, p):
        exact = pwsm_distance(np.float64(x32), np.float64(y32), alpha)
        fast = pwsm_distance(torch.from_numpy(x32), torch.from_numpy(y32), alpha, precision="float32")
        assert abs(fast - exact) < FLOAT32_WELL_CONDITIONED_BOUND, (alpha, fast, exact)


def test_parse_metric():
    assert parse_metric("pwsm") == Metric("pwsm", 0.5)
    assert parse_metric("PWSM:0").label == "pwsm:0"
    assert parse_metric("cka").label == "cka"
    for bad in ("cosine", "pwsm:2", "pwsm:x", "cka:1"):
        with pytest.raises(ValueError):
            parse_metric(bad)


# ---------------------------------------------------------------------------------------------
# Properties (hypothesis): identity, symmetry, invariances, triangle inequality, ranges.

shapes = st.tuples(st.integers(12, 40), st.integers(2, 9))
seeds = st.integers(0, 2**31 - 1)
alphas = st.sampled_from([0.0, 0.3, 0.5, 1.0])
PROPERTY_SETTINGS = settings(max_examples=25, deadline=None)


def random_orthogonal(rng, p):
    q, r = np.linalg.qr(rng.normal(size=(p, p)))
    return q * np.sign(np.diag(r))


@PROPERTY_SETTINGS
@given(shapes, seeds, alphas)
def test_identity_up_to_rotation_is_zero(shape, seed, alpha):
    rng = np.random.default_rng(seed)
    X, _ = ref.random_pair(rng, *shape)
    Q = random_orthogonal(rng, shape[1])
    assert pwsm_distance(X, X @ Q * 3.0, alpha) < 1e-6
    assert procrustes_distance(X, X @ Q) < 1e-10
    assert cka_distance(X, X @ Q) < 1e-10


@PROPERTY_SETTINGS
@given(shapes, seeds, alphas)
def test_symmetry_and_ranges(shape, seed, alpha):
    rng = np.random.default_rng(seed)
    X, Y = ref.random_pair(rng, *shape)
    d = pwsm_distance(X, Y, alpha)
    assert d == pytest.approx(pwsm_distance(Y, X, alpha), abs=1e-10)
    assert 0.0 <= d <= math.pi / 2
    assert procrustes_distance(X, Y) == pytest.approx(procrustes_distance(Y, X), abs=1e-10)
    assert 0.0 <= procrustes_distance(X, Y) <= 2.0
    assert cka_distance(X, Y) == pytest.approx(cka_distance(Y, X), abs=1e-10)
    assert 0.0 <= cka_distance(X, Y) <= 1.0


@PROPERTY_SETTINGS
@given(shapes, seeds, alphas, st.floats(1e-3, 1e3))
def test_invariance_to_orthogonal_transforms_and_global_scale(shape, seed, alpha, scale):
    rng = np.random.default_rng(seed)
    X, Y = ref.random_pair(rng, *shape)
    Qx, Qy = random_orthogonal(rng, shape[1]), random_orthogonal(rng, shape[1])
    base = pwsm_distance(X, Y, alpha)
    assert pwsm_distance(X @ Qx * scale, Y @ Qy, alpha) == pytest.approx(base, abs=1e-9)
    assert procrustes_distance(X @ Qx * scale, Y @ Qy) == pytest.approx(procrustes_distance(X, Y), abs=1e-9)
    assert cka_distance(X @ Qx * scale, Y @ Qy) == pytest.approx(cka_distance(X, Y), abs=1e-9)


@PROPERTY_SETTINGS
@given(shapes, seeds, alphas)
def test_angular_triangle_inequality(shape, seed, alpha):
    rng = np.random.default_rng(seed)
    m, p = shape
    X, Y, Z = (rng.normal(size=(m, p)) for _ in range(3))
    Y = 0.6 * X + Y  # correlated triples make the inequality tight enough to test something
    Z = 0.6 * Y + Z
    d_xz = pwsm_distance(X, Z, alpha)
    assert d_xz <= pwsm_distance(X, Y, alpha) + pwsm_distance(Y, Z, alpha) + 1e-10
