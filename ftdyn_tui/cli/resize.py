"""`ftdyn resize-cka`: feature distance between image interpolations."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from engine.numbers import fmt_number
from ftdyn_tui.cli.common import console, fail, out, split_list
from ftdyn_tui.cli.options import ReportFormat
from ftdyn_tui.cli.tables import emit, print_table


def resize_cka(
    model: str = typer.Option(..., "--model", help="A torchvision classifier, timm:NAME or hf:PATH_OR_NAME (see `ftdyn layers`)."),
    data: Path = typer.Option(..., "--data", help="Images as for `ftdyn run`: the probe set comes from its "
                                                  "held-out split, as a run on the same data and seed would pick."),
    weights: str = typer.Option("DEFAULT", "--weights", help="torchvision weight name, a state-dict file, or none."),
    image_size: int = typer.Option(224, "--image-size", min=16, help="The size every method resizes to."),
    probe_size: int = typer.Option(256, "--probe-size", min=2),
    methods: Optional[list[str]] = typer.Option(None, "--methods", help="Interpolations, comma-separated: nearest, "
                                                "bilinear, bicubic, area (box), lanczos (default: the first four)."),
    layers: Optional[list[str]] = typer.Option(None, "--layers", help="Layers to hook (default: the paper's)."),
    metric: str = typer.Option("cka", "--metric", help="cka, cka-debiased, procrustes or pwsm[:α]."),
    view: str = typer.Option("positions", "--view", help="positions, pooled, flat, filter, filter-map or cls."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device"),
    fmt: ReportFormat = typer.Option(ReportFormat.table, "--format", help="table (with a heatmap), csv or json."),
) -> None:
    """Resize sensitivity: per layer, the distance (1 − linear CKA by default) between the model's features
    on the same probe images resized with two interpolations, for every pair — with jackknife intervals
    over probe-image groups. A large value means the layer sees the resampling, not only the image."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from engine.errors import FtdynError
    from engine.resize import resize_sensitivity
    from engine.run_config import pick_device

    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console,
                      transient=True) as bar:
            task = bar.add_task("probe images", total=None)
            result = resize_sensitivity(model, weights, str(data), image_size, probe_size, split_list(methods),
                                        split_list(layers), metric, view, seed, str(pick_device(device)),
                                        on_progress=lambda done, total: bar.update(task, completed=done, total=total))
    except (FtdynError, ValueError) as exc:
        fail(str(exc))
    emit(fmt, {"resize": result["rows"]}, lambda tables: print_resize(result), as_json=result)


def print_resize(result: dict) -> None:
    from ftdyn_tui.render import heatmap_text

    pairs = [(a, b) for i, a in enumerate(result["methods"]) for b in result["methods"][i + 1:]]
    cells = {(r["layer"], r["a"], r["b"]): r for r in result["rows"]}
    level = (result["intervals"] or {}).get("level")
    note = f"; ± half-width of the {level:.0%} jackknife interval" if level else ""
    print_table(f"Resize sensitivity · {result['model']} at {result['image_size']} px, {result['probe_images']} "
                f"probe images · {result['measure']} between interpolations (0: the same features){note}",
                ["pair", *result["layers"]],
                [[pair_label(a, b), *[resize_cell(cells[(layer, a, b)]) for layer in result["layers"]]] for a, b in pairs])
    matrix = [[cells[(layer, a, b)]["value"] if cells[(layer, a, b)]["value"] is not None else float("nan")
               for a, b in pairs] for layer in result["layers"]]
    out.print(heatmap_text(result["layers"], [pair_label(a, b) for a, b in pairs], matrix,
                           width=min(out.width, 100), title="layer × pair of interpolations", unit=result["measure"]))


def pair_label(a: str, b: str) -> str:
    """'near·bili': two interpolations in a column header."""
    return f"{a[:4]}·{b[:4]}"


def resize_cell(row: dict) -> str:
    """'0.008±.002' (value ± half-width, compact: a table with a column per layer must fit 80 columns)."""
    value = fmt_number(row["value"])
    if row["low"] is None or row["value"] is None:
        return value
    return f"{value}±{fmt_number((row['high'] - row['low']) / 2).removeprefix('0')}"
