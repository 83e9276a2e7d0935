"""Exact, batched, streaming feature-distance metrics (METRICS.md)."""

from engine.similarity.metrics import (
    DEFAULT_ALPHA,
    METRIC_NAMES,
    DegenerateWhiteningError,
    DegenerateWhiteningWarning,
    Metric,
    parse_metric,
    parse_metrics,
)
from engine.similarity.distances import cka_distance, distances, procrustes_distance, pwsm_distance
from engine.similarity.streaming import MomentAccumulator
from engine.similarity.views import (
    DEFAULT_VIEW,
    FILTER_VIEWS,
    VIEWS,
    LayerAccumulator,
    LayerDistance,
    SourceSpectrumCache,
    layer_distance,
)

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_VIEW",
    "FILTER_VIEWS",
    "METRIC_NAMES",
    "VIEWS",
    "DegenerateWhiteningError",
    "DegenerateWhiteningWarning",
    "LayerAccumulator",
    "LayerDistance",
    "Metric",
    "MomentAccumulator",
    "SourceSpectrumCache",
    "cka_distance",
    "distances",
    "layer_distance",
    "parse_metric",
    "parse_metrics",
    "procrustes_distance",
    "pwsm_distance",
]
