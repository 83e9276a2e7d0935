"""The TUI: Pilot tests that press keys on every screen, live follow, snapshots, and no torch."""

import csv
import json
import subprocess
import sys
import time

import pytest

import textual_image.widget  # noqa: F401  (textual-image queries the terminal on import: before any app)
from run_factory import backdate_heartbeat, epoch_record, layer_names, write_fake_map, write_fake_run
from ftdyn_tui.app import create_app
from ftdyn_tui.screens.dynamics import DynamicsScreen
from ftdyn_tui.screens.filters import FilterScreen
from ftdyn_tui.screens.help import HelpScreen
from ftdyn_tui.screens.runs import RunsScreen
from ftdyn_tui.series import smooth

SIZE = (100, 30)


@pytest.fixture()
def runs_dir(tmp_path):
    root = tmp_path / "runs"
    write_fake_run(root / "alpha", epochs=5)
    write_fake_run(root / "beta", epochs=3, total=6, state="failed", model="vgg19")
    write_fake_run(root / "gamma", epochs=2, total=8, state="running")
    backdate_heartbeat(root / "gamma")
    return root


def test_importing_the_tui_leaves_torch_out():
    code = "import sys, ftdyn_tui.app, ftdyn_tui.cli, ftdyn_tui.workspace; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def table_rows(screen, selector):
    table = screen.query_one(selector)
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


async def test_runs_screen_lists_runs_with_live_status_and_filters(runs_dir):
    app = create_app([runs_dir])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, RunsScreen)
        rows = table_rows(app.screen, "#runs")
        assert [r[1] for r in rows] == ["alpha", "beta", "gamma"]
        states = [r[2] for r in rows]
        assert "finished" in states[0] and "failed" in states[1] and "stalled" in states[2]
        assert rows[0][6] == "5/5" and rows[1][3] == "vgg19" and rows[0][7] == "0.800"
        await pilot.press("slash", *"vgg", "enter")
        assert [r[1] for r in table_rows(app.screen, "#runs")] == ["beta"]
        assert "loss became nan" in str(app.screen.query_one("#message").render())
        await pilot.press("escape")
        assert len(table_rows(app.screen, "#runs")) == 3
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen)


async def test_dynamics_screen_keys_and_overlay(runs_dir):
    app = create_app([runs_dir])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("space", "down", "space", "enter")  # mark alpha and beta, overlay them
        screen = app.screen
        assert isinstance(screen, DynamicsScreen) and [r.name for r in screen.runs] == ["alpha", "beta"]
        assert screen.points_drawn == 4 * 6 + 4 * 4  # every layer of both runs, epochs 0…T
        assert screen.measure == "pwsm:0.5@positions"
        await pilot.press("m")
        assert screen.measure == "procrustes@positions"
        await pilot.press("v")
        assert screen.measure == "procrustes@filter"
        await pilot.press("l")
        assert screen.log_y and screen.points_drawn == 4 * 5 + 4 * 3  # epoch 0's exact zeros left out
        await pilot.press("l", "s")
        assert screen.smoothing == 1 and screen.points_drawn == 4 * 6 + 4 * 4
        await pilot.press("x")
        assert screen.x_axis == "step"
        reuse = table_rows(screen, "#reuse")
        assert [r[0] for r in reuse] == ["alpha", "beta"] and "±" in reuse[0][1]
        assert table_rows(screen, "#corr")
        await pilot.press("e")
        exported = runs_dir / "alpha" / "export-procrustes_filter.csv"
        assert exported.read_text().startswith("run,analysis,measure,row,epoch")
        await pilot.press("f")
        assert isinstance(app.screen, FilterScreen)
        await pilot.press("escape", "escape")
        assert isinstance(app.screen, RunsScreen)


