"""Analyses as parts: parameter drift, loss barrier and module criticality, each against a
straightforward reference or its endpoints; the schema-1 record still reads; bad input is one line."""

import json
import math
import shutil
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import TINY_RUN
from engine.analyses import declared_parts, part_value, read_results
from engine.posthoc.barrier import barrier, run_barrier
from engine.posthoc.criticality import run_criticality
from engine.analyses.drift import ParameterDrift, layer_segments
from engine.posthoc.interpolation import interpolate, make_splits, reestimate_batchnorm
from engine.errors import FtdynError
from engine.record import read_run
from engine.run_inputs import model_state, open_run

FIXTURE = Path(__file__).parent / "fixtures" / "run-schema1"


# ---------------------------------------------------------------------------------------------
# Parameter drift


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 2, 1)
        self.act2 = nn.ReLU()
        self.fc = nn.Linear(2, 3)


def test_drift_against_a_hand_computation():
    torch.manual_seed(0)
    source = Tiny()
    model = Tiny()
    model.load_state_dict(source.state_dict())
    with torch.no_grad():
        model.conv.weight += 0.5
        model.conv2.bias -= 2.0
        model.fc.weight.mul_(3.0)
        model.bn.running_mean += 10.0  # a buffer: never part of drift
    groups = OrderedDict(first=["conv.weight", "conv.bias", "bn.weight", "bn.bias"],
                         second=["conv2.weight", "conv2.bias"], head=["fc.weight", "fc.bias"])
    part = ParameterDrift(source, groups, ["act", "act2"], head="fc")
    part.begin(model)
    section = part.finish()

    def norm(*tensors):
        return math.sqrt(sum(float((t.detach().double() ** 2).sum()) for t in tensors))

    first_move = 0.5 * math.sqrt(source.conv.weight.numel())
    second_move = 2.0 * math.sqrt(source.conv2.bias.numel())
    first_size = norm(source.conv.weight, source.conv.bias, source.bn.weight, source.bn.bias)
    second_size = norm(source.conv2.weight, source.conv2.bias)
    groups_abs, groups_rel = section["groups"]["absolute"], section["groups"]["relative"]
    assert groups_abs["first"] == pytest.approx(first_move, rel=1e-6)
    assert groups_abs["second"] == pytest.approx(second_move, rel=1e-6)
    assert groups_rel["first"] == pytest.approx(first_move / first_size, rel=1e-6)
    assert groups_abs["backbone"] == pytest.approx(math.hypot(first_move, second_move), rel=1e-6)
    assert groups_rel["backbone"] == pytest.approx(math.hypot(first_move, second_move)
                                                   / math.hypot(first_size, second_size), rel=1e-6)
    assert "head" not in groups_abs  # no θ⁰ for the head: its norm instead
    assert section["head_norm"] == pytest.approx(norm(model.fc.weight, model.fc.bias), rel=1e-6)
    # per hooked layer: the modules between the previous hooked layer and this one
    assert section["layers"]["absolute"]["act"] == pytest.approx(first_move, rel=1e-6)
    assert section["layers"]["absolute"]["act2"] == pytest.approx(second_move, rel=1e-6)


def test_layer_segments_of_resnet18_follow_module_order():
    import torchvision

    model = torchvision.models.resnet18(weights=None)
    segments = layer_segments(model, ["relu", "layer1.1", "layer2.1", "layer3.1", "layer4.1"], head="fc")
    assert segments["relu"] == ["conv1.weight", "bn1.weight", "bn1.bias"]
    assert all(n.startswith("layer1.") for n in segments["layer1.1"]) and len(segments["layer1.1"]) == 12
    assert all(n.startswith("layer4.") for n in segments["layer4.1"])
    everything = [n for names in segments.values() for n in names]
    assert sorted(everything) == sorted(n for n, _ in model.named_parameters() if not n.startswith("fc."))


