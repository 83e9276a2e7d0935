"""Feature capture: forward hooks that hand every hooked layer's output to the analyses, in the
(n, c, h, w) layout the views expect, and the measures (metric@view) feature distances are taken in.
The shared probe pass itself is :class:`engine.analyses.runner.EpochAnalyses`.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from engine.similarity import parse_metric
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