async def test_filter_screen_ranks_filters_and_steps_through_images(runs_dir):
    app = create_app([runs_dir])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("f")
        screen = app.screen
        assert isinstance(screen, FilterScreen) and screen.current_layer == "block0"
        rows = table_rows(screen, "#filters")
        distances = [float(r[1]) for r in rows if r[1] != "—"]
        assert distances == sorted(distances, reverse=True) and rows[-1][1] == "—"  # the dead filter last
        assert "dead 1" in screen.query_one("#filters").border_title
        await pilot.press(*["down"] * [r[0] for r in rows].index("3"))
        assert screen.filter_index == 3 and screen.epoch == 5
        assert screen.shown_paths["current"].name.endswith("class-000-e005.png")
        assert screen.shown_paths["source"].name.endswith("class-000-e000.png")
        await pilot.press("left", "left")
        assert screen.epoch == 3 and screen.shown_paths["current"].name.endswith("e003.png")
        await pilot.press("c")
        assert screen.shown_paths["current"].name.endswith("class-001-e003.png")
        await pilot.press("p")
        assert screen.last_written_path.endswith("class-001-e003.png")
        await pilot.press("k")  # no sample-based images in this run: says how to get them
        assert "ftdyn vis" in str(screen.query_one("#caption").render())
        screen.query_one("#layers").highlighted = 2
        await pilot.pause()
        assert screen.current_layer == "block2" and screen.filter_index is not None


async def test_live_follow_adds_points_without_blocking(tmp_path):
    root = tmp_path / "runs"
    writer = write_fake_run(root / "live", epochs=1, total=4, state="running", vis=False)
    app = create_app([root], poll_seconds=0.1)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("enter")
        screen = app.screen
        before = screen.points_drawn
        assert before == 4 * 2
        names = layer_names(4)
        for epoch in (2, 3):
            writer.append_record(epoch_record(epoch, names, 12))
            with open(root / "live" / "records.jsonl", "ab") as f:
                f.write(b'{"kind": "epoch", "epo')  # a writer caught mid-line: ignored until complete
            deadline = time.monotonic() + 5
            while screen.points_drawn < 4 * (epoch + 1) and time.monotonic() < deadline:
                await pilot.pause(0.05)
            assert screen.points_drawn == 4 * (epoch + 1)
            lines = (root / "live" / "records.jsonl").read_bytes().splitlines(keepends=True)
            (root / "live" / "records.jsonl").write_bytes(b"".join(lines[:-1]))  # drop the partial line
        await pilot.press("m")  # input still answered while polling
        assert screen.measure == "procrustes@positions"
        assert app.polls > 3


