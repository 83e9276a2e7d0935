"""Jackknife intervals (engine/intervals.py) and debiased CKA (engine/similarity/debiased.py), against
straightforward references written here and by their mathematical properties.

Every reference recomputes from scratch: the replicates of a layer are the metric recomputed on the
probe images that remain once image group g (image i ∈ g ⇔ i mod G = g) is deleted, built view by view
from the raw activations with numpy; debiased CKA is Song et al.'s U-statistic HSIC on *uncentred* Grams,
in exact rational arithmetic where float64 would cancel.
"""

import json
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from scipy.stats import binom
from scipy.stats import t as student_t

import similarity_reference as ref
from engine.intervals import (
    Estimate,
    IntervalSettings,
    derived,
    estimate,
    jackknife_se,
    paired_difference,
    settings_for,
    unpaired_difference,
)
from engine.similarity import LayerAccumulator, distances, layer_distance

TOL = 1e-10


# ---------------------------------------------------------------------------------------------
# References.


def song_hsic(K, L):
    """Song et al. (2012) unbiased HSIC from Grams K, L of the raw (uncentred) data, verbatim:
    [tr(K̃L̃) + 1ᵀK̃1·1ᵀL̃1/((n−1)(n−2)) − 2/(n−2)·1ᵀK̃L̃1] / (n(n−3)), K̃ = K with a zero diagonal.
    Works on float arrays and on object arrays of Fractions (exact)."""
    n = K.shape[0]
    K, L = K.copy(), L.copy()
    np.fill_diagonal(K, 0)
    np.fill_diagonal(L, 0)
    trace_kl = (K * L.T).sum()
    return (trace_kl + K.sum() * L.sum() / ((n - 1) * (n - 2)) - 2 * (K.sum(0) @ L.sum(1)) / (n - 2)) / (n * (n - 3))


def song_debiased_distance(X, Y, exact=False):
    """1 − HSIC_u(K, L) / √(HSIC_u(K, K) HSIC_u(L, L)) with K = XXᵀ, L = YYᵀ of the raw data.
    ``exact``: the float64 data taken as exact rationals, so no cancellation whatever the means."""
    X, Y = np.asarray(X, dtype=np.float64), np.asarray(Y, dtype=np.float64)
    if exact:
        X, Y = (np.array([[Fraction(v) for v in row] for row in M], dtype=object) for M in (X, Y))
    K, L = X @ X.T, Y @ Y.T
    h_xy, h_xx, h_yy = song_hsic(K, L), song_hsic(K, K), song_hsic(L, L)
    return 1.0 - float(h_xy) / math.sqrt(float(h_xx) * float(h_yy))


METRIC_REFERENCES = {
    "pwsm:0.5": lambda X, Y: ref.pwsm(X, Y, 0.5),
    "procrustes": ref.procrustes,  # centre, unit norm, 2 − 2‖XᵀY‖_*
    "cka": ref.cka,  # centre, 1 − ‖XᵀY‖²/(‖XᵀX‖‖YᵀY‖)
    "cka-debiased": song_debiased_distance,
}
METRICS = list(METRIC_REFERENCES)


def reference_layer_value(view, a, b, label):
    """The layer's value under ``view`` straight from the activations (n, c, h, w) of the kept images."""
    metric = METRIC_REFERENCES[label]
    n, c = a.shape[:2]
    if view == "positions":  # every image × position a sample, channels the features
        return metric(a.transpose(0, 2, 3, 1).reshape(-1, c), b.transpose(0, 2, 3, 1).reshape(-1, c))
    if view == "pooled":
        return metric(a.mean(axis=(2, 3)), b.mean(axis=(2, 3)))
    if view in ("flat", "cls"):
        return metric(a.reshape(n, -1), b.reshape(n, -1))
    if view == "filter":  # one (n, h·w) matrix per filter, the layer the mean over filters
        return float(np.mean([metric(a[:, j].reshape(n, -1), b[:, j].reshape(n, -1)) for j in range(c)]))
    if view == "filter-map":  # each h×w map transposed: image columns are samples, rows features;
        # a filter's value the mean over the images, the layer the mean over filters
        return float(np.mean([np.mean([metric(a[i, j].T, b[i, j].T) for i in range(n)]) for j in range(c)]))
    raise AssertionError(view)


