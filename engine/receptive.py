"""Receptive fields of hooked layers: the input region behind each feature-map location.

For a layer whose output unit (i, j) sees input rows [offset + i·stride, offset + i·stride + size)
(and likewise for columns), :func:`receptive_fields` computes (size, stride, offset) analytically by
walking the network's traced graph (torch.fx): every convolution or pooling widens the interval
by (kernel − 1)·dilation·jump and shifts it by −padding·jump; additions take the union of their
inputs (so ResNet's downsample shortcuts count), and concatenations keep each channel's own field
(DenseNet: channel 0 of a transition comes from the stem, the last ones from the deepest layer).
The offset is negative where padding reaches outside the image.

:func:`receptive_field_by_gradient` checks it a second, independent way: in a copy of the network
with every activation made linear, max-pooling replaced by average-pooling and every weight
positive, the input gradient of one unit is non-zero exactly on its receptive field.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from engine.capture import LayerReached
from engine.errors import FtdynError, exception_line


@dataclass(frozen=True)
class ReceptiveField:
    size: tuple[int, int]
    stride: tuple[int, int]
    offset: tuple[int, int]  # input (row, column) of the top-left corner of unit (0, 0)'s field

    def region(self, i: int, j: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right), bottom/right exclusive, of unit (i, j); may leave the image."""
        top = self.offset[0] + i * self.stride[0]
        left = self.offset[1] + j * self.stride[1]
        return top, left, top + self.size[0], left + self.size[1]


@dataclass(frozen=True)
class Interval:
    """Per spatial axis: the jump between neighbouring units and unit 0's input span [lo, hi]."""

    jump: tuple[int, int]
    lo: tuple[int, int]
    hi: tuple[int, int]

    def through(self, kernel, stride, padding, dilation) -> "Interval":
        pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
        k, s, p, d = pair(kernel), pair(stride), pair(padding), pair(dilation)
        return Interval(tuple(self.jump[a] * s[a] for a in range(2)),
                        tuple(self.lo[a] - p[a] * self.jump[a] for a in range(2)),
                        tuple(self.hi[a] + ((k[a] - 1) * d[a] - p[a]) * self.jump[a] for a in range(2)))

    @staticmethod
    def union(parts: list["Interval"]) -> "Interval":
        if len({part.jump for part in parts}) != 1:
            raise FtdynError("branches with different strides meet; the receptive field is not a single box")
        return Interval(parts[0].jump, tuple(min(p.lo[a] for p in parts) for a in range(2)),
                        tuple(max(p.hi[a] for p in parts) for a in range(2)))

    def field(self) -> ReceptiveField:
        return ReceptiveField(tuple(self.hi[a] - self.lo[a] + 1 for a in range(2)), self.jump, self.lo)


WINDOWED = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
GLOBAL_FUNCTIONS = {torch.flatten, nn.functional.adaptive_avg_pool2d, nn.functional.linear}
# A node's channels as (first, stop, interval) segments: concatenation gives channels different fields.
Segments = list[tuple[int, int, Interval]]


@dataclass(frozen=True)
class LayerFields:
    """A layer's receptive fields, per channel segment (one segment unless channels were concatenated)."""

    segments: tuple[tuple[int, int, ReceptiveField], ...]

    def for_filter(self, f: int) -> ReceptiveField:
        for first, stop, field in self.segments:
            if first <= f < stop:
                return field
        raise IndexError(f"filter {f} out of range")

    @property
    def largest(self) -> ReceptiveField:
        return max((field for _, _, field in self.segments), key=lambda field: field.size)


def trace(model: nn.Module) -> fx.GraphModule:
    """The graph of ``model`` called on images alone: arguments after the first that have defaults
    (a wrapper's ``labels=None``) are traced at those defaults, as the probe pass calls it."""
    parameters = list(inspect.signature(model.forward).parameters.values())[1:]
    fixed = {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}
    try:
        return fx.symbolic_trace(model, concrete_args=fixed or None)
    except Exception as exc:  # fx raises many types for dynamic control flow
        raise FtdynError(f"cannot trace {type(model).__name__} to compute receptive fields ({exc})") from None


