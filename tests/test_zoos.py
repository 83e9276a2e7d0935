"""timm and Hugging Face models (engine.zoos), built from their configs without a download: layers,
layouts (prefix tokens), block groups, head replacement, normalisation, a real measurement, offline
refusals, and one `ftdyn run` per zoo followed by the report and the app."""

import copy
import json
import math

import pytest
import textual_image.widget  # noqa: F401  (textual-image queries the terminal on import: before any app)
import torch
import transformers

from conftest import TINY_RUN
from engine import Monitor
from engine.errors import FtdynError
from engine.models import (
    build_model,
    default_layer_names,
    head_name,
    head_names,
    native_image_size,
    normalisation,
    select_layers,
    trace_layers,
)
from engine.record import read_run
from engine.strategies import block_groups

# one worker runs this file: its module-scoped runs are recorded once (pytest-xdist, --dist loadgroup)
pytestmark = pytest.mark.xdist_group("zoos")

SIZE = 32

# one small member per family: (name, image size, prefix tokens before the patch grid or None for a CNN)
TIMM = [("timm:resnet10t", SIZE, None), ("timm:convnext_atto", SIZE, None), ("timm:mobilenetv3_small_050", SIZE, None),
        ("timm:vit_tiny_patch16_224", SIZE, 1), ("timm:deit_tiny_distilled_patch16_224", SIZE, 2),
        ("timm:vit_small_patch14_reg4_dinov2", 28, 5)]


def tiny_hf_configs() -> dict[str, tuple[transformers.PretrainedConfig, int | None]]:
    """Small configs of several Hugging Face families, and their tokens before the patch grid (None: a
    CNN; Swin's stages are token grids without any)."""
    vit = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=SIZE,
               patch_size=8)
    return {
        "vit": (transformers.ViTConfig(**vit), 1),
        "deit": (transformers.DeiTConfig(**vit, architectures=["DeiTForImageClassification"]), 2),
        "dinov2-registers": (transformers.Dinov2WithRegistersConfig(**vit, num_register_tokens=4), 5),
        "convnext": (transformers.ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], image_size=SIZE), None),
        "resnet": (transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1]), None),
        "swin": (transformers.SwinConfig(image_size=SIZE, patch_size=2, embed_dim=8, depths=[1, 1], num_heads=[1, 2],
                                         window_size=4), 0),
    }


@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory):
    """Each family saved by save_pretrained (randomly initialised: its weights are what is checked)."""
    root = tmp_path_factory.mktemp("hf")
    folders = {}
    for family, (config, _) in tiny_hf_configs().items():
        torch.manual_seed(0)
        config.num_labels = 5
        transformers.AutoModelForImageClassification.from_config(config).save_pretrained(root / family)
        (root / family / "preprocessor_config.json").write_text(json.dumps(
            {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "size": {"height": SIZE, "width": SIZE}}))
        folders[family] = root / family
    return folders


def check_model(name: str, size: int, prefix: int | None) -> torch.nn.Module:
    """Layers, layouts, groups that partition every parameter, a head for 3 classes."""
    model, description = build_model(name, "none", 3, 0, size)
    assert description == "none"
    heads = head_names(model)  # DeiT distilled averages two: both are new, both in the "head" group
    assert heads[0] == head_name(model) and len(heads) == (2 if "distilled" in name else 1)
    assert all(model.get_submodule(head).out_features == 3 for head in heads)
    assert torch.is_tensor(model.eval()(torch.zeros(2, 3, size, size))) and model(torch.zeros(2, 3, size, size)).shape == (2, 3)
    layers = trace_layers(model, size)
    by_name = {layer.name: layer for layer in layers}
    defaults = default_layer_names(name, layers, model)
    assert len(defaults) >= 2, (name, defaults)
    for layer in defaults:
        layout = by_name[layer].layout
        assert by_name[layer].calls == 1 and layout is not None and layout.kind != "vector", (name, layer)
        if prefix is None:
            assert layout.kind in ("channels_first", "channels_last"), (name, layer, layout)
        else:
            assert layout.kind == "tokens" and layout.prefix == prefix, (name, layer, layout)
            assert layout.class_token == (prefix > 0)  # every family here puts its class token first
            assert layout.grid[0] * layout.grid[1] + prefix == by_name[layer].shape[0]
    groups = block_groups(name, model, defaults)
    grouped = [n for names in groups.values() for n in names]
    assert sorted(grouped) == sorted(n for n, _ in model.named_parameters())  # every parameter exactly once
    assert list(groups)[-1] == "head" and len(groups) >= 3
    assert sorted(groups["head"]) == sorted(n for n, _ in model.named_parameters()
                                            if any(n.startswith(head + ".") for head in heads))
    return model


@pytest.mark.parametrize("name, size, prefix", TIMM)
def test_timm_families_have_layers_layouts_groups_and_a_head(name, size, prefix):
    check_model(name, size, prefix)


