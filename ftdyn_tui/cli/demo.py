"""`ftdyn demo`: the paper's experiment, offline, and the block-shuffle transfer demo."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.text import Text

from engine.errors import stop_exit_code
from ftdyn_tui.cli.common import fail, open_tui, out, say
from ftdyn_tui.cli.options import ImageMode
from ftdyn_tui.cli.progress import TrainingProgress
from ftdyn_tui.cli.tables import print_tables, print_transfer


def demo(
    out_dir: Path = typer.Option(Path("runs/demo"), "--out", help="Where the three runs go (a previous demo there "
                                                                 "is replaced)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Fine-tuning epochs per target (default: 5; "
                                         "with --transfer, per run, default 6)."),
    seed: int = typer.Option(0, "--seed", help="Seeds the generated data, the source model and the runs."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    no_tui: bool = typer.Option(False, "--no-tui", help="Print the report instead of opening the TUI."),
    model: str = typer.Option("resnet18", "--model", help="Any torchvision classifier (or timm:NAME, hf:PATH), pretrained from scratch on "
                              "the generated source domain (e.g. vit_b_16: a ViT; minutes per epoch on a CPU, use "
                              "a GPU)."),
    image_size: int = typer.Option(64, "--image-size", min=16, help="Generated image size (ViTs: a multiple of "
                                                                    "the patch size)."),
    transfer: bool = typer.Option(False, "--transfer", help="Instead: Neyshabur et al.'s block-shuffle experiment "
                                  "on the similar target — pretrained (P-T) against random init (RI-T) at block sizes "
                                  "none, 16, 8, 4 px, and the loss barrier between two seeds of each (about 10 "
                                  "minutes on a CPU)."),
) -> None:
    """The paper's experiment in minutes, offline: generated source and target domains (similar,
    different task, white background), a source model pretrained once and cached, three
    fine-tuning runs, and the paper's findings checked on the result."""
    import dataclasses

    from engine.demo import DemoSettings, findings, run_demo
    from engine.record import read_run, write_json_atomic
    from engine.report import build_report, posthoc_results

    if transfer:
        return demo_transfer(out_dir, DemoSettings(model=model, image_size=image_size), seed, device, epochs)

    settings = DemoSettings(model=model, image_size=image_size)
    if epochs:
        settings = dataclasses.replace(settings, epochs=epochs)
    runs = demo_runs(model, "ftdyn demo", lambda event: run_demo(out_dir, settings, seed=seed, device=device,
                                                                 on_event=event))
    result = findings(runs)
    write_json_atomic(out_dir / "findings.json", result.as_json())
    if not no_tui and sys.stdin.isatty() and sys.stdout.isatty():
        open_tui([out_dir], ImageMode.halfcell)
    else:
        snapshots = [read_run(path) for path in runs]
        shown = posthoc_results(snapshots)
        print_tables(build_report(snapshots, shown), shown)
    out.print("[bold]The paper's findings on this demo[/]")
    for line in result.lines():
        out.print(line, highlight=False)
    out.print(Text(f"runs: {out_dir} · `ftdyn tui {out_dir}` to explore · `ftdyn report {out_dir}` for the tables"))


def demo_runs(model: str, command: str, start) -> list[Path]:
    """``start(on_event)`` under a progress display; bad input and Ctrl-C end in one line."""
    from engine.errors import FtdynError
    from engine.models import check_model_name

    try:
        check_model_name(model)
        with TrainingProgress() as progress:
            return start(progress.event)
    except FtdynError as exc:
        fail(str(exc))
    except KeyboardInterrupt as stop:
        say("interrupted:", "yellow", f"run `{command}` again (the cache keeps what is done)")
        raise typer.Exit(stop_exit_code(stop))


def demo_transfer(out_dir: Path, settings, seed: int, device: str, epochs: int | None) -> None:
    from engine.record import write_json_atomic
    from engine.transfer_demo import run_transfer_demo, transfer_findings

    runs = demo_runs(settings.model, "ftdyn demo --transfer",
                     lambda event: run_transfer_demo(out_dir, settings, seed=seed, device=device, on_event=event,
                                                     epochs=epochs))
    result = transfer_findings(runs)
    write_json_atomic(out_dir / "findings.json", result.as_json())
    print_transfer(result.rows)
    out.print("[bold]Neyshabur et al.'s findings on this demo[/]")
    for line in result.lines():
        out.print(line, highlight=False)
    out.print(Text(f"runs: {out_dir} · `ftdyn report {out_dir}` for every table and the barrier curves"))