def layer_output_node(graph_module: fx.GraphModule, layer: str) -> fx.Node:
    """The node producing ``layer``'s output: its own call, or the last node inside the block."""
    last = None
    for node in graph_module.graph.nodes:
        if node.op == "call_module" and node.target == layer:
            return node
        stack = node.meta.get("nn_module_stack", {})
        if any(path == layer for path, _ in stack.values()):
            last = node
    if last is None:
        raise FtdynError(f"layer '{layer}' not found in the traced graph")
    return last


def merge(segment_lists: list[Segments]) -> Segments:
    """Element-wise combination (add, mul) of equally shaped inputs: channel-wise union."""
    cuts = sorted({c for segments in segment_lists for first, stop, _ in segments for c in (first, stop)})
    merged = []
    for first, stop in zip(cuts, cuts[1:]):
        parts = [iv for segments in segment_lists for a, b, iv in segments if a <= first and stop <= b]
        merged.append((first, stop, Interval.union(parts)))
    return merged


def collapse(segments: Segments, channels: int) -> Segments:
    """An operation mixing all channels (a convolution): one segment, the union of all."""
    return [(0, channels, Interval.union([iv for _, _, iv in segments]))]


def receptive_fields(model: nn.Module, layers: list[str], image_size: int = 224) -> dict[str, LayerFields]:
    """Analytic (size, stride, offset) of each layer, per channel segment, from the traced graph."""
    graph_module = trace(model)
    was_training = model.training
    graph_module.eval()
    # the input lives where the weights do: on a GPU a CPU tensor stops the trace (seen on an H200)
    device = next(iter(model.parameters()), torch.zeros(0)).device
    try:
        ShapeProp(graph_module).propagate(torch.zeros(1, 3, image_size, image_size, device=device))
    except Exception as exc:  # a graph that runs only with more inputs than images
        raise FtdynError(f"cannot trace {type(model).__name__} to compute receptive fields "
                         f"({exception_line(exc)[:160]})") from None
    finally:
        model.train(was_training)
    wanted = {layer_output_node(graph_module, layer): layer for layer in layers}
    segments: dict[fx.Node, Segments | None] = {}
    fields: dict[str, LayerFields] = {}
    for node in graph_module.graph.nodes:
        meta = node.meta.get("tensor_meta")
        channels = meta.shape[1] if meta is not None and hasattr(meta, "shape") and len(meta.shape) == 4 else None
        inputs = [segments[a] for a in node.all_input_nodes if segments.get(a) is not None]
        module = graph_module.get_submodule(node.target) if node.op == "call_module" else None
        if node.op == "placeholder":
            segments[node] = [(0, channels, Interval((1, 1), (0, 0), (0, 0)))]
        elif isinstance(module, WINDOWED):
            through = [(a, b, iv.through(module.kernel_size, module.stride, module.padding,
                                         getattr(module, "dilation", 1))) for a, b, iv in inputs[0]]
            segments[node] = collapse(through, channels) if isinstance(module, nn.Conv2d) and module.groups == 1 else through
        elif isinstance(module, (nn.AdaptiveAvgPool2d, nn.Linear)) or (
                node.op == "call_function" and node.target in GLOBAL_FUNCTIONS) or channels is None:
            segments[node] = None  # beyond the feature maps: no local receptive field
        elif node.op == "call_function" and node.target in (nn.functional.max_pool2d, nn.functional.avg_pool2d):
            raise FtdynError("functional pooling is not supported for receptive fields; use the module form")
        elif node.op == "call_function" and node.target is torch.cat:
            offset, joined = 0, []
            for part in node.args[0]:
                for a, b, iv in segments[part]:
                    joined.append((offset + a, offset + b, iv))
                offset += part.meta["tensor_meta"].shape[1]
            segments[node] = joined
        else:  # element-wise ops, normalisation, activations, add: channel-wise union of the inputs
            segments[node] = merge(inputs) if inputs else None
        if node in wanted:
            if segments[node] is None:
                raise FtdynError(f"layer '{wanted[node]}' has no local receptive field (it follows global pooling)")
            fields[wanted[node]] = LayerFields(tuple((a, b, iv.field()) for a, b, iv in segments[node]))
    return fields


