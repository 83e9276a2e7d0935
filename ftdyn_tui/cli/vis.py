"""`ftdyn vis`: what one filter looks at, drawn from a run's checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.text import Text

from engine.untrusted import MESSAGE_LIMIT, visible
from ftdyn_tui.cli.common import fail, out, parse_epochs, split_list


def vis(
    run_dir: Path = typer.Argument(..., help="Run directory."),
    layer: str = typer.Option(..., "--layer", help="A hooked layer of the run."),
    filter_index: int = typer.Option(..., "--filter", min=0, help="Filter (channel) index."),
    classes: Optional[list[str]] = typer.Option(None, "--class", help="Only these classes for class-based images."),
    epochs: Optional[list[str]] = typer.Option(None, "--epochs", help="Epochs to draw (0 = source) "
                                                                     "(default: every saved checkpoint)."),
) -> None:
    """Draw one filter's class- and sample-based images from saved checkpoints into RUN/vis,
    with a montage across epochs (source, 1…T) like the paper's figures."""
    from engine.errors import FtdynError
    from engine.redraw import visualise_from_checkpoints

    try:
        drawn = visualise_from_checkpoints(run_dir, layer, filter_index, split_list(classes), parse_epochs(epochs))
    except FtdynError as exc:
        fail(str(exc))
    folder = run_dir / "vis" / layer / f"f{filter_index:04d}"
    drew = f"drew epochs {', '.join(map(str, drawn))} → {folder} (montage-class.png, montage-sample.png)"
    out.print(Text(visible(drew, MESSAGE_LIMIT)))
