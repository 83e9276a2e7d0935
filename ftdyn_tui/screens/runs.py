"""The runs screen: every run found, live status, the highlighted run's host (s) and log (l) panels."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from engine.numbers import fmt_number
from engine.untrusted import visible
from ftdyn_tui.host import log_lines, processes_lines, system_lines
from ftdyn_tui.screens.config import ConfigScreen
from ftdyn_tui.screens.dynamics import DynamicsScreen
from ftdyn_tui.screens.filters import FilterScreen
from ftdyn_tui.screens.results import ResultsScreen
from ftdyn_tui.widgets import plain
from ftdyn_tui.workspace import TrackedRun

STATE_STYLE = {"running": "green", "finished": "bold", "failed": "red", "interrupted": "yellow",
               "stalled": "magenta", "suspended": "yellow", "corrupt": "red", "unknown": "dim"}


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
