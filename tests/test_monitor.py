"""The monitor (engine.monitor): any training loop records the run directory `ftdyn run` records —
the same values for the same model states, read alike by the report and the app —, Lightning's and
Hugging Face's Trainers through their callbacks (resume included), the README's examples as written,
and one-line refusals before anything is written."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

import textual_image.widget  # noqa: F401  (textual-image queries the terminal on import: before any app)
from conftest import TINY_RUN
from engine import Monitor
from engine.errors import FtdynError
from engine.record import read_run

# one worker runs this file: its module-scoped runs are recorded once (pytest-xdist, --dist loadgroup)
pytestmark = pytest.mark.xdist_group("monitor")

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_examples() -> dict[str, str]:
    """The Python blocks of README's "In your own training loop", by the loop they drive."""
    text = README.read_text()
    section = text[text.index("## In your own training loop"):text.index("## Using the engine from Python")]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    return dict(zip(["plain", "lightning", "hf"], blocks, strict=True))


def run_example(code: str, where: Path) -> None:
    """Run ``code`` as a script in ``where`` (its relative paths land there), as a user would."""
    script = where / "example.py"
    script.write_text(code)
    env = dict(os.environ, PYTHONPATH=str(README.parent))
    done = subprocess.run([sys.executable, str(script)], cwd=where, capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def epochs_of(run_dir: Path) -> list[int]:
    return [r["epoch"] for r in read_run(run_dir).epochs]


def distances(record: dict) -> dict[tuple, float]:
    """Every recorded distance of an epoch record, by (layer, view, measure)."""
    found = {}
    for layer, views in record["layers"].items():
        for view, entry in views.items():
            for measure, value in entry["values"].items():
                found[(layer, view, measure)] = value
    return found


# -- the README's examples, run as written ----------------------------------------------------------------

@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    where = tmp_path_factory.mktemp("examples")
    blocks = readme_examples()
    for name in ("plain", "lightning", "hf"):
        run_example(blocks[name], where)
    return where / "runs"


@pytest.mark.parametrize("loop", ["plain", "lightning", "hf"])
def test_readme_examples_leave_finished_runs_the_report_reads(examples, loop, cli):
    run_dir = examples / loop
    snapshot = read_run(run_dir)
    assert snapshot.state == "finished" and snapshot.damage == []
    assert epochs_of(run_dir) == [0, 1, 2]
    assert {"plain": "PyTorch", "lightning": "Lightning", "hf": "Hugging Face"}[loop] in snapshot.config["recorded_by"]
    first, *later = snapshot.epochs
    assert first["phase"] == "source" and all(v == 0.0 for v in distances(first).values())
    # each distance within its range (METRICS.md): PWSM an angle ≤ π/2, squared Procrustes ≤ 2, CKA ≤ 1
    top = {"pwsm": math.pi / 2, "procrustes": 2.0, "cka": 1.0}
    assert all(0.0 < v <= top[key[2].split(":")[0]] + 1e-9
               for r in later for key, v in distances(r).items() if v is not None)
    layers = [entry["name"] for entry in snapshot.config["layers"]]
    # Lightning measures the network its LightningModule wraps; the HF wrapper defines forward: its layers
    assert layers and all(name.startswith("net.") for name in layers) == (loop == "hf")
    if loop != "plain":  # the held-out split from the loop's own validation
        assert all(0.0 <= r["held_out"]["accuracy"] <= 1.0 for r in later)
    result = cli("report", run_dir, "--format", "json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)["accuracy"]
    assert row["run"] == loop and row["state"] == "finished" and row["epochs"] == "2/2"


async def test_the_app_opens_a_monitored_run(examples):
    from ftdyn_tui.app import create_app
    from ftdyn_tui.screens.dynamics import DynamicsScreen
    from ftdyn_tui.screens.runs import RunsScreen

    app = create_app([examples])
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, RunsScreen)
        table = app.screen.query_one("#runs")
        names = [str(table.get_row_at(i)[1]) for i in range(table.row_count)]
        assert sorted(names) == ["hf", "lightning", "plain"]
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, DynamicsScreen)