def patch_fields(shapes: dict[str, tuple[int, int, int]], image_size: int) -> dict[str, LayerFields]:
    """Where no receptive field is defined — a transformer's tokens (attention lets every token see
    the whole image), windowed attention, a network torch.fx cannot trace — a unit at grid position
    (i, j) of an (c, h, w) map is drawn with the patch it starts from: the image region its grid
    cell covers (for a ViT, the 16×16 patch the token was embedded from)."""
    fields = {}
    for layer, (channels, h, w) in shapes.items():
        stride = (max(1, image_size // h), max(1, image_size // w))
        fields[layer] = LayerFields(((0, channels, ReceptiveField(stride, stride, (0, 0))),))
    return fields


def linearised(model: nn.Module) -> nn.Module:
    """A copy whose input gradients are positive exactly on each unit's receptive field."""
    probe = copy.deepcopy(model).eval().double().requires_grad_(False)  # input gradients only
    for name, module in list(probe.named_modules()):
        replacement = None
        if isinstance(module, (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Dropout, nn.BatchNorm2d)):
            replacement = nn.Identity()
        elif isinstance(module, nn.MaxPool2d):
            replacement = nn.AvgPool2d(module.kernel_size, module.stride, module.padding, ceil_mode=module.ceil_mode)
        elif isinstance(module, nn.Conv2d):
            with torch.no_grad():
                module.weight.fill_(1.0 / module.weight[0].numel())
                if module.bias is not None:
                    module.bias.zero_()
        if replacement is not None:
            parent_name, _, attr = name.rpartition(".")
            setattr(probe.get_submodule(parent_name) if parent_name else probe, attr, replacement)
    return probe


def receptive_field_by_gradient(model: nn.Module, layer: str, channel: int = 0, input_size: int = 40) -> ReceptiveField:
    """Receptive field of ``channel`` from the input-gradient support of two neighbouring central units,
    on the smallest input (``input_size`` doubled as often as needed) where the field is not clipped."""
    probe = linearised(model)
    captured = {}

    def stop_at_layer(_module, _inputs, output):
        captured["out"] = output
        raise LayerReached  # nothing after the layer is needed: the forward pass ends here

    handle = probe.get_submodule(layer).register_forward_hook(stop_at_layer)
    try:
        while True:
            image = torch.ones(1, 3, input_size, input_size, dtype=torch.float64, requires_grad=True)
            try:
                probe(image)
            except LayerReached:
                pass
            out = captured["out"]
            h, w = out.shape[-2:]
            if min(h, w) < 3:  # no two neighbouring units away from the border yet
                input_size *= 2
                continue
            i, j = h // 2, w // 2
            spans = []
            for di, dj in ((0, 0), (1, 1)):
                grad, = torch.autograd.grad(out[0, channel, i + di, j + dj], image, retain_graph=True)
                support = grad[0].abs().sum(0) > 0
                rows, cols = support.any(1).nonzero()[:, 0], support.any(0).nonzero()[:, 0]
                spans.append((int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])))
            (r0, r1, c0, c1), (r0b, _, c0b, _) = spans
            if 0 < r0 and r1 < input_size - 1 and 0 < c0 and c1 < input_size - 1:
                break
            input_size *= 2  # the field reached the border: it would be clipped, look again larger
    finally:
        handle.remove()
    stride = (r0b - r0, c0b - c0)
    return ReceptiveField((r1 - r0 + 1, c1 - c0 + 1), stride, (r0 - i * stride[0], c0 - j * stride[1]))