async def test_new_runs_appear_and_foreign_directories_are_explained(tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    (root / "notes").mkdir()
    app = create_app([root, tmp_path / "missing"], poll_seconds=0.1)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert "missing does not exist" in str(app.screen.query_one("#message").render())
    app = create_app([root], poll_seconds=0.1)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert "No ftdyn runs" in str(app.screen.query_one("#message").render())
        write_fake_run(root / "fresh", epochs=1)
        corrupt = root / "corrupt"
        corrupt.mkdir()
        (corrupt / "config.json").write_text("{ not json")
        deadline = time.monotonic() + 5
        while app.screen.query_one("#runs").row_count < 2 and time.monotonic() < deadline:
            await pilot.pause(0.05)
        rows = table_rows(app.screen, "#runs")
        assert [r[1] for r in rows] == ["corrupt", "fresh"] and "corrupt" in rows[0][2]
        assert "not a readable ftdyn run" in str(app.screen.query_one("#message").render())
        await pilot.press("enter")  # refuses to plot a corrupt run, with a notice, no traceback
        assert isinstance(app.screen, RunsScreen)


def test_smoothing_is_debiased():
    assert smooth([1.0, 1.0, 1.0], 0.9) == pytest.approx([1.0, 1.0, 1.0])
    assert smooth([0.0, 1.0], 0.0) == [0.0, 1.0]


def test_run_with_tui_trains_in_its_own_session(tmp_path, shapes_data):
    from conftest import TINY_RUN
    from engine.record import read_run
    from ftdyn_tui.cli import start_detached, wait_for_run

    out = tmp_path / "run"
    process = start_detached(["run", "--data", str(shapes_data), "--out", str(out), "--epochs", "1", *TINY_RUN], out)
    assert wait_for_run(out, process)
    import os

    assert os.getsid(process.pid) != os.getsid(0)  # the terminal's hang-up and Ctrl-C do not reach it
    process.wait(timeout=120)
    assert read_run(out).state == "finished"
    assert "finished" in (out / "train.log").read_text()


# ------------------------------------------------------------------------------------------------
# Snapshots (halfcell images pinned: textual-image would otherwise pick by terminal)


@pytest.fixture()
def snapshot_runs(tmp_path):
    root = tmp_path / "runs"
    write_fake_run(root / "alpha", epochs=5)
    write_fake_run(root / "beta", epochs=3, total=6, state="failed", model="vgg19")
    return root


def test_snapshot_runs_screen(snap_compare, snapshot_runs):
    assert snap_compare(create_app([snapshot_runs], images="halfcell"), terminal_size=SIZE)


def test_snapshot_dynamics_screen(snap_compare, snapshot_runs):
    assert snap_compare(create_app([snapshot_runs], images="halfcell"), press=["enter"], terminal_size=SIZE)


def test_snapshot_filter_screen(snap_compare, snapshot_runs):
    assert snap_compare(create_app([snapshot_runs], images="halfcell"), press=["f"] + ["down"] * 7,
                        terminal_size=SIZE)  # filter 3, which has images


@pytest.fixture()
def demo_like_runs(tmp_path):
    """Three runs of five layers, as the demo overlays them (task, similar, white)."""
    root = tmp_path / "demo"
    for name, epochs in (("similar", 5), ("task", 5), ("white", 5)):
        write_fake_run(root / name, epochs=epochs, layers=5)
    return root


@pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])
def test_snapshot_demo_overlay(snap_compare, demo_like_runs, size):
    assert snap_compare(create_app([demo_like_runs], images="halfcell"),
                        press=["space", "down", "space", "down", "space", "enter"], terminal_size=size)


@pytest.fixture()
def panel_runs(tmp_path, monkeypatch):
    """A run with intervals, a recorded host, events and a UMAP; the app's clock fixed (and UTC), so
    "sampled … ago" and the events' times read the same on every machine."""
    from types import SimpleNamespace

    import ftdyn_tui.host as model
    from engine.record import EVENTS, append_lines
    from engine.system import SYSTEM

    root = tmp_path / "runs"
    write_fake_run(root / "alpha", epochs=5, intervals=True)
    append_lines(root / "alpha" / SYSTEM, [fake_system_sample(1000.0 + 10 * i, 10.0 * i, 12.5 * i) for i in range(9)])
    append_lines(root / "alpha" / EVENTS, [{"at": 1000.0, "kind": "phase", "text": "scanning images"},
                                           {"at": 1012.0, "kind": "warning", "text": "skipped 2 unreadable files"},
                                           {"at": 1090.0, "kind": "epoch", "text": "epoch 1: held-out acc 0.61"}])
    write_fake_map(root / "alpha")
    monkeypatch.setattr(model, "time", SimpleNamespace(time=lambda: 1100.0, strftime=time.strftime,
                                                       localtime=time.gmtime))
    return root


PANEL_KEYS = {"heatmap": ["enter", "i", "h"], "system": ["s"], "log": ["l"], "umap": ["f", "u"]}


@pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])
@pytest.mark.parametrize("panel", list(PANEL_KEYS))
def test_snapshot_panels(snap_compare, panel_runs, panel, size):
    assert snap_compare(create_app([panel_runs], images="halfcell"), press=PANEL_KEYS[panel], terminal_size=size)


def redmean(a, b) -> float:
    """A perceptual colour difference for RGB (the 'redmean' approximation)."""
    r = (a[0] + b[0]) / 2
    dr, dg, db = (x - y for x, y in zip(a, b))
    return ((2 + r / 256) * dr * dr + 4 * dg * dg + (2 + (255 - r) / 256) * db * db) ** 0.5


