"""The progress display of training commands (run, demo, sweep, post-hoc analyses)."""

from __future__ import annotations

from rich.text import Text

from engine.untrusted import MESSAGE_LIMIT, visible
from ftdyn_tui.cli.common import console


class TrainingProgress:
    """Rich progress bar fed by the engine's events: epoch, step, images/s and ETA."""

    def __init__(self):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=console, transient=False)
        self.task = None
        self.tasks: dict = {}

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def event(self, kind: str, **info) -> None:
        if kind == "phase":
            self.progress.console.print(Text(visible(info["name"], MESSAGE_LIMIT), style="dim"))
        elif kind == "warning":
            self.progress.console.print(Text.assemble(("warning:", "yellow"), " ", visible(info["text"], MESSAGE_LIMIT)))
        elif kind == "scan" and info["done"] == info["total"]:
            self.progress.console.print(f"[dim]checked {info['total']} files[/]")
        elif kind == "generate":
            key = ("generate", info["domain"])
            if key not in self.tasks:
                self.tasks[key] = self.progress.add_task(f"generating {info['domain']}", total=info["total"], info="")
            self.progress.update(self.tasks[key], completed=info["done"])
        elif kind == "progress":
            key = ("progress", info["task"])
            if key not in self.tasks:
                self.tasks[key] = self.progress.add_task(info["task"], total=info["total"], info="")
            self.progress.update(self.tasks[key], completed=info["done"], info=info.get("info", ""))
        elif kind == "sweep":
            verb = "resuming" if info["resume"] else "starting"
            self.progress.console.print(Text.assemble((f"sweep {info['index']}/{info['total']}", "bold"),
                                                      f": {verb} {visible(info['name'])}"))
        elif kind == "epoch":
            if self.task is not None:
                self.progress.remove_task(self.task)
            self.task = self.progress.add_task(f"epoch {info['epoch']}/{info['total']}", total=info["steps"], info="")
        elif kind == "step" and self.task is not None:
            self.progress.update(self.task, completed=info["step"],
                                 info=f"{info['images_per_s']:.0f} img/s  loss {info['loss']:.3f}")
        elif kind == "epoch_done":
            from engine.report import epoch_summary

            self.progress.console.print(epoch_summary(info["record"]))
