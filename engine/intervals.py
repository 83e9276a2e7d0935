"""Intervals for distances estimated on a finite probe set (ANALYSES.md §6): the delete-one-group
jackknife over image groups, and the paired and unpaired differences findings are judged by.

The probe images are dealt into G groups in probe order (image i → group i mod G; the probe set and
its order are fixed for a run, so every epoch uses the same groups). A measurement keeps, beside its
value d, the G *replicates* d₍g₎ — the same measurement with group g's images deleted. Then

    d̄ = (1/G) Σ_g d₍g₎        SE_jack = √((G−1)/G · Σ_g (d₍g₎ − d̄)²)
    d_bc = G·d − (G−1)·d̄        (the jackknife's bias-corrected estimate)
    interval = d_bc ± t_{G−1, (1+level)/2} · SE_jack

(Student t with G − 1 degrees of freedom, the usual reference distribution of a grouped jackknife).
The plug-in distances are biased low — sampling noise inflates the cross terms, so two models look
closer than they are — by a/n to first order, which shrinks like 1/n while SE_jack shrinks like 1/√n:
an interval centred on d itself missed the population value up to half the time (METRICS.md,
"Intervals that cover"; benchmarks/bench_coverage.py). Runs record d, d_bc and the interval around
d_bc (``estimate: "bias-corrected"`` in their settings); runs recorded before centred it on d and read
as they were recorded.
Positions of one image always stay together: images are resampled, never positions.

Paired differences (layer vs layer, epoch vs epoch within one run) share the groups, so the
difference is taken inside each replicate, d₍g₎ᴬ − d₍g₎ᴮ, and jackknifed as one quantity — much
narrower than the two separate intervals suggest. Runs on different probe sets are unpaired: their
standard errors combine as √(SE_A² + SE_B²) with the smaller run's degrees of freedom.

Torch-free: the TUI and `ftdyn report` compute intervals of derived quantities from the recorded
replicates through this module. The t quantile comes from scipy in the engine and is recorded with
the run (``t``), so readers never need scipy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from engine.defaults import INTERVAL_GROUPS, INTERVAL_LEVEL

DEFAULT_GROUPS = INTERVAL_GROUPS
DEFAULT_LEVEL = INTERVAL_LEVEL
MODES = ("auto", "all", "off")
# Below this many samples (rows) per feature, the bias of every measure but cka-debiased is not first
# order and the bias-corrected intervals still undercover (benchmarks/bench_coverage.py: 0.6–0.85 at
# 3–9 samples a feature, 0.85–0.93 from 10): a run says so for each layer and view.
ROWS_PER_FEATURE_TO_COVER = 10
ESTIMATES = ("plug-in", "bias-corrected")  # what an interval is centred on: runs before bias correction, now
# Views whose replicates come from the statistics the value needs anyway (moments, per-map sums):
# `--intervals auto` covers these. `filter` and `flat` compare images with each other, so each
# replicate recomputes the layer from the kept images (G times the view's cost): `--intervals all`.
STREAMING_VIEWS = ("positions", "pooled", "cls", "filter-map")
MOMENT_VIEWS = ("positions", "pooled", "cls")  # per-group c×c moments: memory grows with G
# Memory the per-group moments of one layer may take (XᵀX, YᵀY, XᵀY per group). Where float64 groups
# would pass it they are kept in float32 (the total stays float64: the value is unchanged, the
# replicates carry float32 rounding far below their spread), and where even those would, a run uses
# fewer groups, never under 2: a 2048-channel ResNet-50 layer4 gets 5 float32 groups, 240 MiB
# (benchmarks/bench_intervals.py measures the layer's whole peak).
MOMENT_GROUPS_BYTES = 256 * 2**20


@dataclass(frozen=True)
class IntervalSettings:
    """How intervals are taken: G groups, the level, and the t quantile for G − 1 degrees of freedom."""

    groups: int
    level: float
    t: float
    mode: str = "auto"
    estimate: str = "bias-corrected"

    @property
    def corrected(self) -> bool:
        """True when values are shown bias-corrected and intervals centred there (runs from now on)."""
        return self.estimate == "bias-corrected"

    def covers(self, view: str) -> bool:
        return self.mode == "all" or (self.mode == "auto" and view in STREAMING_VIEWS)

    def to_json(self) -> dict:
        return {"method": "jackknife", "groups": self.groups, "level": self.level, "t": self.t, "mode": self.mode,
                "views": "all" if self.mode == "all" else list(STREAMING_VIEWS), "estimate": self.estimate}

    @staticmethod
    def from_json(data) -> "IntervalSettings | None":
        """The settings a run recorded, or None (intervals off, a run from before them, or damaged)."""
        if not isinstance(data, dict) or data.get("method") != "jackknife":
            return None
        groups, level, t, mode = data.get("groups"), data.get("level"), data.get("t"), data.get("mode", "auto")
        estimate = data.get("estimate", "plug-in")  # a run recorded before bias correction: as it was
        if estimate not in ESTIMATES:
            return None
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (level, t))
        if not (isinstance(groups, int) and not isinstance(groups, bool) and groups >= 2 and numbers):
            return None
        if not (0 < level < 1 and math.isfinite(t) and t > 0) or mode not in MODES[:2]:
            return None
        return IntervalSettings(groups, float(level), float(t), mode, estimate)


def settings_for(groups: int, level: float, mode: str = "auto") -> IntervalSettings | None:
    """The settings for ``--intervals MODE --interval-groups G --interval-level L`` (None when off)."""
    if mode not in MODES:
        raise ValueError(f"--intervals takes {', '.join(MODES)}, not {mode!r}")
    if mode == "off":
        return None
    if not isinstance(groups, int) or groups < 2:
        raise ValueError(f"--interval-groups must be an integer ≥ 2 (got {groups}); use --intervals off for none")
    if not 0 < level < 1:
        raise ValueError(f"--interval-level must lie strictly between 0 and 1 (got {level:g}), e.g. 0.9")
    from scipy.stats import t as student_t  # the engine side only; readers take t from the record

    return IntervalSettings(groups, float(level), float(student_t.ppf((1 + level) / 2, groups - 1)), mode)


def moment_bytes(channels: int) -> int:
    """One group's float64 XᵀX, YᵀY and XᵀY of a layer with ``channels`` features."""
    return 3 * 8 * channels * channels