def test_overlay_colours_follow_first_appearance_and_never_collide(tmp_path):
    from itertools import combinations

    from engine.colours import RUN_PALETTE, layer_colour
    from ftdyn_tui.series import overlay_styles
    from ftdyn_tui.workspace import Workspace

    root = tmp_path / "runs"
    for i in range(11):
        write_fake_run(root / f"run{i:02d}", epochs=1, layers=5, vis=False)
    workspace = Workspace([root])
    workspace.poll()
    runs = workspace.ordered()
    for overlay in (runs[:3], runs[:6]):  # the demo's three runs; six runs
        styles = overlay_styles(overlay, workspace.first_seen)
        colours = [layer_colour(styles[run.path][0], depth, 5) for run in overlay for depth in range(5)]
        assert min(redmean(a, b) for a, b in combinations(colours, 2)) >= 30
        assert len({marker for _, marker in styles.values()}) == len(overlay)
    assert overlay_styles([runs[3]], workspace.first_seen)[runs[3].path][0] == RUN_PALETTE[3]  # stable
    late = overlay_styles([runs[0], runs[10]], workspace.first_seen)  # 11 runs, 10 colours: no clash
    assert late[runs[0].path] != late[runs[10].path]


async def test_overlay_draws_every_series_in_its_own_colour(runs_dir):
    app = create_app([runs_dir])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("space", "down", "space", "down", "space", "enter")
        screen = app.screen
        assert isinstance(screen, DynamicsScreen) and len(screen.runs) == 3
        colours = [colour for _, colour, _ in screen.series_styles]
        assert len(colours) == len(set(colours)) == sum(len(r.layers) for r in screen.runs)
        assert len({marker for _, _, marker in screen.series_styles}) == 3


