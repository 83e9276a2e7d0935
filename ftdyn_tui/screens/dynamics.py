"""The curves screen: per-row (layer, module) values of the selected runs over epochs or steps, or as a
heatmap; accuracy, loss or learning rate beside them, with the reusability and correlation tables."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static
from textual_plotext import PlotextPlot

from engine.analyses import measure_rows
from engine.colours import RUN_PALETTE, layer_colour
from engine.record import recorded_warnings, write_atomic
from engine.untrusted import visible
from ftdyn_tui.render import heatmap_text, integer_ticks, legend_text, unmoved_marks
from ftdyn_tui.screens.filters import FilterScreen
from ftdyn_tui.screens.results import ResultsScreen
from ftdyn_tui.series import (
    SMOOTHING_STEPS,
    accuracy_series,
    correlation_rows,
    export_csv,
    export_path,
    interval_caption,
    interval_series,
    learning_rate_series,
    overlay_styles,
    positive_only,
    reusability_rows,
    smooth,
    value_at,
)
from ftdyn_tui.widgets import plain
from ftdyn_tui.workspace import TrackedRun, part_series


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
