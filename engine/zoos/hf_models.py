"""Hugging Face image classifiers as ``hf:PATH_OR_NAME`` (``pip install -e ".[hf]"``): a folder
written by ``save_pretrained`` or a Hub name (downloaded unless cached), loaded as
``AutoModelForImageClassification`` — ViT, DeiT, BEiT, Swin, ConvNeXt, DINOv2, ResNet, …

Weights (``--weights``): ``DEFAULT`` — the weights that come with the folder or Hub name; ``none``
— the same architecture from its config, randomly initialised; or a local file (safetensors or a
state dict, read without unpickling) for that architecture. The model is called on images alone,
as every torchvision classifier is: a forward hook hands back its logits, and transformers that
can interpolate their position embeddings are called with ``interpolate_pos_encoding=True``, so
they take the run's image size. Input size and normalisation come from the model's image
processor config (``preprocessor_config.json``) where it has one.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import transformers
from torch import nn

from engine.errors import FtdynError, exception_line
from engine.zoos import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

OFFLINE = ("Offline? Save the model with save_pretrained(folder) and pass hf:folder, or name a model in the "
           "Hugging Face cache")


def check(name: str) -> None:
    path = Path(name).expanduser()
    if path.exists() and not (path / "config.json").is_file():
        raise FtdynError(f"'{name}' holds no config.json: pass a folder written by save_pretrained, or a Hugging Face "
                         f"Hub model name")


def config_of(name: str) -> transformers.PretrainedConfig:
    check(name)
    try:
        return transformers.AutoConfig.from_pretrained(name)
    except Exception as exc:  # unknown names, unreachable Hub, a damaged config
        raise FtdynError(f"cannot read the config of hf:{name} ({exception_line(exc)[:160]}). {OFFLINE}") from None


def weight_names(name: str) -> list[str]:
    return ["DEFAULT"]


def logits_only(_module: nn.Module, _inputs, output):
    """The classifier's output as a tensor of logits, as torchvision's networks return."""
    return getattr(output, "logits", output)


def interpolate_positions(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    kwargs.setdefault("interpolate_pos_encoding", True)
    return args, kwargs


def as_image_classifier(model: nn.Module) -> nn.Module:
    """``model`` called on images alone: logits out, at any image size its positions interpolate to."""
    model.register_forward_hook(logits_only)
    if "interpolate_pos_encoding" in inspect.signature(model.forward).parameters:
        model.register_forward_pre_hook(interpolate_positions, with_kwargs=True)
    return model


def architecture(name: str, image_size: int | None = None) -> nn.Module:
    try:
        model = transformers.AutoModelForImageClassification.from_config(config_of(name))
    except ValueError as exc:  # a config of a model that does not classify images
        raise FtdynError(f"hf:{name} is not an image classifier ({exception_line(exc)[:160]})") from None
    return as_image_classifier(model)


def build(name: str, weights: str | None, image_size: int | None, num_classes: int) -> tuple[nn.Module, str]:
    """The network with ``weights`` (its classifier is replaced by the caller for ``num_classes``)."""
    if weights is None or weights.lower() == "none":
        return architecture(name, image_size), "none"
    if weights != "DEFAULT":
        path = Path(weights).expanduser()
        if not (path.exists() or weights.endswith((".pt", ".pth", ".bin", ".safetensors"))):
            raise FtdynError(f"hf:{name} takes the weights of its folder or Hub name (--weights DEFAULT), a local "
                             f"weights file, or none; '{weights}' is neither")
        from engine.models import check_weights_fit, read_weights_file

        if not path.is_file():
            raise FtdynError(f"weights file '{path}' does not exist; pass --weights DEFAULT (the folder's own), a "
                             f"local weights file, or none")
        model = architecture(name, image_size)
        check_weights_fit(model, read_weights_file(path), path, f"hf:{name}")
        return model, f"file:{path}"
    check(name)
    try:
        model = transformers.AutoModelForImageClassification.from_pretrained(name)
    except Exception as exc:  # unknown names, unreachable Hub, damaged weights
        raise FtdynError(f"could not load hf:{name} ({exception_line(exc)[:160]}). {OFFLINE}") from None
    return as_image_classifier(model), f"hf:{name}"


def processor_config(name: str) -> dict:
    """The model's image processor settings: its folder's preprocessor_config.json, else the Hub's
    (where it can be reached); {} without."""
    path = Path(name).expanduser()
    if path.is_dir():
        found = path / "preprocessor_config.json"
    else:
        try:
            from huggingface_hub import hf_hub_download

            found = Path(hf_hub_download(name, "preprocessor_config.json"))
        except Exception:  # not on the Hub, offline, or no processor: the defaults below
            return {}
    try:
        settings = json.loads(found.read_text())
    except (OSError, ValueError):
        return {}
    return settings if isinstance(settings, dict) else {}


def preprocessing(name: str) -> Preprocessing:
    settings, config = processor_config(name), config_of(name)
    size = settings.get("size")
    if isinstance(size, dict):
        size = size.get("height") or size.get("shortest_edge")
    size = size if isinstance(size, int) else getattr(config, "image_size", 224)
    mean, std = settings.get("image_mean"), settings.get("image_std")
    three = lambda v: isinstance(v, list) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v)  # noqa: E731
    return Preprocessing(int(size) if isinstance(size, int) else 224, tuple(mean) if three(mean) else IMAGENET_MEAN,
                         tuple(std) if three(std) else IMAGENET_STD)