def test_lightning_resumes_from_its_checkpoint(examples, tmp_path):
    """fit(ckpt_path=…) for one more epoch continues the record: epochs 0–3, none twice."""
    where = examples.parent
    code = readme_examples()["lightning"].replace("max_epochs=2", "max_epochs=3").replace(
        "trainer.fit(Classifier(), data, data)",
        "import glob\ncheckpoint = sorted(glob.glob('checkpoints/*.ckpt'))[-1]\n"
        "trainer.fit(Classifier(), data, data, ckpt_path=checkpoint)")
    assert list(where.glob("checkpoints/*.ckpt")), "the first fit saved no checkpoint"
    run_example(code, where)
    assert epochs_of(examples / "lightning") == [0, 1, 2, 3]
    assert read_run(examples / "lightning").state == "finished"


def test_hugging_face_resumes_from_its_checkpoint(examples):
    where = examples.parent
    code = readme_examples()["hf"].replace("num_train_epochs=2", "num_train_epochs=3").replace(
        "trainer.train()", "trainer.train(resume_from_checkpoint=True)")
    run_example(code, where)
    assert epochs_of(examples / "hf") == [0, 1, 2, 3]
    records = read_run(examples / "hf").epochs
    assert records[-1]["scalars"]["loss"] > 0 and records[-1]["lr"]


# -- the same values as `ftdyn run` --------------------------------------------------------------------------

def test_a_plain_loop_records_what_ftdyn_run_records(trained, tmp_path, cli):
    """The run's own checkpoints replayed through a plain loop with the monitor: every distance and
    interval equal (≤ 1e-12), and the report reads both alike."""
    from engine.run_inputs import model_state, open_run

    full, _ = trained
    inputs = open_run(full)
    images = torch.stack([inputs.probe[i][0] for i in range(len(inputs.probe))])
    labels = torch.tensor([inputs.probe[i][1] for i in range(len(inputs.probe))])
    model = inputs.model
    out = tmp_path / "plain"
    with Monitor(out, model, (images, labels), model_name="resnet18", vis=False, intervals="off",
                 probe_batch_size=8, classes=inputs.data.classes, epochs=2) as monitor:
        for epoch in (1, 2):
            model.load_state_dict(model_state(full, epoch, torch.device("cpu")))
            monitor.epoch(model, epoch)
    ours, theirs = read_run(out).epochs, read_run(full).epochs
    assert [r["epoch"] for r in ours] == [r["epoch"] for r in theirs] == [0, 1, 2]
    compared = 0
    for mine, reference in zip(ours, theirs):
        a, b = distances(mine), distances(reference)
        assert a.keys() == b.keys()
        for key in a:
            assert abs(a[key] - b[key]) <= 1e-12, (key, a[key], b[key])
            compared += 1
    assert compared >= 2 * 5 * 3
    for run_dir in (out, full):
        result = cli("report", run_dir)
        assert result.exit_code == 0, result.output


def test_intervals_and_visualisations_match_ftdyn_run(tmp_path, shapes_data, cli):
    """With intervals and filter images on: the same bias-corrected estimates and intervals, and the
    same images for the same filters, as `ftdyn run` records at epoch 0 and 1."""
    from engine.run_inputs import model_state, open_run

    reference = tmp_path / "reference"
    settings = [a for a in TINY_RUN if a not in ("--no-vis",)]
    settings[settings.index("--intervals") + 1] = "auto"
    result = cli("run", "--data", shapes_data, "--out", reference, "--epochs", "1", "--vis-k", "1", *settings)
    assert result.exit_code == 0, result.output
    inputs = open_run(reference)
    images = torch.stack([inputs.probe[i][0] for i in range(len(inputs.probe))])
    labels = torch.tensor([inputs.probe[i][1] for i in range(len(inputs.probe))])
    out = tmp_path / "monitored"
    with Monitor(out, inputs.model, (images, labels), model_name="resnet18", vis_k=1, probe_batch_size=8,
                 classes=inputs.data.classes) as monitor:
        monitor.epoch(inputs.model, 0)
        inputs.model.load_state_dict(model_state(reference, 1, torch.device("cpu")))
        monitor.epoch(inputs.model)
    for mine, theirs in zip(read_run(out).epochs, read_run(reference).epochs, strict=True):
        for layer, views in theirs["layers"].items():
            for view, entry in views.items():
                for key in ("estimate", "interval"):
                    for measure, value in (entry.get(key) or {}).items():
                        np_mine = mine["layers"][layer][view][key][measure]
                        assert np_mine == pytest.approx(value, abs=1e-12), (layer, view, key, measure)
    chosen = {(e["layer"], e["filter"]) for e in map(json.loads, (reference / "vis" / "index.jsonl").open())}
    mine = {(e["layer"], e["filter"]) for e in map(json.loads, (out / "vis" / "index.jsonl").open())}
    assert chosen and chosen == mine