def positions_only(run_dir, channel_angle: bool) -> None:
    """Rewrite a fake run as one recorded with the default measures (no filter view): with the channel
    angle runs record now, or without it (a run from before)."""
    import json

    config = json.loads((run_dir / "config.json").read_text())
    config["measures"] = [m for m in config["measures"] if m["view"] == "positions"]
    (run_dir / "config.json").write_text(json.dumps(config))
    records = [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()]
    for record in records:
        for layer, views in record["layers"].items():
            moved = views.pop("filter")["per_filter"]["procrustes"]
            if channel_angle:
                views["positions"]["per_filter"] = {"channel-angle": moved}
    (run_dir / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


async def test_filters_are_ranked_with_the_default_measures_and_say_why_when_they_cannot(tmp_path):
    root = tmp_path / "runs"
    for name, angle in (("new", True), ("old", False)):
        write_fake_run(root / name, epochs=3)
        positions_only(root / name, channel_angle=angle)
    app = create_app([root])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("f")  # "new" is listed first
        screen = app.screen
        assert isinstance(screen, FilterScreen) and screen.tracked.name == "new"
        rows = table_rows(screen, "#filters")
        distances = [float(r[1]) for r in rows if r[1] != "—"]
        assert len(distances) == 11 and distances == sorted(distances, reverse=True)
        assert "channel-angle@positions" in str(screen.query_one("#filters").border_title)
        assert screen.ranking_note is None
        await pilot.press("escape", "down", "f")
        screen = app.screen
        assert screen.tracked.name == "old" and all(r[1] == "—" for r in table_rows(screen, "#filters"))
        assert "not ranked" in str(screen.query_one("#filters").border_title)
        assert "add procrustes@filter" in str(screen.query_one("#caption").render())


async def test_keys_that_cannot_act_say_why(tmp_path):
    root = tmp_path / "runs"
    write_fake_run(root / "one", epochs=3)
    positions_only(root / "one", channel_angle=True)  # one view, two metrics on it
    app = create_app([root])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("enter")
        screen = app.screen
        before = screen.measure
        await pilot.press("v")
        assert screen.measure == before and "positions view" in str(list(app._notifications)[-1].message)
        await pilot.press("m")
        assert screen.measure != before  # two metrics on this view: m acts
        await pilot.press("escape", "f")
        filters = app.screen
        filters.filter_index, filters.label_index, filters.epoch = 0, 0, 3
        filters.show_images()
        await pilot.press("right")
        assert filters.epoch == 3 and "last one drawn" in str(list(app._notifications)[-1].message)
        await pilot.press("k")  # no sample-based images in this run
        await pilot.press("left")
        assert "No images of this filter" in str(list(app._notifications)[-1].message)
        await pilot.press("c")
        assert "no sample-based image" in str(list(app._notifications)[-1].message)


def test_graphics_note_only_where_the_terminal_did_not_answer(monkeypatch):
    from textual_image import renderable

    from ftdyn_tui.widgets import graphics_note

    monkeypatch.setattr(renderable, "is_tty", True)
    monkeypatch.setattr(renderable, "Image", renderable.HalfcellImage)  # the terminal answered neither query
    monkeypatch.setenv("TMUX", "/tmp/tmux-0/default,1,0")
    note = graphics_note("sixel")
    assert "did not answer for sixel" in note and "allow-passthrough" in note and "--images halfcell" in note
    assert graphics_note("halfcell") is None
    monkeypatch.setattr(renderable, "Image", renderable.SixelImage)
    assert graphics_note("sixel") is None


def test_runs_show_elapsed_eta_and_speed(tmp_path):
    import json

    from run_factory import STARTED_AT
    from ftdyn_tui.workspace import TrackedRun, duration

    writer = write_fake_run(tmp_path / "live", epochs=2, total=8, state="running", vis=False)
    config = json.loads((tmp_path / "live" / "config.json").read_text())
    config["dataset"]["train_images"] = 250
    (tmp_path / "live" / "config.json").write_text(json.dumps(config))
    run = TrackedRun(tmp_path / "live")
    run.refresh()
    # each fake epoch took 1.0 s training + 0.1 s evaluation + 0.1 s analysis: 6 epochs left ≈ 7.2 s
    assert run.timing(at=STARTED_AT + 125) == ("2m05s", "~7s", "250 img/s")
    writer.update_status(state="finished", finished_at=STARTED_AT + 3 * 3600 + 60)
    run.refresh()
    assert run.timing(at=STARTED_AT + 10**6) == ("3h01m", "—", "250 img/s")  # an ended run: to its end
    assert [duration(s) for s in (0, 59.6, 61, 3600, 90000)] == ["0s", "1m00s", "1m01s", "1h00m", "1d01h"]


async def test_a_followed_run_that_ends_is_announced_with_the_bell(tmp_path):
    writer = write_fake_run(tmp_path / "runs" / "live", epochs=1, total=4, state="running", vis=False)
    app = create_app([tmp_path / "runs"], poll_seconds=0.1)
    rings = []
    async with app.run_test(size=SIZE) as pilot:
        app.bell = lambda: rings.append(1)
        await pilot.pause()
        writer.update_status(state="failed", message="loss became nan at epoch 2")
        for _ in range(50):
            await pilot.pause(0.05)
            if rings:
                break
        assert rings == [1]
        assert "live failed: loss became nan at epoch 2" in str(list(app._notifications)[-1].message)


async def test_curves_at_80_by_24_keep_title_ticks_and_key_and_read_values(runs_dir):
    from ftdyn_tui.render import integer_ticks

    assert integer_ticks(0, 5, 20) == [0, 1, 2, 3, 4, 5] and integer_ticks(0, 100, 6) == list(range(0, 101, 17))
    app = create_app([runs_dir])
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("space", "down", "space", "enter")
        screen = app.screen
        await pilot.press("l", "s")  # log y and smoothing: the title still names the measure
        title = screen.plot_title(screen.query_one("#distance").size.width)
        assert title.startswith("pwsm:0.5@positions")
        assert screen.x_ticks == [1, 2, 3, 4, 5]  # whole epochs, not 1.2 2.5 3.8 (log y: epoch 0 left out)
        key = str(screen.query_one("#legend").render())
        assert "alpha (braille)" in key and "beta (hd)" in key and "block3" in key
        await pilot.press("g")
        assert not screen.query_one("#legend").display
        await pilot.press("l", "s", "s", "2")  # hide the second row
        assert screen.hidden_rows == {"block1"} and len(screen.series) == 6
        await pilot.press("0", "right_square_bracket")  # the cursor at the first epoch drawn
        assert screen.cursor == 0.0 and "epoch 0:" in str(screen.query_one("#readout").render())
        await pilot.press("left_square_bracket", "right_square_bracket")  # no epoch before 0; then epoch 1
        readout = str(screen.query_one("#readout").render())
        assert screen.cursor == 1.0 and "alpha · block3" in readout
        label, xs, ys = next(s for s in screen.series if s[0] == "alpha · block3")
        assert f"alpha · block3 {ys[xs.index(1.0)]:.4g}" in readout
        assert screen.side_plot == "accuracy"
        await pilot.press("y")
        assert screen.side_plot == "loss"
        await pilot.press("y")
        assert screen.side_plot == "learning rate"


async def test_config_view_and_the_diff_of_two_marked_runs(runs_dir):
    from ftdyn_tui.screens.config import ConfigScreen
    from ftdyn_tui.workspace import config_diff, flatten_config

    app = create_app([runs_dir])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("c")
        assert isinstance(app.screen, ConfigScreen)
        settings = dict(table_rows(app.screen, "#config"))
        assert settings["model.name"] == "resnet18" and settings["dataset.classes"] == "disc, square, triangle"
        await pilot.press("escape", "space", "down", "space", "c")  # alpha and beta marked
        rows = {row[0]: row[1:] for row in table_rows(app.screen, "#config")}
        assert rows["model.name"] == ["resnet18", "vgg19"] and rows["run.epochs"] == ["5", "6"]
        assert "dataset.classes" not in rows  # shared settings are left out
        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen)
    assert config_diff({"a": {"b": 1}}, {"a": {"b": 1, "c": [1, 2]}}) == [("a.c", "—", "1, 2")]
    assert flatten_config({"x": [{"y": 1}], "z": []}) == {"x": '[{"y":1}]', "z": "[]"}