@pytest.mark.parametrize("family", list(tiny_hf_configs()))
def test_hugging_face_families_have_layers_layouts_groups_and_a_head(hf_folders, family):
    check_model(f"hf:{hf_folders[family]}", SIZE, tiny_hf_configs()[family][1])


def test_a_saved_hugging_face_folder_loads_with_its_weights_intact(hf_folders):
    folder = hf_folders["vit"]
    saved = transformers.AutoModelForImageClassification.from_pretrained(folder).state_dict()
    model, description = build_model(f"hf:{folder}", "DEFAULT", 3, 0, SIZE)
    assert description == f"hf:{folder}"
    loaded, head = model.state_dict(), head_name(model)
    backbone = [key for key in saved if not key.startswith(head + ".")]
    assert backbone and all(torch.equal(loaded[key], saved[key]) for key in backbone)
    assert loaded[f"{head}.weight"].shape[0] == 3  # the new head, for the target classes
    # --weights none: the same architecture, randomly initialised
    fresh, _ = build_model(f"hf:{folder}", "none", 3, 0, SIZE)
    assert not all(torch.equal(fresh.state_dict()[key], saved[key]) for key in backbone)


def test_a_local_weights_file_loads_into_a_timm_model(tmp_path):
    from safetensors.torch import save_file

    import timm

    torch.manual_seed(1)
    original = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=SIZE)
    save_file(original.state_dict(), str(tmp_path / "vit.safetensors"))
    torch.save(original.state_dict(), tmp_path / "vit.pth")
    for file in ("vit.safetensors", "vit.pth"):
        model, description = build_model("timm:vit_tiny_patch16_224", str(tmp_path / file), 3, 0, SIZE)
        assert description.startswith("file:")
        state = model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in original.state_dict().items() if not k.startswith("head."))
        assert state["head.weight"].shape == (3, 192)
    # another architecture's file: one line
    other = timm.create_model("resnet10t", pretrained=False)
    torch.save(other.state_dict(), tmp_path / "resnet.pth")
    with pytest.raises(FtdynError, match="does not fit timm:vit_tiny_patch16_224"):
        build_model("timm:vit_tiny_patch16_224", str(tmp_path / "resnet.pth"), 3, 0, SIZE)


def test_normalisation_and_input_size_come_from_the_models_config(hf_folders):
    assert normalisation("resnet18") == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert normalisation("timm:vit_tiny_patch16_224") == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # timm's augreg ViTs
    assert normalisation(f"hf:{hf_folders['vit']}") == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    model, _ = build_model("timm:resnet10t", "none", 3, 0, SIZE)
    assert native_image_size("timm:resnet10t", model) == 176  # its pretrained_cfg's input size
    model, _ = build_model("timm:vit_small_patch14_reg4_dinov2", "none", 3, 0, 28)
    assert native_image_size("timm:vit_small_patch14_reg4_dinov2", model) == 28  # built for the run's size (518 native)


@pytest.mark.parametrize("name, size", [("timm:convnext_atto", SIZE), ("timm:vit_small_patch14_reg4_dinov2", 28),
                                        ("hf:deit", SIZE), ("hf:convnext", SIZE)])
def test_a_real_measurement_is_zero_for_the_same_model_and_within_range_for_a_moved_one(hf_folders, tmp_path,
                                                                                          name, size):
    if name.startswith("hf:"):
        name = f"hf:{hf_folders[name[3:]]}"
    model, _ = build_model(name, "none", 3, 0, size)
    layers = [layer.name for layer in select_layers(name, model, None, size)]
    torch.manual_seed(2)
    probe = torch.randn(24, 3, size, size)
    with Monitor(tmp_path / "run", model, probe, model_name=name, vis=False, intervals="off",
                 metrics=["cka", "procrustes"], view="positions", layers=layers) as monitor:
        monitor.epoch(copy.deepcopy(model), 1)  # unchanged: every distance 0
        moved = copy.deepcopy(model)
        with torch.no_grad():
            for p in moved.parameters():
                p.add_(0.05 * torch.randn_like(p))
        monitor.epoch(moved, 2)
    same, changed = read_run(tmp_path / "run").epochs[1:]
    values = lambda record: [v for views in record["layers"].values() for e in views.values()  # noqa: E731
                             for v in e["values"].values()]
    assert values(same) and all(abs(v) <= 1e-9 for v in values(same))
    assert all(0.0 < v <= 2.0 for v in values(changed)) and max(values(changed)) > 1e-4
    cka = [e["values"]["cka"] for views in changed["layers"].values() for e in views.values()]
    assert all(0.0 < v <= 1.0 for v in cka)
    if "dinov2" in name or "deit" in name:  # the prefix tokens are measured by `cls`, not as positions
        assert all(views["positions"]["filters"] for views in changed["layers"].values())


