"""Classification models — torchvision's, timm's (``timm:NAME``) and Hugging Face's (``hf:PATH``;
engine.zoos) —: building them with the user's weights, replacing the head, and finding the layers
worth hooking (PAPER-NOTES.md §1).

Default layers reproduce the paper:
* VGG: the last ReLU of each block (vgg19: features.3, 8, 17, 26, 35 = relu1_2 … relu5_4).
* ResNet/ResNeXt/Wide-ResNet: the stem ReLU and the output of every stage's last block
  (torchvision's Bottleneck calls one ReLU module three times, so the block output is hooked).
* DenseNet: the bottleneck ReLU (relu2) of each dense block's last layer and the transition ReLUs.
* timm networks with a ``feature_info``: the modules it lists (timm's own stage outputs).
* Transformers (torchvision's, timm's and Hugging Face's ViTs): every encoder block.
* Any other CNN (the generic rule): at each spatial resolution above 1×1 the model passes through,
  the last activation module that runs once per forward pass.
"""

from __future__ import annotations

import difflib
import re
import warnings
from collections import OrderedDict
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from engine.capture import Layout, detect_layout, feature_map_shape, layer_output
from engine.errors import FtdynError, exception_line
from engine.zoos import IMAGENET_MEAN, IMAGENET_STD, split_name, zoo_module


def classification_models() -> list[str]:
    return torchvision.models.list_models(module=torchvision.models)


def check_model_name(name: str) -> str:
    zoo = zoo_module(name)
    if zoo is not None:
        zoo.check(split_name(name)[1])
        return name
    names = classification_models()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise FtdynError(f"unknown model '{name}': {hint}any torchvision classification model works "
                         f"(e.g. resnet50, vgg19, densenet121), or timm:NAME and hf:PATH_OR_NAME")
    return name


def weight_names(model_name: str) -> list[str]:
    zoo = zoo_module(model_name)
    if zoo is not None:
        return zoo.weight_names(split_name(model_name)[1])
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
        if path.is_dir():
            raise FtdynError(f"--weights '{weights}' is a folder; pass the state-dict file inside it (a .pt or .pth), "
                             f"a torchvision weights name ({', '.join(weight_names(model_name)) or 'DEFAULT'}), or none")
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


def read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """A weights file as a state dict: safetensors, or a torch file read without unpickling."""
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file

            return load_file(str(path))
        except ModuleNotFoundError:
            raise FtdynError("reading .safetensors needs safetensors: pip install safetensors") from None
        except Exception as exc:  # a damaged or foreign file
            raise FtdynError(f"cannot read weights file '{path}' as safetensors ({exception_line(exc)[:120]})") from None
    return read_state_dict(path)


def check_weights_fit(model: nn.Module, state: dict[str, torch.Tensor], path: Path, label: str) -> None:
    """Load ``state`` into ``model``: every tensor must fit, except a classifier of another class
    count (it is replaced anyway); missing or unexpected keys say the file is another architecture's."""
    head = head_name(model)
    own = model.state_dict()
    other_head = {key for key in state if (key == head or key.startswith(head + ".")) and key in own
                  and state[key].shape != own[key].shape}
    try:
        missing, unexpected = model.load_state_dict({k: v for k, v in state.items() if k not in other_head},
                                                    strict=False)
    except RuntimeError as exc:  # a tensor of the wrong shape
        raise FtdynError(f"weights file '{path}' does not fit {label}: {exception_line(exc, last=True)}") from None
    missing = [key for key in missing if key not in other_head]
    if missing or unexpected:
        example = (missing or unexpected)[0]
        raise FtdynError(f"weights file '{path}' does not fit {label}: {len(missing)} missing and "
                         f"{len(unexpected)} unexpected keys (e.g. '{example}'); is it for another architecture?")


