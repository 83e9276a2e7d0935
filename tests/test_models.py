"""Every torchvision classifier: default layers, layouts, block groups and head replacement for all of
them (traced on the meta device: shapes without computing), and a real analysis on the smallest
member of every family. ViTs and Swin also run end to end."""

import math
import re
import warnings

import pytest
import torch
import torchvision

from conftest import TINY_RUN
from engine.analyses.distance import FeatureDistance
from engine.analyses.drift import ParameterDrift
from engine.analyses.runner import EpochAnalyses
from engine.capture import Layout, as_feature_map, detect_layout, parse_measures
from engine.errors import FtdynError
from engine.models import (
    architecture,
    default_layer_names,
    head_name,
    native_image_size,
    replace_head,
    select_layers,
    trace_layers,
)
from engine.record import read_run
from engine.strategies import block_groups

ALL = torchvision.models.list_models(module=torchvision.models)
# The smallest member of each family, measured for real at a small input size.
FAMILIES = {"alexnet": 96, "convnext_tiny": 64, "densenet121": 64, "efficientnet_b0": 64, "efficientnet_v2_s": 64,
            "googlenet": 64, "inception_v3": 96, "maxvit_t": 224, "mnasnet0_5": 64, "mobilenet_v2": 64,
            "mobilenet_v3_small": 64, "regnet_x_400mf": 64, "regnet_y_400mf": 64, "resnet18": 64,
            "resnext50_32x4d": 64, "shufflenet_v2_x0_5": 64, "squeezenet1_1": 64, "swin_t": 64, "swin_v2_t": 64,
            "vgg11": 64, "vit_b_32": 64, "wide_resnet50_2": 64}


FAMILY = re.compile(r"efficientnet_v2|efficientnet|swin_v2|swin|regnet_[xy]|vit|convnext|densenet|mnasnet|"
                    r"mobilenet_v[23]|resnext|resnet|wide_resnet|shufflenet_v2|squeezenet|vgg|alexnet|googlenet|"
                    r"inception_v3|maxvit")


def test_every_family_is_represented():
    """A family torchvision adds later fails here until it has a representative measured for real."""
    def family(name):
        match = FAMILY.match(name)
        return match.group(0) if match else name
    assert {family(n) for n in ALL} <= {family(n) for n in FAMILIES}