@pytest.mark.parametrize("name, fragment", [
    ("timm:vit_tiny_patch16_22", "unknown timm model 'vit_tiny_patch16_22': did you mean timm:vit_tiny_patch16_224"),
    ("timm:", "names no model"),
    ("hf:/no/such/folder-or-hub-name", "cannot read the config of hf:/no/such/folder-or-hub-name"),
])
def test_unknown_names_are_one_line(name, fragment):
    with pytest.raises(FtdynError) as caught:
        build_model(name, "none", 3, 0, SIZE)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_downloads_that_cannot_happen_are_one_line():
    """timm's pretrained weights come from the Hub, which the suite cannot reach (conftest.py)."""
    with pytest.raises(FtdynError) as caught:
        build_model("timm:resnet10t", "DEFAULT", 3, 0, SIZE)
    assert "Offline?" in str(caught.value) and "--weights none" in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(FtdynError, match="not a pretrained tag of timm:resnet10t"):
        build_model("timm:resnet10t", "no_such_tag", 3, 0, SIZE)


ZOO_RUNS = {"timm": "timm:vit_tiny_patch16_224", "hf": "convnext"}


@pytest.fixture(scope="module")
def zoo_runs(hf_folders, shapes_data, tmp_path_factory):
    """One `ftdyn run` per zoo (a timm ViT, a Hugging Face ConvNeXt folder) on the generated images."""
    from typer.testing import CliRunner

    from ftdyn_tui.cli import app

    root, names = tmp_path_factory.mktemp("zoo-runs"), {}
    for zoo, name in ZOO_RUNS.items():
        names[zoo] = name if zoo == "timm" else f"hf:{hf_folders[name]}"
        settings = list(TINY_RUN)
        settings[settings.index("--model") + 1] = names[zoo]
        result = CliRunner().invoke(app, ["run", "--data", str(shapes_data), "--out", str(root / zoo), "--epochs", "1",
                                          *map(str, settings)])
        assert result.exit_code == 0, result.output
    return root, names


@pytest.mark.parametrize("zoo", list(ZOO_RUNS))
def test_ftdyn_run_on_a_zoo_model_then_report_and_layers(zoo, zoo_runs, cli):
    root, names = zoo_runs
    out, name = root / zoo, names[zoo]
    run = read_run(out)
    assert run.state == "finished" and [r["epoch"] for r in run.epochs] == [0, 1]
    assert run.config["model"]["name"] == name
    assert run.config["model"]["normalisation"]["mean"] == ([0.5] * 3)
    assert all(math.isfinite(v) for r in run.epochs for views in r["layers"].values() for e in views.values()
               for v in e["values"].values() if v is not None)
    result = cli("report", out, "--format", "json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)["accuracy"]
    assert row["model"] == name and row["state"] == "finished"
    listed = cli("layers", name, "--image-size", SIZE)
    assert listed.exit_code == 0, listed.output
    marked = [line for line in listed.output.splitlines() if line.startswith("│ *")]
    assert len(marked) == len(run.config["layers"])  # the defaults the run hooked
    assert ("tokens 2×2 +cls" in listed.output) == (zoo == "timm")


async def test_the_app_opens_zoo_runs(zoo_runs):
    from ftdyn_tui.app import create_app
    from ftdyn_tui.screens.dynamics import DynamicsScreen
    from ftdyn_tui.screens.runs import RunsScreen

    app = create_app([zoo_runs[0]])
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, RunsScreen)
        table = app.screen.query_one("#runs")
        assert sorted(str(table.get_row_at(i)[1]) for i in range(table.row_count)) == ["hf", "timm"]
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, DynamicsScreen)


def test_prefix_tokens_are_left_out_of_the_positions_and_old_layouts_read_as_before():
    from engine.capture import Layout, as_feature_map, class_token

    tokens = torch.arange(2 * 9 * 3, dtype=torch.float64).reshape(2, 9, 3)  # 5 prefix tokens + a 2×2 grid
    registers = Layout("tokens", class_token=True, grid=(2, 2), prefix=5)
    grid = as_feature_map(tokens, registers)
    assert grid.shape == (2, 3, 2, 2) and torch.equal(grid[:, :, 0, 0], tokens[:, 5])
    assert torch.equal(class_token(tokens, registers)[:, :, 0, 0], tokens[:, 0])
    assert Layout.from_json(registers.to_json()) == registers
    # a run recorded before register tokens: its layout has no prefix_tokens, and the class token alone
    old = Layout.from_json({"kind": "tokens", "class_token": True, "grid": [2, 2]})
    assert old.prefix == 1 and torch.equal(as_feature_map(tokens[:, 4:], old)[:, :, 0, 0], tokens[:, 5])
    assert Layout.from_json({"kind": "tokens", "class_token": False, "grid": [3, 3]}).prefix == 0
