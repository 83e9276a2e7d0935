"""The ftdyn terminal app: follow runs live, plot layer distances, open per-filter images.

Screens: runs (every run found, live status) → dynamics (per-layer distance curves of the
selected runs, accuracy, reusability and correlation tables) → filters (a layer's filters ranked
by how far they moved, with their images, source beside the chosen epoch). ``?`` shows the keys;
every action is also in the command palette (ctrl+p). Reading happens in a worker thread that
never overlaps itself; the screens only draw. No torch is imported here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np
from rich.text import Text
from textual import on
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Header, Input, OptionList, Static
from textual_plotext import PlotextPlot

from engine.colours import layer_colour
from engine.numbers import fmt_number
from engine.record import recorded_warnings, write_atomic
from engine.results import result_label, result_lines
from engine.untrusted import MESSAGE_LIMIT, visible
from ftdyn_tui.picture import HalfcellPicture

from ftdyn_tui.model import (
    CURVE_COLOURS,
    NO_RANKING,
    RUN_PALETTE,
    SMOOTHING_STEPS,
    TrackedRun,
    Workspace,
    accuracy_series,
    config_diff,
    flatten_config,
    for_terminal,
    correlation_rows,
    export_csv,
    export_path,
    filter_images,
    filter_rows,
    heatmap_text,
    image_display,
    integer_ticks,
    interval_caption,
    interval_series,
    learning_rate_series,
    legend_text,
    MAP_KEY_CLASSES,
    layer_maps,
    log_lines,
    load_picture,
    map_caption,
    map_class_order,
    map_epochs,
    map_limits,
    map_points,
    measure_rows,
    overlay_styles,
    part_series,
    path_lines,
    positive_only,
    processes_lines,
    reusability_rows,
    smooth,
    stepped,
    system_lines,
    transfer_result,
    unmoved_marks,
    value_at,
)

IMAGE_MODES = ("halfcell", "sixel", "kitty", "auto")
STATE_STYLE = {"running": "green", "finished": "bold", "failed": "red", "interrupted": "yellow",
               "stalled": "magenta", "suspended": "yellow", "corrupt": "red", "unknown": "dim"}


def plain(value: object, style: str = "") -> Text:
    """A string from a run directory as a widget's content: never markup, control characters visible."""
    return Text(visible(value), style=style)


def graphics_note(mode: str) -> str | None:
    """Why images may stay blank: the terminal did not answer textual-image's query for the protocol
    asked for (sixel or kitty) — tmux without passthrough, a terminal without it. None where it did."""
    from textual_image import renderable

    wanted = {"sixel": renderable.SixelImage, "kitty": renderable.TGPImage}.get(mode)
    if wanted is None or not renderable.is_tty or renderable.Image is wanted:
        return None
    tmux = " (inside tmux: `set -g allow-passthrough on`, then reattach)" if os.environ.get("TMUX") else ""
    return (f"this terminal did not answer for {mode} graphics{tmux}: images may stay blank; "
            f"--images halfcell works in any terminal")


def image_widget_class(mode: str):
    """The image widget for ``mode``: our half-block pictures, or textual-image's sixel and kitty
    widgets. textual-image asks the terminal about its graphics support when imported, so the CLI
    imports it before the app starts (see ``ftdyn tui``), and only for those modes."""
    if mode == "halfcell":
        return HalfcellPicture
    from textual_image import widget

    return {"sixel": widget.SixelImage, "kitty": widget.TGPImage, "auto": widget.Image}[mode]


def draw_map(plot: PlotextPlot, result: dict, epoch: int) -> None:
    """A UMAP result as two panels on the same axes: the source (what the map was fitted on) and
    ``epoch`` placed on it, one colour per class (a key where there are few enough classes)."""
    plt = plot.plt
    plt.clear_data()
    plt.clear_figure()
    plt.subplots(1, 2)
    (x_low, x_high), (y_low, y_high) = map_limits(result)
    classes = map_class_order(result)  # colours follow the run's classes, as in `ftdyn figures`
    for column, shown in ((1, 0), (2, epoch)):
        panel = plt.subplot(1, column)  # the figure's own methods would act on every panel
        by_class = map_points(result, shown)
        for name, (xs, ys) in sorted(by_class.items()):
            panel.scatter(xs, ys, marker="braille", color=RUN_PALETTE[classes.index(name) % len(RUN_PALETTE)],
                          label=name if len(classes) <= MAP_KEY_CLASSES and column == 2 else None)
        panel.xlim(x_low, x_high)
        panel.ylim(y_low, y_high)
        panel.title("source (epoch 0)" if shown == 0 else f"epoch {shown}")
    plot.refresh()


# ------------------------------------------------------------------------------------------------
# Runs