def test_runs_record_drift_and_a_linear_probe_drifts_exactly_zero(trained):
    full, probe = trained
    run = read_run(full)
    drift = next(p for p in declared_parts(run.config) if p["name"] == "drift")
    assert run.config["schema"] == 2
    first, last = run.epochs[0], run.epochs[-1]
    assert part_value(first, drift, "absolute@groups", "backbone") == 0.0
    assert part_value(last, drift, "relative@groups", "layer4") > 0
    assert set(last["timing"]["analyses_s"]) == {"probe_pass", "distance", "drift"}
    distance = next(p for p in declared_parts(run.config) if p["name"] == "distance")
    assert distance["precision"] == "float64" and distance["precision_worst_error"] < 1e-10
    probe_run = read_run(probe)
    for record in probe_run.epochs:
        for measure in ("absolute@groups", "absolute@layers"):
            for row in drift["rows"][measure.partition("@")[2]]:
                assert part_value(record, drift, measure, row) == 0.0
        assert record["drift"]["head_norm"] > 0


def test_source_side_is_kept_between_epochs_and_changes_nothing():
    """The source and the probe set never change: later epochs run the tuned model only, with the
    same numbers as a pass that recomputes the source (budget 0)."""
    from engine.analyses.distance import FeatureDistance
    from engine.analyses.runner import EpochAnalyses
    from engine.capture import parse_measures

    torch.manual_seed(0)
    source = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Conv2d(6, 8, 3), nn.ReLU())
    tuned = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Conv2d(6, 8, 3), nn.ReLU())
    probe = [(torch.randn(5, 3, 9, 9), torch.zeros(5)) for _ in range(3)]
    measures = parse_measures(["pwsm", "cka", "procrustes@filter-map"], "positions", 0.5)

    def analyses(budget):
        runner = EpochAnalyses(source, ["1", "3"], [FeatureDistance(["1", "3"], measures)])
        runner.cache_budget = budget
        return runner

    forwards = []
    source.register_forward_hook(lambda *_: forwards.append(1))
    kept, recomputed = analyses(1 << 30), analyses(0)
    for epoch in range(2):
        with torch.no_grad():
            tuned[2].weight.add_(0.05 * epoch)
        before = len(forwards)
        a, _ = kept.run(tuned, probe, torch.device("cpu"))
        assert len(forwards) - before == (3 if epoch == 0 else 0)
        b, _ = recomputed.run(tuned, probe, torch.device("cpu"))
        assert a == b
    assert recomputed.source_cache is None and len(kept.source_cache) == 3


def test_analyses_option_selects_parts(tmp_path, shapes_data, cli):
    result = cli("run", "--data", shapes_data, "--out", tmp_path / "only", "--epochs", "1", *TINY_RUN,
                 "--analyses", "distance")
    assert result.exit_code == 0, result.output
    run = read_run(tmp_path / "only")
    assert [p["name"] for p in declared_parts(run.config)] == ["distance"]
    assert "drift" not in run.epochs[-1]
    for bad, says in (("nonsense", "unknown analysis 'nonsense'"), ("barrier", "ftdyn transfer barrier")):
        result = cli("run", "--data", shapes_data, "--out", tmp_path / bad, "--epochs", "1", *TINY_RUN,
                     "--analyses", bad)
        assert result.exit_code == 2 and says in result.output and "Traceback" not in result.output
        assert not (tmp_path / bad).exists()


# ---------------------------------------------------------------------------------------------
# Loss barrier


def test_barrier_formula_against_hand_values():
    assert barrier([0.0, 0.5, 1.0], [1.0, 3.0, 2.0]) == pytest.approx(3.0 - 1.5)
    assert barrier([0.0, 0.5, 1.0], [1.0, 1.0, 1.0]) == 0.0
    assert barrier([0.0, 0.25, 0.5, 0.75, 1.0], [2.0, 1.5, 1.0, 0.5, 0.0]) == 0.0  # on the line


