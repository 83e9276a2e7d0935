"""The ftdyn terminal app: follow runs live, plot layer distances, open per-filter images.

Screens: runs (every run found, live status) → dynamics (per-layer distance curves of the
selected runs, accuracy, reusability and correlation tables) → filters (a layer's filters ranked
by how far they moved, with their images, source beside the chosen epoch). ``?`` shows the keys;
every action is also in the command palette (ctrl+p). Reading happens in a worker thread that
never overlaps itself; the screens only draw. No torch is imported here.

This module holds the app and :func:`create_app`; each screen is a module of ``ftdyn_tui/screens/``, and
what the screens show is computed in modules without Textual (workspace, series, filters, maps, render,
host, transfer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from engine.untrusted import MESSAGE_LIMIT, visible
from ftdyn_tui.screens.filters import FilterScreen
from ftdyn_tui.screens.help import HelpScreen
from ftdyn_tui.screens.runs import RunsScreen
from ftdyn_tui.widgets import IMAGE_MODES
from ftdyn_tui.workspace import Workspace


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