def head_name(model: nn.Module) -> str:
    """The classifier: timm's own (its ``pretrained_cfg``), else the last nn.Linear in module order (fc, classifier, classifier.6, heads.head…),
    or for networks that classify with a 1×1 convolution (SqueezeNet) the last Conv2d."""
    named = named_classifiers(model)
    if named:
        return named[0]
    linear = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if linear:
        return linear[-1]
    convolutions = [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
    if convolutions:
        return convolutions[-1]
    raise FtdynError(f"{type(model).__name__} has no linear or convolutional classifier to replace")


def head_names(model: nn.Module) -> list[str]:
    """Every classifier whose outputs are the logits: timm names its own (several where a network
    averages a distillation head or per-stage heads into its logits: DeiT distilled, LeViT,
    EfficientViM); otherwise the one :func:`head_name` finds."""
    return named_classifiers(model) or [head_name(model)]


def named_classifiers(model: nn.Module) -> list[str]:
    """The classifiers a model names as its own: a timm network's ``pretrained_cfg`` (a name or
    several); for a Hugging Face classifier, every linear or convolutional module outside its
    backbone (``base_model_prefix``) that gives ``config.num_labels`` outputs (SwiftFormer and LeViT
    average a distillation head in); [] for other networks."""
    modules = dict(model.named_modules())
    named = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") if hasattr(model, "pretrained_cfg") else None
    if named:
        return [name for name in ([named] if isinstance(named, str) else list(named))
                if isinstance(modules.get(name), (nn.Linear, nn.Conv2d))]
    labels, backbone = getattr(getattr(model, "config", None), "num_labels", None), getattr(model, "base_model_prefix", "")
    if not isinstance(labels, int) or not backbone:
        return []
    return [name for name, module in modules.items() if name and not (name == backbone or name.startswith(backbone + "."))
            and ((isinstance(module, nn.Linear) and module.out_features == labels)
                 or (isinstance(module, nn.Conv2d) and module.out_channels == labels))]


def replace_head(model: nn.Module, num_classes: int, seed: int) -> str:
    """Fresh heads of the same kind for the target classes, initialised from ``seed`` (the first;
    further heads of a network with several from seed + 1, …). Returns the first head's name."""
    names = head_names(model)
    generator_state = torch.random.get_rng_state()
    for offset, name in enumerate(names):
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, attr)
        torch.manual_seed(seed + offset)
        if isinstance(old, nn.Linear):
            new = nn.Linear(old.in_features, num_classes)
        else:
            new = nn.Conv2d(old.in_channels, num_classes, old.kernel_size, old.stride, old.padding)
        setattr(parent, attr, new.to(old.weight.device))
    torch.random.set_rng_state(generator_state)
    if isinstance(getattr(getattr(model, "config", None), "num_labels", None), int):
        model.config.num_labels = num_classes  # a Hugging Face model's heads are found by it (named_classifiers)
    return names[0]


# Built without auxiliary classifiers: in training mode they would make the network return a tuple.
ARCHITECTURE_OPTIONS = {"googlenet": {"aux_logits": False}, "inception_v3": {"aux_logits": False}}


def vit_patch_size(model_name: str) -> int | None:
    match = re.fullmatch(r"vit_[a-z]_(\d+)", model_name)
    return int(match.group(1)) if match else None


def architecture(model_name: str, weights=None, image_size: int | None = None, **options) -> nn.Module:
    """torchvision's network for ``model_name`` at ``image_size``. ViTs are built for the size (their
    position embeddings are interpolated from pretrained ones, as torchvision does for fine-tuning at
    other resolutions); other networks take any size their layers allow."""
    zoo = zoo_module(model_name)
    if zoo is not None:
        return zoo.architecture(split_name(model_name)[1], image_size)
    options = {**ARCHITECTURE_OPTIONS.get(model_name, {}), **options}
    patch = vit_patch_size(model_name)
    if patch is None or image_size is None:
        return torchvision.models.get_model(model_name, weights=weights, **options)
    if image_size % patch:
        low = image_size // patch * patch
        raise FtdynError(f"{model_name} needs an image size that is a multiple of its {patch}-pixel patches: "
                         f"{low if low else patch} or {low + patch}, e.g. 224 (pretrained size) or 384")
    if weights is None:
        return torchvision.models.get_model(model_name, weights=None, image_size=image_size, **options)
    model = torchvision.models.get_model(model_name, weights=weights, **options)
    if weights.meta.get("min_size", (image_size,))[0] == image_size:
        return model
    return vit_at_size(model_name, model.state_dict(), image_size, **options)


def vit_at_size(model_name: str, state: dict[str, torch.Tensor], image_size: int, **options) -> nn.Module:
    """A ViT built for ``image_size`` holding ``state``, its position embeddings interpolated."""
    state = interpolate_vit_state(state, image_size, vit_patch_size(model_name))
    model = torchvision.models.get_model(model_name, weights=None, image_size=image_size, **options)
    model.load_state_dict(state)
    return model


