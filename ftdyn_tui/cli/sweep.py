"""`ftdyn sweep`: models × datasets × strategies (× block shuffles × initialisations × seeds)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.text import Text

from engine.defaults import INTERVAL_GROUPS, INTERVAL_LEVEL, METRICS
from engine.errors import stop_exit_code
from engine.untrusted import visible
from ftdyn_tui.cli.common import console, fail, say, split_list
from ftdyn_tui.cli.options import (
    ANALYSES_HELP, INTERVALS_HELP, INTERVAL_GROUPS_HELP, INTERVAL_LEVEL_HELP, IntervalMode, Optimizer,
)
from ftdyn_tui.cli.progress import TrainingProgress


def sweep(
    out_dir: Path = typer.Option(..., "--out", help="Folder for the grid's run directories."),
    models: list[str] = typer.Option(..., "--models", help="Models, comma-separated: torchvision names, timm:NAME, hf:PATH_OR_NAME."),
    datasets: list[str] = typer.Option(..., "--data", help="Dataset folders, comma-separated."),
    strategies: list[str] = typer.Option(["full"], "--strategies", help="Strategies, comma-separated: "
                                         "full, linear-probe, lp-ft, surgical, discriminative, autorgn."),
    weights: list[str] = typer.Option(["DEFAULT"], "--weights", help="Initialisations, comma-separated: torchvision "
                                      "weight names or files, and `none` for random initialisation (RI-T)."),
    shuffle_blocks: Optional[list[str]] = typer.Option(None, "--shuffle-blocks", help="Block shuffles, comma-"
                                                       "separated: block sizes in pixels, `pixel`, `none` "
                                                       "(see `ftdyn run --help`)."),
    epochs: int = typer.Option(10, "--epochs", min=1),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    lr: float = typer.Option(1e-4, "--lr"),
    optimizer: Optimizer = typer.Option(Optimizer.adam, "--optimizer"),
    image_size: int = typer.Option(224, "--image-size", min=16),
    probe_size: int = typer.Option(256, "--probe-size", min=2),
    metrics: Optional[list[str]] = typer.Option(None, "--metrics", help="As for `ftdyn run`."),
    view: str = typer.Option("positions", "--view"),
    train_blocks: Optional[list[str]] = typer.Option(None, "--train-blocks", help="Block groups for the surgical cells."),
    layer_decay: float = typer.Option(0.9, "--layer-decay"),
    warmup_epochs: float = typer.Option(1.0, "--warmup-epochs", min=0.0),
    vis: bool = typer.Option(True, "--vis/--no-vis"),
    device: str = typer.Option("auto", "--device"),
    workers: int = typer.Option(2, "--workers", min=0),
    seeds: list[str] = typer.Option(["0"], "--seed", "--seeds", help="Training seeds, comma-separated; with two "
                                    "or more, the loss barrier between the first two is computed per cell."),
    shuffle_seed: int = typer.Option(0, "--shuffle-seed", help="Seed of the block permutation, one for the grid."),
    analyses: Optional[list[str]] = typer.Option(None, "--analyses", help=ANALYSES_HELP),
    intervals: IntervalMode = typer.Option(IntervalMode.auto, "--intervals", help=INTERVALS_HELP),
    interval_groups: int = typer.Option(INTERVAL_GROUPS, "--interval-groups", min=2, help=INTERVAL_GROUPS_HELP),
    interval_level: float = typer.Option(INTERVAL_LEVEL, "--interval-level", help=INTERVAL_LEVEL_HELP),
) -> None:
    """Run models × datasets × strategies (× block shuffles × initialisations × seeds) one after
    another; run it again to resume. Compare them with `ftdyn report DIR`.

    The transfer experiment of Neyshabur et al. 2020: `--shuffle-blocks 1,2,4,8,16,32,none
    --weights DEFAULT,none --seeds 0,1` gives accuracy and training speed against block size for
    pretrained (P-T) and random (RI-T) initialisation, and whether two seeds end in one basin."""
    from engine.analyses.parts import parse_analyses
    from engine.errors import FtdynError
    from engine.shuffle import parse_shuffle
    from engine.strategies import STRATEGIES
    from engine.sweep import plan_sweep, run_barriers, run_sweep
    from engine.run_config import RunConfig

    chosen = split_list(strategies) or ["full"]
    unknown = [s for s in chosen if s not in STRATEGIES]
    if unknown:
        fail(f"unknown strategy '{unknown[0]}'; choose from {', '.join(STRATEGIES)}")
    if "surgical" in chosen and not train_blocks:
        fail("a sweep with surgical needs --train-blocks (see `ftdyn layers MODEL` for the groups)")
    shuffles = [None if s.lower() == "none" else s for s in split_list(shuffle_blocks) or []] or [None]
    try:
        for shuffle in shuffles:
            parse_shuffle(shuffle, image_size)
    except ValueError as exc:
        fail(str(exc))
    try:
        seed_list = [int(s) for s in split_list(seeds) or ["0"]]
    except ValueError:
        fail(f"--seeds takes whole numbers, e.g. 0,1 (got {','.join(split_list(seeds))})")
    template = RunConfig(model="", data="", out="", epochs=epochs, batch_size=batch_size, lr=lr,
                         optimizer=optimizer.value, image_size=image_size, probe_size=probe_size,
                         metrics=split_list(metrics) or list(METRICS), view=view,
                         train_blocks=split_list(train_blocks) or [], layer_decay=layer_decay,
                         warmup_epochs=warmup_epochs, vis=vis, device=device, workers=workers,
                         shuffle_seed=shuffle_seed, intervals=intervals.value, interval_groups=interval_groups,
                         interval_level=interval_level)
    if not 0 < interval_level < 1:  # refused before the first cell starts, as `ftdyn run` does
        fail(f"--interval-level must lie strictly between 0 and 1 (got {interval_level}), e.g. 0.9")
    try:
        template.analyses = parse_analyses(split_list(analyses))
    except FtdynError as exc:
        fail(str(exc))
    cells = plan_sweep(template, split_list(models), split_list(datasets), chosen, out_dir, shuffles,
                       split_list(weights) or ["DEFAULT"], seed_list)
    try:
        with TrainingProgress() as progress:
            outcome = run_sweep(cells, on_event=progress.event)
            outcome += run_barriers(cells, on_event=progress.event)
    except FtdynError as exc:
        fail(str(exc))
    except KeyboardInterrupt as stop:
        say("interrupted:", "yellow", "run the same command again to resume the sweep")
        raise typer.Exit(stop_exit_code(stop))
    for name, what in outcome:
        console.print(Text(visible(f"{name}: {what}")))
    console.print(Text(f"compare them: `ftdyn report {out_dir}`"))
