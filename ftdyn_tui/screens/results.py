"""The results screen: a run's post-hoc analyses, each drawn from its declared display."""

from __future__ import annotations

import numpy as np
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, OptionList, Static
from textual_plotext import PlotextPlot

from engine.results import result_label, result_lines
from engine.untrusted import visible
from ftdyn_tui.maps import map_epochs, stepped
from ftdyn_tui.render import CURVE_COLOURS, heatmap_text
from ftdyn_tui.transfer import transfer_result
from ftdyn_tui.widgets import draw_map, plain
from ftdyn_tui.workspace import TrackedRun


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
