"""`ftdyn tui`: the app."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ftdyn_tui.cli.common import open_tui
from ftdyn_tui.cli.options import ImageMode


def tui(
    runs: Optional[list[Path]] = typer.Argument(None, help="Run directories or folders holding runs (default: ./runs)."),
    images: ImageMode = typer.Option(ImageMode.halfcell, "--images", help="How images are drawn: halfcell colour "
                                                                         "cells (any terminal, tmux, SSH), sixel, kitty, "
                                                                         "or auto-detect."),
) -> None:
    """Follow runs live: status, per-layer distance curves, tables and per-filter images."""
    open_tui(runs or [Path("runs")], images)