def test_pictures_on_16_colour_terminals_are_dithered_onto_those_colours():
    import numpy as np
    from PIL import Image

    from ftdyn_tui.filters import ANSI16, for_terminal

    ramp = np.tile(np.linspace(30, 220, 32)[None, :, None], (32, 1, 3)).astype(np.uint8)  # a grey ramp
    ramp[..., 0] = np.clip(ramp[..., 0].astype(int) + 20, 0, 255)  # slightly warm
    picture = Image.fromarray(ramp)
    assert for_terminal(picture, "truecolor") is picture and for_terminal(picture, "256") is picture
    shown = np.asarray(for_terminal(picture, "standard")).astype(float)
    assert {tuple(map(int, p)) for p in shown.reshape(-1, 3)} <= set(ANSI16)  # nothing left to snap
    nearest = np.asarray([min(ANSI16, key=lambda c: sum((a - b) ** 2 for a, b in zip(c, p)))
                          for p in ramp.reshape(-1, 3)], dtype=float).reshape(ramp.shape)
    blocks = lambda a: a.reshape(4, 8, 4, 8, 3).mean(axis=(1, 3))  # what the eye averages  # noqa: E731
    dithered_error = np.abs(blocks(shown) - blocks(ramp.astype(float))).mean()
    snapped_error = np.abs(blocks(nearest) - blocks(ramp.astype(float))).mean()
    assert dithered_error < snapped_error / 2  # shades survive as patterns, not as flat patches


def test_halfcell_pictures_keep_the_shape_and_put_two_pixels_in_a_cell():
    from PIL import Image
    from rich.console import Console

    from ftdyn_tui.picture import HalfcellPictureRenderable, cell_size

    assert cell_size((40, 40), 20, None) == (20, 10)  # square: half as many rows as columns
    assert cell_size((40, 40), 20, 5) == (10, 5)  # too high: the height decides
    assert cell_size((80, 20), 40, 30) == (40, 5)
    image = Image.new("RGB", (2, 4))
    colours = [[(255, 0, 0), (0, 255, 0)], [(0, 0, 255), (9, 9, 9)], [(1, 2, 3), (4, 5, 6)], [(7, 8, 9), (0, 0, 0)]]
    for y, row in enumerate(colours):
        for x, colour in enumerate(row):
            image.putpixel((x, y), colour)
    console = Console(width=2, color_system="truecolor")
    lines = console.render_lines(HalfcellPictureRenderable(image), console.options.update(width=2, height=2))
    cells = [[(segment.text, segment.style.color.triplet, segment.style.bgcolor.triplet) for segment in line]
             for line in lines]
    assert cells == [[("▀", colours[2 * r][c], colours[2 * r + 1][c]) for c in range(2)] for r in range(2)]


