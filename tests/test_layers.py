"""Layer discovery: the paper's default layers with their output shapes (no weights needed)."""

import pytest
import torchvision

from engine.errors import FtdynError
from engine.models import default_layer_names, select_layers, trace_layers

PAPER_LAYERS = {
    "vgg19": [("features.3", (64, 224, 224)), ("features.8", (128, 112, 112)), ("features.17", (256, 56, 56)),
              ("features.26", (512, 28, 28)), ("features.35", (512, 14, 14))],
    "resnet50": [("relu", (64, 112, 112)), ("layer1.2", (256, 56, 56)), ("layer2.3", (512, 28, 28)),
                 ("layer3.5", (1024, 14, 14)), ("layer4.2", (2048, 7, 7))],
    "densenet121": [("features.denseblock1.denselayer6.relu2", (128, 56, 56)), ("features.transition1.relu", (256, 56, 56)),
                    ("features.denseblock2.denselayer12.relu2", (128, 28, 28)), ("features.transition2.relu", (512, 28, 28)),
                    ("features.denseblock3.denselayer24.relu2", (128, 14, 14)), ("features.transition3.relu", (1024, 14, 14)),
                    ("features.denseblock4.denselayer16.relu2", (128, 7, 7))],
}


@pytest.mark.parametrize("name", list(PAPER_LAYERS))
def test_paper_default_layers_and_shapes(name):
    model = torchvision.models.get_model(name, weights=None)
    chosen = select_layers(name, model, None, 224)
    assert [(layer.name, layer.shape) for layer in chosen] == PAPER_LAYERS[name]
    assert all(layer.calls == 1 for layer in chosen)


def test_bottleneck_relu_is_shared_and_refused():
    model = torchvision.models.resnet50(weights=None)
    traced = {layer.name: layer for layer in trace_layers(model, 64)}
    assert traced["layer1.0.relu"].calls == 3
    with pytest.raises(FtdynError, match="enclosing block"):
        select_layers("resnet50", model, ["layer1.0.relu"], 64)


def test_generic_rule_takes_the_last_activation_per_resolution():
    model = torchvision.models.get_model("mobilenet_v3_small", weights=None)
    traced = trace_layers(model, 224)
    names = default_layer_names("mobilenet_v3_small", traced, model)
    shapes = [next(layer.shape for layer in traced if layer.name == n) for n in names]
    assert [s[1] for s in shapes] == [112, 56, 28, 14, 7]  # one per resolution stage, early → deep


def test_requested_layers_come_back_in_forward_order():
    model = torchvision.models.resnet18(weights=None)
    chosen = select_layers("resnet18", model, ["layer4.1", "relu", "layer2.0"], 64)
    assert [layer.name for layer in chosen] == ["relu", "layer2.0", "layer4.1"]


def test_layers_command_marks_defaults(cli):
    result = cli("layers", "vgg19")
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if "features.35" in line]
    assert rows and "*" in rows[0] and "(512, 14, 14)" in rows[0]
    assert cli("layers", "vgg91").exit_code == 2