def test_interpolation_endpoints_reproduce_recorded_accuracy(trained):
    full, _ = trained
    result, path = run_barrier(f"{full}@1", f"{full}@2", points=3)
    epochs = {r["epoch"]: r for r in read_run(full).epochs}
    assert 1 - result["series"]["held_out_error"][0] == pytest.approx(epochs[1]["held_out"]["accuracy"], abs=1e-12)
    assert 1 - result["series"]["held_out_error"][-1] == pytest.approx(epochs[2]["held_out"]["accuracy"], abs=1e-12)
    assert result["series"]["held_out_loss"][0] == pytest.approx(epochs[1]["held_out"]["loss"], abs=1e-12)
    assert result["series"]["held_out_loss"][-1] == pytest.approx(epochs[2]["held_out"]["loss"], abs=1e-12)
    assert result["batchnorm_reestimated"] == [False, True, False]
    assert path == full / "analyses" / "barrier-e1-e2.json"
    assert json.loads(path.read_text())["x"] == [0.0, 0.5, 1.0]
    assert any(r["file"] == path.name for r in read_results(full))


def test_barrier_of_a_model_with_itself_is_zero(trained):
    full, _ = trained
    result, _ = run_barrier(f"{full}@2", f"{full}@2", points=4)
    for name, values in result["series"].items():
        assert len(set(values)) == 1, name  # the same model at every λ
        assert result["barriers"][name] == 0.0
    assert not any(result["batchnorm_reestimated"])


def test_barrier_from_the_source_keeps_the_epoch_head(trained):
    full, _ = trained
    result, path = run_barrier(str(full), points=3)
    assert result["endpoints"]["A"] == "source backbone (epoch-2 head)"
    assert path.name == "barrier-source-e2.json"
    epochs = {r["epoch"]: r for r in read_run(full).epochs}
    assert 1 - result["series"]["held_out_error"][-1] == pytest.approx(epochs[2]["held_out"]["accuracy"], abs=1e-12)


def test_batchnorm_reestimation_changes_running_statistics(trained):
    full, _ = trained
    trainer = open_run(full)
    a, b = model_state(full, 1, trainer.device), model_state(full, 2, trainer.device)
    middle = interpolate(a, b, 0.5)
    trainer.model.load_state_dict(middle)
    splits = make_splits(trainer, train_images=0, bn_batches=2)
    reestimate_batchnorm(trainer.model, splits)
    after = trainer.model.state_dict()
    assert not torch.allclose(after["bn1.running_mean"], middle["bn1.running_mean"])
    assert not torch.allclose(after["layer4.1.bn2.running_var"], middle["layer4.1.bn2.running_var"])
    assert torch.equal(after["conv1.weight"], middle["conv1.weight"])  # weights untouched
    assert splits.settings()["batchnorm_batches"] == 2


# ---------------------------------------------------------------------------------------------
# Module criticality


def test_rewinding_curve_ends_at_the_final_error(trained):
    full, _ = trained
    result, path = run_criticality(str(full), points=3, epsilon=0.0)
    assert result["rows"] == ["stem+layer1", "layer2", "layer3", "layer4"]
    assert result["columns"] == [0.0, 0.5, 1.0]
    for errors in result["values"]:
        assert errors[-1] == result["final_train_error"]
    for module, summary in result["summary"].items():
        assert summary["drift"] > 0
        row = result["values"][result["rows"].index(module)]
        # ε = 0: the smallest grid α whose error is at most the final one (α = 1 always is)
        assert summary["alpha_min"] == min(a for a, e in zip(result["columns"], row) if e <= row[-1])
    assert path.name == "criticality-e2.json"


def test_linear_probe_rewinding_curves_are_flat(trained):
    _, probe = trained
    result, _ = run_criticality(str(probe), points=3, noise_draws=1, sigmas=(0.5,))
    for errors in result["values"]:
        assert errors == [result["final_train_error"]] * 3
    for summary in result["summary"].values():
        assert summary["drift"] == 0.0 and summary["alpha_min"] == 0.0
    assert result["settings"]["noise_draws"] == 1 and result["settings"]["sigmas"] == [0.5]


# ---------------------------------------------------------------------------------------------
# Bad input: one line, nothing written