def group_storage(groups: int, channels: int, budget: int = MOMENT_GROUPS_BYTES) -> str:
    """'float64' where G float64 groups of a ``channels``-wide layer fit ``budget``, else 'float32'."""
    return "float64" if groups * moment_bytes(channels) <= budget else "float32"


def groups_within_memory(requested: int, widest: int, budget: int = MOMENT_GROUPS_BYTES) -> int:
    """The number of groups (≤ ``requested``, ≥ 2) whose moments of the widest layer, in float32
    where float64 does not fit, stay within ``budget``."""
    return max(2, min(requested, budget // max(1, moment_bytes(widest) // 2)))


def jackknife_se(replicates: Sequence[float] | np.ndarray) -> float | None:
    """SE_jack of the replicates d₍g₎; None when any is missing or non-finite."""
    r = np.asarray([np.nan if v is None else v for v in replicates], dtype=np.float64)
    if r.size < 2 or not np.all(np.isfinite(r)):
        return None
    g = r.size
    return float(math.sqrt((g - 1) / g * np.sum((r - r.mean()) ** 2)))


def bias_corrected(value: float, replicates: Sequence[float] | np.ndarray) -> float:
    """The jackknife's bias-corrected estimate G·d − (G − 1)·d̄ of a value d with replicates d₍g₎.

    A plug-in distance is biased by sampling noise, to first order a/n (the cross terms ‖XᵀY‖, the
    nuclear norm, are inflated: two models look closer than they are). Each replicate sees n(G − 1)/G
    images, so its bias is a/n · G/(G − 1), and (G − 1)(d̄ − d) estimates the plug-in's a/n."""
    r = np.asarray(replicates, dtype=np.float64)
    g = r.size
    return float(g * value - (g - 1) * r.mean())


@dataclass(frozen=True)
class Estimate:
    """A value with its jackknife standard error and interval at the recorded level; ``plug_in`` is the
    value computed on the whole probe set where ``value`` is its bias-corrected estimate."""

    value: float
    se: float
    t: float
    plug_in: float | None = None

    @property
    def low(self) -> float:
        return self.value - self.t * self.se

    @property
    def high(self) -> float:
        return self.value + self.t * self.se

    @property
    def half_width(self) -> float:
        return self.t * self.se

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def as_json(self) -> dict:
        found = {"value": self.value, "se": self.se, "low": self.low, "high": self.high}
        return found if self.plug_in is None else {**found, "plug_in": self.plug_in}


def estimate(value: float | None, replicates, t: float, corrected: bool = False) -> Estimate | None:
    """``value`` (the plug-in, computed on every probe image) with the interval its replicates give —
    centred on the bias-corrected estimate with ``corrected``; None where either is missing."""
    if value is None or replicates is None or not math.isfinite(value):
        return None
    se = jackknife_se(replicates)
    if se is None:
        return None
    if corrected:
        return Estimate(bias_corrected(value, replicates), se, t, float(value))
    return Estimate(float(value), se, t)


def interval(value: float | None, replicates, t: float, corrected: bool = False) -> list[float] | None:
    """[low, high] for the record, or None."""
    found = estimate(value, replicates, t, corrected)
    return None if found is None else [found.low, found.high]


def derived(fn: Callable[[np.ndarray], float], values: np.ndarray, replicates: np.ndarray, t: float,
            corrected: bool = False) -> Estimate | None:
    """Any statistic of paired measurements, jackknifed: ``fn`` maps an array of measurements (the
    full-sample plug-in values, shape S) to one number; ``replicates`` has shape (G, *S) — the same
    measurements in each replicate. The statistic is computed inside each replicate, so paired
    differences, means over layers and correlations over epochs keep their pairing; with
    ``corrected`` its own bias is corrected the same way (for a linear statistic, the statistic of the
    corrected values)."""
    values = np.asarray(values, dtype=np.float64)
    replicates = np.asarray(replicates, dtype=np.float64)
    if not (np.all(np.isfinite(values)) and np.all(np.isfinite(replicates))):
        return None
    full = fn(values)
    reps = [fn(replicates[g]) for g in range(replicates.shape[0])]
    if full is None or any(r is None for r in reps):
        return None
    return estimate(float(full), reps, t, corrected)


def paired_difference(a: float, a_reps, b: float, b_reps, t: float, corrected: bool = False) -> Estimate | None:
    """a − b for two measurements on the same probe groups (same run): the difference per replicate."""
    if a is None or b is None or a_reps is None or b_reps is None or len(a_reps) != len(b_reps):
        return None
    return derived(lambda v: float(v[0] - v[1]), np.array([a, b]), np.column_stack([a_reps, b_reps]), t, corrected)


def unpaired_difference(a: Estimate | None, b: Estimate | None) -> Estimate | None:
    """a − b for estimates on different probe sets (different runs): SE = √(SE_A² + SE_B²), with the
    larger of the two t quantiles (the fewer degrees of freedom)."""
    if a is None or b is None:
        return None
    return Estimate(a.value - b.value, math.hypot(a.se, b.se), max(a.t, b.t))

