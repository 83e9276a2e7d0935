"""Fine-tuning strategies on tiny generated data, and the sweep that compares them."""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import check_grad

from conftest import TINY_RUN
from engine.record import read_run
from engine.strategies import fit_logistic_regression, fit_linear_probe, warmup_factor

EARLY = ["relu", "layer1.1", "layer2.1"]


def run(cli, data, out, *extra):
    result = cli("run", "--data", data, "--out", out, *TINY_RUN, *extra)
    assert result.exit_code == 0, result.output
    return read_run(out)


def layer_values(record, layer):
    return list(record["layers"][layer]["positions"]["values"].values())


def checkpoint(run_dir, epoch):
    return torch.load(run_dir / "checkpoints" / f"epoch-{epoch:03d}.pt", weights_only=True)["model"]


def test_linear_probe_leaves_the_backbone_bit_identical(cli, tmp_path, shapes_data):
    snapshot = run(cli, shapes_data, tmp_path / "lp", "--epochs", "2", "--strategy", "linear-probe",
                   "--save-every-epoch")
    before, after = checkpoint(tmp_path / "lp", 0), checkpoint(tmp_path / "lp", 2)
    for name, tensor in before.items():
        if name.startswith("fc."):
            assert not torch.equal(tensor, after[name]), name  # the head did train
        else:
            assert torch.equal(tensor, after[name]), name  # weights and BatchNorm statistics alike
    for record in snapshot.epochs:
        for layer in record["layers"]:
            assert all(v == 0.0 for v in layer_values(record, layer)), (record["epoch"], layer)
    groups = snapshot.config["strategy"]["groups"]
    assert [g["name"] for g in groups] == ["head"] and snapshot.config["strategy"]["frozen_batchnorm"]


def test_surgical_changes_only_the_chosen_group_and_the_head(cli, tmp_path, shapes_data):
    snapshot = run(cli, shapes_data, tmp_path / "s", "--epochs", "2", "--strategy", "surgical",
                   "--train-blocks", "layer3", "--save-every-epoch")
    before, after = checkpoint(tmp_path / "s", 0), checkpoint(tmp_path / "s", 2)
    changed = {name.split(".")[0] for name in before if not torch.equal(before[name], after[name])}
    assert changed == {"layer3", "fc"}
    for record in snapshot.epochs:
        for layer in EARLY:  # everything before the trained group stays exactly where it was
            assert all(v == 0.0 for v in layer_values(record, layer)), (record["epoch"], layer)
    assert all(v > 0 for v in layer_values(snapshot.epochs[-1], "layer3.1"))


def test_surgical_group_names_are_checked(cli, tmp_path, shapes_data):
    result = cli("run", "--data", shapes_data, "--out", tmp_path / "x", *TINY_RUN, "--strategy", "surgical",
                 "--train-blocks", "layer7")
    assert result.exit_code == 2 and "stem+layer1, layer2, layer3, layer4, head" in result.output
    result = cli("run", "--data", shapes_data, "--out", tmp_path / "y", *TINY_RUN, "--strategy", "surgical")
    assert result.exit_code == 2 and "--train-blocks" in result.output


def test_discriminative_rates_per_group_and_linear_warmup(tmp_path, shapes_data):
    from engine.run_config import RunConfig
    from engine.training import run_training

    seen = []
    config = RunConfig(model="resnet18", weights="none", data=str(shapes_data), out=str(tmp_path / "d"), epochs=2,
                       batch_size=8, image_size=32, probe_size=9, workers=0, vis=False, lr=1e-3,
                       strategy="discriminative", layer_decay=0.5, warmup_epochs=1.5)
    run_training(config, on_event=lambda kind, **info: seen.append(info["lrs"]) if kind == "step" else None)
    steps_per_epoch = math.ceil(27 / 8)
    warmup = round(1.5 * steps_per_epoch)
    groups = read_run(tmp_path / "d").config["strategy"]["groups"]
    assert [g["name"] for g in groups] == ["stem+layer1", "layer2", "layer3", "layer4", "head"]
    base = [1e-3 * 0.5 ** (4 - k) for k in range(5)]  # the head at lr, each group below halved
    assert [g["lr"] for g in groups] == pytest.approx(base)
    assert len(seen) == 2 * steps_per_epoch
    for step, lrs in enumerate(seen, 1):
        assert lrs == pytest.approx([b * min(1.0, step / warmup) for b in base]), step
    assert warmup_factor(0, 4) == 0.0 and warmup_factor(2, 4) == 0.5 and warmup_factor(9, 4) == 1.0


def test_autorgn_multipliers_are_recomputed_each_epoch(cli, tmp_path, shapes_data):
    snapshot = run(cli, shapes_data, tmp_path / "a", "--epochs", "2", "--strategy", "autorgn", "--lr", "1e-3")
    first, second = (r["rgn"] for r in snapshot.epochs[1:])
    for multipliers in (first, second):
        values = np.array(list(multipliers.values()))
        assert ((values > 0) & (values <= 1)).all() and values.max() == 1.0
        assert not any("bn" in name or "downsample.1" in name for name in multipliers)  # BatchNorm excluded
    assert first != second
    for record in snapshot.epochs[1:]:  # each tensor's rate is base · multiplier of *that* epoch
        for name, lr in record["lr_groups"].items():
            assert lr == pytest.approx(1e-3 * record["rgn"][name])