# -- refusals, one line, before anything is written ------------------------------------------------------------

def small_model():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=3)


def probe_images(n=8):
    return torch.randn(n, 3, 32, 32), torch.arange(n) % 3


@pytest.mark.parametrize("case, fragment", [
    ("no layers", "found no layer to hook"),
    ("unknown layer", "has no layer 'layer9'"),
    ("no labels", "no class labels"),
    ("not square", "square"),
])
def test_bad_settings_are_one_line_before_anything_is_written(tmp_path, case, fragment):
    out = tmp_path / "run"
    images, labels = probe_images()
    model, probe, settings = small_model(), (images, labels), {}
    if case == "no layers":
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 3))
    elif case == "unknown layer":
        settings = {"layers": ["layer1", "layer9"]}
    elif case == "no labels":
        probe = images
    else:
        probe = torch.randn(8, 3, 32, 48)
    with pytest.raises(FtdynError) as caught:
        Monitor(out, model, probe, **settings).start()
    message = str(caught.value)
    assert fragment in message and "\n" not in message
    assert not out.exists()


def test_a_second_monitor_on_a_live_run_is_refused(tmp_path):
    images, labels = probe_images()
    model = small_model()
    with Monitor(tmp_path / "run", model, (images, labels), vis=False, intervals="off") as first:
        first.epoch(model)
        second = Monitor(tmp_path / "run", model, (images, labels), vis=False, intervals="off", resume=True)
        with pytest.raises(FtdynError, match="is being written by"):
            second.start()
    assert epochs_of(tmp_path / "run") == [0, 1] and read_run(tmp_path / "run").state == "finished"


def test_a_failure_and_a_ctrl_c_are_recorded_and_a_reopened_monitor_continues(tmp_path):
    images, labels = probe_images()
    model = small_model()
    out = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with Monitor(out, model, (images, labels), vis=False, intervals="off") as monitor:
            monitor.epoch(model, loss=0.5)
            raise RuntimeError("the loop broke")
    assert read_run(out).state == "failed" and "the loop broke" in read_run(out).status["message"]
    with pytest.raises(FtdynError, match="already holds a run; pass resume=True"):
        Monitor(out, model, (images, labels), vis=False, intervals="off").start()
    with torch.no_grad():  # the loop trained on: the resumed monitor measures against the kept source
        for p in model.parameters():
            p.add_(0.01)
    with pytest.raises(KeyboardInterrupt):
        with Monitor(out, model, (images, labels), vis=False, intervals="off", resume=True) as monitor:
            assert monitor.last_epoch == 1
            record = monitor.epoch(model)
            raise KeyboardInterrupt
    assert record["epoch"] == 2 and all(v > 0 for v in distances(record).values())
    snapshot = read_run(out)
    assert snapshot.state == "interrupted" and "resume=True" in snapshot.status["message"]
    assert epochs_of(out) == [0, 1, 2] and snapshot.epochs[1]["scalars"] == {"loss": 0.5}
    with Monitor(out, model, (images, labels), vis=False, intervals="off", resume=True) as monitor:
        monitor.rewind(1)  # the loop went back to its epoch-1 checkpoint
        with pytest.raises(FtdynError, match="already recorded"):
            monitor.epoch(model, 1)
        monitor.epoch(model)
    assert epochs_of(out) == [0, 1, 2]


def test_post_hoc_commands_say_why_they_cannot_rebuild_a_monitored_run(tmp_path, cli):
    images, labels = probe_images()
    model = small_model()
    with Monitor(tmp_path / "run", model, (images, labels), vis=False, intervals="off") as monitor:
        monitor.epoch(model)
    result = cli("vis", tmp_path / "run", "--layer", "layer1", "--filter", "0")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "recorded by ftdyn's Monitor" in result.output and "`ftdyn run`" in result.output


def test_no_analysis_imports_the_trainer():
    analyses = Path(__file__).resolve().parent.parent / "engine" / "analyses"
    for path in analyses.glob("*.py"):
        assert "engine.training" not in path.read_text(), path.name
