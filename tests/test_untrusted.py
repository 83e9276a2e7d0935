"""A run directory from someone else is untrusted input: hostile names, paths, links and malformed files
never reach outside the run, never reach the terminal as markup or escape sequences, and never take
down the report or the app — a malformed run is shown as corrupt, the others keep working; a damaged line
of a run's record or image index is skipped and named, and the rest of the run shown."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest

import textual_image.widget  # noqa: F401  (textual-image queries the terminal on import: before any app)
from run_factory import write_fake_run
from engine.record import VIS_INDEX, find_runs, read_run, read_vis_index
from engine.untrusted import inside, safe_file_name, visible
from ftdyn_tui.app import create_app
from ftdyn_tui.screens.dynamics import DynamicsScreen
from ftdyn_tui.screens.filters import FilterScreen
from ftdyn_tui.screens.runs import RunsScreen
from engine.results import result_label, result_lines, shown_tables
from ftdyn_tui.filters import filter_images, filter_rows, load_picture
from ftdyn_tui.series import correlation_rows, export_csv, export_path, reusability_rows
from ftdyn_tui.transfer import transfer_result
from ftdyn_tui.workspace import TrackedRun, Workspace

HOSTILE = "[/x][bold]\x1b]52;c;ZXZpbA==\x07\x1b[2J\x1b]0;pwned\x07\u202eevil"
SIZE = (100, 30)


def test_visible_shows_control_characters_and_keeps_text():
    assert visible("layer4.1") == "layer4.1"
    assert visible("a\x1b[2Jb\x07") == "a\\x1b[2Jb\\x07"
    assert visible("tab\there\nnext") == "tab\\x09here\\x0anext"  # a name is one line
    assert visible("\u202eevil\x9b") == "\\u202eevil\\x9b"
    assert visible("x" * 1000, limit=10) == "x" * 10 + "…"
    assert "\x1b" not in visible(HOSTILE) and "\x07" not in visible(HOSTILE)


def test_inside_keeps_every_path_in_the_run(tmp_path):
    run = tmp_path / "run"
    (run / "vis" / "a").mkdir(parents=True)
    (run / "vis" / "a" / "img.png").write_bytes(b"x")
    (tmp_path / "secret.png").write_bytes(b"s")
    os.symlink(tmp_path / "secret.png", run / "vis" / "out.png")
    os.symlink(run / "vis" / "a" / "img.png", run / "vis" / "in.png")
    vis = run / "vis"
    assert inside(vis, "a/img.png") == (vis / "a" / "img.png").resolve()
    assert inside(vis, "in.png") == (vis / "a" / "img.png").resolve()  # a link that stays inside is fine
    for hostile in ("/etc/passwd", "../../secret.png", "a/../../secret.png", "out.png", "", ".", 7, None,
                    ["a"], "a\x00b"):
        assert inside(vis, hostile) is None, hostile


def test_safe_file_name_names_no_path():
    assert safe_file_name("pwsm:0.5@positions") == "pwsm0.5_positions"
    assert safe_file_name("../../etc/passwd") == "etc_passwd"
    assert safe_file_name("/x") == "x" and safe_file_name("..") == "unnamed"
    assert safe_file_name(HOSTILE).isascii() and "/" not in safe_file_name(HOSTILE)


# ------------------------------------------------------------------------------------------------
# One hostile run directory, read by the report and the app


@pytest.fixture()
def hostile_runs(tmp_path):
    """A good run, and a run whose every string and path was written to do harm."""
    root = tmp_path / "runs"
    write_fake_run(root / "good", epochs=3)
    bad = root / "run [v2]"
    write_fake_run(bad, epochs=3)
    config = json.loads((bad / "config.json").read_text())
    config["model"]["name"] = HOSTILE
    config["dataset"]["root"] = "/data/" + HOSTILE
    config["layers"][0]["name"] = "[red]" + HOSTILE
    (bad / "config.json").write_text(json.dumps(config))
    status = json.loads((bad / "status.json").read_text())
    status["message"] = HOSTILE
    (bad / "status.json").write_text(json.dumps(status))
    records = [json.loads(line) for line in (bad / "records.jsonl").read_text().splitlines()]
    for record in records:
        record["layers"]["[red]" + HOSTILE] = record["layers"].pop("block0")
    (bad / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    index = [dict(json.loads(line), layer="[red]" + HOSTILE) for line in (bad / VIS_INDEX).read_text().splitlines()]
    (bad / VIS_INDEX).write_text("".join(json.dumps(e) + "\n" for e in index))
    secret = tmp_path / "secret.png"
    shutil.copy(next((bad / "vis").rglob("*.png")), secret)
    os.symlink(secret, bad / "vis" / "leak.png")
    entries = [{"layer": "[red]" + HOSTILE, "filter": 0, "epoch": 3, "chosen_by": HOSTILE, "kind": "class",
                "class": HOSTILE, "path": path} for path in (str(secret), "../../secret.png", "leak.png")]
    with open(bad / VIS_INDEX, "a") as f:
        f.writelines(json.dumps(e) + "\n" for e in entries)
    return root, bad, secret


def test_report_prints_hostile_strings_as_plain_text(cli, hostile_runs, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # no cell wrapped: the strings are whole in the output
    root, bad, _ = hostile_runs
    for fmt in ("table", "csv", "json"):
        result = cli("report", root, "--format", fmt)
        assert result.exit_code == 0, result.output
        for raw in ("\x1b]52", "\x1b[2J", "\x1b]0", "\x07", "\u202e"):  # (styling escapes may be on: FORCE_COLOR)
            assert raw not in result.output
        if fmt != "json":
            assert "[/x][bold]" in result.output  # shown, not parsed as markup (it used to crash the report)
    assert "run [v2]" in cli("report", root).output  # a folder name with brackets is shown whole


async def test_app_shows_hostile_strings_as_plain_text_and_opens_nothing_outside(hostile_runs):
    root, bad, secret = hostile_runs
    app = create_app([root])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        table = app.screen.query_one("#runs")
        names = [str(table.get_row_at(i)[1]) for i in range(table.row_count)]
        assert names == ["good", "run [v2]"]
        model = str(table.get_row_at(1)[3])
        assert model.startswith("[/x][bold]\\x1b]52") and "\x1b" not in model
        await pilot.press("down")
        assert "\\x1b" in str(app.screen.query_one("#message").render())  # the status message, made visible
        await pilot.press("f")
        screen = app.screen
        assert isinstance(screen, FilterScreen) and screen.current_layer.startswith("[red]")
        run = screen.tracked
        found = filter_images(run, screen.current_layer, 0)
        paths = [p for by_epoch in found.values() for p in by_epoch.values()]
        assert paths and all(p.is_relative_to(bad.resolve()) for p in paths)
        assert secret not in paths and not any(p.name == "leak.png" for p in paths)
        await pilot.press("escape", "enter")
        assert isinstance(app.screen, DynamicsScreen)


async def test_export_never_follows_a_planted_link(hostile_runs):
    root, bad, secret = hostile_runs
    before = secret.read_bytes()
    target = export_path(TrackedRun(root / "good"), "distance", "pwsm:0.5@positions")
    os.symlink(secret, target)  # planted where the export will write
    app = create_app([root / "good"])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("enter")
        await pilot.press("e")
        await pilot.pause()
    assert secret.read_bytes() == before
    assert not target.is_symlink() and target.read_text().startswith("run,analysis,measure")
    assert export_path(TrackedRun(root / "good"), "../../x", "a@b").parent == root / "good"


# ------------------------------------------------------------------------------------------------
# Malformed runs beside a good one


def malformed_runs(root: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Runs broken in each way seen in the wild; returns the corrupt ones and the damaged ones (a line of
    a record skipped, the rest shown), each name → a fragment of the reason shown."""
    write_fake_run(root / "good", epochs=2)
    broken, damaged = {}, {}

    def variant(name: str, reason: str, into: dict[str, str] = broken) -> Path:
        write_fake_run(root / name, epochs=2)
        into[name] = reason
        return root / name

    with open(variant("list-record", "records.jsonl line 4 is not an ftdyn entry (a list, not an object); skipped",
                      damaged) / "records.jsonl", "a") as f:
        f.write("[1, 2, 3]\n")
    (variant("list-config", "holds a list") / "config.json").write_text("[]")
    (variant("nested-status", "nested too deeply") / "status.json").write_text("[" * 100_000 + "]" * 100_000)
    (variant("garbage-config", "config.json is not valid JSON") / "config.json").write_text("{not json")
    path = variant("fifo-config", "not a plain file") / "config.json"
    path.unlink()
    os.mkfifo(path)  # opening it for reading would block forever
    path = variant("linked-status", "is a link") / "status.json"
    path.unlink()
    os.symlink("/etc/hostname", path)
    no_filter = variant("index-without-filter", "vis/index.jsonl line 19 is not an ftdyn entry ('filter' is not",
                        damaged)
    with open(no_filter / VIS_INDEX, "a") as f:
        f.write(json.dumps({"layer": "block0", "epoch": 1, "kind": "class", "class": "disc", "path": "x.png"}) + "\n")
    config = json.loads((root / "good" / "config.json").read_text())
    config["layers"] = [{"shape": [1]}]
    (variant("layers-without-names", "has no 'name'") / "config.json").write_text(json.dumps(config))
    return broken, damaged


