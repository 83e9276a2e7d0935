"""`ftdyn report`: the paper's tables from runs, and which runs can be read."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ftdyn_tui.cli.common import fail, say
from ftdyn_tui.cli.options import ReportFormat
from ftdyn_tui.cli.tables import emit, print_tables, write_tables


def report(
    runs: list[Path] = typer.Argument(..., help="Run directories (or folders holding runs)."),
    fmt: ReportFormat = typer.Option(ReportFormat.table, "--format", help="table (terminal), csv or json."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Write into this folder instead of printing: with "
                                           "--format csv one file per table (accuracy.csv, reusability.csv, …, "
                                           "each readable by pandas.read_csv), with json report.json."),
) -> None:
    """The paper's tables: accuracy (Table 1), reusability mean ± std (Table 2), metric correlation,
    and per-layer distances by epoch — with jackknife intervals where the runs recorded them (±
    half-widths, the interval of each reusability mean, and whether each layer still moved over the
    last epoch, as a paired difference); the runs' warnings about their own measures."""
    if out_dir is not None and fmt == ReportFormat.table:
        fail("--out writes files: add --format csv (one file per table) or --format json")
    from engine.report import build_report, posthoc_results

    readable = readable_runs(runs, "report")
    if out_dir is not None:
        write_tables(fmt, build_report(readable), out_dir)
    else:
        shown = posthoc_results(readable)
        emit(fmt, build_report(readable, shown), lambda tables: print_tables(tables, shown))


def readable_runs(paths: list[Path], purpose: str) -> list:
    """The runs under ``paths`` that can be read; a corrupt run is named and left out, the others used.
    A path that does not exist or holds no run, or no readable run at all, ends in a one-line error."""
    from engine.record import find_runs, read_run

    snapshots = []
    for path in paths:
        if not path.exists():
            fail(f"'{path}' does not exist")
        found = list(find_runs(path))
        if not found:
            fail(f"no ftdyn run found in '{path}' (a run directory holds config.json)")
        snapshots += [read_run(p) for p in found]
    readable = []
    for snapshot in snapshots:
        problem = snapshot.problem or report_problem(snapshot)
        if problem:
            say("skipped:", "yellow", problem)
        else:
            readable.append(snapshot)
    if not readable:
        fail(f"no readable run to {purpose}" + (" (see above)" if snapshots else ""))
    return readable


def report_problem(snapshot) -> str | None:
    """Why one run cannot be tabulated (a record ftdyn's checks let through but the tables cannot use):
    the run is left out with its reason instead of failing the report of every other run."""
    from engine.report import build_report

    try:
        build_report([snapshot])
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        return f"'{snapshot.path}' cannot be tabulated ({type(exc).__name__}: {exc})"
    return None