def jackknife_by_hand(view, a, b, label, groups):
    """Delete-one-group replicates: the layer recomputed without images i with i mod G = g."""
    image_group = np.arange(a.shape[0]) % groups
    return [reference_layer_value(view, a[image_group != g], b[image_group != g], label) for g in range(groups)]


def accumulate(view, a, b, metrics, groups, batch):
    acc = LayerAccumulator(view, metrics, groups=groups)
    for start in range(0, a.shape[0], batch):
        acc.update(torch.from_numpy(a[start:start + batch]), torch.from_numpy(b[start:start + batch]))
    return acc.result()


def activations(view, rng, n=23):
    """Paired float64 activations (n, c, h, w) with moderate column means, shaped so that replicates
    cross the primal/dual boundary where a view has one (filter: 20 features, 23 rows in the full set,
    17–18 in a replicate; flat: 60 features; filter-map: 5 samples × 4 features per map)."""
    shape = (n, 8, 1, 1) if view == "cls" else (n, 3, 4, 5)
    a = rng.normal(size=shape) + rng.uniform(-2, 2, size=(1, shape[1], 1, 1))
    b = 0.8 * np.roll(a, 1, axis=1) + 0.6 * rng.normal(size=shape) + 1.5
    return a, b


# ---------------------------------------------------------------------------------------------
# 1. Replicates equal the metric recomputed on each reduced probe set.


@pytest.mark.parametrize("view", ["positions", "pooled", "flat", "filter", "filter-map", "cls"])
def test_replicates_equal_recomputation_without_each_group(view):
    n, groups = 23, 4  # 23 = 4·5 + 3: unequal groups, and batches of 5 straddle them
    rng = np.random.default_rng(sum(map(ord, view)))
    a, b = activations(view, rng, n)
    result = accumulate(view, a, b, METRICS, groups, batch=5)
    whole = layer_distance(torch.from_numpy(a), torch.from_numpy(b), METRICS, view=view)
    for label in METRICS:
        expected_value = reference_layer_value(view, a, b, label)
        expected_replicates = jackknife_by_hand(view, a, b, label, groups)
        assert result.values[label] == pytest.approx(expected_value, abs=TOL), label
        assert whole.values[label] == pytest.approx(result.values[label], abs=TOL), label
        assert len(result.replicates[label]) == groups, label
        np.testing.assert_allclose(result.replicates[label], expected_replicates, rtol=0, atol=TOL, err_msg=label)
        # the replicates are not the full value again: deleting a group moves the layer
        assert min(abs(r - expected_value) for r in expected_replicates) > 1e-6, label


def test_without_groups_there_are_no_replicates():
    rng = np.random.default_rng(1)
    a, b = activations("pooled", rng)
    assert accumulate("pooled", a, b, ["cka"], groups=1, batch=5).replicates == {}


# ---------------------------------------------------------------------------------------------
# 2. The jackknife standard error and the t interval.


def test_standard_error_and_interval_by_hand():
    groups, level = 6, 0.9
    rng = np.random.default_rng(2)
    a, b = activations("pooled", rng, n=40)
    result = accumulate("pooled", a, b, ["cka", "procrustes"], groups, batch=7)
    settings = settings_for(groups, level)
    t = student_t.ppf((1 + level) / 2, groups - 1)
    assert settings.t == pytest.approx(t, rel=1e-14)
    for label in ("cka", "procrustes"):
        d, reps = result.values[label], result.replicates[label]
        mean = sum(reps) / groups
        se = math.sqrt((groups - 1) / groups * sum((r - mean) ** 2 for r in reps))
        assert se > 0
        assert jackknife_se(reps) == pytest.approx(se, rel=1e-12)
        found = estimate(d, reps, settings.t)
        assert found.value == d and found.se == pytest.approx(se, rel=1e-12)
        assert found.low == pytest.approx(d - t * se, rel=1e-12)
        assert found.high == pytest.approx(d + t * se, rel=1e-12)
        assert found.half_width == pytest.approx(t * se, rel=1e-12)
        assert found.excludes_zero == (d - t * se > 0 or d + t * se < 0)


def test_jackknife_of_a_mean_is_the_standard_error_of_the_group_means():
    """For the mean over equal groups, the delete-one-group jackknife SE equals s(group means)/√G."""
    rng = np.random.default_rng(3)
    groups, per_group = 8, 5
    x = rng.normal(size=groups * per_group)
    group = np.arange(x.size) % groups
    reps = [x[group != g].mean() for g in range(groups)]
    group_means = np.array([x[group == g].mean() for g in range(groups)])
    assert jackknife_se(reps) == pytest.approx(group_means.std(ddof=1) / math.sqrt(groups), rel=1e-12)


