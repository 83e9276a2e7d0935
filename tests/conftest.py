import os
import sys
from pathlib import Path

# Nothing is downloaded at test time: timm and Hugging Face models are built from configs and local
# files, and a name that would need the Hub fails at once, as on a machine without the network
# (huggingface_hub reads this when it is first imported, which is after this file).
os.environ["HF_HUB_OFFLINE"] = "1"

# The suite runs in one worker per core (pytest-xdist, pyproject's addopts): each worker, and every
# process a test starts, computes on one thread, so that workers do not fight over the cores. Set
# before torch is first imported, which reads it then.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # A worker is started with the terminal's size in COLUMNS and LINES, which Rich would fix its width
    # to when the command line is imported; tests that ask for a width set COLUMNS themselves.
    for name in ("COLUMNS", "LINES"):
        os.environ.pop(name, None)

import pytest
import textual.constants as textual_constants

# Snapshots are taken as a truecolor terminal sees the app, whatever TERM the machine running the tests
# has (a plain TERM=xterm is a 16-colour terminal, where the app dithers its pictures). Textual reads the
# setting when an app starts; the snapshot plugin has imported Textual before this file runs.
os.environ.setdefault("TEXTUAL_COLOR_SYSTEM", "truecolor")
textual_constants.COLOR_SYSTEM = os.environ["TEXTUAL_COLOR_SYSTEM"]

# the metric references live beside the tests as a plain module
sys.path.insert(0, str(Path(__file__).parent))

# Small enough for seconds per run on 2 CPU cores, large enough for every default layer of resnet18.
# Visualisation tests add --vis; tests of intervals add `--intervals auto` (the default), which costs
# about 1 s per measurement here (layer4's 512 channels decomposed once per probe-image group).
TINY_RUN = ["--model", "resnet18", "--weights", "none", "--image-size", "32", "--batch-size", "8",
            "--probe-size", "9", "--workers", "0", "--no-vis", "--intervals", "off"]
WITH_INTERVALS = ["--intervals", "auto"]


@pytest.fixture(scope="session")
def shapes_data(tmp_path_factory) -> Path:
    """A generated ImageFolder: 3 classes, train/ and val/, 32 px."""
    from engine.synthetic import write_shapes_folder

    return write_shapes_folder(tmp_path_factory.mktemp("data") / "shapes", classes=3, per_class=12, size=32, seed=1)


@pytest.fixture()
def cli():
    """Invoke `ftdyn …` in-process; returns the click Result."""
    from typer.testing import CliRunner

    from ftdyn_tui.cli import app

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args])

    return invoke


@pytest.fixture(scope="session")
def trained(tmp_path_factory, shapes_data):
    """Two tiny runs: full fine-tuning with every epoch's checkpoint, and a linear probe."""
    from typer.testing import CliRunner

    from ftdyn_tui.cli import app

    root = tmp_path_factory.mktemp("analyses")
    runner = CliRunner()
    full = root / "full"
    result = runner.invoke(app, ["run", "--data", str(shapes_data), "--out", str(full), "--epochs", "2",
                                 "--save-every-epoch", *TINY_RUN])
    assert result.exit_code == 0, result.output
    probe = root / "probe"
    result = runner.invoke(app, ["run", "--data", str(shapes_data), "--out", str(probe), "--epochs", "2",
                                 "--strategy", "linear-probe", *TINY_RUN])
    assert result.exit_code == 0, result.output
    return full, probe
