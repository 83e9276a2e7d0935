"""What the probe set allows, checked before anything is written: each measure on each hooked layer
at this probe size (a degenerate PWSM α = 0 refused, small α warned), and the jackknife's intervals —
fewer image groups where memory or the probe set is short, layers whose intervals fall short of their
level (METRICS.md, "Intervals that cover"), measures with no interval once a group is left out. What is
said goes through ``warn`` (recorded with the run's warnings) or ``on_event``."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any, Callable

from engine.capture import Measure, feature_map_shape
from engine.errors import FtdynError
from engine.events import Event
from engine.intervals import (
    MOMENT_VIEWS,
    ROWS_PER_FEATURE_TO_COVER,
    IntervalSettings,
    groups_within_memory,
    moment_bytes,
    settings_for,
)
from engine.models import LayerInfo
from engine.run_config import recorded_estimate
from engine.similarity.debiased import DEBIASED
from engine.similarity.metrics import DegenerateWhiteningError, DegenerateWhiteningWarning
from engine.similarity.views import check_metrics_for_view, replicate_metrics, view_shape

Warn = Callable[[str], None]


def check_measures(layers: list[LayerInfo], measures: list[Measure], n: int, model_name: str, warn: Warn) -> None:
    """Refuse a degenerate PWSM α = 0 before anything is written, with the probe size it would see;
    small α there is allowed and kept in ``run_warnings`` (recorded in config.json as ``warnings``)."""
    if any(m.view == "cls" for m in measures) and not any(
            layer.layout and layer.layout.class_token for layer in layers):
        raise FtdynError(f"the 'cls' view measures a class token, and no hooked layer of {model_name} has "
                         f"one (ViTs do); choose another view")
    for layer in layers:
        shape = (n, *feature_map_shape(layer.shape, layer.layout))
        for measure in measures:
            if measure.view == "cls" and not (layer.layout and layer.layout.class_token):
                continue
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", DegenerateWhiteningWarning)
                    check_metrics_for_view([measure.metric], measure.view, shape)
            except DegenerateWhiteningError as exc:
                raise FtdynError(f"layer {layer.name}: {exc}") from None
            for warning in caught:  # small α in the degenerate regime: allowed, recorded and shown
                if issubclass(warning.category, DegenerateWhiteningWarning):
                    warn(f"layer {layer.name}, {measure.label}: {warning.message}")


def interval_settings(layers: list[LayerInfo], measures: list[Measure], n: int, asked: dict[str, Any],
                      options: dict[str, str], warn: Warn, on_event: Event,
                      resumed: Path | None) -> tuple[IntervalSettings | None, dict[str, list[str]]]:
    """The jackknife's settings; fewer groups than asked for when per-group c×c moments of the
    widest streamed layer would not fit MOMENT_GROUPS_BYTES (said once, recorded in config.json)."""
    try:
        settings = settings_for(asked["interval_groups"], asked["interval_level"], asked["intervals"])
    except ValueError as exc:
        raise FtdynError(str(exc)) from None
    if settings is None:
        return None, {}
    groups, why = settings.groups, ""
    if {m.view for m in measures} & set(MOMENT_VIEWS):
        widest = max(feature_map_shape(layer.shape, layer.layout)[0] for layer in layers)
        if groups_within_memory(groups, widest) < groups:
            groups = groups_within_memory(groups, widest)
            why = (f"per-group moments of the {widest}-channel layer take {moment_bytes(widest) / 2**21:.0f} MiB "
                   f"a group in float32")
    if n < groups:  # an empty group would replicate the full value and shrink the interval
        groups, why = n, f"the probe set has {n} images"
    if groups < 2:
        on_event("warning", text=f"intervals: off ({why}; a jackknife needs 2 groups)")
        return None, {}
    if groups < settings.groups:
        on_event("warning", text=f"intervals: {groups} image groups instead of {settings.groups} ({why}); "
                                 f"the t quantile of the interval accounts for it")
        settings = settings_for(groups, asked["interval_level"], asked["intervals"])
    if resumed is not None:  # a run recorded before bias correction keeps recording as it began
        settings = dataclasses.replace(settings, estimate=recorded_estimate(resumed))
    warn_replicates_without_whitening(layers, measures, n, settings, options, warn)
    return settings, intervals_that_may_not_cover(layers, measures, n, settings, options, warn)


def intervals_that_may_not_cover(layers: list[LayerInfo], measures: list[Measure], n: int, settings: IntervalSettings,
                                 options: dict[str, str], warn: Warn) -> dict[str, list[str]]:
    """Where a layer has few samples per feature on a view, the plug-in bias is not first-order and
    its bias-corrected interval still undercovers (METRICS.md, "Intervals that cover"): said before
    training, once per layer and view, and recorded with the run's warnings; view → those layers."""
    short: dict[str, list[str]] = {}
    for layer in layers:
        c, h, w = feature_map_shape(layer.shape, layer.layout)
        for view in dict.fromkeys(m.view for m in measures if settings.covers(m.view)):
            affected = [m.label for m in measures if m.view == view and m.metric.name != DEBIASED]
            if view not in MOMENT_VIEWS or not affected or (view == "cls" and not (
                    layer.layout and layer.layout.class_token)):
                continue
            rows, features = view_shape(view, n, c, h, w)
            if rows < ROWS_PER_FEATURE_TO_COVER * features:
                short.setdefault(view, []).append(layer.name)
                warn(f"layer {layer.name}, {view}: {rows} samples for {features} features (fewer than "
                 f"{ROWS_PER_FEATURE_TO_COVER} a feature): the bias correction is first-order, and "
                 f"intervals of {', '.join(affected)} covered 0.6–0.85 instead of {settings.level:g} "
                 f"in simulation there; more probe images ({options['probe_size']}), "
                 f"or cka-debiased")
    return short


def warn_replicates_without_whitening(layers: list[LayerInfo], measures: list[Measure], n: int,
                                      settings: IntervalSettings, options: dict[str, str], warn: Warn) -> None:
    """PWSM α = 0 that is defined on the whole probe set but not once a group is left out has no
    interval (replicate_metrics): said before training and recorded with the run's warnings."""
    kept = n - -(-n // settings.groups)  # the smallest replicate
    for layer in layers:
        shape = (kept, *feature_map_shape(layer.shape, layer.layout))
        for measure in measures:
            if not settings.covers(measure.view) or (measure.view == "cls" and not (
                    layer.layout and layer.layout.class_token)):
                continue
            if not replicate_metrics([measure.metric], measure.view, shape):
                warn(f"layer {layer.name}, {measure.label}: no interval — with a group of probe images left "
                 f"out, full whitening (α = 0) is degenerate there; use more probe images, fewer "
                 f"{options['interval_groups']} or α > 0")
