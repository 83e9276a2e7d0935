"""`ftdyn run` end to end, resume after a real kill, and the run record it writes."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scipy.stats import t as student_t

from conftest import TINY_RUN, WITH_INTERVALS
from engine.record import RunReader, read_run


def epochs_of(run_dir: Path) -> list[dict]:
    return read_run(run_dir).epochs


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "timing"} for r in records]


def test_end_to_end_run_and_report(tmp_path, shapes_data, cli):
    run_dir = tmp_path / "run"
    result = cli("run", "--data", shapes_data, "--out", run_dir, "--epochs", "2", *TINY_RUN, *WITH_INTERVALS,
                 "--metrics", "pwsm,procrustes,cka,procrustes@filter")
    assert result.exit_code == 0, result.output
    snapshot = read_run(run_dir)
    assert snapshot.state == "finished" and snapshot.status["epoch"] == 2
    config = snapshot.config
    assert [layer["name"] for layer in config["layers"]] == ["relu", "layer1.1", "layer2.1", "layer3.1", "layer4.1"]
    assert config["dataset"]["probe_images"] == 9 and config["dataset"]["classes"] == ["disc", "square", "triangle"]
    epochs = snapshot.epochs
    assert [r["epoch"] for r in epochs] == [0, 1, 2]
    zero, last = epochs[0], epochs[-1]
    assert zero["train"] is None and zero["held_out"]["accuracy"] >= 0
    for layer, views in zero["layers"].items():  # epoch 0: the untouched model, exactly 0
        for view in views.values():
            assert all(v == 0.0 for v in view["values"].values()), layer
    moved = [last["layers"][layer]["positions"]["values"]["pwsm:0.5"] for layer in last["layers"]]
    assert all(v > 0 for v in moved)
    filter_entry = last["layers"]["layer4.1"]["filter"]
    assert len(filter_entry["per_filter"]["procrustes"]) == filter_entry["filters"] == 512
    assert set(last["timing"]) >= {"train_s", "eval_s", "analysis_s"} and last["lr"] == [1e-4]
    assert (run_dir / "checkpoints" / "last.pt").exists() and (run_dir / "checkpoints" / "best.pt").exists()

    # what the run said and the host it ran on, for viewers elsewhere (the app's log and system panels)
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert any(e["kind"] == "epoch_done" and e["text"].startswith("epoch 2: held-out acc") for e in events)
    assert any(e["kind"] == "warning" and "9 image groups" in e["text"] for e in events)
    assert (run_dir / "system.jsonl").read_text().count("\n") >= 1

    # intervals, on by default for the streaming views: 9 probe images allow 9 groups, not 10, and it says so
    assert "9 image groups instead of 10 (the probe set has 9 images)" in result.output
    # layer4.1 at 32 px: 9 images × 1 position for 512 channels, where the correction is not enough
    said = " ".join(result.output.split())
    assert "layer layer4.1, positions: 9 samples for 512 features (fewer than 10 a feature)" in said
    assert "layer relu, positions" not in said  # 9 × 16 × 16 samples for 64 channels
    assert config["intervals_short"] == {"positions": ["layer1.1", "layer2.1", "layer3.1", "layer4.1"]}
    declared = next(p for p in config["analyses"] if p["name"] == "distance")["intervals"]
    assert declared["groups"] == 9 and declared["level"] == 0.9
    assert declared["t"] == pytest.approx(student_t.ppf(0.95, 8), rel=1e-12)
    assert declared["estimate"] == "bias-corrected"
    for layer, views in last["layers"].items():
        assert "jackknife" not in views["filter"]  # `filter` is G+1 times dearer: --intervals all
        entry = views["positions"]
        for metric, value in entry["values"].items():
            reps = entry["jackknife"][metric]
            assert len(reps) == 9 and len(set(reps)) > 1, layer
            corrected = 9 * value - 8 * sum(reps) / 9  # the jackknife's bias-corrected estimate
            assert entry["estimate"][metric] == pytest.approx(corrected, rel=1e-12)
            half = declared["t"] * math.sqrt(8 / 9 * sum((r - sum(reps) / 9) ** 2 for r in reps))
            assert entry["interval"][metric] == pytest.approx([corrected - half, corrected + half], rel=1e-12)

    report = cli("report", run_dir, "--format", "json")
    assert report.exit_code == 0, report.output
    tables = json.loads(report.output)
    assert tables["accuracy"][0]["epochs"] == "2/2"
    reuse = {row["measure"]: row for row in tables["reusability"]}
    assert reuse["pwsm:0.5@positions"]["epochs"] == 2 and reuse["pwsm:0.5@positions"]["mean"] > 0
    assert any(row["measures"] == "pwsm:0.5@positions vs procrustes@positions" for row in tables["correlation"])
    rows = {(r["measure"], r["layer"], r["epoch"]): r for r in tables["layers"]}
    row = rows[("pwsm:0.5@positions", "layer2.1", 2)]
    assert [row["low"], row["high"]] == last["layers"]["layer2.1"]["positions"]["interval"]["pwsm:0.5"]
    assert row["groups"] == 9 and rows[("procrustes@filter", "layer2.1", 2)]["low"] is None
    shown = last["layers"]["layer2.1"]["positions"]
    assert row["value"] == shown["estimate"]["pwsm:0.5"] and row["plug_in"] == shown["values"]["pwsm:0.5"]
    assert row["estimate"] == "bias-corrected"
    assert reuse["pwsm:0.5@positions"]["low"] < reuse["pwsm:0.5@positions"]["mean"] < reuse["pwsm:0.5@positions"]["high"]
    # is a layer still moving: epoch 2 − epoch 1 inside each replicate, narrower than the two intervals
    change = next(r for r in tables["changes"] if r["measure"] == "pwsm:0.5@positions" and r["layer"] == "layer2.1")
    entries = [e["layers"]["layer2.1"]["positions"] for e in epochs[1:]]
    diffs = [b - a for a, b in zip(entries[0]["jackknife"]["pwsm:0.5"], entries[1]["jackknife"]["pwsm:0.5"])]
    half = declared["t"] * math.sqrt(8 / 9 * sum((d - sum(diffs) / 9) ** 2 for d in diffs))
    assert change["difference"] == pytest.approx(entries[1]["estimate"]["pwsm:0.5"] - entries[0]["estimate"]["pwsm:0.5"])
    assert [change["low"], change["high"]] == pytest.approx([change["difference"] - half, change["difference"] + half])
    assert change["moved"] == (change["low"] > 0 or change["high"] < 0)
    csv_report = cli("report", run_dir, "--format", "csv")
    assert csv_report.exit_code == 0 and "# reusability" in csv_report.output
    table_report = cli("report", run_dir)
    assert "Table 2" in table_report.output
    assert "90% jackknife over G=9 probe-image groups, bias-corrected values" in " ".join(table_report.output.split())


def test_intervals_off_and_a_small_alpha_warning_are_recorded_and_reported(tmp_path, shapes_data, cli):
    run_dir = tmp_path / "off"
    result = cli("run", "--data", shapes_data, "--out", run_dir, "--epochs", "1", *TINY_RUN, "--layers", "relu",
                 "--metrics", "pwsm:0.01@pooled,cka-debiased", "--intervals", "off")
    assert result.exit_code == 0, result.output
    snapshot = read_run(run_dir)
    assert next(p for p in snapshot.config["analyses"] if p["name"] == "distance")["intervals"] is None
    entry = snapshot.epochs[-1]["layers"]["relu"]
    assert "jackknife" not in entry["pooled"] and "interval" not in entry["positions"]
    assert entry["positions"]["values"]["cka-debiased"] is not None
    # 9 pooled rows and 64 channels: PWSM at α = 0.01 is squeezed towards 0 — allowed, recorded, reported
    [warning] = snapshot.config["warnings"]
    assert warning.startswith("layer relu, pwsm:0.01@pooled:") and "compresses every distance" in warning
    report = cli("report", run_dir)
    assert "warning: off: layer relu, pwsm:0.01@pooled" in " ".join(report.output.split())
    refused = cli("run", "--data", shapes_data, "--out", tmp_path / "bad", *TINY_RUN, "--interval-level", "1.5")
    assert refused.output.strip().startswith("error: --interval-level must lie strictly between 0 and 1 (got 1.5)")
    assert refused.exit_code == 2 and not (tmp_path / "bad").exists()


def test_paper_preset_is_recorded_and_explicit_options_win(tmp_path, shapes_data, cli):
    run_dir = tmp_path / "paper"
    result = cli("run", "--data", shapes_data, "--out", run_dir, "--epochs", "1", "--preset", "paper",
                 *TINY_RUN, "--lr", "1e-3", "--layers", "relu,layer1.1")
    assert result.exit_code == 0, result.output
    config = read_run(run_dir).config
    assert config["run"]["preset"] == "paper" and config["preset_settings"]["batch_size"] == 196
    assert config["run"]["batch_size"] == 8 and config["run"]["lr"] == 1e-3  # given explicitly
    assert config["run"]["optimizer"] == "adam"
    assert [m["label"] for m in config["measures"]] == ["pwsm:0@positions", "procrustes@filter-map"]


def run_command(*args) -> list[str]:
    return [sys.executable, "-m", "ftdyn_tui.cli", "run", *map(str, args)]


def wait_for(predicate, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path, shapes_data):
    # intervals on (their replicates must resume too), with 3 groups: a third of the decompositions
    common = ["--data", shapes_data, "--epochs", "3", "--every-steps", "2", *TINY_RUN, *WITH_INTERVALS,
              "--interval-groups", "3"]
    reference = tmp_path / "reference"
    subprocess.run(run_command("--out", reference, *common), check=True, capture_output=True)

    killed = tmp_path / "killed"
    process = subprocess.Popen(run_command("--out", killed, *common), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    reader = RunReader(killed)
    # kill in the middle of epoch 2: after one of its step records, before its epoch record
    assert wait_for(lambda: any(r["kind"] == "step" and r["epoch"] == 2 for r in reader.poll() + reader.records))
    process.send_signal(signal.SIGKILL)
    process.wait()
    if process.returncode == -signal.SIGKILL:  # killed mid-run: nobody wrote a final state
        assert read_run(killed).status["state"] == "running"  # (the TUI shows it as stalled later)

    subprocess.run(run_command("--out", killed, *common, "--resume"), check=True, capture_output=True)
    resumed = read_run(killed)
    assert resumed.state == "finished"
    everything = lambda run: without_timing(read_run(run, steps=None).records)  # noqa: E731 (step records too)
    assert everything(killed) == everything(reference)


def test_ctrl_c_marks_the_run_interrupted_and_resumable(tmp_path, shapes_data):
    run_dir = tmp_path / "run"
    # many epochs, so the interrupt always lands mid-run however fast the machine is
    process = subprocess.Popen(run_command("--out", run_dir, "--data", shapes_data, "--epochs", "200", *TINY_RUN),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: len(RunReader(run_dir).snapshot().epochs) >= 2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "resumable" in stderr and "Traceback" not in stderr
    snapshot = read_run(run_dir)
    assert snapshot.status["state"] == "interrupted"
    done = snapshot.epochs[-1]["epoch"]
    subprocess.run(run_command("--out", run_dir, "--resume", "--epochs", str(done + 1)), check=True,
                   capture_output=True)
    assert [r["epoch"] for r in epochs_of(run_dir)] == list(range(done + 2))
    assert read_run(run_dir).state == "finished"


def test_killed_between_checkpoint_and_record_recovers_the_record(tmp_path, shapes_data, cli):
    run_dir = tmp_path / "run"
    assert cli("run", "--data", shapes_data, "--out", run_dir, "--epochs", "2", *TINY_RUN).exit_code == 0
    full = read_run(run_dir, steps=None).records
    lines = (run_dir / "records.jsonl").read_bytes().splitlines(keepends=True)
    (run_dir / "records.jsonl").write_bytes(b"".join(lines[:-1]) + lines[-1][:20])  # last record half-written
    result = cli("run", "--data", shapes_data, "--out", run_dir, "--epochs", "2", *TINY_RUN, "--resume")
    assert result.exit_code == 0, result.output
    assert without_timing(read_run(run_dir, steps=None).records) == without_timing(full)


def test_resume_can_extend_a_finished_run(tmp_path, shapes_data, cli):
    run_dir = tmp_path / "run"
    assert cli("run", "--data", shapes_data, "--out", run_dir, "--epochs", "1", *TINY_RUN).exit_code == 0
    result = cli("run", "--data", shapes_data, "--out", run_dir, "--epochs", "2", *TINY_RUN, "--resume")
    assert result.exit_code == 0, result.output
    assert [r["epoch"] for r in epochs_of(run_dir)] == [0, 1, 2]
    assert read_run(run_dir).status["total_epochs"] == 2


@pytest.mark.parametrize("amp,autocast", [(True, "fp16"), (False, "off")])
def test_a_run_recorded_with_amp_reads_as_autocast(tmp_path, amp, autocast):
    """Runs from before --autocast recorded `amp` (fp16 autocast on CUDA): they reopen and resume."""
    from engine.run_config import config_from_saved

    saved = {"run": {"model": "resnet18", "data": str(tmp_path), "out": str(tmp_path), "amp": amp}}
    config = config_from_saved(tmp_path, saved)
    assert config.autocast == autocast and not hasattr(config, "amp")


def test_resuming_a_run_recorded_before_bias_correction_keeps_recording_plug_in(tmp_path, shapes_data, cli):
    """A run whose interval settings have no `estimate` (recorded before bias correction) resumes as it
    was recorded: its new epochs carry no corrected estimate and their intervals are centred on the
    plug-in value, so a reader never mixes the two in one run."""
    run_dir = tmp_path / "old"
    result = cli("run", "--data", shapes_data, "--out", run_dir, "--epochs", "1", *TINY_RUN, "--intervals", "auto",
                 "--layers", "relu")
    assert result.exit_code == 0, result.output
    config_path = run_dir / "config.json"
    config = json.loads(config_path.read_text())
    for part in config["analyses"]:
        if part["name"] == "distance":
            del part["intervals"]["estimate"]  # as a run recorded before bias correction
    config_path.write_text(json.dumps(config))
    result = cli("run", "--out", run_dir, "--resume", "--epochs", "2")
    assert result.exit_code == 0, result.output
    last = read_run(run_dir).epochs[-1]["layers"]["relu"]["positions"]
    t = next(p for p in config["analyses"] if p["name"] == "distance")["intervals"]["t"]
    assert last["jackknife"] and "estimate" not in last
    for metric, value in last["values"].items():
        reps = last["jackknife"][metric]
        half = t * math.sqrt((len(reps) - 1) / len(reps) * sum((r - sum(reps) / len(reps)) ** 2 for r in reps))
        assert last["interval"][metric] == pytest.approx([value - half, value + half], rel=1e-12)