def interpolate_vit_state(state: dict[str, torch.Tensor], image_size: int, patch: int) -> dict[str, torch.Tensor]:
    from torchvision.models.vision_transformer import interpolate_embeddings

    return interpolate_embeddings(image_size, patch, state)


def build_model(model_name: str, weights: str | None, num_classes: int, seed: int,
                image_size: int | None = None) -> tuple[nn.Module, str]:
    """The source model for fine-tuning: architecture + weights, with a new head for num_classes.

    A weights file may come from a model with any class count (its head is replaced like
    ImageNet's); the backbone must match the architecture exactly.
    """
    check_model_name(model_name)
    zoo = zoo_module(model_name)
    if zoo is not None:
        model, description = zoo.build(split_name(model_name)[1], weights, image_size, num_classes)
        replace_head(model, num_classes, seed)
        return model, description
    resolved = resolve_weights(model_name, weights)
    if isinstance(resolved, Path):
        state = read_state_dict(resolved)
        model = architecture(model_name, image_size=image_size)
        head = head_name(model)
        head_weight = state.get(f"{head}.weight")
        if head_weight is not None and head_weight.shape[0] != model.get_submodule(head).weight.shape[0]:
            model = architecture(model_name, image_size=image_size, num_classes=head_weight.shape[0])
        if vit_patch_size(model_name) and image_size and "encoder.pos_embedding" in state and \
                state["encoder.pos_embedding"].shape != model.encoder.pos_embedding.shape:
            state = interpolate_vit_state(state, image_size, vit_patch_size(model_name))
        check_weights_fit(model, state, resolved, model_name)
        description = f"file:{resolved}"
    else:
        try:
            model = architecture(model_name, weights=resolved, image_size=image_size)
        except FtdynError:
            raise
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
    layout: Layout | None = None  # None: not a feature map (cannot be measured)


# Learned tokens a transformer puts before its patch tokens, by parameter name (torchvision:
# class_token; timm: cls_token, reg_token, dist_token; Hugging Face: cls_token, register_tokens,
# distillation_token): each holds shape[1] tokens.
CLASS_TOKENS = ("class_token", "cls_token")
PREFIX_TOKENS = CLASS_TOKENS + ("reg_token", "register_tokens", "dist_token", "distillation_token")


def prefix_tokens(model: nn.Module) -> tuple[bool, int]:
    """(whether the first token is a class token, how many tokens precede the patch grid)."""
    class_token, count = False, 0
    for name, parameter in model.named_parameters():
        last = name.rpartition(".")[2]
        if last in PREFIX_TOKENS and parameter.dim() == 3:
            count += parameter.shape[1]
            class_token = class_token or last in CLASS_TOKENS
    return class_token, count


