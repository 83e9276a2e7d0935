"""torchvision classification models: building them with the user's weights, replacing the head,
and finding the layers worth hooking (PAPER-NOTES.md §1).

Default layers reproduce the paper:
* VGG: the last ReLU of each block (vgg19: features.3, 8, 17, 26, 35 = relu1_2 … relu5_4).
* ResNet/ResNeXt/Wide-ResNet: the stem ReLU and the output of every stage's last block
  (torchvision's Bottleneck calls one ReLU module three times, so the block output is hooked).
* DenseNet: the bottleneck ReLU (relu2) of each dense block's last layer and the transition ReLUs.
* Any other CNN (the generic rule): at each spatial resolution above 1×1 the model passes through,
  the last activation module that runs once per forward pass.
"""

from __future__ import annotations

import difflib
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from engine.errors import FtdynError

ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.LeakyReLU, nn.ELU, nn.Mish, nn.Sigmoid)


def classification_models() -> list[str]:
    return torchvision.models.list_models(module=torchvision.models)


def check_model_name(name: str) -> str:
    names = classification_models()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise FtdynError(f"unknown model '{name}': {hint}any torchvision classification model works "
                         f"(e.g. resnet50, vgg19, densenet121)")
    return name


def weight_names(model_name: str) -> list[str]:
    try:
        return list(torchvision.models.get_model_weights(model_name).__members__)
    except (ValueError, KeyError):
        return []


