"""A grid of runs, one after another on one GPU or CPU: models × datasets × strategies.

Each cell is an ordinary run directory, DIR/<model>-<data>-<strategy>. Running the sweep again
skips finished cells and resumes the others from their last complete epoch (a killed or
interrupted sweep loses at most the epoch in progress), so the same command finishes the grid.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from engine.record import CONFIG, read_run
from engine.training import RunConfig, run_training


def cell_name(model: str, data: str, strategy: str) -> str:
    return f"{model}-{Path(data).resolve().name}-{strategy}"


def plan_sweep(template: RunConfig, models: list[str], datasets: list[str], strategies: list[str],
               out: Path) -> list[RunConfig]:
    return [dataclasses.replace(template, model=model, data=str(data), strategy=strategy,
                                train_blocks=template.train_blocks if strategy == "surgical" else [],
                                out=str(out / cell_name(model, data, strategy)))
            for model in models for data in datasets for strategy in strategies]


def run_sweep(cells: list[RunConfig], on_event: Callable = lambda kind, **info: None) -> list[tuple[str, str]]:
    """Run every cell that is not finished; returns (cell, what happened) per cell."""
    outcome = []
    for index, cell in enumerate(cells, 1):
        path = Path(cell.out)
        exists = (path / CONFIG).exists()
        if exists and read_run(path).state == "finished":
            outcome.append((path.name, "already finished"))
            continue
        on_event("sweep", index=index, total=len(cells), name=path.name, resume=exists)
        run_training(cell, resume=exists, on_event=on_event)
        outcome.append((path.name, "resumed and finished" if exists else "finished"))
    return outcome
