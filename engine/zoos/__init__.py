"""Models from the other zoos, named wherever a torchvision name goes: ``timm:NAME`` (any of timm's
architectures, e.g. ``timm:convnext_tiny``, ``timm:vit_small_patch14_reg4_dinov2``) and
``hf:PATH_OR_NAME`` (a Hugging Face ``AutoModelForImageClassification``: a local folder written by
``save_pretrained``, or a Hub name). Each zoo module gives what :mod:`engine.models` needs of a
model: checking its name, building it at an image size with weights (``none``, the zoo's
pretrained weights, or a local file), its native input size and its normalisation.

Everything else is the same for every zoo and lives in :mod:`engine.models` (layout detection,
default layers, head replacement) and :mod:`engine.strategies` (block groups).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from engine.errors import FtdynError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ZOOS = {"timm": ("engine.zoos.timm_models", "timm"), "hf": ("engine.zoos.hf_models", "hf")}


@dataclass(frozen=True)
class Preprocessing:
    """What a model expects of its input: its native square size and the per-channel normalisation."""

    image_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


def split_name(model_name: str) -> tuple[str | None, str]:
    """('timm', 'convnext_tiny') for 'timm:convnext_tiny'; (None, name) for a torchvision name."""
    zoo, colon, rest = model_name.partition(":")
    if colon and zoo in ZOOS:
        if not rest:
            raise FtdynError(f"'{model_name}' names no model: write {zoo}:NAME")
        return zoo, rest
    return None, model_name


def zoo_module(model_name: str) -> ModuleType | None:
    """The module of the zoo ``model_name`` comes from (None: torchvision), its extra installed."""
    zoo, _ = split_name(model_name)
    if zoo is None:
        return None
    module, extra = ZOOS[zoo]
    try:
        return __import__(module, fromlist=["build"])
    except ModuleNotFoundError as exc:
        raise FtdynError(f"{model_name} needs {exc.name}: pip install -e \".[{extra}]\"") from None