def resolve_weights(model_name: str, weights: str | None):
    """'none' → None; an existing file → its Path; else a torchvision weights enum member."""
    if weights is None or weights.lower() == "none":
        return None
    path = Path(weights).expanduser()
    if path.exists() or weights.endswith((".pt", ".pth", ".bin", ".safetensors")):
        if not path.is_file():
            raise FtdynError(f"weights file '{weights}' does not exist; pass a torchvision weights name "
                             f"({', '.join(weight_names(model_name)) or 'DEFAULT'}), a state-dict file, or none")
        return path
    names = weight_names(model_name)
    if weights not in names:
        raise FtdynError(f"'{weights}' is not a weights name of {model_name}: choose from {', '.join(names) or 'none'}, "
                         f"a local state-dict file, or none")
    return torchvision.models.get_model_weights(model_name)[weights]


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a state dict without unpickling arbitrary objects (weights_only=True)."""
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of files it then refuses
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a bad or unsafe file
        raise FtdynError(f"cannot read weights file '{path}' as a state dict ({type(exc).__name__}); "
                         f"save it with torch.save(model.state_dict(), path)") from None
    for key in ("state_dict", "model", "model_state"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FtdynError(f"weights file '{path}' does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def head_name(model: nn.Module) -> str:
    """The classifier: the last nn.Linear in module order (fc, classifier, classifier.6, heads.head…)."""
    linear = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linear:
        raise FtdynError(f"{type(model).__name__} has no linear classifier to replace")
    return linear[-1]


def replace_head(model: nn.Module, num_classes: int, seed: int) -> str:
    """A fresh linear head for the target classes, initialised from ``seed``."""
    name = head_name(model)
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, attr)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    setattr(parent, attr, nn.Linear(old.in_features, num_classes))
    torch.random.set_rng_state(generator_state)
    return name


def build_model(model_name: str, weights: str | None, num_classes: int, seed: int) -> tuple[nn.Module, str]:
    """The source model for fine-tuning: architecture + weights, with a new head for num_classes.

    A weights file may come from a model with any class count (its head is replaced like
    ImageNet's); the backbone must match the architecture exactly.
    """
    check_model_name(model_name)
    resolved = resolve_weights(model_name, weights)
    if isinstance(resolved, Path):
        state = read_state_dict(resolved)
        model = torchvision.models.get_model(model_name, weights=None)
        head = head_name(model)
        head_weight = state.get(f"{head}.weight")
        if head_weight is not None and head_weight.shape[0] != model.get_submodule(head).out_features:
            model = torchvision.models.get_model(model_name, weights=None, num_classes=head_weight.shape[0])
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            example = (missing or unexpected)[0]
            raise FtdynError(f"weights file '{resolved}' does not fit {model_name}: {len(missing)} missing and "
                             f"{len(unexpected)} unexpected keys (e.g. '{example}'); is it for another architecture?")
        description = f"file:{resolved}"
    else:
        try:
            model = torchvision.models.get_model(model_name, weights=resolved)
        except Exception as exc:  # download failures, offline machines
            raise FtdynError(f"could not load {model_name} weights {resolved}: {exc}. Offline? Pass a local "
                             f"state-dict file with --weights, or --weights none") from None
        description = "none" if resolved is None else str(resolved)
    replace_head(model, num_classes, seed)
    return model, description


# ------------------------------------------------------------------------------------------------
# Layer discovery


@dataclass
class LayerInfo:
    name: str
    kind: str
    shape: tuple[int, ...]  # output shape without the batch dimension
    calls: int  # how many times the module runs per forward pass


def trace_layers(model: nn.Module, image_size: int) -> list[LayerInfo]:
    """Every module with its output shape for one image, in the order the forward pass first runs it."""
    order: dict[str, LayerInfo] = {}
    hooks = []

    def hook_for(name: str, module: nn.Module):
        def hook(_module, _inputs, output):
            if not isinstance(output, torch.Tensor):
                return
            if name in order:
                order[name].calls += 1
            else:
                order[name] = LayerInfo(name, type(module).__name__, tuple(output.shape[1:]), 1)
        return hook

    for name, module in model.named_modules():
        if name:
            hooks.append(module.register_forward_hook(hook_for(name, module)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return list(order.values())


def default_layer_names(model_name: str, layers: list[LayerInfo]) -> list[str]:
    names = {layer.name for layer in layers}
    if re.match(r"(resnet|resnext|wide_resnet)\d", model_name):
        stages = [f"layer{i}" for i in range(1, 5) if f"layer{i}" in names]
        last_blocks = []
        for stage in stages:
            blocks = [n for n in names if re.fullmatch(rf"{stage}\.\d+", n)]
            last_blocks.append(max(blocks, key=lambda n: int(n.split(".")[1])))
        return ["relu"] + last_blocks
    if model_name.startswith("densenet"):
        chosen = []
        for layer in layers:
            if re.fullmatch(r"features\.transition\d\.relu", layer.name):
                chosen.append(layer.name)
            match = re.fullmatch(r"features\.(denseblock\d)\.denselayer(\d+)\.relu2", layer.name)
            if match:
                block_layers = [n for n in names if re.fullmatch(rf"features\.{match.group(1)}\.denselayer\d+", n)]
                if int(match.group(2)) == len(block_layers):
                    chosen.append(layer.name)
        return chosen
    return generic_default_layers(layers)


def generic_default_layers(layers: list[LayerInfo]) -> list[str]:
    """At each spatial resolution above 1×1, the last activation module that runs once per pass.

    Resolutions without an activation (pooling to 7×7 before the classifier) and 1×1 maps
    (squeeze-and-excitation gates) are not feature stages and are skipped.
    """
    activation_kinds = {a.__name__ for a in ACTIVATIONS}
    last_by_resolution: dict[tuple[int, ...], str] = {}
    for layer in layers:
        if len(layer.shape) == 3 and layer.calls == 1 and layer.kind in activation_kinds and layer.shape[1] * layer.shape[2] > 1:
            last_by_resolution[layer.shape[1:]] = layer.name
    chosen = list(last_by_resolution.values())
    order = {layer.name: i for i, layer in enumerate(layers)}
    return sorted(chosen, key=order.__getitem__)


def select_layers(model_name: str, model: nn.Module, requested: list[str] | None, image_size: int) -> list[LayerInfo]:
    """The layers to hook, early → deep; unknown names get a message pointing at `ftdyn layers`."""
    layers = trace_layers(model, image_size)
    by_name = {layer.name: layer for layer in layers}
    names = requested or default_layer_names(model_name, layers)
    chosen = []
    for name in names:
        if name not in by_name:
            close = difflib.get_close_matches(name, list(by_name), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise FtdynError(f"{model_name} has no layer '{name}'{hint}; `ftdyn layers {model_name}` lists them")
        layer = by_name[name]
        if layer.calls != 1:
            raise FtdynError(f"layer '{name}' runs {layer.calls} times per forward pass (a shared module), so its "
                             f"output is ambiguous; hook the enclosing block instead (`ftdyn layers {model_name}`)")
        chosen.append(layer)
    if not chosen:
        raise FtdynError(f"found no layer to hook in {model_name}; pass --layers (see `ftdyn layers {model_name}`)")
    order = {layer.name: i for i, layer in enumerate(layers)}
    return sorted(chosen, key=lambda layer: order[layer.name])