async def test_malformed_runs_are_corrupt_and_the_rest_keeps_working(tmp_path, cli):
    root = tmp_path / "runs"
    broken, damaged = malformed_runs(root)
    missing = root / "missing-png"
    write_fake_run(missing, epochs=2)
    (missing / "vis" / "block0" / "f0000" / "class-000-e002.png").unlink()
    truncated = missing / "vis" / "block0" / "f0000" / "class-001-e002.png"
    truncated.write_bytes(truncated.read_bytes()[:40])
    os.symlink(root, root / "loop")  # a link loop under the runs folder

    workspace = Workspace([root])
    workspace.poll()
    runs = {run.name: run for run in workspace.ordered()}
    assert sorted(runs) == sorted([*broken, *damaged, "good", "missing-png"])  # each listed once despite the loop
    for name, reason in broken.items():
        assert runs[name].state == "corrupt" and reason in runs[name].problem, (name, runs[name].problem)
    for name, reason in damaged.items():  # a damaged line is skipped and named; the run is shown
        assert runs[name].state == "finished" and runs[name].damaged and len(runs[name].epochs) == 3
        assert [note for note in runs[name].damage if reason in note], (name, runs[name].damage)
    assert runs["good"].state == "finished" and not runs["missing-png"].problem
    assert not runs["good"].damaged

    result = cli("report", root)
    assert result.exit_code == 0 and "Traceback" not in result.output
    skipped = [line for line in result.output.splitlines() if line.startswith("skipped:")]
    assert len(skipped) == len(broken)
    assert f"warning: list-record: {damaged['list-record']}" in result.output  # (the report reads no image index)

    app = create_app([root])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        table = app.screen.query_one("#runs")
        states = {str(table.get_row_at(i)[1]): str(table.get_row_at(i)[2]) for i in range(table.row_count)}
        assert {states[name] for name in broken} == {"corrupt"}
        assert {states[name] for name in damaged} == {"finished damaged"}
        for _ in range(table.row_count):  # Enter and f on every run: corrupt ones say so, none crashes
            await pilot.press("enter")
            await pilot.pause()
            if isinstance(app.screen, DynamicsScreen):
                await pilot.press("escape")
            await pilot.press("f")
            await pilot.pause()
            if isinstance(app.screen, FilterScreen):
                if app.screen.tracked.name == "missing-png":
                    app.screen.filter_index, app.screen.label_index, app.screen.epoch = 0, 0, 2  # disc: deleted
                    app.screen.show_images()
                    assert "class-000-e002.png is missing" in str(app.screen.query_one("#caption").render())
                    await pilot.press("c")  # square: truncated
                    assert "cannot be decoded" in str(app.screen.query_one("#caption").render())
                await pilot.press("escape")
            assert isinstance(app.screen, RunsScreen)
            await pilot.press("down")
    assert load_picture(truncated)[0] is None and "cannot be decoded" in load_picture(truncated)[1]