class RunsScreen(Screen):
    AUTO_FOCUS = "#runs"
    BINDINGS = [
        Binding("enter", "open_dynamics", "Curves"),
        Binding("space", "mark", "Mark for overlay"),
        Binding("f", "open_filters", "Filters"),
        Binding("t", "open_results", "Results"),
        Binding("c", "open_config", "Config/diff", show=False),
        Binding("s", "toggle_panel('system')", "System"),
        Binding("l", "toggle_panel('log')", "Log"),
        Binding("slash", "search", "Filter runs"),
        Binding("escape", "clear_search", "Clear filter", show=False),
    ]
    DEFAULT_CSS = """
    RunsScreen #panel { height: auto; max-height: 12; border-top: solid $primary-darken-2; padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="filter runs by name, model, data or status…", id="search")
        yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Static(id="message")
        yield Static(id="panel")
        yield Footer()

    def on_mount(self) -> None:
        self.marked: set[Path] = set()
        self.panel: str | None = None  # the highlighted run's training host (s) or log (l), under the table
        self.query_one("#search").display = False
        self.query_one("#panel").display = False
        table = self.query_one("#runs", DataTable)
        table.add_columns("", "run", "status", "model", "data", "strategy", "epoch", "best acc", "elapsed", "ETA",
                          "speed")
        self.refresh_runs()

    def on_screen_resume(self) -> None:
        self.refresh_runs()

    def visible_runs(self) -> list[TrackedRun]:
        text = self.query_one("#search", Input).value.strip().lower()
        runs = self.app.workspace.ordered()
        if text:
            runs = [r for r in runs if text in " ".join([r.name, r.model_name, r.dataset_name, r.state]).lower()]
        return runs

    def refresh_runs(self) -> None:
        table = self.query_one("#runs", DataTable)
        keep = table.cursor_row
        table.clear()
        runs = self.visible_runs()
        for run in runs:
            state = run.state
            shown = Text(state, STATE_STYLE.get(state, ""))
            if run.damaged:  # lines of its record were skipped: drawn all the same, marked
                shown.append(" damaged", "yellow")
            table.add_row("●" if run.path in self.marked else "", plain(run.name), shown,
                          plain(run.model_name), plain(run.dataset_name), plain(run.strategy), plain(run.progress),
                          fmt_number(run.best_accuracy), *run.timing(), key=str(run.path))
        if runs:
            table.move_cursor(row=min(keep, len(runs) - 1))
        self.query_one("#message", Static).update(self.message_text(runs))
        self.fill_panel()

    def action_toggle_panel(self, name: str) -> None:
        self.panel = None if self.panel == name else name
        self.fill_panel()

    def fill_panel(self) -> None:
        """The system or log panel for the highlighted run, as the run directory recorded it."""
        panel = self.query_one("#panel", Static)
        panel.display = self.panel is not None
        run = self.current_run()
        if self.panel is None:
            return
        if run is None:
            panel.update(Text("no run highlighted"))
            return
        width = max(40, (self.size.width or 80) - 4)
        if self.panel == "system":
            lines = [f"{run.name} · training host (s hides)", *processes_lines(run.status, width),
                     *system_lines(run.path, width)]
        else:
            source, shown = log_lines(run.path, count=10, width=width)
            lines = [f"{run.name} · {source} (l hides)", *(shown or ["nothing recorded yet"])]
        panel.update(Text("\n".join(visible(line, width) for line in lines)))

    def message_text(self, runs: list[TrackedRun]) -> Text:
        """The line under the table, as plain text (paths, problems and messages come from run directories)."""
        workspace = self.app.workspace
        missing = workspace.missing()
        if missing:
            return Text.assemble((f"{plain(', '.join(map(str, missing)))} does not exist", "red"),
                                 " — start a run with `ftdyn run … --out DIR`")
        if not workspace.runs:
            where = ", ".join(map(str, workspace.paths))
            return plain(f"No ftdyn runs under {where} yet — they appear here as soon as `ftdyn run --out …` starts one.")
        current = self.current_run()
        if current is not None and current.problem:
            return plain(current.problem, "red")
        if current is not None and current.damaged:
            more = f" (and {len(current.damage) - 1} more notes; enter shows them)" if len(current.damage) > 1 else ""
            return plain(f"{current.name} is damaged, shown without what could not be read: {current.damage[0]}{more}",
                         "yellow")
        if current is not None and current.status and current.status.get("message"):
            return plain(f"{current.name}: {current.status['message']}")
        return Text(f"{len(runs)} run(s) · space marks runs to overlay · enter opens curves · f opens filters")

    def current_run(self) -> TrackedRun | None:
        table = self.query_one("#runs", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self.app.workspace.runs.get(Path(key))

    def runs_changed(self) -> None:
        self.refresh_runs()

    @on(DataTable.RowHighlighted)
    def highlighted(self) -> None:
        self.query_one("#message", Static).update(self.message_text(self.visible_runs()))
        self.fill_panel()

    @on(DataTable.RowSelected)
    def selected(self) -> None:
        self.action_open_dynamics()

    @on(Input.Changed, "#search")
    def search_changed(self) -> None:
        self.refresh_runs()

    @on(Input.Submitted, "#search")
    def search_done(self) -> None:
        self.query_one("#runs").focus()

    def action_search(self) -> None:
        search = self.query_one("#search", Input)
        search.display = True
        search.focus()

    def action_clear_search(self) -> None:
        search = self.query_one("#search", Input)
        search.value = ""
        search.display = False
        self.query_one("#runs").focus()

    def action_mark(self) -> None:
        run = self.current_run()
        if run is not None:
            self.marked ^= {run.path}
            self.refresh_runs()

    def chosen_runs(self) -> list[TrackedRun]:
        marked = [run for run in self.app.workspace.ordered() if run.path in self.marked]
        current = self.current_run()
        return marked or ([current] if current is not None else [])

    def action_open_dynamics(self) -> None:
        runs = [run for run in self.chosen_runs() if run.config is not None and not run.problem
                and any(part["measures"] for part in run.parts)]
        if runs:
            self.app.push_screen(DynamicsScreen(runs))
        else:
            self.notify("Nothing to plot: the run has no readable record or records no measure.", severity="warning")

    def readable_run(self) -> TrackedRun | None:
        """The highlighted run where it can be opened; otherwise None, having said why."""
        run = self.current_run()
        if run is None:
            self.notify("No run here yet.", severity="warning")
        elif run.problem or run.config is None:
            self.notify(plain(f"{run.name} cannot be opened: {run.problem or 'no config.json yet'}"),
                        severity="warning", markup=False)
        else:
            return run
        return None

    def action_open_filters(self) -> None:
        run = self.readable_run()
        if run is not None:
            self.app.push_screen(FilterScreen(run))

    def action_open_results(self) -> None:
        run = self.readable_run()
        if run is not None:
            self.app.push_screen(ResultsScreen(run, list(self.app.workspace.runs.values())))

    def action_open_config(self) -> None:
        """The highlighted run's configuration, or — with two runs marked — what differs between them."""
        marked = [run for run in self.app.workspace.ordered() if run.path in self.marked]
        runs = marked if len(marked) == 2 else [self.current_run()] if self.current_run() else []
        if len(marked) > 2:
            self.notify("mark two runs to compare their configurations (or none to see one)", severity="warning")
        elif runs and all(run.config is not None for run in runs):
            self.app.push_screen(ConfigScreen(runs))
        else:
            self.notify("no readable config.json to show", severity="warning")


