"""Feature capture: forward hooks that hand every hooked layer's output to the analyses, in the
(n, c, h, w) layout the views expect, and the measures (metric@view) feature distances are taken in.
The shared probe pass itself is :class:`engine.analyses.runner.EpochAnalyses`.
"""

from __future__ import annotations

import math
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


@dataclass(frozen=True)
class Layout:
    """How a layer's output (batch dimension first) holds its features, detected from its shape
    (for a square input) and module, never assumed from the architecture's name:

    * ``channels_first`` (n, c, h, w) — convolutional maps;
    * ``channels_last`` (n, h, w, c) — Swin stages, ConvNeXt's inner layers; permuted to (n, c, h, w);
    * ``tokens`` (n, L, d) — transformer blocks: tokens are the positions. The first ``prefix``
      tokens precede the patch grid (class, register and distillation tokens) and are left out of
      the positions; with ``class_token`` the first of them is the class token, measured on its own
      by the ``cls`` view. With ``grid`` (g, g) the other tokens are the patch grid, so token maps
      are pictures; without, a sequence (d, L, 1);
    * ``vector`` (n, d) — a 1 × 1 map.
    """

    kind: str
    class_token: bool = False
    grid: tuple[int, int] | None = None
    prefix: int | None = None  # tokens before the grid; None: the class token alone, if there is one

    def __post_init__(self):
        if self.prefix is None:
            object.__setattr__(self, "prefix", int(self.class_token))

    def to_json(self) -> dict:
        return {"kind": self.kind, "class_token": self.class_token, "grid": list(self.grid) if self.grid else None,
                "prefix_tokens": self.prefix}

    @staticmethod
    def from_json(data: dict | None) -> "Layout | None":
        """Runs recorded before register tokens (no ``prefix_tokens``) had the class token alone."""
        if not data:
            return None
        grid, prefix = data.get("grid"), data.get("prefix_tokens")
        return Layout(data["kind"], bool(data.get("class_token")), tuple(grid) if grid else None,
                      prefix if isinstance(prefix, int) and not isinstance(prefix, bool) and prefix >= 0 else None)


CHANNELS_LAST_MODULES = ("LayerNorm", "Linear", "Permute", "GELU", "MLP")


def detect_layout(shape: tuple[int, ...], module_kind: str, model_has_class_token: bool,
                  prefix_tokens: int | None = None) -> Layout | None:
    """The layout of an output of ``shape`` (batch left out, square input), or None when it is not
    a feature map (e.g. window-partitioned attention tensors, logits are vectors). ``prefix_tokens``:
    how many tokens the model puts before its patch grid (default: its class token alone)."""
    prefix = int(model_has_class_token) if prefix_tokens is None else prefix_tokens
    if len(shape) == 1:
        return Layout("vector")
    if len(shape) == 2:
        length = shape[0]
        if prefix and length > prefix and math.isqrt(length - prefix) ** 2 == length - prefix:
            side = math.isqrt(length - prefix)
            return Layout("tokens", class_token=model_has_class_token, grid=(side, side), prefix=prefix)
        side = math.isqrt(length)
        return Layout("tokens", grid=(side, side) if side * side == length else None)
    if len(shape) == 3:
        a, b, c = shape
        if b == c and a != b:
            return Layout("channels_first")
        if a == b and c != a:
            return Layout("channels_last")
        if a == b == c:
            return Layout("channels_last" if module_kind in CHANNELS_LAST_MODULES else "channels_first")
    return None


def infer_layout(output: torch.Tensor) -> Layout:
    """For outputs met without a recorded layout (the Python API): by dimension alone."""
    return {2: Layout("vector"), 3: Layout("tokens"), 4: Layout("channels_first")}.get(output.ndim) or Layout("none")


def layer_output(output) -> torch.Tensor | None:
    """A module's output as one tensor: itself, or the first element of a tuple (Hugging Face's blocks
    and stages return (hidden_states, attentions, …)); None for anything else."""
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        output = output[0]
    return output if isinstance(output, torch.Tensor) else None


def as_feature_map(output: torch.Tensor, layout: Layout | None = None) -> torch.Tensor:
    """(n, c, h, w) from a layer output in ``layout``: channels-last permuted, token sequences as
    (n, d, g, g) on their patch grid (class token left out) or (n, d, L, 1), vectors (n, d, 1, 1)."""
    layout = layout or infer_layout(output)
    if layout.kind == "channels_first" and output.ndim == 4:
        return output
    if layout.kind == "channels_last" and output.ndim == 4:
        return output.permute(0, 3, 1, 2)
    if layout.kind == "vector" and output.ndim == 2:
        return output[:, :, None, None]
    if layout.kind == "tokens" and output.ndim == 3:
        tokens = output[:, layout.prefix:]
        n, length, d = tokens.shape
        if layout.grid and layout.grid[0] * layout.grid[1] == length:
            return tokens.transpose(1, 2).reshape(n, d, *layout.grid)
        return tokens.transpose(1, 2)[..., None]
    raise ValueError(f"cannot use a layer output of shape {tuple(output.shape)} as a feature map")


def class_token(output: torch.Tensor, layout: Layout | None) -> torch.Tensor | None:
    """The class token as a (n, d, 1, 1) map, for layers that have one."""
    if layout is None or not layout.class_token:
        return None
    return output[:, 0][:, :, None, None]


def feature_map_shape(output_shape: tuple[int, ...], layout: Layout | None = None) -> tuple[int, int, int]:
    """(c, h, w) that :func:`as_feature_map` gives a layer whose output (batch dimension left out)
    has ``output_shape``."""
    return tuple(as_feature_map(torch.empty(1, *output_shape), layout).shape[1:])


class LayerReached(Exception):
    """Raised by a forward hook to end the forward pass once the layers wanted have given their
    outputs: nothing after them is computed."""


@contextmanager
def capture(model: nn.Module, layers: list[str] | dict[str, Layout | None]):
    """Forward hooks that store a detached copy of each layer's output as an (n, c, h, w) map, and
    of its class token where it has one (``store[(name, "cls")]``). A copy, because in-place
    activations later in the network would otherwise overwrite it."""
    layouts = layers if isinstance(layers, dict) else dict.fromkeys(layers)
    store: dict = {}
    hooks = []
    for name, layout in layouts.items():
        def hook(_module, _inputs, output, name=name, layout=layout):
            output = layer_output(output).detach()
            store[name] = as_feature_map(output, layout).clone()
            token = class_token(output, layout)
            if token is not None:
                store[(name, "cls")] = token.clone()
        hooks.append(model.get_submodule(name).register_forward_hook(hook))
    try:
        yield store
    finally:
        for h in hooks:
            h.remove()