def test_a_long_path_breaks_after_separators_only():
    from ftdyn_tui.filters import path_lines

    path = "/home/me/runs/alpha/vis/layer4.1/f0003/class-001-e003.png"
    shown = path_lines(path, width=20)
    assert shown.replace("\n", "") == path and all(line.endswith("/") for line in shown.splitlines()[:-1])
    assert max(len(line) for line in shown.splitlines()) <= 20 and path_lines("/a") == "/a"


async def test_runs_that_cannot_be_opened_say_why(tmp_path):
    root = tmp_path / "runs"
    write_fake_run(root / "broken", epochs=1, vis=False)
    (root / "broken" / "config.json").write_text("[]")
    app = create_app([root])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        for key in ("f", "t"):
            await pilot.press(key)
            assert isinstance(app.screen, RunsScreen)
            assert "broken cannot be opened" in str(list(app._notifications)[-1].message)


async def test_interval_bands_and_readout_show_the_recorded_intervals(tmp_path):
    from run_factory import INTERVALS, fake_replicates

    write_fake_run(tmp_path / "honest", intervals=True, warnings=["layer block0, pwsm:0.01@pooled: near-full whitening"])
    write_fake_run(tmp_path / "older")  # recorded before intervals: nothing to draw, and it says so
    app = create_app([tmp_path])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("enter")  # the first run: honest
        screen = app.screen
        await pilot.pause()
        assert any("near-full whitening" in str(n.message) for n in app._notifications)  # its recorded warning
        assert not screen.bands and "intervals" not in screen.plot_title(200)
        plt = screen.query_one("#distance").plt
        drawn = len(plt._active.monitor.y)  # noqa: SLF001 (plotext keeps one entry per plotted line)
        await pilot.press("i")
        assert screen.bands and "90% jackknife intervals, G=5, plug-in" in screen.plot_title(200)  # a run from before
        assert len(plt._active.monitor.y) == 3 * drawn  # a low and a high edge for every curve
        await pilot.press("right_square_bracket", "right_square_bracket")  # epoch 1
        readout = str(screen.query_one("#readout").render())
        label, xs, ys = next(s for s in screen.series if s[0] == "block3")
        value = ys[xs.index(1.0)]
        reps = fake_replicates(value)
        mean = sum(reps) / len(reps)
        half = INTERVALS["t"] * (4 / 5 * sum((r - mean) ** 2 for r in reps)) ** 0.5
        assert f"block3 {value:.4g} [{value - half:.3g}, {value + half:.3g}]" in readout
        assert readout.startswith("epoch 1 ([90% jackknife intervals, G=5, plug-in]):")  # what the brackets are
        await pilot.press("e")  # the export carries the intervals too
        [exported] = (tmp_path / "honest").glob("export-*.csv")
        row = next(r for r in csv.DictReader(exported.open()) if r["row"] == "block3" and r["epoch"] == "1")
        assert float(row["low"]) == pytest.approx(value - half) and float(row["high"]) == pytest.approx(value + half)
        await pilot.press("s")  # smoothed curves and raw intervals do not belong together
        assert "intervals hidden while smoothing" in screen.plot_title(200)
        await pilot.press("escape", "down", "enter")
        await pilot.press("i")
        assert "no intervals recorded" in str(list(app._notifications)[-1].message)


