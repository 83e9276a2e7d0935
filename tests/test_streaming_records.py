"""Reading a run's record: a damaged line is skipped and named, never the whole run; the record is read
streaming, and what grows without bound (step records) is not kept by the report and is thinned by the
app, so a reader's memory does not grow with the file."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import textual_image.widget  # noqa: F401  (textual-image queries the terminal on import: before any app)
from run_factory import write_fake_run
from engine.jsonl import JsonlFollower
from engine.record import RECORDS, VIS_INDEX, RunFormatError, RunReader, read_run

# one worker runs this file: its module-scoped runs are recorded once (pytest-xdist, --dist loadgroup)
pytestmark = pytest.mark.xdist_group("streaming_records")

REPO = Path(__file__).resolve().parent.parent
REAL_RUN = Path(__file__).parent / "fixtures" / "run-steps"  # a real 1-epoch run, --every-steps 2: a 24.6 kB step record
HOSTILE = b"\x1b]0;pwned\x07\x1b[2J[bold]"


def damaged_run(root: Path) -> Path:
    """A finished 5-epoch run (epochs 0…5 on lines 1…6) with a line that is not JSON inserted as line 3,
    and one that is not an ftdyn entry appended as line 8 after the run finished."""
    run = root / "run"
    write_fake_run(run, epochs=5)
    lines = (run / RECORDS).read_bytes().splitlines(keepends=True)
    lines.insert(2, b'{"kind": "epoch", "epoch": ' + HOSTILE + b"\n")
    lines.append(b'{"kind": "epoch", "epoch": -1, "note": "' + HOSTILE[4:9] + b'"}\n')
    (run / RECORDS).write_bytes(b"".join(lines))
    return run


MIDDLE = "records.jsonl line 3 is not valid JSON ("
APPENDED = "records.jsonl line 8 is not an ftdyn entry ('epoch' is not a whole number ≥ 0); skipped"


def test_report_keeps_a_run_with_damaged_lines_and_names_them(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    run = damaged_run(tmp_path / "runs")
    snapshot = read_run(run)
    assert snapshot.problem is None and [r["epoch"] for r in snapshot.epochs] == [0, 1, 2, 3, 4, 5]
    assert len(snapshot.damage) == 2 and snapshot.damage[0].startswith(MIDDLE) and snapshot.damage[1] == APPENDED

    result = cli("report", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert "no readable run" not in result.output and "skipped:" not in result.output
    assert "5/5" in result.output  # Table 1: every intact epoch
    assert f"warning: run: {MIDDLE}" in result.output and f"warning: run: {APPENDED}" in result.output
    assert "pwned" not in result.output and "\x1b]0" not in result.output  # the line itself is never echoed
    tables = json.loads(cli("report", tmp_path / "runs", "--format", "json").output)
    assert tables["accuracy"][0]["epochs"] == "5/5"
    assert {row["epoch"] for row in tables["layers"]} == {0, 1, 2, 3, 4, 5}
    assert [row["warning"] for row in tables["warnings"]] == snapshot.damage


def test_figures_keep_a_run_with_damaged_lines_and_record_them(tmp_path, cli):
    damaged_run(tmp_path / "runs")
    out = tmp_path / "figures"
    result = cli("figures", tmp_path / "runs", "--out", out, "--format", "svg")
    assert result.exit_code == 0, result.output
    assert (out / "distance-pwsm0.5_positions.svg").is_file()
    table1 = (out / "table1.csv").read_text().splitlines()
    assert len(table1) == 2 and table1[1].startswith("run,")
    warnings = (out / "warnings.csv").read_text()
    assert MIDDLE in warnings and APPENDED in warnings and "pwned" not in warnings
    said = [line for line in result.output.splitlines() if line.startswith("warning:")]  # said, not only filed
    assert any(MIDDLE in line for line in said) and any(APPENDED in line for line in said), result.output


async def test_the_app_draws_a_damaged_run_and_marks_it(tmp_path):
    from ftdyn_tui.app import create_app
    from ftdyn_tui.screens.dynamics import DynamicsScreen
    from ftdyn_tui.screens.runs import RunsScreen
    from ftdyn_tui.workspace import Workspace, part_series

    run = damaged_run(tmp_path / "runs")
    with open(run / VIS_INDEX, "ab") as f:  # a damaged image index entry too: skipped, named
        f.write(b"[" + HOSTILE + b"\n")
    workspace = Workspace([tmp_path / "runs"])
    workspace.poll()
    tracked = workspace.ordered()[0]
    assert tracked.problem is None and tracked.state == "finished" and tracked.damaged
    assert [r["epoch"] for r in tracked.epochs] == [0, 1, 2, 3, 4, 5]
    assert tracked.damage[0].startswith(MIDDLE) and tracked.damage[1] == APPENDED
    assert tracked.damage[2].startswith("vis/index.jsonl line 37 is not valid JSON") and len(tracked.vis) == 36
    xs, _ = part_series(tracked, "distance", "pwsm:0.5@positions", "block1")
    assert xs == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]

    app = create_app([tmp_path / "runs"])
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        table = app.screen.query_one("#runs")
        assert str(table.get_row_at(0)[2]) == "finished damaged"
        message = str(app.screen.query_one("#message").render())
        assert "run is damaged" in message and "line 3 is not valid JSON" in message and "\x1b" not in message
        await pilot.press("enter")  # drawn all the same, each note a warning
        assert isinstance(app.screen, DynamicsScreen) and app.screen.points_drawn == 4 * 6
        notes = [str(n.message) for n in app._notifications]
        assert any(APPENDED in note for note in notes) and not any("\x1b" in note for note in notes)
        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen)


def test_a_partial_last_line_is_not_damage_until_it_ends(tmp_path):
    """A writer caught mid-append: its line is left for the next poll, and not named damaged; once it
    ends (and is not a record) it is; a rewritten file (a resume) starts over, its notes too."""
    path = tmp_path / RECORDS
    path.write_bytes(b'{"kind": "epoch", "epoch": 0}\n{"kind": "ep')
    follower = JsonlFollower(path, skip_damaged=True)
    assert [r["epoch"] for r in follower.poll()] == [0] and follower.damage == []
    with open(path, "ab") as f:
        f.write(b'och", "epoch": 1}\n{"kind"')
    assert [r["epoch"] for r in follower.poll()] == [1] and follower.damage == []
    with open(path, "ab") as f:
        f.write(b' oops\n{"kind": "epoch", "epoch": 2}\n')
    assert [r["epoch"] for r in follower.poll()] == [2]
    assert follower.damage == ["records.jsonl line 3 is not valid JSON (JSONDecodeError: Expecting ':' delimiter: "
                               "line 1 column 9 (char 8)); skipped"]
    assert follower.poll() == [] and [r["epoch"] for r in follower.items] == [0, 1, 2]
    (tmp_path / "new").write_bytes(b'{"kind": "epoch", "epoch": 0}\n')
    os.replace(tmp_path / "new", path)  # what a resume does
    assert [r["epoch"] for r in follower.poll()] == [0] and follower.damage == [] and len(follower.items) == 1


def test_the_resume_reader_still_refuses_a_damaged_line(tmp_path):
    """RunReader's default (a resume rewrites the record from what it read): a damaged line raises,
    naming it, and everything before it is read — it is never dropped silently."""
    run = damaged_run(tmp_path)
    reader = RunReader(run)
    with pytest.raises(RunFormatError, match="records.jsonl line 3 is not valid JSON"):
        reader.poll()
    assert [r["epoch"] for r in reader.records] == [0, 1]
    assert "line 3 is not valid JSON" in reader.snapshot().problem


def test_lines_across_chunks_and_a_line_too_long_to_hold(tmp_path, monkeypatch):
    """Chunks of 7 bytes: every line spans several, and reads as whole; a line over MAX_LINE is skipped
    without being held; many damaged lines are named up to MAX_NOTES, the rest counted."""
    monkeypatch.setattr("engine.jsonl.READ_CHUNK", 7)
    monkeypatch.setattr("engine.jsonl.MAX_LINE", 200)
    records = [{"kind": "epoch", "epoch": e, "pad": "x" * (13 * e)} for e in range(12)]
    lines = [json.dumps(r).encode() + b"\n" for r in records]
    lines.insert(5, b'{"kind": "epoch", "epoch": 99, "pad": "' + b"y" * 400 + b'"}\n')
    lines += [b"garbage\n"] * 12 + [b"\n", b'{"kind": "epoch", "epoch": 12}']
    path = tmp_path / RECORDS
    path.write_bytes(b"".join(lines))
    follower = JsonlFollower(path, skip_damaged=True)
    assert follower.poll() == records
    assert follower.damage[0] == "records.jsonl line 6 is longer than 200 bytes; skipped"
    assert follower.damage[1].startswith("records.jsonl line 14 is not valid JSON")
    assert len(follower.damage) == 11 and follower.damage[-1] == "records.jsonl: 3 more damaged lines skipped"
    with open(path, "ab") as f:
        f.write(b"\n")
    assert follower.poll() == [{"kind": "epoch", "epoch": 12}]


def step_and_epoch_lines(steps: int, every: int) -> tuple[list[bytes], list[int]]:
    """``steps`` step records with an epoch record after every ``every`` of them; and the step numbers."""
    lines = []
    for s in range(steps):
        lines.append(json.dumps({"kind": "step", "epoch": s // every + 1, "step": s}).encode() + b"\n")
        if (s + 1) % every == 0:
            lines.append(json.dumps({"kind": "epoch", "epoch": (s + 1) // every, "step": s}).encode() + b"\n")
    return lines, list(range(steps))


@pytest.mark.parametrize("cap", [0, 1, 7, 64, 1000])
def test_step_records_are_thinned_evenly_and_epoch_records_kept(tmp_path, cap):
    """At most ``cap`` step records, every stride-th (the first kept, the stride a power of two), between
    cap/2 and cap of them, whether the file is read at once or while it grows; every epoch record kept."""
    lines, _ = step_and_epoch_lines(900, 50)
    path = tmp_path / RECORDS
    path.write_bytes(b"".join(lines))
    at_once = JsonlFollower(path, steps=cap)
    at_once.poll()
    path.write_bytes(b"")
    growing, returned = JsonlFollower(path, steps=cap), []
    rng = random.Random(cap)
    written = 0
    while written < len(lines):  # appended in random bursts, a partial line now and then
        burst = b"".join(lines[written:written + rng.randint(1, 120)])
        cut = rng.randint(0, 30)
        with open(path, "ab") as f:
            f.write(burst[:-cut] if cut else burst)
        returned += growing.poll()
        with open(path, "ab") as f:
            f.write(burst[-cut:] if cut else b"")
        written += burst.count(b"\n")
    returned += growing.poll()
    for follower in (at_once, growing):
        epochs = [r["epoch"] for r in follower.items if r["kind"] == "epoch"]
        steps = [r["step"] for r in follower.items if r["kind"] == "step"]
        assert epochs == list(range(1, 19))
        if cap == 0:
            assert steps == []
            continue
        stride = steps[1] - steps[0] if len(steps) > 1 else None
        assert steps == ([0] if stride is None else list(range(0, 900, stride)))
        assert stride is None or stride & (stride - 1) == 0  # a power of two
        assert cap / 2 < len(steps) <= cap or (stride == 1 and len(steps) == 900 <= cap)
    assert growing.items == at_once.items
    assert [r for r in returned if r in growing.items] == growing.items  # poll returned each kept one, in order


def test_the_app_keeps_only_what_it_draws_of_step_records(tmp_path, monkeypatch):
    """Step records of a real run, many of them: the app keeps at most STEP_RECORDS_DRAWN, each cut to
    the values it draws, and draws the same values as from the whole record."""
    from engine.analyses import part_value
    from ftdyn_tui import workspace as model

    monkeypatch.setattr(model, "STEP_RECORDS_DRAWN", 16)
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "status.json"):
        shutil.copy(REAL_RUN / name, run / name)
    first, step, last = (REAL_RUN / RECORDS).read_bytes().splitlines(keepends=True)
    full = json.loads(step)
    lines = [first] + [json.dumps(dict(full, step=s)).encode() + b"\n" for s in range(2, 102)] + [last]
    (run / RECORDS).write_bytes(b"".join(lines))
    tracked = model.TrackedRun(run)
    tracked.refresh()
    kept = [r for r in tracked.records if r["kind"] == "step"]
    assert [r["step"] for r in kept] == list(range(2, 102, 8)) and len(tracked.epochs) == 2
    assert len(json.dumps(kept[0])) < len(step) / 10  # per-filter values, replicates and intervals left out
    for part in tracked.parts:
        for measure in part["measures"]:
            for row in model.measure_rows(part, measure):
                assert part_value(kept[0], part, measure, row) == part_value(full, part, measure, row)
                xs, ys = model.part_series(tracked, part["name"], measure, row, "step")
                assert xs == [0.0, *range(2, 102, 8), 4.0] and len(ys) == len(xs)


# ------------------------------------------------------------------------------------------------
# Memory: a reader's peak does not grow with the record


STEP_BYTES = 100 << 20  # of step records in the large run


@pytest.fixture(scope="module")
def large_and_small(tmp_path_factory) -> tuple[Path, Path]:
    """The real run as it is (two epoch records, one step record), and the same run with 100 MB of step
    records (about 4,000 copies of its 24.6 kB one) between its epoch records."""
    root = tmp_path_factory.mktemp("memory")
    first, step, last = (REAL_RUN / RECORDS).read_bytes().splitlines(keepends=True)
    runs = []
    for name, middle in (("small", step), ("large", step * (STEP_BYTES // len(step)))):
        run = root / name
        run.mkdir()
        for file in ("config.json", "status.json"):
            shutil.copy(REAL_RUN / file, run / file)
        (run / RECORDS).write_bytes(first + middle + last)
        runs.append(run)
    yield tuple(runs)
    shutil.rmtree(root)


# Runs a command and prints the peak RSS of it alone, in KiB (Linux). The command is started from this
# small process, not from pytest: a child's ru_maxrss counts what it held between fork and exec, a copy
# of its parent (pytest may hold more than the report).
PEAK = ("import resource, subprocess, sys\n"
        "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def peak_rss_mib(code: str, run: Path) -> float:
    """Peak resident memory of a fresh Python running ``code`` with RUN as its argument."""
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200")
    done = subprocess.run([sys.executable, "-c", PEAK, sys.executable, "-c", code, str(run)], cwd=REPO, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return int(done.stdout) / 1024


REPORT = "import sys; from ftdyn_tui.cli import main; sys.argv = ['ftdyn', 'report', sys.argv[1]]; main()"
APP = ("import sys; from pathlib import Path; from ftdyn_tui.workspace import Workspace, part_series\n"
       "workspace = Workspace([Path(sys.argv[1])]); workspace.poll(); run = workspace.ordered()[0]\n"
       "assert not run.problem and len(run.epochs) == 2, run.problem\n"
       "assert part_series(run, 'distance', 'cka@positions', 'layer4.1', 'step')[0]")


@pytest.mark.parametrize("code", [REPORT, APP], ids=["report", "app"])
def test_peak_memory_does_not_grow_with_the_record(large_and_small, code):
    """`ftdyn report`, and the app's model, over 100 MB of step records: peak RSS within 40 MiB of the
    same run's without them (the record read before streaming held it 4–5 times over: 430 MiB more)."""
    small, large = large_and_small
    extra = peak_rss_mib(code, large) - peak_rss_mib(code, small)
    assert extra < 40, f"{extra:.0f} MiB more for 100 MB of step records"
