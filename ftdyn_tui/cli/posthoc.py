"""Post-hoc analyses of a run: `ftdyn transfer barrier|criticality`, `ftdyn umap`, `ftdyn invariance`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.text import Text

from engine.errors import stop_exit_code
from engine.untrusted import MESSAGE_LIMIT, visible
from ftdyn_tui.cli.common import console, fail, parse_epochs, say, split_list
from ftdyn_tui.cli.options import BN_BATCHES_HELP, DATA_HELP, ReportFormat, TRAIN_IMAGES_HELP
from ftdyn_tui.cli.progress import TrainingProgress
from ftdyn_tui.cli.tables import emit, print_posthoc


transfer = typer.Typer(
    help="What was transferred (Neyshabur et al. 2020), from a run's checkpoints: the loss barrier between two "
         "models and module criticality. Results go to RUN/analyses/ and show in `ftdyn report` and the TUI.",
    no_args_is_help=True)


@transfer.command("barrier")
def transfer_barrier(
    first: str = typer.Argument(..., help="RUN or RUN@EPOCH (default: the newest checkpoint)."),
    second: Optional[str] = typer.Argument(None, help="RUN or RUN@EPOCH to interpolate to. Left out: the first "
                                                      "run's source backbone → its epoch, with that epoch's head."),
    points: int = typer.Option(11, "--points", min=2, help="λ grid points over [0, 1], endpoints included."),
    train_images: int = typer.Option(2048, "--train-images", min=0, help=TRAIN_IMAGES_HELP),
    bn_batches: int = typer.Option(20, "--bn-batches", min=1, help=BN_BATCHES_HELP),
    data: Optional[Path] = typer.Option(None, "--data", help=DATA_HELP),
    fmt: ReportFormat = typer.Option(ReportFormat.table, "--format", help="table, csv or json."),
) -> None:
    """Loss and error along θ(λ) = (1 − λ)·A + λ·B on the held-out and training splits, and the barrier
    max_λ [value(λ) − straight line between the endpoints]. Both endpoints must be the same architecture
    trained on the same classes. Written to A/analyses/barrier-*.json."""
    from engine.posthoc.barrier import run_barrier

    result, path = run_posthoc(lambda on_event: run_barrier(first, second, points, train_images, bn_batches,
                                                      str(data) if data else None, on_event))
    emit_posthoc(result, path, fmt)


@transfer.command("criticality")
def transfer_criticality(
    run_ref: str = typer.Argument(..., metavar="RUN", help="RUN or RUN@EPOCH (default: the newest checkpoint)."),
    points: int = typer.Option(11, "--points", min=2, help="α grid points over [0, 1]."),
    epsilon: float = typer.Option(0.01, "--epsilon", min=0.0, help="Tolerance ε on the train error: a rewound "
                                                                    "module is harmless while Err ≤ final Err + ε."),
    noise_draws: int = typer.Option(0, "--noise-draws", min=0, help="K > 0 also computes Chatterji et al.'s "
                                    "criticality μ with K Gaussian noise draws per (α, σ) grid point."),
    sigmas: Optional[list[str]] = typer.Option(None, "--sigmas", help="σ grid for μ, comma-separated, each in (0, 1] "
                                               "(default: 0.001 … 1, ten points)."),
    train_images: int = typer.Option(2048, "--train-images", min=0, help=TRAIN_IMAGES_HELP),
    bn_batches: int = typer.Option(20, "--bn-batches", min=1, help=BN_BATCHES_HELP),
    data: Optional[Path] = typer.Option(None, "--data", help=DATA_HELP),
    fmt: ReportFormat = typer.Option(ReportFormat.table, "--format", help="table, csv or json."),
) -> None:
    """Rewind one block group at a time to (1 − α)·θ⁰ + α·θᵀ, every other module final: train error per
    module and α (a module × α heatmap), the smallest α within ε of the final error, and with
    --noise-draws the criticality μ. Written to RUN/analyses/criticality-e*.json."""
    from engine.posthoc.criticality import DEFAULT_SIGMAS, run_criticality

    try:
        grid = tuple(float(v) for v in split_list(sigmas)) if sigmas else DEFAULT_SIGMAS
    except ValueError:
        fail("--sigmas takes numbers in (0, 1], comma-separated")
    result, path = run_posthoc(lambda on_event: run_criticality(run_ref, points, epsilon, noise_draws, grid, train_images,
                                                          bn_batches, str(data) if data else None, on_event))
    emit_posthoc(result, path, fmt)


def umap(
    run_dir: Path = typer.Argument(..., metavar="RUN", help="Run directory."),
    layer: str = typer.Option(..., "--layer", help="A hooked layer of the run."),
    epochs: Optional[list[str]] = typer.Option(None, "--epochs", help="Epochs to place on the map, comma-separated "
                                               "(default: every saved checkpoint; the source is always there)."),
    features: str = typer.Option("pooled", "--features", help="pooled (each map's spatial mean, the `pooled` view) "
                                 "or cls (the class token of ViT layers)."),
    neighbours: Optional[int] = typer.Option(None, "--neighbours", min=2, help="UMAP's n_neighbors, at most the probe "
                                             "size − 1 [default: 15, or the probe size − 1 where that is fewer]."),
    min_dist: float = typer.Option(0.1, "--min-dist", min=0.0, max=1.0, help="UMAP's min_dist."),
    metric: str = typer.Option("euclidean", "--metric", help="euclidean or cosine, for the map and the "
                                                            "neighbour agreement in feature space."),
    seed: int = typer.Option(0, "--seed", help="UMAP's random_state: the same seed gives the same map."),
    data: Optional[Path] = typer.Option(None, "--data", help=DATA_HELP),
    fmt: ReportFormat = typer.Option(ReportFormat.table, "--format", help="table, csv (the points too) or json."),
) -> None:
    """UMAP of a layer's probe features: fitted on the source model's, with each epoch's placed on the
    same map, so epochs share axes. Prints how far the images moved on the map and whether classes
    are neighbours there and in the features themselves. Written to RUN/analyses/umap-<layer>.json;
    the TUI draws it (filters screen, `u`) and `ftdyn figures` makes it a figure."""
    from engine.posthoc.feature_umap import run_feature_umap

    result, path = run_posthoc(lambda on_event: run_feature_umap(
        run_dir, layer, parse_epochs(epochs), features, neighbours, min_dist, metric, seed,
        str(data) if data else None, on_event))
    emit_posthoc(result, path, fmt)


def invariance(
    run_dir: Path = typer.Argument(..., metavar="RUN", help="Run directory."),
    layers: Optional[list[str]] = typer.Option(None, "--layers", help="Hooked layers to invert and measure, "
                                               "comma-separated (default: every hooked layer)."),
    epochs: Optional[list[str]] = typer.Option(None, "--epochs", help="Epochs to compare with the source, "
                                               "comma-separated (default: every saved checkpoint)."),
    steps: int = typer.Option(500, "--steps", min=1, help="Inversion steps per image (Merlin et al.: 500)."),
    step_size: float = typer.Option(0.5, "--step-size", min=0.0, help="η of the L2-normalised steps in pixel "
                                    "space [0, 1] (STIR: 0.5)."),
    images: int = typer.Option(0, "--images", min=0, help="Probe images to invert, evenly spaced over the probe "
                               "set (0: all of them)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the inversions' noise starts (default: the "
                                       "run's seed, as its live invariance part uses)."),
    both_directions: bool = typer.Option(False, "--both-directions", help="Also STIR(source | tuned): inverts the "
                                         "tuned model at every layer of every chosen epoch (L inversions an epoch)."),
    data: Optional[Path] = typer.Option(None, "--data", help=DATA_HELP),
    fmt: ReportFormat = typer.Option(ReportFormat.table, "--format", help="table, csv or json."),
) -> None:
    """Shared invariance (STIR, Nanda et al. 2022) between the source model and each epoch: probe images
    are inverted through the source at each layer (cached in RUN/invariance/), and STIR(tuned layer j |
    source layer i) says how far the tuned model cannot tell those inversions from the images — the
    source's invariances it kept — for every (i, j), with CKA beside it. Written to
    RUN/analyses/invariance-e<epoch>.json and invariance-diagonal.json; the TUI and `ftdyn report` show them."""
    from engine.analyses.invariance import InversionSettings
    from engine.posthoc.invariance import run_invariance

    settings = InversionSettings(steps=steps, step_size=step_size, images=images, seed=seed)
    result, path = run_posthoc(lambda on_event: first_and_last(run_invariance(
        run_dir, split_list(layers), parse_epochs(epochs), settings, both_directions,
        str(data) if data else None, on_event)))
    from engine.analyses import read_results

    chosen = {f"invariance-e{epoch}.json" for epoch in result["x"]} | {path.name}
    written = [r for r in read_results(run_dir) if r.get("file") in chosen]  # this call's, not older ones
    emit_shown(fmt, run_dir.name, written, result, with_detail=False)


def first_and_last(found: tuple[dict, list[Path]]) -> tuple[dict, Path]:
    """(the summary, the last file written) of a post-hoc analysis that writes several files."""
    result, paths = found
    return result, paths[-1]


def run_posthoc(work) -> tuple[dict, Path]:
    """Run a post-hoc analysis under a progress bar; every refusal is one line."""
    from engine.errors import FtdynError

    try:
        with TrainingProgress() as progress:
            result, path = work(progress.event)
    except (FtdynError, ValueError) as exc:
        fail(str(exc))
    except KeyboardInterrupt as stop:
        console.print("[yellow]interrupted[/]: nothing was written")
        raise typer.Exit(stop_exit_code(stop))
    console.print(Text.assemble(("wrote", "green"), " ", visible(str(path), MESSAGE_LIMIT)))
    for note in result.get("notes", []):
        say("note:", "yellow", note)
    return result, path


def emit_posthoc(result: dict, path: Path, fmt: "ReportFormat") -> None:
    emit_shown(fmt, path.parent.parent.name, [result], result, with_detail=True)


def emit_shown(fmt: "ReportFormat", run: str, results: list[dict], as_json: dict, with_detail: bool) -> None:
    """What a post-hoc command wrote, as its declaration shows it: CSV and terminal tables from the
    declared tables (with the detail ones, such as every point of a map), JSON the result itself."""
    from engine.results import shown_tables, tables_by_name

    shown = [table for result in results for table in shown_tables(run, result, with_detail)]
    emit(fmt, tables_by_name(shown), lambda _: print_posthoc(shown), as_json=as_json)