def test_missing_or_non_finite_inputs_give_no_estimate():
    assert estimate(None, [0.1, 0.2], 2.0) is None
    assert estimate(float("nan"), [0.1, 0.2], 2.0) is None
    assert estimate(0.1, None, 2.0) is None
    assert estimate(0.1, [0.1, None, 0.2], 2.0) is None
    assert estimate(0.1, [0.1, float("inf")], 2.0) is None
    assert jackknife_se([0.3]) is None
    assert paired_difference(0.1, [0.1, None, 0.2], 0.2, [0.1, 0.2, 0.3], 2.0) is None
    assert paired_difference(0.1, [0.1, 0.2], 0.2, [0.1, 0.2, 0.3], 2.0) is None


# ---------------------------------------------------------------------------------------------
# 3. Paired and unpaired differences.


def test_paired_difference_is_narrower_than_unpaired_for_correlated_layers():
    groups = 10
    t = settings_for(groups, 0.9).t
    rng = np.random.default_rng(4)
    n, c = 60, 5
    source = rng.normal(size=(n, c, 2, 2))
    tuned_a = source + 0.8 * rng.normal(size=source.shape)
    tuned_b = tuned_a + 0.1 * rng.normal(size=source.shape)  # layer b: layer a plus a little noise
    layer_a = accumulate("positions", source, tuned_a, ["cka"], groups, batch=16)
    layer_b = accumulate("positions", source, tuned_b, ["cka"], groups, batch=16)
    a, a_reps = layer_a.values["cka"], np.array(layer_a.replicates["cka"])
    b, b_reps = layer_b.values["cka"], np.array(layer_b.replicates["cka"])
    assert np.corrcoef(a_reps, b_reps)[0, 1] > 0.5  # the layers move together across replicates

    same = paired_difference(a, a_reps, a, a_reps, t)
    assert same.value == 0.0 and same.se == 0.0 and same.half_width == 0.0 and same.low == same.high == 0.0

    paired = paired_difference(a, a_reps, b, b_reps, t)
    assert paired.value == pytest.approx(a - b, abs=1e-15)
    assert paired.se == pytest.approx(jackknife_se(a_reps - b_reps), rel=1e-12)
    unpaired = unpaired_difference(estimate(a, a_reps, t), estimate(b, b_reps, t))
    assert unpaired.value == pytest.approx(a - b, abs=1e-15)
    assert unpaired.se == pytest.approx(math.hypot(jackknife_se(a_reps), jackknife_se(b_reps)), rel=1e-12)
    assert paired.half_width < 0.5 * unpaired.half_width, (paired, unpaired)


def test_unpaired_difference_takes_the_larger_t():
    one, other = Estimate(0.5, 0.03, 1.8), Estimate(0.2, 0.04, 2.1)
    found = unpaired_difference(one, other)
    assert (found.value, found.se, found.t) == (pytest.approx(0.3), pytest.approx(0.05), 2.1)
    assert unpaired_difference(one, None) is None


def test_derived_statistic_is_computed_inside_each_replicate():
    """The mean over two layers: its replicates are the per-replicate means, not a mean of SEs."""
    rng = np.random.default_rng(5)
    values, reps = rng.normal(size=2), rng.normal(size=(7, 2))
    found = derived(lambda v: float(v.mean()), values, reps, 2.0)
    assert found.value == pytest.approx(values.mean())
    assert found.se == pytest.approx(jackknife_se(reps.mean(axis=1)), rel=1e-12)


# ---------------------------------------------------------------------------------------------
# 4. Debiased CKA.


@pytest.mark.parametrize("n,p", [(40, 6), (12, 30)])  # feature space, and the Gram path (p > n)
def test_debiased_cka_equals_song_u_statistic_on_uncentred_grams(n, p):
    rng = np.random.default_rng(n * p)
    X = rng.normal(size=(n, p)) + rng.uniform(-3, 3, size=p)
    Y = X @ rng.normal(size=(p, p)) / math.sqrt(p) + rng.normal(size=(n, p)) - 2.0
    expected = song_debiased_distance(X, Y)
    assert distances(X, Y, ["cka-debiased"])["cka-debiased"] == pytest.approx(expected, abs=TOL)
    assert expected == pytest.approx(song_debiased_distance(X, Y, exact=True), abs=1e-12)  # the reference is sound
    assert abs(expected - distances(X, Y, ["cka"])["cka"]) > 1e-3  # and not biased CKA under another name


