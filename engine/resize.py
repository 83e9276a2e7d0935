"""Resize sensitivity (ANALYSES.md §8; seed: finetuning-methods-readme.md): how much a model's features
depend on the interpolation that brought the images to its input size.

The same probe images are resized to the model's input size by each method, normalised as in a run,
and passed through the model once per method; per hooked layer and pair of methods (a, b)

    d_ℓ(a, b) = metric( view(A_ℓ^a(probe)), view(A_ℓ^b(probe)) )      (default: 1 − linear CKA, `positions`)

with the run's jackknife interval over probe-image groups (engine.intervals). A pair of a method with
itself is exactly 0 (the same features). Methods are PIL's resampling filters (PIL filters antialias
when they shrink, except `nearest`): `nearest`, `bilinear`, `bicubic`, `area` (box: the mean of the
covered pixels) and `lanczos`.

The probe set is the one a run on the same data and seed would use (class-stratified from the
held-out split), so the figures line up with a run's.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torchvision import transforms

from engine.capture import capture, parse_measures
from engine.data import IMAGENET_MEAN, IMAGENET_STD, ImageList, load_image_data, probe_indices
from engine.errors import FtdynError
from engine.intervals import estimate, settings_for
from engine.models import build_model, normalisation, select_layers
from engine.similarity import LayerAccumulator

METHODS = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
           "bicubic": Image.Resampling.BICUBIC, "area": Image.Resampling.BOX, "lanczos": Image.Resampling.LANCZOS}
DEFAULT_METHODS = ("nearest", "bilinear", "bicubic", "area")


def parse_methods(names: list[str] | None) -> list[str]:
    chosen = list(dict.fromkeys(names or DEFAULT_METHODS))
    unknown = [n for n in chosen if n not in METHODS]
    if unknown:
        raise FtdynError(f"unknown interpolation '{unknown[0]}'; choose from {', '.join(METHODS)}")
    if len(chosen) < 2:
        raise FtdynError("name at least two interpolations to compare, e.g. --methods nearest,bilinear")
    return chosen


def method_transform(method: str, image_size: int, normalisation: tuple = (IMAGENET_MEAN, IMAGENET_STD)):
    """Square resize with ``method``, then the model's normalisation (ImageNet's for torchvision's)."""
    return transforms.Compose([
        transforms.Lambda(lambda image: image.resize((image_size, image_size), METHODS[method])),
        transforms.ToTensor(), transforms.Normalize(*normalisation)])


@torch.no_grad()
def resize_sensitivity(model_name: str, weights: str, data: str, image_size: int = 224, probe_size: int = 256,
                       methods: list[str] | None = None, layers: list[str] | None = None,
                       metric: str = "cka", view: str = "positions", seed: int = 0, device: str = "cpu",
                       groups: int = 10, level: float = 0.9, batch_size: int = 32,
                       on_progress=lambda done, total: None) -> dict[str, Any]:
    """{"methods", "layers", "measure", "intervals", "rows": [{layer, a, b, value, low, high}]}."""
    methods = parse_methods(methods)
    [measure] = parse_measures([metric], view, 0.5)
    image_data = load_image_data(data, seed=seed)
    samples = image_data.held_out.samples
    probe = [samples[i] for i in probe_indices([label for _, label in samples], probe_size, seed)]
    torch.manual_seed(seed)  # `--weights none`: the same random network every time, as a run's
    model, _ = build_model(model_name, weights, len(image_data.classes), seed, image_size)
    model = model.to(device).eval()
    hooked = select_layers(model_name, model, layers, image_size)
    layouts = {layer.name: layer.layout for layer in hooked}
    interval = settings_for(min(groups, len(probe)), level) if len(probe) >= 2 else None
    pairs = list(itertools.combinations_with_replacement(methods, 2))
    accumulators = {(layer, a, b): LayerAccumulator(measure.view, [measure.metric],
                                                    groups=interval.groups if interval else 1)
                    for layer in layouts for a, b in pairs}
    lists = {m: ImageList(probe, method_transform(m, image_size, normalisation(model_name))) for m in methods}
    for start in range(0, len(probe), batch_size):
        stop = min(len(probe), start + batch_size)
        features = {}
        for method in methods:
            images = torch.stack([lists[method][i][0] for i in range(start, stop)]).to(device)
            with capture(model, layouts) as out:
                model(images)
            features[method] = {layer: out[layer].float() for layer in layouts}
        for (layer, a, b), accumulator in accumulators.items():
            accumulator.update(features[a][layer], features[b][layer])
        on_progress(stop, len(probe))
    rows = []
    for (layer, a, b), accumulator in accumulators.items():
        result = accumulator.result()
        value = result.values[measure.metric.label]
        found = estimate(value, result.replicates.get(measure.metric.label), interval.t,
                         interval.corrected) if interval else None
        rows.append({"layer": layer, "a": a, "b": b, "value": found.value if found else value,
                     "plug_in": value,
                     "low": found.low if found else None, "high": found.high if found else None})
    return {"model": model_name, "weights": weights, "data": str(Path(data)), "image_size": image_size,
            "probe_images": len(probe), "methods": methods, "layers": list(layouts), "measure": measure.label,
            "intervals": interval.to_json() if interval else None, "rows": rows}
