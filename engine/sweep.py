"""A grid of runs, one after another on one GPU or CPU: models × datasets × strategies, and for the
transfer experiment (ANALYSES.md §4) × block shuffles × initialisations (weights, `none` = random)
× seeds.

Each cell is an ordinary run directory, DIR/<model>-<data>-<strategy>[-b<B>][-<init>][-s<seed>]
(the suffixes only where the grid varies them). Running the sweep again skips finished cells and
resumes the others from their last complete epoch (a killed or interrupted sweep loses at most the
epoch in progress), so the same command finishes the grid. Where a cell has two or more seeds,
the loss barrier between the first two (``ftdyn transfer barrier``) is computed once the grid is
done and kept in the first one's run directory: the same-basin question, per block size and
initialisation, in one report.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from engine.record import CONFIG, read_run
from engine.report import INITS, init_label
from engine.run_config import RunConfig
from engine.training import run_training


def cell_name(model: str, data: str, strategy: str, shuffle: str | None = None, weights: str | None = None,
              seed: int | None = None) -> str:
    name = f"{model}-{Path(data).resolve().name}-{strategy}"
    if shuffle is not None:
        name += f"-b{shuffle}"
    if weights is not None:
        name += "-" + INITS[init_label(weights)]
    if seed is not None:
        name += f"-s{seed}"
    return name


def plan_sweep(template: RunConfig, models: list[str], datasets: list[str], strategies: list[str],
               out: Path, shuffles: list[str | None] = (None,), weights: list[str] | None = None,
               seeds: list[int] | None = None) -> list[RunConfig]:
    """Every cell of the grid. ``shuffles`` holds block sizes, 'pixel' or None (no shuffle);
    ``weights`` several initialisations, ``seeds`` several training seeds."""
    weights_grid = weights or [template.weights]
    seeds_grid = seeds or [template.seed]

    def name(model, data, strategy, shuffle, init, seed) -> str:
        shown = shuffle if shuffle is not None else ("none" if len(shuffles) > 1 else None)
        return cell_name(model, data, strategy, shown, init if len(weights_grid) > 1 else None,
                         seed if len(seeds_grid) > 1 else None)

    return [dataclasses.replace(template, model=model, data=str(data), strategy=strategy,
                                train_blocks=template.train_blocks if strategy == "surgical" else [],
                                shuffle_blocks=shuffle, weights=init, seed=seed,
                                out=str(out / name(model, data, strategy, shuffle, init, seed)))
            for model in models for data in datasets for strategy in strategies for shuffle in shuffles
            for init in weights_grid for seed in seeds_grid]


def seed_pairs(cells: list[RunConfig]) -> list[tuple[RunConfig, RunConfig]]:
    """The first two seeds of every cell that differs only in its seed."""
    groups: dict[tuple, list[RunConfig]] = {}
    for cell in cells:
        key = (cell.model, cell.data, cell.strategy, cell.shuffle_blocks, cell.weights)
        groups.setdefault(key, []).append(cell)
    return [(group[0], group[1]) for group in groups.values() if len({c.seed for c in group}) >= 2]


def run_barriers(cells: list[RunConfig], on_event: Callable = lambda kind, **info: None) -> list[tuple[str, str]]:
    """The loss barrier between the two seeds of every pair (skipped where already computed)."""
    from engine.analyses import result_file
    from engine.posthoc.barrier import barrier_tag, run_barrier
    from engine.checkpoints import last_epoch

    outcome = []
    for first, second in seed_pairs(cells):
        a, b = Path(first.out), Path(second.out)
        if result_file(a, barrier_tag(a, last_epoch(a), b, last_epoch(b))).exists():
            outcome.append((f"barrier {a.name} ↔ {b.name}", "already computed"))
            continue
        on_event("phase", name=f"loss barrier {a.name} ↔ {b.name}")
        result, _ = run_barrier(str(a), str(b), on_event=on_event)
        outcome.append((f"barrier {a.name} ↔ {b.name}",
                        f"loss barrier: training {result['barriers']['train_loss']:.3f}, "
                        f"held-out {result['barriers']['held_out_loss']:.3f}"))
    return outcome


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
