"""timm's models as ``timm:NAME`` (``pip install -e ".[timm]"``): any architecture ``timm.list_models()``
lists, optionally with a pretrained tag (``timm:convnext_tiny.fb_in22k``).

Weights (``--weights``): ``none`` (random), ``DEFAULT`` (timm's default pretrained tag; downloaded
from the Hugging Face Hub unless cached), a pretrained tag (``timm:NAME`` with ``--weights
fb_in22k``), or a local file — safetensors or a state dict, read without unpickling — whose
position embeddings timm resamples to the image size as it does for its own weights. Networks that
take an input size (ViTs, Swin, …) are built for the run's; input normalisation comes from the
model's ``pretrained_cfg``.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

import timm
from torch import nn

from engine.errors import FtdynError, exception_line
from engine.zoos import Preprocessing

PREFIX = "timm:"


def architecture_name(name: str) -> str:
    return name.split(".")[0]


def check(name: str) -> None:
    arch = architecture_name(name)
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=3)
        hint = f"did you mean {', '.join(PREFIX + c for c in close)}? " if close else ""
        raise FtdynError(f"unknown timm model '{name}': {hint}`python -c \"import timm; print(timm.list_models('*vit*'))\"` "
                         f"lists them")


def weight_names(name: str) -> list[str]:
    """The pretrained tags of the architecture (what ``--weights`` may name besides DEFAULT and none)."""
    arch = architecture_name(name)
    return [tagged.partition(".")[2] for tagged in timm.list_pretrained(f"{arch}.*")]


def create(name: str, image_size: int | None, **options) -> nn.Module:
    """timm.create_model, built for ``image_size`` where the architecture takes one."""
    if image_size is not None:
        try:
            return timm.create_model(name, img_size=image_size, **options)
        except TypeError as exc:  # a network that takes any size has no img_size
            if "img_size" not in str(exc):
                raise
    return timm.create_model(name, **options)


def architecture(name: str, image_size: int | None = None) -> nn.Module:
    check(name)
    return create(name, image_size, pretrained=False)


def build(name: str, weights: str | None, image_size: int | None, num_classes: int) -> tuple[nn.Module, str]:
    """The network with ``weights`` and a classifier for ``num_classes`` (which the caller replaces
    with its seeded one; timm's backbones without a classifier get one)."""
    check(name)
    if weights is None or weights.lower() == "none":
        return create(name, image_size, pretrained=False, num_classes=num_classes), "none"
    path = Path(weights).expanduser()
    if path.exists() or weights.endswith((".pt", ".pth", ".bin", ".safetensors")):
        return from_file(name, path, image_size, num_classes), f"file:{path}"
    tagged = name
    if weights != "DEFAULT":
        tags = weight_names(name)
        if weights not in tags:
            raise FtdynError(f"'{weights}' is not a pretrained tag of timm:{architecture_name(name)}: choose from "
                             f"{', '.join(tags) or 'none'}, DEFAULT, a local weights file, or none")
        tagged = f"{architecture_name(name)}.{weights}"
    try:
        return create(tagged, image_size, pretrained=True, num_classes=num_classes), f"timm:{tagged}"
    except FtdynError:
        raise
    except Exception as exc:  # download failures, offline machines
        raise FtdynError(f"could not load timm weights for {tagged} ({exception_line(exc)[:120]}). Offline? Pass a "
                         f"local .safetensors or state-dict file with --weights, or --weights none") from None


def from_file(name: str, path: Path, image_size: int | None, num_classes: int) -> nn.Module:
    from engine.models import check_weights_fit, read_weights_file

    if not path.is_file():
        raise FtdynError(f"weights file '{path}' does not exist; pass a pretrained tag of timm:{name}, DEFAULT, a "
                         f"local weights file, or none")
    state = read_weights_file(path)
    model = create(name, image_size, pretrained=False, num_classes=num_classes)
    resample = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if resample is not None:  # timm's own adaptation of a checkpoint to this model (position embeddings, …)
        try:
            state = resample(state, model)
        except Exception as exc:
            raise FtdynError(f"weights file '{path}' does not fit timm:{name} "
                             f"({exception_line(exc, last=True)[:160]})") from None
    check_weights_fit(model, state, path, f"timm:{name}")
    return model


def preprocessing(name: str) -> Preprocessing:
    config = timm.get_pretrained_cfg(name) or timm.get_pretrained_cfg(architecture_name(name))
    if config is None:
        return Preprocessing(224)
    return Preprocessing(int(config.input_size[-1]), tuple(config.mean), tuple(config.std))