@pytest.mark.parametrize("view", ["positions", "pooled"])
def test_streamed_debiased_cka_with_large_column_means(view):
    """Columns with means 1e3–4e3 against unit spread. Float64 Song on the raw Grams cancels
    catastrophically here (its terms are ~1e12 times the result), so the reference runs in exact
    rational arithmetic on the same float64 data; the engine, streaming about a shift, matches it."""
    rng = np.random.default_rng(6)
    n, c, groups = 12, 4, 3
    means = 1e3 * np.arange(1, c + 1)[None, :, None, None]
    base = rng.normal(size=(n, c, 2, 2))
    a = base + means
    b = 0.5 * np.roll(base, 1, axis=1) + rng.normal(size=base.shape) - means
    result = accumulate(view, a, b, ["cka-debiased"], groups, batch=5)
    rows = ((lambda t: t.transpose(0, 2, 3, 1).reshape(-1, c)) if view == "positions"
            else (lambda t: t.mean(axis=(2, 3))))
    exact = song_debiased_distance(rows(a), rows(b), exact=True)
    assert result.values["cka-debiased"] == pytest.approx(exact, rel=TOL)
    group = np.arange(n) % groups
    for g in range(groups):
        keep = group != g
        expected = song_debiased_distance(rows(a[keep]), rows(b[keep]), exact=True)
        assert result.replicates["cka-debiased"][g] == pytest.approx(expected, rel=TOL), g


def random_orthogonal(rng, p):
    q, r = np.linalg.qr(rng.normal(size=(p, p)))
    return q * np.sign(np.diag(r))


