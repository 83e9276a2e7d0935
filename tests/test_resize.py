"""`ftdyn resize-cka`: feature distance between interpolations, against a reference written here."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from engine.data import IMAGENET_MEAN, IMAGENET_STD, load_image_data, probe_indices
from engine.models import build_model
from engine.resize import resize_sensitivity


def reference_cka_distance(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(0), y - y.mean(0)
    return 1 - np.linalg.norm(x.T @ y) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def relu_positions(model, paths, method, size: int) -> np.ndarray:
    """The stem ReLU's (n·h·w, c) rows for the images resized by PIL's ``method``, normalised by hand."""
    mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
    images = []
    for path in paths:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB").resize((size, size), method), dtype=np.float64) / 255
        images.append(((pixels - mean) / std).transpose(2, 0, 1))
    kept = {}
    handle = model.relu.register_forward_hook(lambda m, i, o: kept.setdefault("relu", o))
    with torch.no_grad():
        model(torch.tensor(np.stack(images), dtype=torch.float32))
    handle.remove()
    out = kept["relu"].double().numpy()
    return out.transpose(0, 2, 3, 1).reshape(-1, out.shape[1])


def test_resize_sensitivity_against_a_reference(shapes_data):
    result = resize_sensitivity("resnet18", "none", str(shapes_data), image_size=24, probe_size=9,
                                methods=["nearest", "bilinear"], layers=["relu", "layer1.1"])
    rows = {(r["layer"], r["a"], r["b"]): r for r in result["rows"]}
    assert set(rows) == {(layer, a, b) for layer in ("relu", "layer1.1")
                         for a, b in (("nearest", "nearest"), ("nearest", "bilinear"), ("bilinear", "bilinear"))}
    for layer in ("relu", "layer1.1"):  # a method against itself: the same features, exactly 0
        assert rows[(layer, "nearest", "nearest")]["value"] == 0.0 == rows[(layer, "bilinear", "bilinear")]["value"]
    data = load_image_data(shapes_data)
    samples = data.held_out.samples
    paths = [samples[i][0] for i in probe_indices([label for _, label in samples], 9, 0)]
    torch.manual_seed(0)
    model, _ = build_model("resnet18", "none", len(data.classes), 0, 24)
    model.eval()
    expected = reference_cka_distance(relu_positions(model, paths, Image.Resampling.NEAREST, 24),
                                      relu_positions(model, paths, Image.Resampling.BILINEAR, 24))
    found = rows[("relu", "nearest", "bilinear")]
    assert expected > 1e-4 and found["plug_in"] == pytest.approx(expected, abs=1e-9)  # float32 activations
    # shown: the jackknife's bias-corrected estimate, the interval centred there, as the run's intervals say
    assert result["intervals"]["groups"] == 9 and result["intervals"]["estimate"] == "bias-corrected"
    assert found["value"] != found["plug_in"] and found["low"] < found["value"] < found["high"]
    assert (found["low"] + found["high"]) / 2 == pytest.approx(found["value"], abs=1e-12)


def test_resize_cka_command(shapes_data, cli):
    result = cli("resize-cka", "--model", "resnet18", "--weights", "none", "--data", shapes_data, "--image-size", "24",
                 "--probe-size", "9", "--methods", "area,bicubic", "--layers", "layer4.1", "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["methods"] == ["area", "bicubic"] and report["measure"] == "cka@positions"
    assert len(report["rows"]) == 3 and report["probe_images"] == 9
    table = cli("resize-cka", "--model", "resnet18", "--weights", "none", "--data", shapes_data, "--image-size", "24",
                "--probe-size", "9", "--methods", "area,bicubic", "--layers", "layer4.1")
    assert table.exit_code == 0 and "area·bicu" in table.output
    for methods, message in (("area,sharpen", "unknown interpolation 'sharpen'"),
                             ("area", "name at least two interpolations")):
        refused = cli("resize-cka", "--model", "resnet18", "--weights", "none", "--data", shapes_data,
                      "--methods", methods)
        assert refused.exit_code == 2 and message in refused.output