def build_on_meta(name: str):
    """Shapes only: parameters on the meta device cost no memory and no initialisation. RegNet's
    constructor computes its widths with tensors, so it is built for real (weights left as initialised)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name.startswith("regnet"):
            return architecture(name)
        with torch.device("meta"):
            return architecture(name)


@pytest.mark.parametrize("name", ALL)
def test_every_classifier_has_layers_groups_and_a_replaceable_head(name):
    model = build_on_meta(name)
    size = native_image_size(name, model)
    layers = trace_layers(model, size)
    by_name = {layer.name: layer for layer in layers}
    defaults = default_layer_names(name, layers, model)
    assert defaults, name
    for layer in defaults:
        info = by_name[layer]
        assert info.calls == 1 and info.layout is not None and info.layout.kind != "vector", (name, layer)
    order = [layer.name for layer in layers]
    assert defaults == sorted(defaults, key=order.index)  # early → deep
    groups = block_groups(name, model, defaults if not name.startswith(("resnet", "resnext", "wide", "vgg",
                                                                        "densenet")) else None)
    params = [n for n, _ in model.named_parameters()]
    grouped = [n for names in groups.values() for n in names]
    assert sorted(grouped) == sorted(params), name  # every parameter in exactly one group
    assert list(groups)[-1] == "head" and len(groups) >= 3
    head = head_name(model)
    replace_head(model, 7, seed=0)
    assert model.get_submodule(head).weight.shape[0] == 7


@pytest.mark.parametrize("name,size", sorted(FAMILIES.items()))
def test_one_analysis_runs_on_every_family(name, size):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = architecture(name, image_size=size).eval()
    layers = select_layers(name, source, None, size)
    tuned = architecture(name, image_size=size).eval()
    tuned.load_state_dict(source.state_dict())
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(0.05 * p.std().nan_to_num() * torch.randn_like(p))
    names = [layer.name for layer in layers]
    measures = parse_measures(["pwsm", "cka"], "positions", 0.5)
    parts = [FeatureDistance(names, measures, class_token_layers=tuple(
        layer.name for layer in layers if layer.layout.class_token)),
        ParameterDrift(source, block_groups(name, source), names, head_name(source))]
    runner = EpochAnalyses(source, {layer.name: layer.layout for layer in layers}, parts)
    images = torch.randn(4, 3, size, size)
    same, _ = runner.run(source, [(images, None)], torch.device("cpu"))
    moved, _ = runner.run(tuned, [(images, None)], torch.device("cpu"))
    for layer in names:
        assert same["layers"][layer]["positions"]["values"]["cka"] == 0.0  # identical models: exactly 0
        value = moved["layers"][layer]["positions"]["values"]["cka"]
        assert value is not None and 0.0 <= value <= 1.0 and math.isfinite(value), (name, layer)
    assert moved["drift"]["groups"]["relative"]["backbone"] > 0


def test_layouts_from_shape_and_module():
    assert detect_layout((64, 56, 56), "ReLU", False) == Layout("channels_first")
    assert detect_layout((56, 56, 96), "Sequential", False) == Layout("channels_last")
    assert detect_layout((7, 7, 7), "LayerNorm", False) == Layout("channels_last")
    assert detect_layout((7, 7, 7), "Conv2d", False) == Layout("channels_first")
    assert detect_layout((197, 768), "EncoderBlock", True) == Layout("tokens", class_token=True, grid=(14, 14))
    assert detect_layout((196, 768), "Block", False) == Layout("tokens", grid=(14, 14))
    assert detect_layout((64, 49, 256), "GELU", False) is None  # window-partitioned attention: not a map
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    assert torch.equal(as_feature_map(x.permute(0, 2, 3, 1), Layout("channels_last")), x)
    tokens = torch.randn(2, 1 + 9, 8)
    grid = as_feature_map(tokens, Layout("tokens", class_token=True, grid=(3, 3)))
    assert grid.shape == (2, 8, 3, 3) and torch.equal(grid[:, :, 1, 2], tokens[:, 1 + 1 * 3 + 2])


def test_vit_image_sizes():
    model = architecture("vit_b_32", image_size=64)
    assert model.image_size == 64 and model(torch.zeros(1, 3, 64, 64)).shape == (1, 1000)
    with pytest.raises(FtdynError, match="multiple of its 32-pixel patches: 32 or 64"):
        architecture("vit_b_32", image_size=40)


def test_vit_runs_end_to_end_with_a_class_token_view(tmp_path, shapes_data, cli):
    run_dir = tmp_path / "vit"
    args = [a for a in TINY_RUN if a not in ("resnet18",)]
    args[args.index("--model") + 1:args.index("--model") + 1] = ["vit_b_32"]
    result = cli("run", "--data", shapes_data, "--out", run_dir, "--epochs", "1", *args,
                 "--metrics", "pwsm,cka@cls", "--layers", "encoder.layers.encoder_layer_0,encoder.layers.encoder_layer_11")
    assert result.exit_code == 0, result.output
    run = read_run(run_dir)
    layer = run.config["layers"][0]
    assert layer["layout"] == {"kind": "tokens", "class_token": True, "grid": [1, 1], "prefix_tokens": 1}
    last = run.epochs[-1]["layers"]["encoder.layers.encoder_layer_11"]
    assert set(last) == {"positions", "cls"} and last["cls"]["values"]["cka"] > 0
    bad = cli("run", "--data", shapes_data, "--out", tmp_path / "bad", "--epochs", "1", *TINY_RUN,
              "--metrics", "cka@cls")
    assert bad.exit_code == 2 and "class token" in bad.output


def test_swin_runs_end_to_end_with_channels_last_stages(tmp_path, shapes_data, cli):
    run_dir = tmp_path / "swin"
    args = [a for a in TINY_RUN]
    args[args.index("resnet18")] = "swin_t"
    args[args.index("--image-size") + 1] = "64"
    result = cli("run", "--data", shapes_data, "--out", run_dir, "--epochs", "1", *args, "--vis",
                 "--strategy", "discriminative")
    assert result.exit_code == 0, result.output
    run = read_run(run_dir)
    assert [layer["name"] for layer in run.config["layers"]] == ["features.1", "features.3", "features.5", "features.7"]
    assert all(layer["layout"]["kind"] == "channels_last" for layer in run.config["layers"])
    assert run.config["vis_fields"]["features.1"] == "patch origin"
    assert [g["name"] for g in run.config["strategy"]["groups"]] == ["features.1", "features.3", "features.5",
                                                                      "features.7", "head"]
    assert run.epochs[-1]["layers"]["features.7"]["positions"]["filters"] == 768