@pytest.mark.parametrize("n,p", [(40, 6), (12, 30)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_debiased_cka_properties(n, p, seed):
    rng = np.random.default_rng(100 * seed + n)
    X, Y = ref.random_pair(rng, n, p)
    d = lambda u, v: distances(u, v, ["cka-debiased"])["cka-debiased"]  # noqa: E731
    base = d(X, Y)
    assert d(X, X.copy()) == 0.0
    assert d(X, 2.5 * X @ random_orthogonal(rng, p) + 7.0) == pytest.approx(0.0, abs=TOL)  # not the shortcut
    assert d(Y, X) == pytest.approx(base, abs=TOL)
    assert d(X @ random_orthogonal(rng, p), Y) == pytest.approx(base, abs=TOL)
    assert d(X, 1e-3 * Y) == pytest.approx(base, abs=TOL)
    assert d(X, 1e3 * Y) == pytest.approx(base, abs=TOL)
    assert d(X + rng.normal(size=p), Y) == pytest.approx(base, abs=TOL)  # column shifts


def test_debiased_cka_is_near_zero_for_independent_features_where_biased_is_not():
    """p ≫ n: biased CKA of independent data is inflated towards 1 (≈ 0.94 measured here); the
    debiased estimate stays near 0 (measured −0.04 … −0.08 over seeds)."""
    rng = np.random.default_rng(7)
    X, Y = rng.normal(size=(30, 500)), rng.normal(size=(30, 500))
    found = distances(X, Y, ["cka", "cka-debiased"])
    biased, debiased = 1 - found["cka"], 1 - found["cka-debiased"]
    assert biased > 0.5
    assert abs(debiased) < 0.2


# ---------------------------------------------------------------------------------------------
# 5. Coverage of the interval, by simulation against a known population value.


def test_interval_covers_the_population_value_at_its_level():
    """Rows x ~ N(0, Σx), y = x B + σ ε (p = 4): the population linear CKA is
    ‖Σxy‖²_F / (‖Σx‖_F ‖Σyy‖_F) with Σxy = Σx B, Σyy = BᵀΣxB + σ²I. Each draw feeds n = 120 samples
    through the `pooled` view with G = 10 groups and takes the 90 % interval.

    The band: with a true coverage of 0.90, the count of covering intervals out of 300 is
    Binomial(300, 0.9), which leaves [ppf(1e-5), isf(1e-5)] = [246, 290] (rates 0.820–0.967) with
    probability 1.1e-5. The jackknife-t interval is only approximately at its level: a long run
    (2000 draws, another seed) measured 0.891 for debiased CKA, for which the chance of leaving the
    band is still 9e-5. Biased CKA measured 0.875 there (its bias lowers its coverage), so it is
    printed, not asserted."""
    draws, n, groups, level = 300, 120, 10, 0.9
    settings = settings_for(groups, level)
    rng = np.random.default_rng(8)
    chol = np.array([[1.0, 0, 0, 0], [0.5, 1.0, 0, 0], [0.2, -0.3, 0.8, 0], [0.1, 0.4, 0.2, 0.6]])
    sigma_x = chol @ chol.T
    B = np.array([[1.0, 0.3, 0, 0], [0, 0.8, -0.4, 0], [0.2, 0, 0.5, 0.3], [0, 0.1, 0, 0.2]])
    sigma = 0.6
    sigma_xy, sigma_yy = sigma_x @ B, B.T @ sigma_x @ B + sigma ** 2 * np.eye(4)
    population = 1 - np.linalg.norm(sigma_xy) ** 2 / (np.linalg.norm(sigma_x) * np.linalg.norm(sigma_yy))
    covered = {"cka-debiased": 0, "cka": 0}
    for _ in range(draws):
        x = rng.normal(size=(n, 4)) @ chol.T
        y = x @ B + sigma * rng.normal(size=(n, 4))
        result = accumulate("pooled", x[:, :, None, None], y[:, :, None, None], list(covered), groups, batch=n)
        for label in covered:
            found = estimate(result.values[label], result.replicates[label], settings.t)
            covered[label] += found.low <= population <= found.high
    low, high = binom.ppf(1e-5, draws, level), binom.isf(1e-5, draws, level)
    for label, count in covered.items():
        print(f"{label}: {count}/{draws} intervals cover the population distance {population:.4f} "
              f"(rate {count / draws:.3f}, band [{low / draws:.3f}, {high / draws:.3f}])")
    assert low <= covered["cka-debiased"] <= high


def test_bias_corrected_estimate_equals_a_hand_jackknife():
    """G·d − (G−1)·mean d₍g₎ from the metric recomputed by hand on each reduced probe set, with the
    interval of the same half-width centred there; a statistic of it is the statistic corrected."""
    groups = 5
    rng = np.random.default_rng(11)
    a, b = activations("positions", rng, n=30)
    result = accumulate("positions", a, b, ["cka", "procrustes", "pwsm:0.5"], groups, batch=8)
    t = settings_for(groups, 0.9).t
    for label in ("cka", "procrustes", "pwsm:0.5"):
        d = reference_layer_value("positions", a, b, label)
        by_hand = jackknife_by_hand("positions", a, b, label, groups)
        corrected = groups * d - (groups - 1) * sum(by_hand) / groups
        plain, found = estimate(result.values[label], result.replicates[label], t), \
            estimate(result.values[label], result.replicates[label], t, corrected=True)
        assert abs(corrected - d) > 1e-6, label  # the correction moves the value
        assert found.value == pytest.approx(corrected, abs=TOL) and found.plug_in == pytest.approx(d, abs=TOL)
        assert found.se == plain.se and found.half_width == plain.half_width
        assert (found.low + found.high) / 2 == pytest.approx(corrected, abs=TOL)
        assert found.as_json()["plug_in"] == found.plug_in and "plug_in" not in plain.as_json()
    # a linear statistic of corrected values is the corrected statistic: the difference of two layers
    first, second = result.values["cka"], result.values["procrustes"]
    difference = paired_difference(first, result.replicates["cka"], second, result.replicates["procrustes"], t,
                                   corrected=True)
    each = [estimate(result.values[m], result.replicates[m], t, corrected=True).value for m in ("cka", "procrustes")]
    assert difference.value == pytest.approx(each[0] - each[1], abs=TOL)


def test_filter_map_values_are_means_over_images_so_their_correction_is_zero():
    """`filter-map` averages per-map values over the images: the jackknife's bias correction of a mean is
    exactly 0, so the estimate is the plug-in value (to rounding) and the interval a mean's."""
    rng = np.random.default_rng(6)
    a = rng.normal(size=(40, 6, 4, 3))
    b = a + 0.5 * rng.normal(size=a.shape)
    result = accumulate("filter-map", a, b, ["procrustes", "cka", "pwsm:0.5"], groups=10, batch=16)
    t = settings_for(10, 0.9).t
    for label, value in result.values.items():
        found = estimate(value, result.replicates[label], t, corrected=True)
        assert found.value == pytest.approx(value, abs=1e-14) and found.se > 0, label


def grouped_process(rng, channels, side, n, rho=0.5, sigma=0.7):
    """Activations (n, c, side, side) of two models from one latent per image shared by its positions
    (correlation ρ between positions of an image) — and the population moments of each view."""
    A = rng.normal(size=(channels, channels)) / math.sqrt(channels)
    B = 0.8 * A @ (0.7 * np.eye(channels) + 0.3 * np.linalg.qr(rng.normal(size=(channels, channels)))[0]) \
        + 0.5 * rng.normal(size=(channels, channels)) / math.sqrt(channels)
    P = side * side

    def draw(draw_rng):
        z = math.sqrt(rho) * draw_rng.normal(size=(n, 1, channels)) + \
            math.sqrt(1 - rho) * draw_rng.normal(size=(n, P, channels))
        x = z @ A + sigma * draw_rng.normal(size=(n, P, channels))
        y = z @ B + sigma * draw_rng.normal(size=(n, P, channels))
        return [v.transpose(0, 2, 1).reshape(n, channels, side, side) for v in (x, y)]

    def population(view, label):
        q, noise = (1.0, sigma ** 2) if view == "positions" else (rho + (1 - rho) / P, sigma ** 2 / P)
        joint = np.hstack([A, B])
        L = np.linalg.cholesky(q * joint.T @ joint + noise * np.eye(2 * channels))
        D = np.vstack([L.T, -L.T])  # zero column means, DᵀD = 2 Σ: any measure of moments sees Σ
        X, Y = D[:, :channels], D[:, channels:]
        return METRIC_REFERENCES["cka" if label == "cka-debiased" else label](X, Y) if label != "pwsm:0" \
            else ref.pwsm(X, Y, 0.0)

    return draw, population


@pytest.mark.parametrize("view,channels,side,n", [
    ("positions", 16, 3, 48), ("positions", 16, 3, 96), ("pooled", 8, 3, 96), ("pooled", 12, 3, 384)])
def test_bias_corrected_intervals_cover_on_grouped_rows(view, channels, side, n):
    """Every measure, 200 draws through the view with G = 10: the 90 % interval around the
    bias-corrected estimate covers the population value at its level (Binomial(200, 0.9) leaves
    [160, 195] with probability 2e-5), where the plug-in interval did not: on `positions` the rows of
    one image are correlated and the plug-in's bias was 2–3 half-widths (benchmarks/bench_coverage.py).
    The cells have at least 10 samples a feature; below that the correction is not enough, and runs
    say so (engine.training: warn_intervals_that_may_not_cover)."""
    draws, groups, level = 200, 10, 0.9
    labels = ["pwsm:0.5", "procrustes", "cka", "pwsm:0", "cka-debiased"]
    draw, population = grouped_process(np.random.default_rng(channels), channels, side, n)
    truth = {label: population(view, label) for label in labels}
    t = settings_for(groups, level).t
    rng = np.random.default_rng(n)
    covered, plug_in = dict.fromkeys(labels, 0), dict.fromkeys(labels, 0)
    for _ in range(draws):
        a, b = draw(rng)
        result = accumulate(view, a, b, labels, groups, batch=n)
        for label in labels:
            found = estimate(result.values[label], result.replicates[label], t, corrected=True)
            covered[label] += found.low <= truth[label] <= found.high
            plug_in[label] += abs(found.plug_in - truth[label]) <= found.half_width
    low, high = binom.ppf(1e-5, draws, level), binom.isf(1e-5, draws, level)
    print({label: f"{plug_in[label] / draws:.3f} → {covered[label] / draws:.3f}" for label in labels})
    assert all(low <= covered[label] <= high for label in labels), (covered, (low, high))


# ---------------------------------------------------------------------------------------------
# 6. Settings.


def test_settings_round_trip_through_json():
    for mode in ("auto", "all"):
        settings = settings_for(7, 0.95, mode)
        assert settings.t == pytest.approx(student_t.ppf(0.975, 6), rel=1e-14)
        assert IntervalSettings.from_json(settings.to_json()) == settings
        assert IntervalSettings.from_json(json.loads(json.dumps(settings.to_json()))) == settings


@pytest.mark.parametrize("damage", [
    lambda d: None,
    lambda d: [d],
    lambda d: "jackknife",
    lambda d: {**d, "method": "bootstrap"},
    lambda d: {k: v for k, v in d.items() if k != "method"},
    lambda d: {k: v for k, v in d.items() if k != "groups"},
    lambda d: {k: v for k, v in d.items() if k != "level"},
    lambda d: {k: v for k, v in d.items() if k != "t"},
    lambda d: {**d, "groups": "10"},
    lambda d: {**d, "groups": 10.0},
    lambda d: {**d, "groups": 1},
    lambda d: {**d, "groups": None},
    lambda d: {**d, "level": 2},
    lambda d: {**d, "level": 0},
    lambda d: {**d, "level": 1},
    lambda d: {**d, "level": "0.9"},
    lambda d: {**d, "level": float("nan")},
    lambda d: {**d, "t": None},
    lambda d: {**d, "t": "1.8"},
    lambda d: {**d, "t": -1.8},
    lambda d: {**d, "t": float("inf")},
    lambda d: {**d, "t": float("nan")},
])
def test_damaged_settings_read_as_none(damage):
    assert IntervalSettings.from_json(damage(settings_for(10, 0.9).to_json())) is None


def test_settings_for_refuses_bad_arguments():
    assert settings_for(10, 0.9, "off") is None
    for groups in (1, 0, -3, 2.5):
        with pytest.raises(ValueError, match="groups"):
            settings_for(groups, 0.9)
    for level in (0, 1, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="level"):
            settings_for(10, level)
    with pytest.raises(ValueError, match="intervals"):
        settings_for(10, 0.9, "sometimes")
    assert settings_for(2, 0.5).t == pytest.approx(student_t.ppf(0.75, 1), rel=1e-14)


def test_a_filter_without_a_debiased_value_is_left_out_of_that_metric_only():
    """A filter that responds to one probe image only has h(X, X) = 0: debiased CKA is 0/0 there. It is
    NaN in the per-filter vector and left out of the debiased mean, while the other metrics keep it."""
    rng = np.random.default_rng(0)
    a = np.abs(rng.normal(size=(10, 2, 3, 3)))
    b = a + 0.3 * rng.normal(size=a.shape)
    a[:, 0] = 0
    a[0, 0] = 1.0 + rng.uniform(size=(3, 3))
    found = layer_distance(torch.from_numpy(a), torch.from_numpy(b), ["cka-debiased", "cka"], view="filter")
    assert np.isnan(found.per_filter["cka-debiased"][0]) and np.isfinite(found.per_filter["cka"]).all()
    assert found.values["cka-debiased"] == pytest.approx(found.per_filter["cka-debiased"][1], abs=1e-15)
    assert found.values["cka"] == pytest.approx(found.per_filter["cka"].mean(), abs=1e-15)
    maps = np.abs(rng.normal(size=(10, 2, 5, 5)))
    maps[:, 0, :, 1:] = 0  # filter 0's maps vary along one image column only: no debiased value anywhere
    found = layer_distance(torch.from_numpy(maps), torch.from_numpy(maps + 0.3 * rng.normal(size=maps.shape)),
                           ["cka-debiased", "cka"], view="filter-map")
    assert found.values["cka-debiased"] is not None and np.isnan(found.per_filter["cka-debiased"][0])


@pytest.mark.parametrize("view", ["pooled", "flat"])
def test_full_whitening_degenerate_only_without_a_group_has_no_interval(view):
    """20 images and 17 features: PWSM α = 0 is defined on all of them (19 > 17) but not on the 16 a
    replicate keeps. That measure gets no replicates (None, so no interval); the layer and the other
    metrics are unaffected."""
    rng = np.random.default_rng(5)
    a = rng.normal(size=(20, 17, 1, 1))
    b = a + 0.3 * rng.normal(size=a.shape)
    accumulator = LayerAccumulator(view, ["pwsm:0", "cka"], groups=5)
    accumulator.update(torch.from_numpy(a), torch.from_numpy(b))
    found = accumulator.result()
    assert found.values["pwsm:0"] is not None and found.replicates["pwsm:0"] == [None] * 5
    assert all(v is not None for v in found.replicates["cka"])
    assert estimate(found.values["pwsm:0"], found.replicates["pwsm:0"], 2.0) is None