def test_lp_ft_records_both_phases(cli, tmp_path, shapes_data):
    snapshot = run(cli, shapes_data, tmp_path / "lpft", "--epochs", "2", "--strategy", "lp-ft")
    assert [(r["epoch"], r["phase"]) for r in snapshot.epochs] == [
        (0, "source"), (1, "linear-probe"), (2, "finetune"), (3, "finetune")]
    probe = snapshot.epochs[1]
    assert probe["train"]["probe_C"] in snapshot.config["strategy"]["probe"]["C_grid"]
    assert all(v == 0.0 for layer in probe["layers"] for v in layer_values(probe, layer))
    assert snapshot.status["total_epochs"] == 3
    assert any(v > 0 for v in layer_values(snapshot.epochs[-1], "layer4.1"))


def test_logistic_regression_gradient_and_fit():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5))
    labels = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int) + (x[:, 2] > 1).astype(int)
    n, d, k, C = 60, 5, 3, 0.7
    onehot = np.eye(k)[labels]

    def loss(flat):
        wb = flat.reshape(k, d + 1)
        logits = x @ wb[:, :d].T + wb[:, d]
        log_prob = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        return -(onehot * log_prob).sum() / n + (wb[:, :d] ** 2).sum() / (2 * C * n)

    wb, _ = fit_logistic_regression(x, labels, k, C)
    # at the optimum the numerical gradient of the independently written loss vanishes
    assert check_grad(loss, lambda f: np.zeros_like(f), wb.ravel()) < 1e-4
    fit = fit_linear_probe(x * 10 + 3, labels, k, seed=0)  # raw features: standardisation undone
    accuracy = ((x * 10 + 3) @ fit.weight.T + fit.bias).argmax(1) == labels
    assert accuracy.mean() == pytest.approx(fit.train_accuracy) and fit.train_accuracy > 0.75  # chance ≈ 0.4


def test_sweep_skips_finished_runs_and_resumes_interrupted_ones(tmp_path, shapes_data, monkeypatch):
    from engine import training
    from engine.sweep import plan_sweep, run_sweep
    from engine.run_config import RunConfig

    template = RunConfig(model="", data="", out="", weights="none", epochs=2, batch_size=8, image_size=32,
                         probe_size=9, workers=0, vis=False, train_blocks=["layer4"])
    # finished before the interruption, interrupted, never started
    strategies = ["full", "linear-probe", "surgical", "autorgn"]
    cells = plan_sweep(template, ["resnet18"], [str(shapes_data)], strategies, tmp_path / "grid")
    original = training.Trainer.train_epoch

    def interrupt_surgical(self, epoch):
        if self.config.strategy == "surgical" and epoch == 2:
            raise KeyboardInterrupt
        return original(self, epoch)

    monkeypatch.setattr(training.Trainer, "train_epoch", interrupt_surgical)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(cells)
    assert read_run(tmp_path / "grid" / "resnet18-shapes-surgical").state == "interrupted"
    monkeypatch.setattr(training.Trainer, "train_epoch", original)
    done = {name: (tmp_path / "grid" / name / "records.jsonl").read_bytes()
            for name in ("resnet18-shapes-full", "resnet18-shapes-linear-probe")}
    outcome = dict(run_sweep(cells))
    assert outcome["resnet18-shapes-full"] == "already finished"
    assert outcome["resnet18-shapes-surgical"] == "resumed and finished"
    assert outcome["resnet18-shapes-autorgn"] == "finished"
    for name, records in done.items():
        assert (tmp_path / "grid" / name / "records.jsonl").read_bytes() == records
    assert all(read_run(tmp_path / "grid" / c.out.rsplit("/", 1)[1]).state == "finished" for c in cells)
    assert [r["epoch"] for r in read_run(tmp_path / "grid" / "resnet18-shapes-surgical").epochs] == [0, 1, 2]


def test_sweep_command_and_report(cli, tmp_path, shapes_data):
    args = ["sweep", "--out", tmp_path / "grid", "--models", "resnet18", "--data", shapes_data,
            "--strategies", "full,linear-probe", "--weights", "none", "--epochs", "1", "--batch-size", "8",
            "--image-size", "32", "--probe-size", "9", "--workers", "0", "--no-vis", "--analyses", "distance",
            "--intervals", "off"]
    first = cli(*args)
    assert first.exit_code == 0, first.output
    from engine.record import read_run

    cell = read_run(tmp_path / "grid" / "resnet18-shapes-full")
    assert cell.config["run"]["analyses"] == ["distance"] and cell.config["run"]["intervals"] == "off"
    bad = cli(*args, "--interval-level", "2")
    assert bad.exit_code == 2 and "--interval-level must lie strictly between 0 and 1" in bad.output
    again = cli(*args)
    assert again.output.count("already finished") == 2
    report = cli("report", tmp_path / "grid", "--format", "json")
    import json

    tables = json.loads(report.output)
    assert sorted(r["strategy"] for r in tables["accuracy"]) == ["full", "linear-probe"]
    rates = {r["strategy"]: r["learning_rates"] for r in tables["strategies"]}
    assert rates == {"full": {"all": 1e-4}, "linear-probe": {"head": 1e-4}}
    assert "per-group learning rates" in cli("report", tmp_path / "grid").output
    assert cli(*args, "--strategies", "surgical").exit_code == 2  # surgical needs --train-blocks
