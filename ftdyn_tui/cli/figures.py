"""`ftdyn figures`: publication figures and tables from runs."""

from __future__ import annotations

from pathlib import Path

import typer

from ftdyn_tui.cli.common import fail, say
from ftdyn_tui.cli.options import FigureFormat
from ftdyn_tui.cli.report import readable_runs


def figures(
    runs: list[Path] = typer.Argument(..., help="Run directories (or folders holding runs), in the order their "
                                                "colours are given."),
    out_dir: Path = typer.Option(..., "--out", help="The folder the figures and tables go into."),
    fmt: FigureFormat = typer.Option(FigureFormat.pdf, "--format", help="pdf, png (300 dpi) or svg."),
) -> None:
    """Publication figures and tables from runs, sized for a two-column paper: per-layer distance curves
    (one panel per model, bands where intervals were recorded), Table 1 and Table 2 as LaTeX and CSV,
    every other analysis (drift heatmaps, barrier curves, criticality) and the filters' montages."""
    from engine.figures import write_figures
    from engine.report import warning_table

    readable = readable_runs(runs, "draw")
    for row in warning_table(readable):  # a damaged line skipped, a degenerate measure: said, not only filed
        say("warning:", "yellow", f"{row['run']}: {row['warning']}")
    try:
        written = write_figures(readable, out_dir, fmt.value)
    except OSError as exc:
        fail(f"cannot write into '{out_dir}' ({exc.strerror}); choose another --out")
    say("wrote", "green", f"{len(written)} files into {out_dir}: " + ", ".join(p.name for p in written[:6])
        + (" …" if len(written) > 6 else ""))