def fake_system_sample(at: float, cpu: float, util: float) -> dict:
    return {"at": at, "host": "gpu-box", "cpu_percent": cpu, "cpus": 16,
            "memory": {"used": 40 * 2**30, "total": 128 * 2**30}, "disk": {"free": 12 * 2**30, "total": 64 * 2**30},
            "gpus": [{"index": 0, "name": "NVIDIA A100\x1b[31m", "utilisation": util, "memory_used": 30 * 2**30,
                      "memory_total": 80 * 2**30, "temperature": 64}], "notes": []}


async def test_system_and_log_panels_follow_the_highlighted_run(tmp_path):
    from engine.record import EVENTS, append_lines
    from engine.system import SYSTEM

    write_fake_run(tmp_path / "alpha")
    append_lines(tmp_path / "alpha" / SYSTEM, [fake_system_sample(1000.0 + 10 * i, 10.0 * i, 12.5 * i) for i in range(9)])
    append_lines(tmp_path / "alpha" / EVENTS, [{"at": 1000.0, "kind": "warning", "text": "skipped 2 files\x07"}])
    status = json.loads((tmp_path / "alpha" / "status.json").read_text())
    status.update(world_size=4, backend="nccl", hosts=["gpu-box", "gpu-box", "gpu-2\x1b[31m", "gpu-2\x1b[31m"],
                  pids=[1, 2, 3, 4])
    (tmp_path / "alpha" / "status.json").write_text(json.dumps(status))
    write_fake_run(tmp_path / "beta")  # recorded nothing of its host: said, not faked
    (tmp_path / "beta" / "train.log").write_text("epoch 1: held-out acc 0.5\repoch 1/3 ━━━ 50%\nlast words\n")
    app = create_app([tmp_path])
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        screen = app.screen
        panel = screen.query_one("#panel")
        assert not panel.display
        await pilot.press("s")
        text = str(panel.render())
        assert panel.display and "host gpu-box" in text and "CPU   80.0 % of 16" in text
        assert "4 processes (nccl) on 2 hosts: gpu-box ×2, gpu-2\\x1b[31m ×2" in text
        assert "GPU0 NVIDIA A100\\x1b[31m: 100 % busy, 30.0 / 80.0 GiB, 64 °C" in text  # escapes shown, not run
        assert "▁▂▃▄▅▆▇██" in text  # utilisation 0 → 100 % over the samples
        assert "RAM  40.0 / 128.0 GiB" in text and "disk 12.0 GiB free of 64.0" in text
        await pilot.press("down")
        assert "no system samples recorded" in str(panel.render())
        await pilot.press("l")
        text = str(panel.render())
        assert "beta · train.log" in text and "last words" in text and "epoch 1/3" in text
        await pilot.press("up")
        text = str(panel.render())
        assert "alpha · events.jsonl" in text and "warning: skipped 2 files\\x07" in text
        await pilot.press("l")
        assert not panel.display


async def test_heatmap_marks_layers_that_did_not_move_beyond_noise(tmp_path):
    from engine.record import append_lines
    from ftdyn_tui.render import unmoved_marks
    from ftdyn_tui.workspace import TrackedRun
    from run_factory import epoch_record

    write_fake_run(tmp_path / "honest", epochs=3, intervals=True)
    again = epoch_record(3, layer_names(4), 12, intervals=True)  # epoch 4 repeats epoch 3: nothing moved
    append_lines(tmp_path / "honest" / "records.jsonl", [dict(again, epoch=4, step=40)])
    honest, older = TrackedRun(tmp_path / "honest"), TrackedRun(tmp_path / "older")
    honest.refresh()
    marks = unmoved_marks(honest, "distance", "pwsm:0.5@positions")
    assert marks.shape == (4, 5) and marks[:, 4].all() and not marks[:, :4].any()
    write_fake_run(tmp_path / "older", epochs=3)
    older.refresh()
    assert unmoved_marks(older, "distance", "pwsm:0.5@positions") is None
    app = create_app([tmp_path / "honest"])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("enter", "i", "h")
        group = app.screen.query_one("#heatmap").content  # a Rich Group: one heatmap per run
        heat = "".join(str(block) for block in group.renderables)
        assert heat.count("≈") == 4 + 1 and "no change beyond noise since the epoch before" in heat
