"""Feature distance (METRICS.md; the paper's analysis): how far each hooked layer's features on the
probe set have moved from the source model's, under every measure ``metric@view``.

    d_ℓ(t) = metric( view(A_ℓ(probe)), view(B_ℓᵗ(probe)) )     A the source, Bᵗ the model after epoch t

Definitions, views and exactness are in :mod:`engine.similarity`. The source side's per-filter
decompositions are cached across epochs (the source never changes). Record section ``layers``,
laid out as in schema 1: ``layers[layer][view] = {values: {metric: d}, dead, filters, per_filter}``, plus,
where intervals are on (ANALYSES.md §6, :mod:`engine.intervals`), ``jackknife: {metric: [d₍₁₎ … d₍G₎]}``
(the value with each image group left out), ``estimate: {metric: G·d − (G−1)·mean d₍g₎}`` (the
jackknife's bias-corrected estimate; absent in runs recorded before it) and ``interval: {metric: [low,
high]}`` around it at the declared level (around d itself in runs recorded before).
"""

from __future__ import annotations

from engine.analyses import distance_declaration
from engine.capture import Measure
from engine.intervals import IntervalSettings, estimate
from engine.similarity import LayerAccumulator, SourceSpectrumCache
from engine.similarity.metrics import DEFAULT_PRECISION, MEASURED_WORST_ERROR, Metric


class FeatureDistance:
    name = "distance"
    when = "epoch"
    section = "layers"
    uses_probe = True
    default = True
    summary = "feature distance of every hooked layer to the source model (--metrics, --view)"

    @classmethod
    def build(cls, context) -> "FeatureDistance":
        return cls(context.layer_names, context.measures, precision=context.precision,
                   class_token_layers=context.class_token_layers, intervals=context.intervals,
                   processes=context.processes, first_image=context.first_image)

    def __init__(self, layer_names: list[str], measures: list[Measure], whitening_scale: str = "mean_eig",
                 precision: str | None = None, class_token_layers: tuple[str, ...] = (),
                 intervals: IntervalSettings | None = None, processes=None, first_image: int = 0):
        # sharded over processes: this process sees the probe images from first_image on (engine.distributed)
        self.processes = processes if processes is not None and processes.distributed else None
        self.first_image = first_image
        self.layer_names = layer_names
        self.class_token_layers = set(class_token_layers)  # the `cls` view exists for these alone
        self.measures = measures
        self.whitening_scale = whitening_scale
        self.precision = precision
        self.cache = SourceSpectrumCache()  # the source never changes: its decompositions are reused
        self.accumulators: dict[tuple[str, str], LayerAccumulator] = {}
        self.intervals = intervals

    def declaration(self) -> dict:
        declaration = distance_declaration([m.label for m in self.measures], self.layer_names)
        if "cls" in declaration["rows"]:
            declaration["rows"]["cls"] = [n for n in self.layer_names if n in self.class_token_layers]
        precision = self.precision or DEFAULT_PRECISION
        return dict(declaration, precision=precision, precision_worst_error=MEASURED_WORST_ERROR[precision],
                    whitening_scale=self.whitening_scale,
                    intervals=self.intervals.to_json() if self.intervals else None)

    def groups(self, view: str) -> int:
        """Jackknife groups for ``view``: 1 (no replicates) where intervals do not cover it."""
        return self.intervals.groups if self.intervals and self.intervals.covers(view) else 1

    def layer_views(self, layer: str) -> list[str]:
        return [view for view in self.views() if view != "cls" or layer in self.class_token_layers]

    def views(self) -> dict[str, list[Metric]]:
        by_view: dict[str, list[Metric]] = {}
        for measure in self.measures:
            by_view.setdefault(measure.view, []).append(measure.metric)
        return by_view

    def begin(self, model) -> None:
        self.accumulators = {(layer, view): LayerAccumulator(view, metrics, whitening_scale=self.whitening_scale,
                                                             precision=self.precision, cache=self.cache,
                                                             cache_key=layer, groups=self.groups(view),
                                                             processes=self.processes, first_image=self.first_image)
                             for layer in self.layer_names for view, metrics in self.views().items()
                             if view in self.layer_views(layer)}

    def observe(self, layer: str, source, tuned) -> None:
        for view in self.layer_views(layer):
            if view != "cls":
                self.accumulators[(layer, view)].update(source, tuned)

    def observe_class_token(self, layer: str, source, tuned) -> None:
        if (layer, "cls") in self.accumulators:
            self.accumulators[(layer, "cls")].update(source, tuned)

    def reduce(self) -> None:
        """Every process's share of the probe set on rank 0 (sums in float64; see LayerAccumulator.reduce)."""
        for accumulator in self.accumulators.values():
            accumulator.reduce()

    def finish(self) -> dict:
        result: dict[str, dict] = {}
        for (layer, view), accumulator in self.accumulators.items():
            distance = accumulator.result()
            entry = {"values": distance.values, "dead": distance.dead_filters, "filters": distance.n_filters}
            if distance.replicates:  # the jackknife's replicates, the bias-corrected estimate and its interval
                entry["jackknife"] = distance.replicates
                found = {label: estimate(distance.values[label], reps, self.intervals.t, self.intervals.corrected)
                         for label, reps in distance.replicates.items()}
                if self.intervals.corrected:
                    entry["estimate"] = {label: e.value if e else None for label, e in found.items()}
                entry["interval"] = {label: [e.low, e.high] if e else None for label, e in found.items()}
            if distance.per_filter:
                entry["per_filter"] = {label: v.tolist() for label, v in distance.per_filter.items()}
            result.setdefault(layer, {})[view] = entry
        self.accumulators = {}
        return result