def trace_layers(model: nn.Module, image_size: int) -> list[LayerInfo]:
    """Every module with its output shape for one image, in the order the forward pass first runs it."""
    order: dict[str, LayerInfo] = {}
    hooks = []

    def hook_for(name: str, module: nn.Module):
        def hook(_module, _inputs, output):
            output = layer_output(output)
            if output is None:
                return
            if name in order:
                order[name].calls += 1
            else:
                shape = tuple(output.shape[1:])
                order[name] = LayerInfo(name, type(module).__name__, shape, 1,
                                        detect_layout(shape, type(module).__name__, class_token, prefix))
        return hook

    class_token, prefix = prefix_tokens(model)

    for name, module in model.named_modules():
        if name:
            hooks.append(module.register_forward_hook(hook_for(name, module)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            device = next(model.parameters()).device  # "meta" traces shapes without computing
            model(torch.zeros(1, 3, image_size, image_size, device=device))
    except (RuntimeError, ValueError, AssertionError) as exc:  # the architecture cannot take this size
        reason = exception_line(exc)
        raise FtdynError(f"{type(model).__name__} cannot run on {image_size}×{image_size} images ({reason}); "
                         f"choose another --image-size (e.g. 224)") from None
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return list(order.values())


def default_layer_names(model_name: str, layers: list[LayerInfo], model: nn.Module) -> list[str]:
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
    features = timm_feature_layers(model, layers) if split_name(model_name)[0] == "timm" else []
    return features or generic_default_layers(model, layers)


def timm_feature_layers(model: nn.Module, layers: list[LayerInfo]) -> list[str]:
    """timm's own stage outputs (``feature_info``) that are feature maps run once; transformers take
    every block (their feature_info lists each one too)."""
    tokens = token_block_layers(model, layers)
    if tokens:
        return tokens
    by_name = {layer.name: layer for layer in layers}
    listed = [info.get("module") for info in getattr(model, "feature_info", None) or [] if isinstance(info, dict)]
    return [name for name in listed if name in by_name and by_name[name].calls == 1 and by_name[name].layout is not None
            and by_name[name].layout.kind in ("channels_first", "channels_last")]


# Modules whose output restates another's (normalised, pooled, reshaped, dropped out): never a stage output.
NOT_STAGES = ("LayerNorm", "LayerNorm2d", "GroupNorm", "Permute", "Dropout", "Identity",
              "StochasticDepth", "Flatten", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d")


def trunk(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The container of the network's stages: the direct child with the most sub-modules when it
    is a Sequential or ModuleList of at least 3 (features, trunk_output, blocks, layers, encoder)."""
    children = [(name, child) for name, child in model.named_children()]
    if not children:
        return None
    name, child = max(children, key=lambda item: sum(1 for _ in item[1].modules()))
    if isinstance(child, (nn.Sequential, nn.ModuleList)) and len(child) >= 3:
        return name, child
    return None


def token_block_layers(model: nn.Module, layers: list[LayerInfo]) -> list[str]:
    """Token models (torchvision's ViTs): the output of every encoder block."""
    by_name = {layer.name: layer for layer in layers}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Sequential, nn.ModuleList)) and len(module) >= 2:
            blocks = [f"{name}.{child}" for child, _ in module.named_children()]
            if all(b in by_name and by_name[b].layout is not None and by_name[b].layout.kind == "tokens"
                   and by_name[b].calls == 1 for b in blocks):
                return blocks
    return []


def generic_default_layers(model: nn.Module, layers: list[LayerInfo]) -> list[str]:
    """The paper's rule for any other network: the output of each stage at each spatial resolution.

    Stages are the direct children of the network and of its trunk (`features`, `trunk_output`,
    `blocks`, …) in the order they run; at each resolution above 1×1 the last stage whose output is a
    feature map (channels first or last) is taken. Normalisation, pooling and reshaping modules only
    restate a stage's output and are not stages. Token models take every encoder block instead. A
    module that wraps a network (a child holding most of its parameters) takes that network's
    layers where they are more.
    """
    tokens = token_block_layers(model, layers)
    if tokens:
        return tokens
    stages = stage_outputs(model, layers)
    if len(stages) >= 2:
        return stages
    # a network wrapped in others (a LightningModule, a module adding the loss, Hugging Face's
    # ForImageClassification around its backbone and encoder): the stages of the child that holds
    # most of the parameters, where it has more
    holders = [(name, child, sum(p.numel() for p in child.parameters())) for name, child in model.named_children()]
    holders = [holder for holder in holders if holder[2] > 0]
    if holders:
        name, child, held = max(holders, key=lambda holder: holder[2])
        if held * 2 > sum(p.numel() for p in model.parameters()):
            inner = [dataclasses.replace(layer, name=layer.name[len(name) + 1:]) for layer in layers
                     if layer.name.startswith(name + ".")]
            deeper = [f"{name}.{layer}" for layer in generic_default_layers(child, inner)]
            if len(deeper) > len(stages):
                return deeper
    return stages


def stage_outputs(model: nn.Module, layers: list[LayerInfo]) -> list[str]:
    """The last stage output at each resolution above 1×1 (see :func:`generic_default_layers`)."""
    candidates = {name for name, _ in model.named_children()}
    stage_container = trunk(model)
    if stage_container is not None:  # its stages stand for it (its output is its last stage's)
        candidates.discard(stage_container[0])
        candidates |= {f"{stage_container[0]}.{child}" for child, _ in stage_container[1].named_children()}
    last_by_resolution: dict[tuple[int, int], str] = {}
    for layer in layers:  # in the order their outputs were produced
        if layer.name not in candidates or layer.kind in NOT_STAGES or layer.calls != 1:
            continue
        if layer.layout is None or layer.layout.kind not in ("channels_first", "channels_last"):
            continue
        c, h, w = feature_map_shape(layer.shape, layer.layout)
        if h * w > 1:
            last_by_resolution[(h, w)] = layer.name
    order = {layer.name: i for i, layer in enumerate(layers)}
    return sorted(last_by_resolution.values(), key=order.__getitem__)


def layer_segments(model: nn.Module, layer_names: list[str], head: str | list[str]) -> "OrderedDict[str, list[str]]":
    """Per hooked layer, the parameter names that produce it from the previous hooked layer (the
    classifiers ``head`` left out)."""
    heads = [head] if isinstance(head, str) else head
    modules = [name for name, _ in model.named_modules()]
    position = {name: i for i, name in enumerate(modules)}

    def last_position(name: str) -> int:
        return max(i for i, other in enumerate(modules) if other == name or other.startswith(name + "."))

    ends = sorted((last_position(name), name) for name in layer_names)
    segments: OrderedDict[str, list[str]] = OrderedDict((name, []) for name in layer_names)
    for param_name, _ in model.named_parameters():
        owner = param_name.rpartition(".")[0]
        if any(owner == h or owner.startswith(h + ".") for h in heads):
            continue
        where = position[owner]
        layer = next((name for end, name in ends if end >= where), None)
        if layer is not None:
            segments[layer].append(param_name)
    return segments


def native_image_size(model_name: str, model: nn.Module) -> int:
    """The input size a network is defined at (ViTs are built for one), else its usual ImageNet size;
    a timm or Hugging Face model's from its own config."""
    zoo = zoo_module(model_name)
    if zoo is not None:  # a timm transformer built for the run's size keeps it in its patch embedding
        built = getattr(getattr(model, "patch_embed", None), "img_size", None)
        return int(built[0]) if isinstance(built, (tuple, list)) else zoo.preprocessing(split_name(model_name)[1]).image_size
    return int(getattr(model, "image_size", 299 if model_name == "inception_v3" else 224))


def normalisation(model_name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) the network's inputs are normalised with: ImageNet's for torchvision's, the
    model's own config for timm's and Hugging Face's (which differ, e.g. 0.5 for many ViTs)."""
    zoo = zoo_module(model_name)
    if zoo is None:
        return IMAGENET_MEAN, IMAGENET_STD
    preprocessing = zoo.preprocessing(split_name(model_name)[1])
    return preprocessing.mean, preprocessing.std


def stage_layers(model_name: str, model: nn.Module) -> list[str]:
    """The default layers at the network's native input size (what block groups follow)."""
    return default_layer_names(model_name, trace_layers(model, native_image_size(model_name, model)), model)


def select_layers(model_name: str, model: nn.Module, requested: list[str] | None, image_size: int,
                  option: str = "--layers", lister: str | None = None) -> list[LayerInfo]:
    """The layers to hook, early → deep; unknown names get a message pointing at ``lister`` (`ftdyn
    layers MODEL`), naming ``option`` as the caller takes it."""
    lister = lister or f"`ftdyn layers {model_name}`"
    layers = trace_layers(model, image_size)
    by_name = {layer.name: layer for layer in layers}
    names = requested or default_layer_names(model_name, layers, model)
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise FtdynError(f"{option} names {', '.join(repr(n) for n in repeated)} more than once; name each layer once")
    chosen = []
    for name in names:
        if name not in by_name:
            close = difflib.get_close_matches(name, list(by_name), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise FtdynError(f"{model_name} has no layer '{name}'{hint}; {lister} lists them")
        layer = by_name[name]
        if layer.calls != 1:
            raise FtdynError(f"layer '{name}' runs {layer.calls} times per forward pass (a shared module), so its "
                             f"output is ambiguous; hook the enclosing block instead ({lister})")
        if layer.layout is None:
            raise FtdynError(f"layer '{name}' gives {tuple(layer.shape)}, which is not a feature map (c, h, w), "
                             f"(h, w, c), a token sequence or a vector; {lister} lists layers that are")
        chosen.append(layer)
    if not chosen:
        raise FtdynError(f"found no layer to hook in {model_name}; pass {option} (see {lister})")
    order = {layer.name: i for i, layer in enumerate(layers)}
    return sorted(chosen, key=lambda layer: order[layer.name])


def source_fingerprint(model: nn.Module) -> float:
    """A checksum of the source weights, to refuse resuming against a different source model."""
    with torch.no_grad():
        return float(sum(p.double().abs().sum() for p in model.state_dict().values() if p.is_floating_point()))
