"""Views and the layer-level entry point, checked against per-matrix references."""

import numpy as np
import pytest
import torch

import similarity_reference as ref
from engine.similarity import DegenerateWhiteningError, SourceSpectrumCache, layer_distance
from engine.similarity.metrics import FLOAT32_WELL_CONDITIONED_BOUND, compute_dtype_for

TOL = 1e-10
METRICS = ("pwsm", "pwsm:1", "procrustes", "cka")


def activations(seed, n=12, c=6, h=5, w=4, dead=()):
    """Paired ReLU activations (n, c, h, w) with a shared component, like a layer before/after tuning."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, c, h, w))
    b = 0.8 * a + 0.6 * rng.normal(size=(n, c, h, w))
    a, b = np.maximum(a + 0.2, 0), np.maximum(b, 0)
    for f in dead:
        a[:, f] = 0.0
    return a, b


def reference_values(X, Y):
    return {"pwsm:0.5": ref.pwsm(X, Y, 0.5), "pwsm:1": ref.pwsm(X, Y, 1.0),
            "procrustes": ref.procrustes(X, Y), "cka": ref.cka(X, Y)}


@pytest.mark.parametrize("view,to_matrix", [
    ("positions", lambda a: a.transpose(0, 2, 3, 1).reshape(-1, a.shape[1])),
    ("pooled", lambda a: a.mean(axis=(2, 3))),
    ("flat", lambda a: a.reshape(a.shape[0], -1)),
])
def test_whole_layer_views_match_reference_on_their_matrices(view, to_matrix):
    n = 40 if view == "pooled" else 12
    a, b = activations(1, n=n)
    result = layer_distance(a, b, METRICS, view=view, chunk_bytes=2000)  # tiny chunks: streaming on
    expected = reference_values(to_matrix(a), to_matrix(b))
    for label, value in expected.items():
        assert result.values[label] == pytest.approx(value, abs=TOL), label
    assert result.dead_filters == 0
    if view == "positions":  # the channel angle, from a reference on each column of the same matrices
        X, Y = to_matrix(a), to_matrix(b)
        expected = [np.arccos(abs(np.corrcoef(X[:, j], Y[:, j])[0, 1])) for j in range(X.shape[1])]
        np.testing.assert_allclose(result.per_filter["channel-angle"], expected, atol=1e-10)
        assert list(result.per_filter) == ["channel-angle"]
    else:
        assert result.per_filter == {}


def test_channel_angle_is_each_filter_alone_under_every_metric():
    a, b = activations(2, n=10)
    a[:, 1] = 0.0  # a dead filter
    b[:, 2] = -3.0 * a[:, 2] + 1.5  # an affine change of sign and scale: not a move
    b[:, 3] = a[:, 3]  # unchanged
    angles = layer_distance(a, b, ["pwsm"], view="positions").per_filter["channel-angle"]
    assert np.isnan(angles[1]) and angles[2] < 1e-7 and angles[3] < 1e-7
    for j in (0, 4, 5):
        alone = layer_distance(a[:, j:j + 1], b[:, j:j + 1], ["pwsm:0", "pwsm:0.5", "pwsm:1", "procrustes", "cka"],
                               view="positions").values
        for alpha in ("pwsm:0", "pwsm:0.5", "pwsm:1"):
            assert alone[alpha] == pytest.approx(angles[j], abs=1e-10)
        assert alone["procrustes"] == pytest.approx(2 - 2 * np.cos(angles[j]), abs=1e-10)
        assert alone["cka"] == pytest.approx(1 - np.cos(angles[j]) ** 2, abs=1e-10)


def test_filter_view_matches_per_filter_reference_and_layer_mean():
    a, b = activations(2, n=10, c=5, h=4, w=6)  # h·w = 24 > n: the dual path
    result = layer_distance(a, b, METRICS, view="filter", alpha=0.5)
    for f in range(a.shape[1]):
        X, Y = a[:, f].reshape(10, -1), b[:, f].reshape(10, -1)
        for label, value in reference_values(X, Y).items():
            assert result.per_filter[label][f] == pytest.approx(value, abs=TOL)
    for label in result.values:
        assert result.values[label] == pytest.approx(result.per_filter[label].mean(), abs=1e-14)


def test_filter_view_primal_path_when_maps_are_small():
    a, b = activations(3, n=30, c=4, h=3, w=3)  # h·w = 9 < n: the primal path, α = 0 allowed
    result = layer_distance(a, b, ("pwsm:0", "cka"), view="filter")
    for f in range(4):
        X, Y = a[:, f].reshape(30, -1), b[:, f].reshape(30, -1)
        assert result.per_filter["pwsm:0"][f] == pytest.approx(ref.pwsm(X, Y, 0.0), abs=TOL)
        assert result.per_filter["cka"][f] == pytest.approx(ref.cka(X, Y), abs=TOL)


def test_filter_map_view_reproduces_authors_per_image_procrustes():
    a, b = activations(4, n=5, c=3, h=6, w=7)
    result = layer_distance(a, b, ("procrustes",), view="filter-map")
    for f in range(3):
        # the authors' layout: image rows are features, columns samples, each row centred
        per_image = [ref.procrustes(a[i, f].T, b[i, f].T) for i in range(5)]
        assert result.per_filter["procrustes"][f] == pytest.approx(np.mean(per_image), abs=TOL)


def test_dead_filters_are_counted_and_never_reach_a_layer_value():
    a, b = activations(5, n=10, c=6, h=4, w=5, dead=(1, 4))
    b[:, 2] = 7.0  # constant in the tuned model only
    result = layer_distance(a, b, METRICS, view="filter")
    assert result.dead_filters == 3
    for label, vector in result.per_filter.items():
        assert np.isnan(vector[[1, 2, 4]]).all() and np.isfinite(vector[[0, 3, 5]]).all()
        assert np.isfinite(result.values[label])
        assert result.values[label] == pytest.approx(np.nanmean(vector), abs=1e-14)
    whole = layer_distance(a, b, METRICS, view="positions")
    assert whole.dead_filters == 3 and all(np.isfinite(v) for v in whole.values.values())
    everything_dead = layer_distance(np.zeros((8, 2, 3, 3)), np.zeros((8, 2, 3, 3)), METRICS, view="filter")
    assert everything_dead.values == {label: None for label in everything_dead.values}
    assert everything_dead.dead_filters == 2


@pytest.mark.parametrize("view", ["positions", "pooled", "flat", "filter", "filter-map"])
def test_epoch_zero_identical_activations_give_exactly_zero(view):
    a, _ = activations(6, n=20, c=4, h=3, w=3, dead=(2,))
    metrics = ("pwsm:1", "procrustes", "cka")
    result = layer_distance(a, a.copy(), metrics, view=view)
    assert all(v == 0.0 for v in result.values.values()), result.values


def test_source_cache_is_reused_and_gives_the_same_numbers():
    a, b = activations(7, n=8, c=5, h=4, w=4)
    _, b2 = activations(8, n=8, c=5, h=4, w=4)
    cache = SourceSpectrumCache()
    first = layer_distance(a, b, METRICS, view="filter", cache=cache, cache_key="layer3")
    entries = len(cache)
    assert entries > 0
    second = layer_distance(a, b2, METRICS, view="filter", cache=cache, cache_key="layer3")
    assert len(cache) == entries  # nothing new decomposed for the source side
    uncached = layer_distance(a, b2, METRICS, view="filter")
    for label in METRICS[1:]:
        np.testing.assert_array_equal(second.per_filter[label], uncached.per_filter[label])
    changed = a + 0.5  # a different source under the same key must not reuse the old spectra
    layer_distance(changed, b, METRICS, view="filter", cache=cache, cache_key="layer3")
    assert len(cache) > entries
    assert first.values != second.values


def test_chunking_does_not_change_results():
    a, b = activations(9, n=10, c=7, h=5, w=5)
    big = layer_distance(a, b, METRICS, view="filter")
    small = layer_distance(a, b, METRICS, view="filter", chunk_bytes=1)
    for label in big.per_filter:
        np.testing.assert_allclose(small.per_filter[label], big.per_filter[label], atol=1e-13)


def test_degenerate_view_refuses_alpha_zero_before_any_work():
    a, b = activations(10, n=10, c=3, h=4, w=4)  # 10 images − 1 ≤ 16 positions
    with pytest.raises(DegenerateWhiteningError, match="view 'filter'"):
        layer_distance(a, b, ("pwsm:0",), view="filter")
    layer_distance(a, b, ("pwsm:0",), view="positions")  # 160 rows, 3 columns: fine


def test_bad_arguments_say_what_to_do():
    a, b = activations(11)
    with pytest.raises(ValueError, match="choose from"):
        layer_distance(a, b, ("pwsm",), view="pixels")
    with pytest.raises(ValueError, match="shape"):
        layer_distance(a, b[:, :3], ("pwsm",))


def test_float32_layer_path_within_its_stated_bound():
    """float32 moments on well-conditioned data stay within the documented bound of float64 on the
    same float32 inputs (measured worst 1.07e-6 under load: the bound keeps a margin of 10)."""
    a, b = activations(12, n=64, c=16, h=6, w=6)
    exact = layer_distance(a, b, ("pwsm:0", "pwsm:0.5", "procrustes"), view="positions")
    fast = layer_distance(torch.from_numpy(np.float32(a)), torch.from_numpy(np.float32(b)),
                          ("pwsm:0", "pwsm:0.5", "procrustes"), view="positions", precision="float32")
    exact32 = layer_distance(np.float64(np.float32(a)), np.float64(np.float32(b)),
                             ("pwsm:0", "pwsm:0.5", "procrustes"), view="positions")
    for label in exact.values:
        assert abs(fast.values[label] - exact32.values[label]) < FLOAT32_WELL_CONDITIONED_BOUND
        assert abs(exact32.values[label] - exact.values[label]) < 1e-5


def test_default_precision_is_float64_on_every_device_and_exact_on_float32_inputs():
    """float32 activations (what every model gives) are measured in float64 unless float32 is asked
    for: products of float32 numbers are exact in float64, so the result equals the float64 path."""
    assert compute_dtype_for(torch.device("cuda"), None) == torch.float64
    assert compute_dtype_for(torch.device("cpu"), None) == torch.float64
    rng = np.random.default_rng(5)
    scale = 10.0 ** rng.uniform(-4, 4, size=(1, 16, 1, 1))  # channel scales over 1e±4: float32 moments fail here
    a, b = activations(3, n=64, c=16, h=6, w=6)
    a32, b32 = np.float32(a * scale), np.float32(b * scale)
    default = layer_distance(torch.from_numpy(a32), torch.from_numpy(b32), ("pwsm:0", "pwsm:0.5", "cka"))
    exact = layer_distance(np.float64(a32), np.float64(b32), ("pwsm:0", "pwsm:0.5", "cka"))
    for label, value in exact.values.items():
        assert abs(default.values[label] - value) < 1e-12


@pytest.mark.parametrize("decades", [4, 6])
def test_flat_view_is_exact_at_wide_channel_spreads(decades):
    """Dead-ish channels next to live ones: the flat view's Gram cannot resolve them, so that side
    is decomposed again from its data; equal to 50-digit arithmetic."""
    pytest.importorskip("mpmath")
    rng = np.random.default_rng(decades)
    a = rng.normal(size=(12, 4, 2, 2))
    b = a + 0.5 * rng.normal(size=a.shape)
    scales = 10.0 ** rng.uniform(-decades, decades, size=4)[None, :, None, None]
    a, b = a * scales, b * scales
    got = layer_distance(torch.from_numpy(a), torch.from_numpy(b), ["pwsm:0.5"], view="flat").values["pwsm:0.5"]
    assert got == pytest.approx(ref.exact_pwsm(a.reshape(12, -1), b.reshape(12, -1), 0.5), abs=1e-10)
