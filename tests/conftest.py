import sys
from pathlib import Path

import pytest

# the metric references live beside the tests as a plain module
sys.path.insert(0, str(Path(__file__).parent))

# Small enough for seconds per run on 2 CPU cores, large enough for every default layer of resnet18.
TINY_RUN = ["--model", "resnet18", "--weights", "none", "--image-size", "32", "--batch-size", "8",
            "--probe-size", "9", "--workers", "0", "--no-vis"]  # visualisation tests add --vis


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
