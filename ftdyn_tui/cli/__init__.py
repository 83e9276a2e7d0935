"""The `ftdyn` command: one module per command (or group), registered here in the order `--help` lists
them. Training commands import the engine (and torch) only when they run, so `ftdyn --help` and the
report start instantly."""

from __future__ import annotations

import os

import typer

from ftdyn_tui.cli import demo, figures, layers, posthoc, report, resize, run, sweep, tui, vis
from ftdyn_tui.cli.common import fail
from ftdyn_tui.cli.report import report_problem
from ftdyn_tui.cli.run import start_detached, wait_for_run


app = typer.Typer(
    help="Watch how a pretrained image network's features move while it is fine-tuned: per-layer distance "
         "to the source model every epoch, next to accuracy. Definitions: docs/METRICS.md (metrics and views), "
         "docs/ANALYSES.md (drift, barriers, criticality, block shuffling), docs/RUN-DIRECTORY.md (what a run "
         "records), in the repository.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def one_process_unless_run(ctx: typer.Context) -> None:
    # Started by torchrun, every process would run the command: only `ftdyn run` divides its work
    # between them (and has rank 0 alone write); any other would write the same files N times.
    # (The environment is read here, not through engine.distributed, which imports torch.)
    world = os.environ.get("WORLD_SIZE", "1")
    if ctx.invoked_subcommand != "run" and "RANK" in os.environ and world.isdigit() and int(world) > 1:
        fail(f"only `ftdyn run` runs on several processes; start `ftdyn {ctx.invoked_subcommand}` without torchrun")


app.command()(run.run)
app.command()(demo.demo)
app.command()(sweep.sweep)
app.command()(figures.figures)
app.command("resize-cka")(resize.resize_cka)
app.command()(layers.layers)
app.command()(tui.tui)
app.command()(vis.vis)
app.command()(report.report)
app.add_typer(posthoc.transfer, name="transfer")
app.command()(posthoc.umap)
app.command()(posthoc.invariance)


def main() -> None:
    app()


__all__ = ["app", "main", "report_problem", "start_detached", "wait_for_run"]
