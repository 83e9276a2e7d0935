"""The config screen: one run's settings, or the settings in which two marked runs differ."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from ftdyn_tui.widgets import plain
from ftdyn_tui.workspace import TrackedRun, config_diff, flatten_config


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
