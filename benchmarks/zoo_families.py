"""Which timm and Hugging Face families ftdyn takes: one member per family, built on the CPU with
random weights (no download), through what `ftdyn run` needs of a model before training — a new
head, the default layers with their layouts (one forward pass), and block groups that partition
every parameter.

timm: a family is one of timm's model modules (`timm.list_modules()`), represented by its smallest
named member that has a pretrained config (atto, femto, pico, nano, tiny, … by name). Hugging Face: a
family is one model type of `AutoModelForImageClassification`, built from its default config
(mostly the Base size).

    python benchmarks/zoo_families.py                 # both zoos, 224 px
    python benchmarks/zoo_families.py --zoo timm

Prints one line per family: ok (layers, layout of the first default layer, groups) or the one-line
reason it is refused, and the counts.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch  # noqa: E402

from engine.errors import FtdynError  # noqa: E402
from engine.models import default_layer_names, replace_head, trace_layers  # noqa: E402
from engine.strategies import block_groups  # noqa: E402


def check(name: str, model: torch.nn.Module, size: int) -> str:
    replace_head(model, 3, 0)
    layers = trace_layers(model, size)
    defaults = default_layer_names(name, layers, model)
    if not defaults:
        raise FtdynError("no default layer found")
    groups = block_groups(name, model, defaults)
    grouped = sorted(n for names in groups.values() for n in names)
    if grouped != sorted(n for n, _ in model.named_parameters()):
        raise FtdynError("block groups do not partition the parameters")
    first = next(layer for layer in layers if layer.name == defaults[0]).layout
    kind = first.kind + (f"+{first.prefix}" if first.kind == "tokens" and first.prefix else "")
    return f"{len(defaults)} layers ({kind}), {len(groups)} groups"


SIZES = ("atto", "femto", "pico", "nano", "tiny", "xxs", "xs", "small", "s", "medium", "m", "base", "b")


def smallness(name: str) -> tuple[int, str]:
    """Where a name's size word ranks (small first); names without one last."""
    words = name.replace("-", "_").split("_")
    ranks = [SIZES.index(word) for word in words if word in SIZES]
    return (min(ranks) if ranks else len(SIZES), name)


def timm_families(size: int):
    import timm

    for module in sorted(timm.list_modules()):
        names = [n for n in timm.list_models(module=module) if timm.get_pretrained_cfg(n) is not None]
        if not names:
            continue
        name = min(names, key=smallness)

        def build(name=name):
            try:
                return timm.create_model(name, pretrained=False, img_size=size, num_classes=3)
            except TypeError:
                return timm.create_model(name, pretrained=False, num_classes=3)  # as build_model does
        yield module, f"timm:{name}", build


def hf_families(size: int):
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    from engine.zoos.hf_models import as_image_classifier

    for model_type in sorted(MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES):
        def build(model_type=model_type):
            config = transformers.CONFIG_MAPPING[model_type]()
            if isinstance(getattr(config, "image_size", None), int):
                config.image_size = size
            config.num_labels = 1000  # a source with another class count, as a checkpoint has
            classes = MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES[model_type]  # the plain classifier first
            classes = [classes] if isinstance(classes, str) else list(classes)
            return as_image_classifier(getattr(transformers, classes[0])(config))
        yield model_type, f"hf:{model_type}", build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zoo", choices=["timm", "hf", "both"], default="both")
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args()
    zoos = {"timm": timm_families, "hf": hf_families}
    for zoo in (["timm", "hf"] if args.zoo == "both" else [args.zoo]):
        taken, refused = 0, 0
        for family, name, build in zoos[zoo](args.image_size):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model = build().eval()
                said = check(name, model, args.image_size)
                taken += 1
                print(f"{zoo:5s} {family:28s} ok       {name:48s} {said}")
            except Exception as exc:  # a survey: every family's reason is printed, none stops it
                refused += 1
                reason = " ".join(str(exc).split())[:140] or type(exc).__name__
                print(f"{zoo:5s} {family:28s} REFUSED  {name:48s} {type(exc).__name__}: {reason}")
        print(f"{zoo}: {taken} families taken, {refused} refused")


if __name__ == "__main__":
    main()