def test_discovery_is_bounded_and_lists_a_linked_run_once(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    write_fake_run(root / "a" / "run1", epochs=1, vis=False)
    os.symlink(root / "a", root / "b")  # the same run through a second path
    os.symlink(root, root / "a" / "up")  # and a loop
    assert [p.name for p in find_runs(root)] == ["run1"]
    for i in range(2, 11):
        write_fake_run(root / f"c{i}" / f"run{i}", epochs=0, vis=False)
    assert len(list(find_runs(root))) == 10
    monkeypatch.setattr("engine.record.MAX_FOLDERS", 6)  # the runs folder, a, run1, c10, run10, c2: two runs
    assert [p.name for p in find_runs(root)] == ["run1", "run10"]
    monkeypatch.setattr("engine.record.MAX_DEPTH", 1)  # runs two levels down are out of reach
    assert list(find_runs(root)) == []


# ------------------------------------------------------------------------------------------------
# Fuzz: random corruptions of a real run directory


HOSTILE_VALUES = [None, True, 0, -1, 2**70, 1e308, -0.0, "", "[/x]\x1b[2J", [], {}, [[[]]], {"a": {"b": []}},
                  ["x", 1], "NaN"]


def mutate_json(value, rng: random.Random):
    """``value`` with one randomly chosen node (at any depth) replaced, deleted or retyped."""
    if isinstance(value, dict) and value and rng.random() < 0.75:
        key = rng.choice(list(value))
        copy = dict(value)
        if rng.random() < 0.2:
            del copy[key]
        else:
            copy[key] = mutate_json(value[key], rng)
        return copy
    if isinstance(value, list) and value and rng.random() < 0.75:
        copy = list(value)
        index = rng.randrange(len(copy))
        copy[index] = mutate_json(copy[index], rng)
        return copy
    return rng.choice(HOSTILE_VALUES)


def corrupt(run: Path, rng: random.Random) -> str:
    """One random corruption of one file of ``run``; returns what was done."""
    files = [name for name in ("config.json", "status.json", "records.jsonl", VIS_INDEX, "analyses/barrier-x.json")
             if (run / name).is_file()]
    if not files:
        return "nothing left"
    name = rng.choice(files)
    path = run / name
    how = rng.choice(["json", "json", "json", "truncate", "bytes", "delete", "replace", "line"])
    data = path.read_bytes()
    if how == "line":  # a damaged line among the others: skipped and named (a .json file: replaced)
        if not name.endswith(".jsonl"):
            how = "replace"
        else:
            lines = data.splitlines(keepends=True)
            lines.insert(rng.randint(0, len(lines)), damaged_line(rng))
            path.write_bytes(b"".join(lines))
            return f"line {name}"
    if how == "json":
        try:
            [json.loads(line) for line in data.decode().splitlines()] if name.endswith(".jsonl") else json.loads(data)
        except ValueError:  # already broken by an earlier corruption
            how = "bytes"
    if not data and how in ("bytes", "json"):
        how = "delete"
    if how == "json":
        if name.endswith(".jsonl"):
            lines = data.decode().splitlines()
            i = rng.randrange(len(lines))
            lines[i] = json.dumps(mutate_json(json.loads(lines[i]), rng))
            path.write_text("\n".join(lines) + "\n")
        else:
            path.write_text(json.dumps(mutate_json(json.loads(data), rng)))
    elif how == "truncate":
        path.write_bytes(data[:rng.randrange(len(data) + 1)])
    elif how == "bytes":
        array = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            array[rng.randrange(len(array))] = rng.randrange(256)
        path.write_bytes(bytes(array))
    elif how == "delete":
        path.unlink()
    else:
        path.write_text(json.dumps(rng.choice(HOSTILE_VALUES)))
    return f"{how} {name}"


def damaged_line(rng: random.Random) -> bytes:
    """A line ftdyn did not write: random bytes, a hostile JSON value, or a record with one node changed."""
    how = rng.randrange(3)
    if how == 0:
        return bytes(rng.choice([b for b in range(256) if b != 10]) for _ in range(rng.randint(1, 60))) + b"\n"
    if how == 1:
        return json.dumps(rng.choice(HOSTILE_VALUES)).encode() + b"\n"
    return json.dumps(mutate_json({"kind": "epoch", "epoch": 1, "train": {"loss": 1.0, "accuracy": 0.5}}, rng)).encode() + b"\n"


def expected_reading(data: bytes) -> tuple[list[int], list[int]]:
    """What a viewer should read of a record file, worked out line by line apart from the reader: the
    epochs of the records it keeps, and the numbers of the lines it skips as damaged."""
    from engine.record_checks import record_problem

    epochs, damaged = [], []
    for number, line in enumerate(data.split(b"\n")[:-1], 1):  # the part after the last "\n": not yet a line
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            damaged.append(number)
            continue
        if record_problem(record):
            damaged.append(number)
        elif record["kind"] == "epoch":
            epochs.append(record["epoch"])
    return epochs, damaged


def test_fuzz_damaged_lines_are_skipped_named_and_the_rest_read(tmp_path):
    """Damaged lines anywhere in the record (and a partial one at its end): the report's reader and the
    app keep the run, read every other record, and name exactly the damaged lines — never their content."""
    from engine.jsonl import MAX_NOTES
    from engine.record import RECORDS
    from engine.report import build_report
    from ftdyn_tui.cli import report_problem

    pristine = tmp_path / "pristine"
    write_fake_run(pristine, epochs=4, layers=2, filters=4, vis=False)
    rng = random.Random(20261204)
    for trial in range(60):
        run = tmp_path / f"damaged{trial}"
        shutil.copytree(pristine, run)
        lines = (run / RECORDS).read_bytes().splitlines(keepends=True)
        for _ in range(rng.randint(1, 4)):
            lines.insert(rng.randint(0, len(lines)), damaged_line(rng))
        data = b"".join(lines) + (damaged_line(rng)[:-1] if rng.random() < 0.3 else b"")
        (run / RECORDS).write_bytes(data)
        epochs, damaged = expected_reading(data)
        snapshot = read_run(run)
        tracked = TrackedRun(run)
        tracked.refresh()
        for seen in (snapshot, tracked):
            assert seen.problem is None, (trial, seen.problem)
            assert [r["epoch"] for r in seen.epochs] == epochs, trial
            named = [int(note.split()[2]) for note in seen.damage[:MAX_NOTES]]
            assert named == damaged[:MAX_NOTES], (trial, seen.damage)
            assert all(note.startswith("records.jsonl line ") and note.endswith("; skipped") and
                       visible(note, 10_000) == note for note in seen.damage[:MAX_NOTES])
        assert tracked.damaged and tracked.state == "finished"
        if not report_problem(snapshot):
            warnings = build_report([snapshot])["warnings"]
            assert [w["warning"] for w in warnings] == snapshot.damage
        shutil.rmtree(run)


def read_everything(path: Path, peers: list[TrackedRun]) -> None:
    """What the report and every screen of the app compute from one run."""
    from engine.report import build_report
    from ftdyn_tui.cli import report_problem

    snapshot = read_run(path)
    if not snapshot.problem and not report_problem(snapshot):
        build_report([snapshot, *(peer.snapshot() for peer in peers)])
    read_vis_index_safely(path)
    workspace = Workspace([path])
    workspace.poll()
    for run in workspace.ordered():
        _ = (run.state, run.name, run.model_name, run.dataset_name, run.strategy, run.progress, run.best_accuracy)
        if run.problem or run.config is None:
            continue
        for part in run.parts:
            for measure in part["measures"]:
                run.matrix(measure, part["name"])
                export_csv([run], measure, part["name"])
        reusability_rows([run], (run.measures or ["x"])[0])
        correlation_rows([run])
        for layer in run.layers:
            rows, _, _ = filter_rows(run, layer)
            for row in rows[:2]:
                filter_images(run, layer, row.index)
        transfer_result(run, peers)
        for result in run.results:
            result_label(result)
            result_summary_safely(result)


def read_vis_index_safely(path: Path) -> None:
    from engine.record import RunFormatError

    try:
        read_vis_index(path)
    except RunFormatError:
        pass  # the reader's way of saying "corrupt": what the app shows


def result_summary_safely(result: dict) -> None:
    """The results screen draws a result inside a guard that names a result it cannot draw."""
    try:
        result_lines(result)
        shown_tables("run", result, with_detail=True)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        pass


def test_fuzz_no_corruption_escapes_the_reader_report_or_app_model(tmp_path, capsys):
    pristine = tmp_path / "pristine"
    write_fake_run(pristine, epochs=3, layers=2, filters=4)
    (pristine / "analyses").mkdir()
    (pristine / "analyses" / "barrier-x.json").write_text(json.dumps({
        "name": "barrier", "display": "curve", "endpoints": {"A": "run@0", "B": "run@3"}, "x": [0, 0.5, 1],
        "series": {"held_out_loss": [1.0, 1.5, 1.1]}, "barriers": {"held_out_loss": 0.45},
        "settings": {"epoch": 3, "points": 3}, "notes": ["n"]}))
    rng = random.Random(20261127)
    peer = TrackedRun(pristine)  # a good run beside each corrupted one: the multi-run tables meet both
    peer.refresh()
    tried = 0
    for trial in range(300):
        run = tmp_path / f"fuzz{trial}"
        shutil.copytree(pristine, run, symlinks=True)
        done = [corrupt(run, rng) for _ in range(rng.randint(1, 3))]
        try:
            read_everything(run, [peer])
        except Exception as exc:  # noqa: BLE001
            pytest.fail(f"trial {trial} ({'; '.join(done)}): {type(exc).__name__}: {exc}")
        shutil.rmtree(run)
        tried += 1
    with capsys.disabled():
        print(f"\nfuzz: {tried} corrupted run directories read without an exception")