class ConfigScreen(ModalScreen):
    """One run's settings (config.json, flattened), or the settings in which two runs differ."""

    BINDINGS = [Binding("escape", "app.pop_screen", "Close"), Binding("c", "app.pop_screen", "Close")]
    DEFAULT_CSS = """
    ConfigScreen { align: center middle; }
    ConfigScreen > Vertical { width: 95%; height: 90%; border: round $accent; background: $surface; }
    ConfigScreen DataTable { height: 1fr; }
    """

    def __init__(self, runs: list[TrackedRun]):
        super().__init__()
        self.runs = runs

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(id="config-title")
            yield DataTable(id="config", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        table = self.query_one("#config", DataTable)
        title = self.query_one("#config-title", Static)
        if len(self.runs) == 2:
            rows = config_diff(self.runs[0].config, self.runs[1].config)
            table.add_columns("setting", *(plain(run.name) for run in self.runs))
            title.update(plain(f"{len(rows)} settings differ between {self.runs[0].name} and {self.runs[1].name} "
                               f"(escape closes)"))
        else:
            rows = list(flatten_config(self.runs[0].config).items())
            table.add_columns("setting", "value")
            title.update(plain(f"{self.runs[0].name}: config.json (escape closes)"))
        for row in rows:
            table.add_row(*(plain(cell) for cell in row))


# ------------------------------------------------------------------------------------------------
# Dynamics


class DynamicsScreen(Screen):
    BINDINGS = [
        Binding("a", "next_part", "Analysis"),
        Binding("m", "next_metric", "Metric"),
        Binding("v", "next_view", "View"),
        Binding("h", "toggle_heatmap", "Heatmap"),
        Binding("l", "toggle_log", "Log y"),
        Binding("s", "cycle_smoothing", "Smooth"),
        Binding("x", "toggle_x", "x: epoch/step"),
        Binding("e", "export", "Export CSV"),
        Binding("f", "open_filters", "Filters"),
        Binding("t", "open_results", "Results"),
        Binding("g", "toggle_legend", "Legend"),
        Binding("i", "toggle_bands", "Intervals"),
        Binding("y", "next_side_plot", "Acc/loss/lr"),
        Binding("left_square_bracket", "cursor(-1)", "Cursor −", show=False),
        Binding("right_square_bracket", "cursor(1)", "Cursor +", show=False),
        *[Binding(str(i), f"toggle_row({i})", f"Show/hide row {i}", show=False) for i in range(1, 10)],
        Binding("0", "show_all_rows", "Show all rows", show=False),
        Binding("escape", "app.pop_screen", "Back"),
    ]
    DEFAULT_CSS = """
    DynamicsScreen #main { width: 2fr; }
    DynamicsScreen #distance { height: 1fr; }
    DynamicsScreen #heatmap { height: 1fr; overflow: auto auto; }
    DynamicsScreen #legend { height: auto; max-height: 6; overflow-y: auto; text-wrap: nowrap; text-overflow: ellipsis; }
    DynamicsScreen #readout { height: auto; max-height: 4; }
    DynamicsScreen #side { width: 1fr; min-width: 30; }
    DynamicsScreen #accuracy { height: 12; }
    DynamicsScreen DataTable { height: auto; max-height: 12; }
    """
    SIDE_PLOTS = ("accuracy", "loss", "learning rate")

    def __init__(self, runs: list[TrackedRun]):
        super().__init__()
        self.runs = runs
        names = [p["name"] for p in runs[0].parts]
        self.part_names = [n for n in names if all(r.part(n) for r in runs)] or names[:1]
        self.part = "distance" if "distance" in self.part_names else self.part_names[0]
        self.choose_part(self.part)
        self.log_y = False
        self.smoothing = 0
        self.x_axis = "epoch"
        self.heatmap = False
        self.legend = True
        self.side_plot = "accuracy"
        self.hidden_rows: set[str] = set()  # rows (layers, modules) not drawn: keys 1-9, 0 shows all
        self.cursor: float | None = None  # the epoch (or step) the readout reports, set by [ and ]
        self.bands = False  # the recorded intervals drawn around each curve (i)

    def choose_part(self, name: str) -> None:
        """The analysis shown (`a`): its measures common to every run, the first of them in view."""
        self.part = name
        first = self.runs[0].part(name)
        measures = [m for m in first["measures"] if all(m in r.part(name)["measures"] for r in self.runs)]
        self.measures = measures or first["measures"]
        self.measure = self.measures[0] if self.measures else ""

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            with Vertical(id="main"):
                yield PlotextPlot(id="distance")
                yield Static(id="heatmap")
                yield Static(id="legend")
                yield Static(id="readout")
            with VerticalScroll(id="side"):
                yield PlotextPlot(id="accuracy")
                yield DataTable(id="reuse", cursor_type="none")
                yield DataTable(id="corr", cursor_type="none")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#reuse", DataTable).add_columns("run", "reusability")
        self.query_one("#corr", DataTable).add_columns("Pearson r", "mean ± std", "layers")
        self.query_one("#heatmap").display = False
        self.redraw()
        for run in self.runs:  # what a run warned about its own measures (PWSM at small α), as recorded,
            for text in [*recorded_warnings(run.config), *run.damage]:  # and the damaged lines it skipped
                self.notify(visible(f"{run.name}: {text}", 300), severity="warning", timeout=12, markup=False)

    def on_screen_resume(self) -> None:
        self.redraw()

    def runs_changed(self) -> None:
        self.redraw()

    def redraw(self) -> None:
        """The curves first; the side panel after that frame, so a new epoch shows at once."""
        self.draw_main()
        self.call_after_refresh(self.draw_side)

    def draw_main(self) -> None:
        heat = self.query_one("#heatmap", Static)
        plot = self.query_one("#distance")
        heat.display, plot.display = self.heatmap, not self.heatmap
        if self.heatmap:
            self.query_one("#legend").display = self.query_one("#readout").display = False
            self.draw_heatmap()
        else:
            self.draw_distances()

    def draw_heatmap(self) -> None:
        """Row × epoch, colour = value, one block per run (all on their own scale, stated under each)."""
        from rich.console import Group

        widget = self.query_one("#heatmap", Static)
        width = max(40, widget.size.width or self.size.width * 2 // 3)
        blocks = []
        for run in self.runs:
            declaration = run.part(self.part)
            epochs, matrix = run.matrix(self.measure, self.part)
            title = f"{run.name} · {self.part} · {self.measure}" if len(self.runs) > 1 else f"{self.part} · {self.measure}"
            # with intervals on (i): ≈ where a row did not move beyond noise since the epoch before
            marks = unmoved_marks(run, self.part, self.measure) if self.bands else None
            caption = interval_caption(run, self.part) if marks is not None else None
            blocks.append(heatmap_text(measure_rows(declaration, self.measure), [str(e) for e in epochs], matrix.T,
                                       width, title=title, unit=declaration.get("unit", ""), marks=marks,
                                       mark_note=f"no change beyond noise since the epoch before (paired, {caption})"))
        widget.update(Group(*blocks))

    def draw_side(self) -> None:
        self.draw_accuracy()
        self.fill_tables()

    def rows(self) -> list[str]:
        """Every row (layer, module) of the analysis in view over the runs, early → deep."""
        return list(dict.fromkeys(row for run in self.runs for row in measure_rows(run.part(self.part), self.measure)))

    def draw_distances(self) -> None:
        """One line per (run, layer), early → deep; x = epoch or step; safe log-y; smoothing. The key is
        drawn outside the plot (#legend), so no curve hides behind it, and the readout under it."""
        widget = self.query_one("#distance", PlotextPlot)
        plt = widget.plt
        plt.clear_data()
        plt.clear_figure()
        overlay = len(self.runs) > 1
        styles = overlay_styles(self.runs, self.app.workspace.first_seen)
        points, xs_all = 0, []
        self.series_styles, self.series, legend = [], [], []
        self.intervals: dict[str, dict[float, tuple[float, float]]] = {}
        for run in self.runs:
            base, marker = styles[run.path] if overlay else (None, "braille")
            rows = measure_rows(run.part(self.part), self.measure)
            shown = []
            for depth, row in enumerate(rows):
                if row in self.hidden_rows:
                    continue
                xs, ys = part_series(run, self.part, self.measure, row, self.x_axis)
                ys = smooth(ys, SMOOTHING_STEPS[self.smoothing])
                if self.log_y:
                    xs, ys = positive_only(xs, ys)
                colour = layer_colour(base, depth, len(rows))
                shown.append((row, colour))
                if xs:
                    label = visible(f"{run.name} · {row}" if overlay else row, 60)
                    plt.plot(xs, ys, color=colour, marker=marker)
                    self.series_styles.append((label, colour, marker))
                    self.series.append((label, xs, ys))
                    band = interval_series(run, self.part, self.measure, row) if self.x_axis == "epoch" else ([], [], [])
                    self.intervals[label] = {x: (low, high) for x, low, high in zip(*band)}
                    if self.bands and band[0] and not self.smoothing:
                        for edge in band[1:]:  # low and high edges, dotted, in the curve's colour
                            plt.plot(*(positive_only(band[0], edge) if self.log_y else (band[0], edge)),
                                     color=colour, marker="·")
                    points += len(xs)
                    xs_all += xs
            legend.append((run.name if overlay else None, marker, shown))
        plt.yscale("log" if self.log_y else "linear")
        self.x_ticks = None
        if xs_all and self.x_axis == "epoch":  # whole epochs only, as many as the width allows
            self.x_ticks = integer_ticks(min(xs_all), max(xs_all), max(2, (widget.size.width or 60) // 6))
            plt.xticks(self.x_ticks)
        if self.cursor is not None and xs_all:
            plt.vline(self.cursor, "white")
        declaration = self.runs[0].part(self.part) or {}
        plt.ylabel(visible(declaration.get("unit", ""), 40))
        plt.xlabel(self.x_axis)
        plt.title(self.plot_title(widget.size.width or 80))
        self.points_drawn = points
        widget.refresh()
        key = self.query_one("#legend", Static)
        key.display = self.legend
        room = key.size.width or max(40, self.size.width * 2 // 3 - 4)  # before the first layout: a safe guess
        key.update(legend_text(legend, room - 1))
        self.draw_readout()

    def plot_title(self, width: int) -> str:
        """What is plotted, first (never cut), then the options that change the picture, as width allows."""
        title = visible(self.measure if self.part == "distance" else f"{self.part} · {self.measure}", 60)
        caption = interval_caption(self.runs[0], self.part) if self.bands else None
        bands = "" if not self.bands else ("intervals: none recorded" if caption is None else
                                           "intervals hidden while smoothing" if self.smoothing else caption)
        options = [bands, "log y (0 not drawn)" if self.log_y else "", f"smoothing {SMOOTHING_STEPS[self.smoothing]}"
                   if self.smoothing else "", f"{len(self.hidden_rows)} hidden (0 shows)" if self.hidden_rows else ""]
        for option in filter(None, options):
            if len(title) + 3 + len(option) <= width - 4:
                title += " · " + option
        return title

    def draw_readout(self) -> None:
        """The values at the cursor ([ and ] move it): every drawn series, largest first."""
        readout = self.query_one("#readout", Static)
        readout.display = self.cursor is not None
        if self.cursor is None:
            return
        values = [(label, value_at(xs, ys, self.cursor)) for label, xs, ys in self.series]
        values = sorted(((label, v) for label, v in values if v is not None), key=lambda item: -item[1])
        where = f"{self.x_axis} {self.cursor:g}: "
        if any(self.cursor in points for points in self.intervals.values()):  # say what the brackets are
            where = f"{self.x_axis} {self.cursor:g} ([{interval_caption(self.runs[0], self.part)}]): "

        def shown(label: str, value: float) -> str:
            low_high = self.intervals.get(label, {}).get(self.cursor)
            return f"{label} {value:.4g}" + (f" [{low_high[0]:.3g}, {low_high[1]:.3g}]" if low_high else "")

        readout.update(plain(where + ("  ".join(shown(label, v) for label, v in values) or "no value")))

    def action_toggle_bands(self) -> None:
        self.bands = not self.bands
        caption = interval_caption(self.runs[0], self.part)
        if self.bands and caption is None:
            self.notify("no intervals recorded for this analysis (runs before intervals, or --intervals off)",
                        severity="warning")
        else:
            self.notify(f"interval bands {'on: ' + caption if self.bands else 'off'}", timeout=2)
        self.draw_main()

    def action_toggle_legend(self) -> None:
        self.legend = not self.legend
        self.draw_main()

    def action_toggle_row(self, number: int) -> None:
        rows = self.rows()
        if number > len(rows):
            self.notify(f"there are {len(rows)} rows; 1–{min(9, len(rows))} show or hide them")
            return
        self.hidden_rows ^= {rows[number - 1]}
        self.draw_main()

    def action_show_all_rows(self) -> None:
        self.hidden_rows = set()
        self.draw_main()

    def action_cursor(self, step: int) -> None:
        xs = sorted({x for _, series_xs, _ in getattr(self, "series", []) for x in series_xs})
        if not xs:
            self.notify("nothing drawn to read values from", severity="warning")
            return
        position = xs.index(self.cursor) + step if self.cursor in xs else (len(xs) - 1 if step < 0 else 0)
        self.cursor = xs[max(0, min(len(xs) - 1, position))]
        self.draw_main()

    def action_next_side_plot(self) -> None:
        self.side_plot = self.SIDE_PLOTS[(self.SIDE_PLOTS.index(self.side_plot) + 1) % len(self.SIDE_PLOTS)]
        self.draw_accuracy()

    def draw_accuracy(self) -> None:
        """The side plot (`y` cycles it): accuracy or loss, held-out (dark) and train (light), or the
        learning rate of each parameter group, per run in its overlay colour."""
        widget = self.query_one("#accuracy", PlotextPlot)
        plt = widget.plt
        plt.clear_data()
        plt.clear_figure()
        styles = overlay_styles(self.runs, self.app.workspace.first_seen)
        xs_all = []
        for run in self.runs:
            base, marker = styles[run.path] if len(self.runs) > 1 else (RUN_PALETTE[4], "braille")
            if self.side_plot == "learning rate":
                groups = learning_rate_series(run)
                curves = [(name, xs, ys, layer_colour(base, i, len(groups))) for i, (name, (xs, ys))
                          in enumerate(groups.items())]
            else:
                key = "accuracy" if self.side_plot == "accuracy" else "loss"
                curves = [("held-out" if split == "held_out" else "train", *accuracy_series(run, split, key),
                           layer_colour(base, depth, 2)) for split, depth in (("held_out", 1), ("train", 0))]
            for name, xs, ys, colour in curves:
                if xs:
                    label = visible(f"{run.name} {name}" if len(self.runs) > 1 else name, 40)
                    # one run: its two curves named; an overlay: run colours as in the key, dark held-out
                    plt.plot(xs, ys, label=label if len(self.runs) == 1 else None, color=colour, marker=marker)
                    xs_all += xs
        if xs_all:
            plt.xticks(integer_ticks(min(xs_all), max(xs_all), max(2, (widget.size.width or 30) // 6)))
        title = self.side_plot  # plotext drops a title wider than the plot: add only what fits
        for extra in ((" · dark: held-out",) if len(self.runs) > 1 and self.side_plot != "learning rate" else ()) \
                + (" (y: next)",):
            if len(title + extra) <= (widget.size.width or 30) - 6:
                title += extra
        plt.title(title)
        if self.side_plot == "accuracy":
            plt.ylim(0, 1)
        widget.refresh()

    def fill_tables(self) -> None:
        """Reusability and measure correlations are feature-distance summaries (paper Table 2)."""
        reuse = self.query_one("#reuse", DataTable)
        reuse.clear()
        corr = self.query_one("#corr", DataTable)
        corr.clear()
        reuse.display = corr.display = self.part == "distance"
        if self.part != "distance":
            return
        for row in reusability_rows(self.runs, self.measure):
            reuse.add_row(*map(plain, row))
        for row in correlation_rows(self.runs):  # a pair on two views takes two lines: nothing is cut
            corr.add_row(*(Text("\n").join(plain(line) for line in cell.split("\n")) for cell in row), height=None)

    def action_next_part(self) -> None:
        if len(self.part_names) < 2:
            self.notify("This run records one analysis (feature distance); newer runs add parameter drift.")
            return
        self.choose_part(self.part_names[(self.part_names.index(self.part) + 1) % len(self.part_names)])
        self.redraw()

    def action_toggle_heatmap(self) -> None:
        self.heatmap = not self.heatmap
        self.draw_main()

    def action_open_results(self) -> None:
        self.app.push_screen(ResultsScreen(self.runs[0], list(self.app.workspace.runs.values())))

    def action_next_metric(self) -> None:
        view = self.measure.rpartition("@")[2]
        same_view = [m for m in self.measures if m.endswith("@" + view)]
        if len(same_view) < 2:
            self.notify(plain(f"{self.measure} is the only metric recorded on the {view} view"
                              + ("; `v` changes the view" if len(self.views()) > 1 else "")), markup=False)
            return
        self.measure = same_view[(same_view.index(self.measure) + 1) % len(same_view)]
        self.redraw()

    def views(self) -> list[str]:
        return list(dict.fromkeys(m.rpartition("@")[2] for m in self.measures))

    def action_next_view(self) -> None:
        views = self.views()
        if len(views) < 2:
            self.notify(plain(f"every measure of {'these runs' if len(self.runs) > 1 else 'this run'} is on the "
                              f"{views[0] if views else '?'} view; runs record more with --metrics …@filter, @pooled"),
                        markup=False)
            return
        view = views[(views.index(self.measure.rpartition("@")[2]) + 1) % len(views)]
        self.measure = next(m for m in self.measures if m.endswith("@" + view))
        self.redraw()

    def action_toggle_log(self) -> None:
        self.log_y = not self.log_y
        self.draw_main()

    def action_cycle_smoothing(self) -> None:
        self.smoothing = (self.smoothing + 1) % len(SMOOTHING_STEPS)
        self.draw_main()

    def action_toggle_x(self) -> None:
        if self.x_axis == "epoch" and not any(r.get("kind") == "step" for run in self.runs for r in run.records):
            self.notify("these runs measured once per epoch only; runs with --every-steps N have a step axis "
                        "worth showing (the epoch records are drawn at their step)")
        self.x_axis = "step" if self.x_axis == "epoch" else "epoch"
        self.draw_main()

    def action_export(self) -> None:
        """The curves as CSV into the first run's folder; never through a link planted at its name."""
        target = export_path(self.runs[0], self.part, self.measure)
        try:
            write_atomic(target, export_csv(self.runs, self.measure, self.part).encode())
        except OSError as exc:
            self.notify(visible(f"cannot write {target}: {exc.strerror}"), severity="error", markup=False)
            return
        self.notify(visible(f"wrote {target}"), markup=False)

    def action_open_filters(self) -> None:
        self.app.push_screen(FilterScreen(self.runs[0]))


# ------------------------------------------------------------------------------------------------
# Filters


class FilterScreen(Screen):
    AUTO_FOCUS = "#filters"
    BINDINGS = [
        Binding("left", "epoch(-1)", "Epoch −"),
        Binding("right", "epoch(1)", "Epoch +"),
        Binding("c", "next_class", "Class"),
        Binding("k", "next_kind", "Class/sample"),
        Binding("p", "write_path", "Path"),
        Binding("u", "toggle_map", "UMAP"),
        Binding("escape", "app.pop_screen", "Back"),
    ]
    DEFAULT_CSS = """
    FilterScreen #map { height: 1fr; }
    FilterScreen #pickers { width: 36; }
    FilterScreen #layers { height: 9; }
    FilterScreen #images Horizontal { height: 1fr; }
    FilterScreen .picture { width: 1fr; height: auto; max-height: 100%; }
    FilterScreen #caption { height: auto; max-height: 6; }
    """

    def __init__(self, run: TrackedRun):
        super().__init__()
        self.tracked = run
        self.current_layer = run.layers[0] if run.layers else None
        self.filter_index: int | None = None
        self.kind = "class"
        self.label_index = 0
        self.epoch: int | None = None
        self.ranking_note: str | None = None
        self.map_shown = False  # `u`: the layer's UMAP instead of the filter's images
        self.maps: list[dict] = []  # the current layer's UMAPs, newest first
        self.map_epoch: int | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            with Vertical(id="pickers"):
                yield OptionList(*[plain(layer) for layer in self.tracked.layers], id="layers")
                yield DataTable(id="filters", cursor_type="row")
            with Vertical(id="images"):
                yield Static(id="caption")
                with Horizontal():
                    image_class = image_widget_class(self.app.images)
                    yield image_class(id="source", classes="picture")
                    yield image_class(id="current", classes="picture")
                yield PlotextPlot(id="map")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#map").display = False
        self.query_one("#filters", DataTable).add_columns("filter", "distance", "chosen", "img")
        self.fill_filters()
        note = graphics_note(self.app.images)
        if note:
            self.notify(note, severity="warning", timeout=12)

    def runs_changed(self) -> None:
        self.fill_filters(keep=True)

    @on(OptionList.OptionHighlighted, "#layers")
    def layer_chosen(self, event: OptionList.OptionHighlighted) -> None:
        self.current_layer = self.tracked.layers[event.option_index]
        self.fill_filters()

    def action_toggle_map(self) -> None:
        if not self.map_shown and not self.maps:
            self.notify(f"No UMAP of {visible(self.current_layer, 60)} yet: `ftdyn umap {visible(self.tracked.path, 80)} "
                        f"--layer {visible(self.current_layer, 60)}` computes it from the run's checkpoints.",
                        severity="warning", markup=False, timeout=10)
            return
        self.map_shown = not self.map_shown
        self.query_one("#map").display = self.map_shown
        self.query_one("#images Horizontal").display = not self.map_shown
        self.show_images()

    def show_map(self) -> None:
        """The current layer's newest UMAP: source beside the chosen epoch (the last by default)."""
        caption = self.query_one("#caption", Static)
        if not self.maps:
            self.query_one("#map").display = False
            caption.update(plain(f"No UMAP of {self.current_layer} yet: `ftdyn umap RUN --layer "
                                 f"{self.current_layer}` computes it from the run's checkpoints."))
            return
        result = self.maps[0]
        try:
            epochs = map_epochs(result)
            if self.map_epoch not in epochs:
                self.map_epoch = epochs[-1]
            self.query_one("#map").display = True
            draw_map(self.query_one("#map", PlotextPlot), result, self.map_epoch)
            lines = [map_caption(result, self.map_epoch),
                     f"left: source (epoch 0)   right: epoch {self.map_epoch}  [{epochs[0]}…{epochs[-1]}]  "
                     f"← → epoch, u images"]
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            self.query_one("#map").display = False
            lines = [f"{result.get('file', 'the map')} cannot be drawn ({type(exc).__name__})"]
        caption.update(Text("\n").join(plain(line) for line in lines))

    def fill_filters(self, keep: bool = False) -> None:
        table = self.query_one("#filters", DataTable)
        cursor = table.cursor_row
        table.clear()
        rows, dead, measure = filter_rows(self.tracked, self.current_layer) if self.current_layer else ([], None, None)
        # read here, when the layer or the run changed, not on every key
        self.maps = layer_maps(self.tracked.results, self.current_layer) if self.current_layer else []
        for row in rows:
            table.add_row(str(row.index), fmt_number(row.distance), plain(row.chosen_by or ""), str(row.images),
                          key=str(row.index))
        table.border_title = plain(f"{self.current_layer} · {measure or 'not ranked'} · "
                                   f"dead {dead if dead is not None else '?'}")
        table.border_subtitle = None if measure else plain("no per-filter measure: see the caption")
        self.ranking_note = None if measure else NO_RANKING
        if rows:
            table.move_cursor(row=min(cursor, len(rows) - 1) if keep else 0)
            self.filter_index = int(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        else:
            self.filter_index = None
        self.show_images()

    @on(DataTable.RowHighlighted, "#filters")
    def filter_chosen(self, event: DataTable.RowHighlighted) -> None:
        self.filter_index = int(event.row_key.value)
        self.show_images()

    def shown(self) -> tuple[dict[int, Path], str | None]:
        """{epoch: path} of the image in view (kind, class or sample cycled by `c`) and its label."""
        images = self.images_of_kind()
        if not images:
            return {}, None
        label = sorted(images)[self.label_index % len(images)]
        return images[label], label

    def show_images(self) -> None:
        if self.map_shown:
            self.show_map()
            return
        by_epoch, label = self.shown()
        caption = self.query_one("#caption", Static)
        source, current = self.query_one("#source"), self.query_one("#current")
        if not by_epoch:
            source.image = current.image = None
            self.shown_paths = {"source": None, "current": None}
            caption.update(self.caption_text([
                "No images for this filter. Runs draw them with --vis (the default); `ftdyn vis RUN --layer "
                f"{self.current_layer} --filter {self.filter_index}` draws any filter from saved checkpoints."]))
            return
        epochs = sorted(by_epoch)
        if self.epoch not in epochs:
            self.epoch = epochs[-1]
        self.shown_paths = {"source": by_epoch[epochs[0]] if epochs[0] == 0 else None, "current": by_epoch[self.epoch]}
        pictures = [load_picture(path) if path else (None, None) for path in self.shown_paths.values()]
        colours = self.app.console.color_system
        source.image, current.image = (picture and for_terminal(picture, colours) for picture, _ in pictures)
        problems = [problem for _, problem in pictures if problem]
        display = image_display(self.tracked, self.current_layer, self.filter_index, self.kind)
        lines = [f"filter {self.filter_index} · {self.kind}-based · {label}" + (f" · {display}" if display else ""),
                 f"left: source (epoch 0)   right: epoch {self.epoch}  [{epochs[0]}…{epochs[-1]}]"] + problems[:1]
        caption.update(self.caption_text(lines))

    def caption_text(self, lines: list[str]) -> Text:
        """The caption's lines as plain text, after why the filters are not ranked where they are not."""
        return Text("\n").join(plain(line) for line in ([self.ranking_note] if self.ranking_note else []) + lines)

    def action_epoch(self, step: int) -> None:
        if self.map_shown:
            self.step_map(step)
            return
        by_epoch, _ = self.shown()
        if not by_epoch:
            self.notify("No images of this filter to step through.", severity="warning")
            return
        epochs = sorted(by_epoch)
        position = epochs.index(self.epoch) if self.epoch in epochs else len(epochs) - 1
        target = max(0, min(len(epochs) - 1, position + step))
        if target == position:
            self.notify(f"epoch {self.epoch} is the {'first' if step < 0 else 'last'} one drawn "
                        f"(drawn: {', '.join(map(str, epochs))})")
            return
        self.epoch = epochs[target]
        self.show_images()

    def step_map(self, step: int) -> None:
        self.map_epoch = stepped(map_epochs(self.maps[0]) if self.maps else [], self.map_epoch, step)
        self.show_map()

    def action_next_class(self) -> None:
        labels = self.images_of_kind()
        if len(labels) < 2:
            self.notify(f"this filter has {'one' if labels else 'no'} {self.kind}-based image; "
                        f"`k` switches between class- and sample-based")
            return
        self.label_index += 1
        self.show_images()

    def images_of_kind(self) -> dict[str, dict[int, Path]]:
        """label → {epoch: path} of the filter's images of the kind in view (one pass over the index)."""
        if self.filter_index is None or self.current_layer is None:
            return {}
        found = filter_images(self.tracked, self.current_layer, self.filter_index)
        return {label: by_epoch for (kind, label), by_epoch in found.items() if kind == self.kind}

    def action_next_kind(self) -> None:
        self.kind = "sample" if self.kind == "class" else "class"
        self.label_index = 0
        self.show_images()

    def action_write_path(self) -> None:
        by_epoch, _ = self.shown()
        if not by_epoch:
            self.notify("No image shown.", severity="warning")
            return
        path = str(by_epoch[self.epoch].resolve())
        shown = visible(path, MESSAGE_LIMIT)
        self.app.copy_to_clipboard(shown)  # OSC 52: reaches the local clipboard over SSH where the terminal allows
        self.notify(f"{path_lines(shown)}\n(copied to the clipboard where the terminal allows; scp it off the box)",
                    markup=False)
        self.last_written_path = path


# ------------------------------------------------------------------------------------------------
# Post-hoc results


class ResultsScreen(Screen):
    """A run's post-hoc analyses (`ftdyn transfer …`, `ftdyn umap`), each drawn from its declared display:
    a curve (loss barrier: loss and error over λ), a matrix (criticality: module × α heatmap) or a
    scatter (UMAP: source beside an epoch, ← → choose the epoch)."""

    AUTO_FOCUS = "#results"
    BINDINGS = [Binding("left", "map_epoch(-1)", "Epoch −"), Binding("right", "map_epoch(1)", "Epoch +"),
                Binding("escape", "app.pop_screen", "Back")]
    DEFAULT_CSS = """
    ResultsScreen #results { width: 40; }
    ResultsScreen #result-plot { height: 1fr; }
    ResultsScreen #result-matrix { height: auto; }
    ResultsScreen #result-text { height: auto; max-height: 14; }
    """

    def __init__(self, run: TrackedRun, peers: list[TrackedRun] = ()):
        super().__init__()
        self.tracked = run
        # peers are other runs: one whose settings the curve cannot use leaves the curve out, not the screen
        try:
            transfer = transfer_result(run, [p for p in peers if not p.problem])
        except (KeyError, TypeError, ValueError, AttributeError, IndexError):
            transfer = None
        self.results = run.results + ([transfer] if transfer else [])
        self.current = 0
        self.map_epoch: int | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            yield OptionList(*[Text(result_label(r)) for r in self.results], id="results")
            with Vertical():
                yield PlotextPlot(id="result-plot")
                yield Static(id="result-matrix")
                yield Static(id="result-text")
        yield Footer()

    def on_mount(self) -> None:
        if not self.results:
            self.query_one("#result-plot").display = self.query_one("#result-matrix").display = False
            self.query_one("#result-text", Static).update(plain(
                f"No post-hoc analyses in {self.tracked.path} yet. `ftdyn transfer barrier RUN [RUN2]`, "
                f"`ftdyn transfer criticality RUN`, `ftdyn umap RUN --layer L` and `ftdyn invariance RUN` write them "
                f"into RUN/analyses/."))
            return
        self.show(0)

    @on(OptionList.OptionHighlighted, "#results")
    def chosen(self, event: OptionList.OptionHighlighted) -> None:
        self.show(event.option_index)

    def action_map_epoch(self, step: int) -> None:
        result = self.results[self.current] if self.results else {}
        if result.get("display") != "scatter":
            return
        self.map_epoch = stepped(map_epochs(result), self.map_epoch, step)
        self.show(self.current)

    def show(self, index: int) -> None:
        """One result drawn; a result file the drawing cannot use is named with its reason instead."""
        if index != self.current:
            self.current, self.map_epoch = index, None
        try:
            self.draw_result(self.results[index])
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            self.query_one("#result-plot").display = self.query_one("#result-matrix").display = False
            self.query_one("#result-text", Static).update(
                plain(f"{self.results[index].get('file', 'this result')} cannot be drawn ({type(exc).__name__}: {exc})"))

    def draw_result(self, result: dict) -> None:
        plot, matrix = self.query_one("#result-plot", PlotextPlot), self.query_one("#result-matrix", Static)
        plot.display = result.get("display") in ("curve", "scatter")
        matrix.display = result.get("display") == "matrix"
        if result.get("display") == "scatter":
            epochs = map_epochs(result)
            if self.map_epoch not in epochs:
                self.map_epoch = epochs[-1]
            draw_map(plot, result, self.map_epoch)
        if result.get("display") == "curve":
            plt = plot.plt
            plt.clear_data()
            plt.clear_figure()
            xs = result.get("x", [])
            for (name, ys), colour in zip((result.get("series") or {}).items(), CURVE_COLOURS):
                points = [(x, y) for x, y in zip(xs, ys) if isinstance(y, (int, float))]
                if points:
                    plt.plot([p[0] for p in points], [p[1] for p in points], label=visible(name.replace("_", " "), 40),
                             color=colour, marker="braille")
            plt.title(visible(result.get("title", ""), 120))
            plt.xlabel(visible(result.get("x_label", ""), 40))
            plot.refresh()
        if matrix.display:
            columns = [f"{c:.2g}" if isinstance(c, float) else str(c) for c in result.get("columns", [])]
            matrix.update(heatmap_text([str(r) for r in result.get("rows", [])], columns,
                                       np.array(result.get("values") or [[]], dtype=np.float64),
                                       max(40, self.size.width - 44), title=str(result.get("title", "")),
                                       unit=str(result.get("value_label", ""))))
        self.query_one("#result-text", Static).update(Text("\n".join(visible(line) for line in result_lines(result))))


# ------------------------------------------------------------------------------------------------
# Help and the app


HELP = """\
# ftdyn — keys

| where | key | action |
|---|---|---|
| everywhere | `?` | this help |
| | `ctrl+p` | command palette (every action) |
| | `q` | quit (a run started with `--tui` keeps training) |
| runs | `enter` | curves of the marked runs (or the highlighted one) |
| | `c` | the highlighted run's settings; with two runs marked, the settings in which they differ |
| | `space` | mark a run for overlay |
| | `f` | filters of the highlighted run |
| | `/` | filter the list; `escape` clears |
| | `t` | post-hoc analyses of the highlighted run (loss barrier, criticality, UMAPs; accuracy against block size where runs vary the shuffle) |
| curves | `a` | next analysis (feature distance, parameter drift, …) |
| | `m` / `v` | next metric / next view (drift: relative or absolute / block groups or hooked layers) |
| | `h` | heatmap: rows × epochs, colour = value |
| | `l` | log y (the exact zeros of epoch 0 are left out) |
| | `s` | smoothing 0 → 0.6 → 0.9 |
| | `x` | x axis: epoch or optimiser step |
| | `e` | export the curves as CSV into the run directory |
| | `g` | show or hide the key (under the plot) |
| | `1`…`9` / `0` | hide or show the n-th layer (row) / show all |
| | `[` `]` | move the cursor along the epochs: every curve's value there, under the plot |
| | `y` | side plot: accuracy → loss → learning rate |
| | `f` | filters of the first run |
| | `t` | post-hoc analyses of the first run |
| transfer | `↑` `↓` | choose a result: a barrier's curves, criticality's module × α heatmap or a UMAP |
| | `←` `→` | a UMAP's epoch (source on the left) |
| filters | `←` `→` | epoch (of the images, or of the map) |
| | `c` | next class (or sample image) |
| | `k` | class-based / sample-based |
| | `p` | show the image's path (and copy it) |
| | `u` | the layer's UMAP (`ftdyn umap`): source beside an epoch, instead of the images |
| | `escape` | back |

Runs are re-read every half second; a run whose heartbeat stopped shows as *stalled*.
"""


class HelpScreen(ModalScreen):
    BINDINGS = [Binding("escape", "app.pop_screen", "Close"), Binding("question_mark", "app.pop_screen", "Close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 80; max-width: 100%; height: 90%; border: round $accent; background: $surface; }
    """

    def compose(self) -> ComposeResult:
        from textual.widgets import Markdown  # pulls in pygments: only when help is asked for

        with VerticalScroll():
            yield Markdown(HELP)


class FtdynApp(App):
    TITLE = "ftdyn"
    SUB_TITLE = "feature dynamics during fine-tuning"
    BINDINGS = [Binding("q", "quit", "Quit"), Binding("question_mark", "help", "Help")]

    def __init__(self, paths: list[Path], images: str = "halfcell", poll_seconds: float = 0.5):
        super().__init__()
        if images not in IMAGE_MODES:
            raise ValueError(f"--images must be one of {', '.join(IMAGE_MODES)}")
        self.workspace = Workspace(paths)
        self.images = images
        self.poll_seconds = poll_seconds
        self.polling = False
        self.polls = 0

    def on_mount(self) -> None:
        self.workspace.poll()  # the first frame already shows what is on disk
        self.push_screen(RunsScreen())
        self.set_interval(self.poll_seconds, self.schedule_poll)

    def schedule_poll(self) -> None:
        """Start a background read unless the previous one is still going (slow NFS)."""
        if self.polling:
            return
        self.polling = True
        self.run_worker(self.poll_in_thread, thread=True, group="poll", exit_on_error=False)

    def poll_in_thread(self) -> None:
        try:
            changed = self.workspace.poll()
            error = None
        except OSError as exc:  # a vanished or unreadable directory: say so, keep going
            changed, error = set(), f"cannot read runs: {exc}"
        self.call_from_thread(self.poll_done, changed, error)

    def poll_done(self, changed: set[Path], error: str | None) -> None:
        self.polling = False
        self.polls += 1
        if error:
            self.notify(visible(error, MESSAGE_LIMIT), severity="error", markup=False)
        while self.workspace.ended:  # a followed run finished, failed or stopped: say so, with the bell
            run, state = self.workspace.ended.pop(0)
            message = (run.status or {}).get("message") or ""
            self.notify(visible(f"{run.name} {state}" + (f": {message}" if message else ""), MESSAGE_LIMIT),
                        severity="error" if state in ("failed", "stalled") else "information", markup=False)
            self.bell()
        if changed and hasattr(self.screen, "runs_changed"):
            self.screen.runs_changed()

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Help", "Show the keys", self.action_help)
        for binding in getattr(screen, "BINDINGS", []):
            if binding.action.startswith("app.") or binding.key in ("left", "right"):
                continue
            action = binding.action
            yield SystemCommand(binding.description, f"{type(screen).__name__.removesuffix('Screen')}: {binding.key}",
                                lambda action=action: self.run_action(action, screen))
        if isinstance(screen, FilterScreen):
            yield SystemCommand("Previous epoch", "Filters: ←", lambda: screen.action_epoch(-1))
            yield SystemCommand("Next epoch", "Filters: →", lambda: screen.action_epoch(1))


def create_app(paths: list[Path | str], images: str = "halfcell", poll_seconds: float = 0.5) -> FtdynApp:
    """The app factory the command and the tests share."""
    return FtdynApp([Path(p) for p in paths], images=images, poll_seconds=poll_seconds)
