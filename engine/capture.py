"""Feature capture: the frozen source model and the model being tuned see the same probe images,
and every hooked layer's pair of activations goes straight into the similarity engine.

No raw feature map is kept beyond one probe batch except for the views that compare images with
each other (`filter`, `flat`), which hold the layer's probe activations until the layer is done.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from engine.similarity import LayerAccumulator, SourceSpectrumCache, parse_metric
from engine.similarity.metrics import Metric
from engine.similarity.views import check_view


@dataclass(frozen=True)
class Measure:
    """One metric on one view, written 'metric@view' (e.g. 'pwsm:0@positions')."""

    metric: Metric
    view: str

    @property
    def label(self) -> str:
        return f"{self.metric.label}@{self.view}"


def parse_measures(metrics: list[str], default_view: str, alpha: float) -> list[Measure]:
    """'pwsm,procrustes@filter-map' with default view V → [pwsm:α@V, procrustes@filter-map]."""
    measures = []
    for item in metrics:
        name, _, view = item.partition("@")
        measures.append(Measure(parse_metric(name, alpha), check_view(view or default_view)))
    return list(dict.fromkeys(measures))


def as_feature_map(output: torch.Tensor) -> torch.Tensor:
    """(n, c, h, w) as is; (n, c) → (n, c, 1, 1); token sequences (n, L, d) → (n, d, L, 1)."""
    if output.ndim == 4:
        return output
    if output.ndim == 2:
        return output[:, :, None, None]
    if output.ndim == 3:
        return output.transpose(1, 2)[..., None]
    raise ValueError(f"cannot use a layer output of shape {tuple(output.shape)}")


def feature_map_shape(output_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(c, h, w) that :func:`as_feature_map` gives a layer whose output (batch dimension left out)
    has ``output_shape``."""
    return tuple(as_feature_map(torch.empty(1, *output_shape)).shape[1:])


@contextmanager
def capture(model: nn.Module, layer_names: list[str]):
    """Forward hooks that store a detached copy of each layer's output (a copy, because in-place
    activations later in the network would otherwise overwrite it)."""
    store: dict[str, torch.Tensor] = {}
    hooks = []
    for name in layer_names:
        def hook(_module, _inputs, output, name=name):
            store[name] = as_feature_map(output.detach()).clone()
        hooks.append(model.get_submodule(name).register_forward_hook(hook))
    try:
        yield store
    finally:
        for h in hooks:
            h.remove()


class ProbeAnalysis:
    """Per-layer, per-measure distances between the source model and a tuned model on the probe set."""

    def __init__(self, source: nn.Module, layer_names: list[str], measures: list[Measure],
                 whitening_scale: str = "mean_eig", precision: str | None = None):
        self.source = source
        self.layer_names = layer_names
        self.measures = measures
        self.whitening_scale = whitening_scale
        self.precision = precision
        self.cache = SourceSpectrumCache()  # the source never changes: its decompositions are reused

    def views(self) -> dict[str, list[Metric]]:
        by_view: dict[str, list[Metric]] = {}
        for measure in self.measures:
            by_view.setdefault(measure.view, []).append(measure.metric)
        return by_view

    @torch.no_grad()
    def run(self, model: nn.Module, probe_batches, device: torch.device, amp: bool = False,
            observer=None) -> tuple[dict, float]:
        """{layer: {view: {values, dead, filters, per_filter}}} and the seconds it took.

        ``observer`` (e.g. visualisation evidence) sees every layer's paired batch as well, so one
        forward pass over the probe set serves both."""
        start = time.perf_counter()
        was_training = model.training
        model.eval()
        self.source.eval()
        accumulators = {(layer, view): LayerAccumulator(view, metrics, whitening_scale=self.whitening_scale,
                                                        precision=self.precision, cache=self.cache,
                                                        cache_key=layer)
                        for layer in self.layer_names for view, metrics in self.views().items()}
        autocast = torch.autocast(device.type, enabled=amp and device.type == "cuda")
        try:
            with capture(self.source, self.layer_names) as source_out, capture(model, self.layer_names) as tuned_out:
                for images, _labels in probe_batches:
                    images = images.to(device, non_blocking=True)
                    with autocast:
                        self.source(images)
                        model(images)
                    for (layer, _view), accumulator in accumulators.items():
                        accumulator.update(source_out[layer].float(), tuned_out[layer].float())
                    if observer is not None:
                        for layer in self.layer_names:
                            observer.update(layer, source_out[layer].float(), tuned_out[layer].float())
                        observer.batch_done(images.shape[0])
        finally:
            model.train(was_training)
        result: dict[str, dict] = {}
        for (layer, view), accumulator in accumulators.items():
            distance = accumulator.result()
            entry = {"values": distance.values, "dead": distance.dead_filters, "filters": distance.n_filters}
            if distance.per_filter:
                entry["per_filter"] = {label: v.tolist() for label, v in distance.per_filter.items()}
            result.setdefault(layer, {})[view] = entry
        return result, time.perf_counter() - start