def test_bad_inputs_are_one_line_and_write_nothing(trained, tmp_path, cli, shapes_data):
    full, _ = trained
    before = sorted(p.name for p in (full / "analyses").glob("*")) if (full / "analyses").exists() else []
    other_classes = tmp_path / "four"
    from engine.synthetic import write_shapes_folder

    write_shapes_folder(other_classes, classes=4, per_class=6, size=32, seed=2)
    result = cli("run", "--data", other_classes, "--out", tmp_path / "four-run", "--epochs", "1", *TINY_RUN)
    assert result.exit_code == 0, result.output
    foreign = tmp_path / "other-model"
    shutil.copytree(full, foreign)
    config = json.loads((foreign / "config.json").read_text())
    config["model"]["name"] = "vgg11"
    (foreign / "config.json").write_text(json.dumps(config))
    cases = [
        (("transfer", "barrier", tmp_path / "nowhere"), "is not an ftdyn run directory"),
        (("transfer", "barrier", f"{full}@7"), "no checkpoint for epoch 7"),
        (("transfer", "barrier", f"{full}@x"), "must be an epoch number"),
        (("transfer", "barrier", full, foreign), "interpolation needs one architecture"),
        (("transfer", "barrier", full, tmp_path / "four-run"), "different class lists"),
        (("transfer", "criticality", tmp_path / "nowhere"), "is not an ftdyn run directory"),
        (("transfer", "criticality", f"{full}@9"), "no checkpoint for epoch 9"),
        (("transfer", "criticality", full, "--sigmas", "2"), "every σ in (0, 1]"),
    ]
    for args, says in cases:
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert says in result.output and "Traceback" not in result.output, (args, result.output)
    after = sorted(p.name for p in (full / "analyses").glob("*")) if (full / "analyses").exists() else []
    assert after == before


def test_transfer_commands_print_tables_and_json(trained, cli):
    full, _ = trained
    result = cli("transfer", "barrier", f"{full}@1", f"{full}@2", "--points", "3", "--format", "json")
    assert result.exit_code == 0, result.output
    assert '"barriers"' in result.output
    report = cli("report", full)
    assert report.exit_code == 0, report.output
    assert "Loss barrier" in report.output and "Module criticality" in report.output
    assert "Other analyses by epoch" in report.output


# ---------------------------------------------------------------------------------------------
# Runs recorded before parts existed


def test_schema1_run_reads_unchanged(cli):
    run = read_run(FIXTURE)
    assert run.config["schema"] == 1
    parts = declared_parts(run.config)
    assert [p["name"] for p in parts] == ["distance"]
    distance = parts[0]
    last = run.epochs[-1]
    assert part_value(last, distance, "pwsm:0.5@positions", "layer4.1") == \
        last["layers"]["layer4.1"]["positions"]["values"]["pwsm:0.5"]
    assert part_value(last, distance, "procrustes@filter", "relu") == last["layers"]["relu"]["filter"]["values"]["procrustes"]
    result = cli("report", FIXTURE)
    assert result.exit_code == 0, result.output
    assert "Other analyses" not in result.output


async def test_tui_cycles_analyses_and_draws_a_heatmap(trained):
    from textual.widgets import Static

    from ftdyn_tui.app import create_app
    from ftdyn_tui.screens.dynamics import DynamicsScreen
    from ftdyn_tui.screens.results import ResultsScreen

    full, _ = trained
    run_barrier(f"{full}@1", f"{full}@2", points=3)
    app = create_app([full], poll_seconds=60)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("enter")
        screen = app.screen
        assert isinstance(screen, DynamicsScreen) and screen.part == "distance"
        await pilot.press("a")
        assert screen.part == "drift" and screen.measure == "relative@groups"
        await pilot.press("h")
        heat = screen.query_one("#heatmap", Static)
        assert heat.display and not screen.query_one("#distance").display
        assert "stem+layer1" in screen_text(app)
        await pilot.press("v")
        assert screen.measure == "relative@layers"
        await pilot.press("t")
        await pilot.pause()
        assert isinstance(app.screen, ResultsScreen) and app.screen.results
        assert "barrier held out loss" in screen_text(app)


def screen_text(app) -> str:
    return app.export_screenshot().replace("&#160;", " ")
