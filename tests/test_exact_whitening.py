"""Exact whitening when channels are correlated (METRICS.md §3; docs/PRECISION.md "Dense mixing"):
whitened measures under dense mixing of the channels, against their invariance and 50-digit arithmetic."""

import numpy as np
import pytest
import torch

import similarity_reference as ref
from engine.similarity import LayerAccumulator, distances


def mixing(rng, p, condition):
    """A dense p×p matrix with singular values spread log-evenly over [1/condition, 1]."""
    u = np.linalg.qr(rng.normal(size=(p, p)))[0]
    v = np.linalg.qr(rng.normal(size=(p, p)))[0]
    return u @ np.diag(np.logspace(0, -np.log10(condition), p)) @ v.T


def bound(condition):
    """What exact arithmetic on the float64 data allows: the mixed data's own rounding is ε·κ relative
    in its smallest directions. benchmarks/dense_mixing.py measured 3.0e-10 at κ = 1e8 and 2.7e-8 at
    1e10 (the moments' route: 5e-2 and 9.4e-2)."""
    return 3e-17 * condition + 1e-12


def as_maps(a, side=1):
    """(m, p) rows → (m / side², p, side, side) maps whose `positions` rows are those rows."""
    m, p = a.shape
    return torch.from_numpy(a.reshape(m // (side * side), side, side, p).transpose(0, 3, 1, 2).copy())


def entry_values(entry, X, Y, labels):
    """The whitened measures of X, Y through one entry point: one-shot, or streamed batch by batch."""
    if entry == "one-shot":
        found = distances(X, Y, labels)
        return {label: float(found[label]) for label in labels}
    view, side = {"positions": ("positions", 2), "pooled": ("pooled", 1), "cls": ("cls", 1), "flat": ("flat", 1)}[entry]
    accumulator = LayerAccumulator(view, labels)
    a, b = as_maps(X, side), as_maps(Y, side)
    for start in range(0, a.shape[0], 7):  # several batches: the factor is folded as rows arrive
        accumulator.update(a[start:start + 7], b[start:start + 7])
    return accumulator.result().values


@pytest.mark.parametrize("condition", [1e4, 1e6, 1e8, 1e10])
@pytest.mark.parametrize("shape", [(200, 12), (64, 24)])
@pytest.mark.parametrize("entry", ["one-shot", "positions", "pooled", "cls", "flat"])
def test_full_whitening_is_invariant_to_dense_mixing_of_either_side(condition, shape, entry):
    """PWSM at α = 0 is invariant to any invertible map of either side's channels: on X·A, Y·B it
    equals its value on X, Y, to the bound the sweep measured."""
    m, p = shape
    rng = np.random.default_rng(int(np.log10(condition)) + m)
    X, Y = ref.random_pair(rng, m, p)
    plain = entry_values("one-shot", X, Y, ["pwsm:0"])["pwsm:0"]
    mixed = entry_values(entry, X @ mixing(rng, p, condition), Y @ mixing(rng, p, condition), ["pwsm:0"])["pwsm:0"]
    assert abs(mixed - plain) <= bound(condition), (mixed, plain)


@pytest.mark.parametrize("condition", [1e6, 1e10])
@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_whitened_values_equal_50_digit_arithmetic_under_dense_mixing(condition, alpha):
    rng = np.random.default_rng(7)
    X, Y = ref.random_pair(rng, 60, 8)
    X, Y = X @ mixing(rng, 8, condition), Y @ mixing(rng, 8, condition)
    exact = ref.exact_pwsm(X, Y, alpha)
    label = f"pwsm:{alpha:g}"
    for entry in ("one-shot", "positions"):
        assert abs(entry_values(entry, X, Y, [label])[label] - exact) <= bound(condition), entry


def test_streamed_and_one_shot_values_are_equal_and_unmixed_data_is_unchanged():
    """The factor's value equals the data's whatever the batches; on well-conditioned data the
    moments' route and the factor agree to rounding, so the replicates (from moments) are kept."""
    rng = np.random.default_rng(3)
    X, Y = ref.random_pair(rng, 120, 10)
    labels = ["pwsm:0", "pwsm:0.5", "procrustes", "cka"]
    one_shot = entry_values("one-shot", X, Y, labels)
    streamed = entry_values("positions", X, Y, labels)
    for label in labels:
        assert streamed[label] == pytest.approx(one_shot[label], abs=1e-13), label
    accumulator = LayerAccumulator("pooled", labels, groups=5)
    accumulator.update(as_maps(X), as_maps(Y))
    result = accumulator.result()
    assert all(len(result.replicates[label]) == 5 and None not in result.replicates[label] for label in labels)


def test_replicates_the_moments_cannot_resolve_are_dropped_not_recorded_wrong():
    """Past what XᵀX holds (κ = 1e10), a whitened measure's replicates from the moments would be
    wrong: the value is the factor's, and those replicates are left out (no interval), while the
    measures that do not whiten keep theirs."""
    rng = np.random.default_rng(5)
    X, Y = ref.random_pair(rng, 200, 12)
    X, Y = X @ mixing(rng, 12, 1e10), Y @ mixing(rng, 12, 1e10)
    labels = ["pwsm:0", "procrustes"]
    accumulator = LayerAccumulator("pooled", labels, groups=5)
    accumulator.update(as_maps(X), as_maps(Y))
    result = accumulator.result()
    assert abs(result.values["pwsm:0"] - ref.exact_pwsm(X, Y, 0.0)) <= bound(1e10)
    assert all(r is None for r in result.replicates["pwsm:0"])
    assert None not in result.replicates["procrustes"]


def test_a_truly_collinear_channel_is_a_null_direction_on_every_route():
    """An exact copy of a channel adds no direction: the factor finds it null, as the moments do, and
    the whitened value equals that of the data without the copy."""
    rng = np.random.default_rng(2)
    X, Y = ref.random_pair(rng, 88, 6)
    copied_x, copied_y = np.hstack([X, X[:, :1]]), np.hstack([Y, 3 * Y[:, 1:2]])
    for entry in ("one-shot", "positions"):
        assert entry_values(entry, copied_x, copied_y, ["pwsm:0"])["pwsm:0"] == pytest.approx(
            entry_values("one-shot", X, Y, ["pwsm:0"])["pwsm:0"], abs=1e-11), entry


def test_a_constant_column_beside_mixed_ones_adds_no_direction():
    """A column constant at 1e3 beside densely mixed small ones (κ = 1e7, which the moments cannot
    resolve, so the data's factor decides): its centring residue must not become a live direction."""
    rng = np.random.default_rng(4)
    X, Y = ref.random_pair(rng, 40, 5)
    X, Y = X @ mixing(rng, 5, 1e7), Y @ mixing(rng, 5, 1e7)
    constant = np.full((40, 1), 1e3)
    with_constant = entry_values("one-shot", np.hstack([X, constant]), np.hstack([Y, constant]), ["pwsm:0"])["pwsm:0"]
    assert abs(with_constant - ref.exact_pwsm(X, Y, 0.0)) <= bound(1e7)
