"""The `ftdyn` command. Training commands import the engine (and torch) only when they run, so
`ftdyn --help` and the report start instantly."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from engine.errors import stop_exit_code
from engine.untrusted import MESSAGE_LIMIT, visible

app = typer.Typer(
    help="Watch how a pretrained image network's features move while it is fine-tuned: per-layer distance "
         "to the source model every epoch, next to accuracy. Definitions: docs/METRICS.md (metrics and views), "
         "docs/ANALYSES.md (drift, barriers, criticality, block shuffling), docs/RUN-DIRECTORY.md (what a run "
         "records), in the repository.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()


@app.callback()
def one_process_unless_run(ctx: typer.Context) -> None:
    # Started by torchrun, every process would run the command: only `ftdyn run` divides its work
    # between them (and has rank 0 alone write); any other would write the same files N times.
    # (The environment is read here, not through engine.distributed, which imports torch.)
    world = os.environ.get("WORLD_SIZE", "1")
    if ctx.invoked_subcommand != "run" and "RANK" in os.environ and world.isdigit() and int(world) > 1:
        fail(f"only `ftdyn run` runs on several processes; start `ftdyn {ctx.invoked_subcommand}` without torchrun")


def fail(message: str) -> None:
    """The one-line error every bad input ends in: plain text (a path or a name from a shared run
    directory may hold markup or escape sequences), then exit status 2."""
    say("error:", "bold red", message)
    raise typer.Exit(2)


def say(label: str, style: str, message: str) -> None:
    """A 'warning:' or 'note:' line on stderr, as plain text."""
    console.print(Text.assemble((label, style), " ", visible(message, MESSAGE_LIMIT)), highlight=False, soft_wrap=True)


def split_list(values: Optional[list[str]]) -> Optional[list[str]]:
    """Options may be repeated or comma-separated: --layers a,b --layers c → [a, b, c]."""
    if not values:
        return None
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


class IntervalMode(str, Enum):
    auto = "auto"
    all = "all"
    off = "off"


class Optimizer(str, Enum):
    adam = "adam"
    sgd = "sgd"


class Preset(str, Enum):
    paper = "paper"


class Strategy(str, Enum):
    full = "full"
    linear_probe = "linear-probe"
    lp_ft = "lp-ft"
    surgical = "surgical"
    discriminative = "discriminative"
    autorgn = "autorgn"


class ImageMode(str, Enum):
    halfcell = "halfcell"
    sixel = "sixel"
    kitty = "kitty"
    auto = "auto"


class Autocast(str, Enum):
    off = "off"
    bf16 = "bf16"
    fp16 = "fp16"


class ReportFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


INTERVALS_HELP = ("Jackknife intervals over probe-image groups on every layer distance (docs/METRICS.md): auto = "
                  "the streaming views (positions, pooled, cls, filter-map; a few % of the analysis time), all = also "
                  "filter and flat (G+1 times their cost), off.")
INTERVAL_GROUPS_HELP = ("G: image groups of the jackknife (fewer when the widest layer's per-group moments would pass "
                        "256 MiB, or the probe set has fewer images).")
INTERVAL_LEVEL_HELP = "Coverage of the intervals (0.9: 90 %)."
ANALYSES_HELP = ("Analyses measured every epoch, comma-separated: distance (feature distance per layer), drift "
                 "(parameter drift per module), invariance (STIR per layer: the source's invariances the tuned model "
                 "keeps; inverts the probe images through the source when the run starts) (default: the cheap ones, "
                 "distance and drift). Barrier, criticality, UMAP and the full STIR matrices run afterwards: "
                 "`ftdyn transfer --help`, `ftdyn umap --help`, `ftdyn invariance --help`.")


@app.command()
def run(
    data: Optional[Path] = typer.Option(None, "--data", help="ImageFolder root: train/ and val/ (or test/) of class "
                                                             "folders, or one folder of class folders split by "
                                                             "--val-fraction. With --resume: the run's own, unless given."),
    out_dir: Path = typer.Option(..., "--out", help="Run directory to create (the record the TUI and report read)."),
    model: str = typer.Option("resnet50", "--model", help="Any torchvision classification model (vgg19, resnet50, "
                                                         "densenet121, …)."),
    weights: str = typer.Option("DEFAULT", "--weights", help="torchvision weights name (IMAGENET1K_V1, DEFAULT), a local "
                                                            "state-dict file, or none."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Fine-tuning epochs T (epoch 0 is the untouched "
                                                                      "model) (default: 10; with --resume: the run's)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Training batch size (default: 32)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate (default: 1e-4)."),
    optimizer: Optional[Optimizer] = typer.Option(None, "--optimizer", help="adam or sgd (momentum 0.9) (default: adam)."),
    weight_decay: float = typer.Option(0.0, "--weight-decay"),
    grad_clip: Optional[float] = typer.Option(None, "--grad-clip", help="Clip the gradient norm to this value."),
    image_size: int = typer.Option(224, "--image-size", min=16, help="Images are resized to this square size."),
    augment: bool = typer.Option(False, "--augment/--no-augment", help="Random resized crops and flips while training."),
    layers: Optional[list[str]] = typer.Option(None, "--layers", help="Layers to hook, comma-separated "
                                                                     "(default: the paper's; see `ftdyn layers MODEL`)."),
    probe_size: int = typer.Option(256, "--probe-size", min=2, help="Held-out images, stratified by class and fixed by "
                                                                   "seed, on which distances are measured."),
    metrics: Optional[list[str]] = typer.Option(None, "--metrics", help="pwsm[:α], procrustes, cka, each optionally "
                                                                       "@view (default: pwsm,procrustes,cka)."),
    view: str = typer.Option("positions", "--view", help="positions, pooled, flat, filter, filter-map or cls (docs/METRICS.md)."),
    alpha: float = typer.Option(0.5, "--alpha", min=0.0, max=1.0, help="PWSM α for a plain 'pwsm' metric."),
    intervals: IntervalMode = typer.Option(IntervalMode.auto, "--intervals", help=INTERVALS_HELP),
    interval_groups: int = typer.Option(10, "--interval-groups", min=2, help=INTERVAL_GROUPS_HELP),
    interval_level: float = typer.Option(0.9, "--interval-level", help=INTERVAL_LEVEL_HELP),
    every_steps: int = typer.Option(0, "--every-steps", min=0, help="Also measure every N training steps (0: per epoch only)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    autocast: Optional[Autocast] = typer.Option(None, "--autocast", help="Forward passes in bfloat16 or float16 "
                                                "on CUDA (fp16 adds a gradient scaler); the distances are still "
                                                "computed in float64 from the captured activations (default: off; "
                                                "with --resume: the run's, unless given)."),
    channels_last: bool = typer.Option(False, "--channels-last", help="Model and batches in channels-last memory "
                                                                     "order (faster convolutions on tensor cores)."),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the training forward (the first "
                                                               "steps take longer while it compiles)."),
    nproc_per_node: int = typer.Option(1, "--nproc-per-node", min=1, help="Processes on this machine, one per GPU "
                                       "(torch.distributed, DDP): --batch-size is the effective batch, split over "
                                       "them, and --lr applies to it unchanged. Several machines: start `torchrun "
                                       "… -m ftdyn_tui.cli run …` on each (README, \"Many GPUs\")."),
    workers: int = typer.Option(2, "--workers", min=0, help="Data-loading worker processes."),
    seed: int = typer.Option(0, "--seed"),
    val_fraction: float = typer.Option(0.2, "--val-fraction", help="Held-out share when --data has no val/ folder."),
    save_every_epoch: bool = typer.Option(False, "--save-every-epoch", help="Keep a checkpoint of every epoch."),
    preset: Optional[Preset] = typer.Option(None, "--preset", help="paper: Adam, lr 1e-4, batch 196, PWSM α=0 on "
                                                                   "positions + Procrustes on filter-map."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last complete epoch."),
    vis: bool = typer.Option(True, "--vis/--no-vis", help="Draw per-filter class- and sample-based images "
                                                        "(RUN/vis) at the --vis-epochs."),
    vis_epochs: Optional[list[str]] = typer.Option(None, "--vis-epochs", help="Epochs to visualise, comma-separated "
                                                                             "(default: every epoch)."),
    vis_filters: Optional[str] = typer.Option(None, "--vis-filters", help="Filters to always draw: layer:index,…"),
    vis_k: int = typer.Option(8, "--vis-k", min=0, help="Per layer, draw the k filters that moved most and k "
                                                         "seeded random ones."),
    strategy: Strategy = typer.Option(Strategy.full, "--strategy", help="full; linear-probe (head only); lp-ft "
                                      "(logistic-regression head, then everything); surgical (--train-blocks and the "
                                      "head); discriminative (rates decaying towards the input, warm-up); autorgn "
                                      "(per-tensor rates from relative gradient norms, each epoch)."),
    train_blocks: Optional[list[str]] = typer.Option(None, "--train-blocks", help="surgical: block groups to train, "
                                                     "e.g. layer2 or stem+layer1 (see `ftdyn layers MODEL`)."),
    layer_decay: float = typer.Option(0.9, "--layer-decay", help="discriminative: rate factor per group below the head."),
    warmup_epochs: float = typer.Option(1.0, "--warmup-epochs", min=0.0, help="discriminative: linear warm-up "
                                                                             "from 0 over this many epochs."),
    analyses: Optional[list[str]] = typer.Option(None, "--analyses", help=ANALYSES_HELP),
    invariance_steps: int = typer.Option(500, "--invariance-steps", min=1, help="invariance: inversion steps per "
                                         "image (Merlin et al.: 500)."),
    invariance_step_size: float = typer.Option(0.5, "--invariance-step-size", help="invariance: η of the "
                                               "inversions' L2-normalised steps in pixel space [0, 1] (STIR: 0.5)."),
    invariance_images: int = typer.Option(0, "--invariance-images", min=0, help="invariance: probe images to "
                                          "invert, evenly spaced (0: all)."),
    shuffle_blocks: Optional[str] = typer.Option(None, "--shuffle-blocks", help="Block shuffling (Neyshabur et al. "
                                                 "2020): cut every normalised image into B×B-pixel blocks and permute "
                                                 "them with one fixed permutation, the same for training, held-out and "
                                                 "probe images; B divides --image-size; 'pixel' permutes every value."),
    shuffle_seed: int = typer.Option(0, "--shuffle-seed", help="Seed of the block permutation (kept apart from "
                                                               "--seed so that runs with other seeds face the same task)."),
    tui: bool = typer.Option(False, "--tui", help="Train in the background (log: RUN/train.log) and open the "
                                                  "TUI on the run; quitting the TUI leaves training running."),
) -> None:
    """Fine-tune a model and record per-layer feature distances to the source model every epoch."""
    if tui:
        child_args = [arg for arg in sys.argv[1:] if arg != "--tui"]
        process = start_detached(child_args, out_dir)
        if wait_for_run(out_dir, process):
            open_tui([out_dir], ImageMode.halfcell)
            console.print(Text(f"training continues in the background (pid {process.pid}); `ftdyn tui {out_dir}` "
                               f"re-attaches, {out_dir / 'train.log'} has its output"))
            return
        fail(f"training stopped before it started: {last_line(out_dir / 'train.log')}")
    from engine.analyses.parts import parse_analyses
    from engine.distributed import launched_by_torchrun
    from engine.errors import FtdynError
    from engine.shuffle import parse_shuffle
    from engine.training import RunConfig, apply_preset, run_training

    explicit = {name for name, value in (("batch_size", batch_size), ("lr", lr), ("optimizer", optimizer),
                                        ("metrics", metrics)) if value is not None}
    try:
        if resume:
            config = resumed_config(out_dir, data, epochs, device, workers, autocast)
        elif data is None:
            fail("--data is required: a folder of class sub-folders (or train/ and val/ of them)")
        else:
            config = RunConfig(
                model=model, data=str(data), out=str(out_dir), weights=weights, epochs=epochs or 10,
                batch_size=batch_size or 32, lr=lr if lr is not None else 1e-4,
                optimizer=(optimizer or Optimizer.adam).value, weight_decay=weight_decay, grad_clip=grad_clip,
                image_size=image_size, augment=augment, layers=split_list(layers), probe_size=probe_size,
                metrics=split_list(metrics) or ["pwsm", "procrustes", "cka"], view=view, alpha=alpha,
                every_steps=every_steps, device=device, autocast=(autocast or Autocast.off).value, channels_last=channels_last,
                compile=compile_model, workers=workers, seed=seed,
                val_fraction=val_fraction, save_every_epoch=save_every_epoch, preset=preset.value if preset else None,
                vis=vis, vis_epochs=parse_epochs(vis_epochs), vis_filters=vis_filters, vis_k=vis_k,
                strategy=strategy.value, train_blocks=split_list(train_blocks) or [], layer_decay=layer_decay,
                warmup_epochs=warmup_epochs, analyses=parse_analyses(split_list(analyses)),
                shuffle_blocks=shuffle_blocks, shuffle_seed=shuffle_seed, intervals=intervals.value,
                interval_groups=interval_groups, interval_level=interval_level,
                invariance_steps=invariance_steps, invariance_step_size=invariance_step_size,
                invariance_images=invariance_images)
            config = apply_preset(config, explicit)
            parse_shuffle(config.shuffle_blocks, config.image_size)  # refused before anything is written
        if launched_by_torchrun():
            return run_process(config, resume, nproc_per_node)
        if nproc_per_node > 1:
            return launch_processes(config, resume, nproc_per_node)
        with TrainingProgress() as progress:
            path = run_training(config, resume=resume, on_event=progress.event)
        console.print(Text.assemble(("finished", "green"), f" {path}  (`ftdyn report {path}`)"))
    except FtdynError as exc:
        fail(str(exc))
    except ValueError as exc:  # argument checks inside the engine (unknown view or metric)
        fail(str(exc))
    except KeyboardInterrupt as stop:
        say("interrupted:", "yellow", f"the run is resumable with `ftdyn run --out {out_dir} --resume`")
        raise typer.Exit(stop_exit_code(stop))


def launch_processes(config, resume: bool, nproc_per_node: int) -> None:
    """`ftdyn run --nproc-per-node N`: the settings are checked here, then N processes run it (torchrun)."""
    from engine.distributed import LaunchFailed, launch
    from engine.training import check_config, check_run_directory, process_batch

    check_config(config)
    check_run_directory(Path(config.out), resume)
    process_batch(config.batch_size, nproc_per_node)
    args = without_option(sys.argv[1:], "--nproc-per-node")
    try:
        launch(nproc_per_node, args[args.index("run") + 1:], config.out)
    except LaunchFailed as exc:
        said = "" if exc.exitcode < 0 else " (its message is above)"
        fail(f"{exc}{said}; recorded epochs are kept — continue with "
             f"`ftdyn run --out {config.out} --resume --nproc-per-node {nproc_per_node}`")
    except KeyboardInterrupt as stop:
        say("interrupted:", "yellow", f"the run is resumable with `ftdyn run --out {config.out} --resume "
                                      f"--nproc-per-node {nproc_per_node}`")
        raise typer.Exit(stop_exit_code(stop))


def run_process(config, resume: bool, nproc_per_node: int) -> None:
    """One process of a distributed run (started by torchrun): rank 0 shows progress and writes the run."""
    from engine.distributed import LAUNCHED, join_processes
    from engine.errors import FtdynError
    from engine.training import run_training

    world = int(os.environ["WORLD_SIZE"])
    if nproc_per_node > 1 and nproc_per_node != int(os.environ.get("LOCAL_WORLD_SIZE", world)):
        raise FtdynError(f"torchrun started this run with {os.environ.get('LOCAL_WORLD_SIZE', world)} processes per "
                         f"machine; leave --nproc-per-node out (torchrun's own option says how many)")
    processes = join_processes(config.device)
    try:
        if processes.leader:
            with TrainingProgress() as progress:
                run_training(config, resume=resume, on_event=progress.event, processes=processes)
            console.print(Text.assemble(("finished", "green"), f" {config.out} on {processes.world} processes "
                                                               f"(`ftdyn report {config.out}`)"))
        else:
            run_training(config, resume=resume, processes=processes)
    except FtdynError as exc:
        raise FtdynError(f"process {processes.rank}: {exc}") from None
    except KeyboardInterrupt as stop:
        if processes.leader and LAUNCHED not in os.environ:  # under `ftdyn run --nproc-per-node` the launcher says it
            say("interrupted:", "yellow", f"the run is resumable: start it as before with --resume "
                                          f"(`torchrun … -m ftdyn_tui.cli run --out {config.out} --resume`)")
        raise typer.Exit(stop_exit_code(stop))
    finally:
        processes.leave()


def without_option(args: list[str], name: str) -> list[str]:
    """``args`` less ``name VALUE`` and ``name=VALUE``."""
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(f"{name}="):
            kept.append(arg)
    return kept


def start_detached(args: list[str], out_dir: Path):
    """`ftdyn ARGS` in its own session (immune to the terminal's hang-up and Ctrl-C), output to
    RUN/train.log."""
    import subprocess

    out_dir.mkdir(parents=True, exist_ok=True)
    log = open(out_dir / "train.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "ftdyn_tui.cli", *args], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_for_run(out_dir: Path, process, timeout: float = 600.0) -> bool:
    """Until the run has a status (it started) or the process ended without one."""
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        if (out_dir / "status.json").exists():
            return True
        if process.poll() is not None:
            return (out_dir / "status.json").exists()
        time.sleep(0.2)
    return False


def last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except FileNotFoundError:
        return "no log"
    return lines[-1] if lines else "no output"


def open_tui(paths: list[Path], images: ImageMode) -> None:
    if images != ImageMode.halfcell:
        # textual-image asks the terminal what it can draw when imported: before Textual takes over.
        import textual_image.widget  # noqa: F401

    from ftdyn_tui.app import create_app

    create_app(paths, images=images.value).run()


def parse_epochs(values: Optional[list[str]]) -> Optional[list[int]]:
    items = split_list(values)
    if items is None:
        return None
    try:
        return sorted({int(item) for item in items})
    except ValueError:
        fail(f"epochs must be whole numbers, got {', '.join(items)}")


def resumed_config(out_dir: Path, data: Optional[Path], epochs: Optional[int], device: str, workers: int,
                   autocast: Optional[Autocast] = None):
    """The run's own configuration; --epochs may extend it; --data (moved data), --device, --workers and
    --autocast (resuming on another machine) may change."""
    from engine.errors import FtdynError
    from engine.record import CONFIG
    from engine.training import config_from_saved, saved_config

    if not (out_dir / CONFIG).exists():
        raise FtdynError(f"nothing to resume in '{out_dir}' (no config.json); start it without --resume")
    saved = saved_config(out_dir)
    changes = dict(device=device, workers=workers) | ({"epochs": epochs} if epochs else {}) | \
        ({"data": str(data)} if data else {}) | ({"autocast": autocast.value} if autocast else {})
    return config_from_saved(out_dir, saved, **changes)


class TrainingProgress:
    """Rich progress bar fed by the engine's events: epoch, step, images/s and ETA."""

    def __init__(self):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=console, transient=False)
        self.task = None
        self.tasks: dict = {}

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def event(self, kind: str, **info) -> None:
        if kind == "phase":
            self.progress.console.print(Text(visible(info["name"], MESSAGE_LIMIT), style="dim"))
        elif kind == "warning":
            self.progress.console.print(Text.assemble(("warning:", "yellow"), " ", visible(info["text"], MESSAGE_LIMIT)))
        elif kind == "scan" and info["done"] == info["total"]:
            self.progress.console.print(f"[dim]checked {info['total']} files[/]")
        elif kind == "generate":
            key = ("generate", info["domain"])
            if key not in self.tasks:
                self.tasks[key] = self.progress.add_task(f"generating {info['domain']}", total=info["total"], info="")
            self.progress.update(self.tasks[key], completed=info["done"])
        elif kind == "progress":
            key = ("progress", info["task"])
            if key not in self.tasks:
                self.tasks[key] = self.progress.add_task(info["task"], total=info["total"], info="")
            self.progress.update(self.tasks[key], completed=info["done"], info=info.get("info", ""))
        elif kind == "sweep":
            verb = "resuming" if info["resume"] else "starting"
            self.progress.console.print(Text.assemble((f"sweep {info['index']}/{info['total']}", "bold"),
                                                      f": {verb} {visible(info['name'])}"))
        elif kind == "epoch":
            if self.task is not None:
                self.progress.remove_task(self.task)
            self.task = self.progress.add_task(f"epoch {info['epoch']}/{info['total']}", total=info["steps"], info="")
        elif kind == "step" and self.task is not None:
            self.progress.update(self.task, completed=info["step"],
                                 info=f"{info['images_per_s']:.0f} img/s  loss {info['loss']:.3f}")
        elif kind == "epoch_done":
            from engine.training import epoch_summary

            self.progress.console.print(epoch_summary(info["record"]))


@app.command()
def demo(
    out_dir: Path = typer.Option(Path("runs/demo"), "--out", help="Where the three runs go (a previous demo there "
                                                                 "is replaced)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Fine-tuning epochs per target (default: 5; "
                                         "with --transfer, per run, default 6)."),
    seed: int = typer.Option(0, "--seed", help="Seeds the generated data, the source model and the runs."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    no_tui: bool = typer.Option(False, "--no-tui", help="Print the report instead of opening the TUI."),
    model: str = typer.Option("resnet18", "--model", help="Any torchvision classifier, pretrained from scratch on "
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
    from engine.report import build_report

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
        print_tables(build_report([read_run(path) for path in runs]))
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


@app.command()
def sweep(
    out_dir: Path = typer.Option(..., "--out", help="Folder for the grid's run directories."),
    models: list[str] = typer.Option(..., "--models", help="Models, comma-separated."),
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
    interval_groups: int = typer.Option(10, "--interval-groups", min=2, help=INTERVAL_GROUPS_HELP),
    interval_level: float = typer.Option(0.9, "--interval-level", help=INTERVAL_LEVEL_HELP),
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
    from engine.training import RunConfig

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
                         metrics=split_list(metrics) or ["pwsm", "procrustes", "cka"], view=view,
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


class FigureFormat(str, Enum):
    pdf = "pdf"
    png = "png"
    svg = "svg"


@app.command()
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


@app.command("resize-cka")
def resize_cka(
    model: str = typer.Option(..., "--model", help="A torchvision classifier (see `ftdyn models`)."),
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
    from engine.training import pick_device

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
    from ftdyn_tui.model import heatmap_text

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


@app.command()
def layers(
    model: str = typer.Argument(..., help="torchvision model name"),
    image_size: int = typer.Option(224, "--image-size", help="Input size used to compute output shapes."),
    all_modules: bool = typer.Option(False, "--all", help="Also list modules whose output is not a feature map."),
) -> None:
    """List a model's hookable layers with their output shapes; * marks the defaults."""
    import torchvision

    from engine.errors import FtdynError
    from engine.models import architecture, check_model_name, default_layer_names, trace_layers

    try:
        check_model_name(model)
        network = architecture(model, image_size=image_size)
        traced = trace_layers(network, image_size)
    except FtdynError as exc:
        fail(str(exc))
    defaults = set(default_layer_names(model, traced, network))
    table = Table(title=f"{model} at {image_size}×{image_size} (* = default; shared modules cannot be hooked; "
                        f"h,w,c maps are permuted, a class token (+cls) is measured by the cls view)")
    for column in ("", "layer", "type", "output", "layout", "runs"):
        table.add_column(column)
    for layer in traced:
        is_map = layer.layout is not None and layer.layout.kind != "vector"
        if not all_modules and not is_map:
            continue
        table.add_row("*" if layer.name in defaults else "", layer.name, layer.kind, str(tuple(layer.shape)),
                      layout_text(layer.layout), str(layer.calls),
                      style="bold" if layer.name in defaults else ("dim" if layer.calls > 1 else None))
    out.print(table)
    from engine.strategies import block_groups

    groups = Table(title="block groups, input → output (--train-blocks; discriminative rates)")
    for column in ("group", "tensors", "first", "last"):
        groups.add_column(column)
    for name, params in block_groups(model, network).items():
        groups.add_row(name, str(len(params)), params[0], params[-1])
    out.print(groups)


def layout_text(layout) -> str:
    """How a layer's output is read: 'c,h,w'; 'h,w,c' (permuted to c,h,w); tokens on their grid (+ class token)."""
    if layout is None:
        return "not a map"
    if layout.kind == "tokens":
        where = f"tokens {layout.grid[0]}×{layout.grid[1]}" if layout.grid else "tokens"
        return where + (" +cls" if layout.class_token else "")
    return {"channels_first": "c,h,w", "channels_last": "h,w,c", "vector": "vector"}[layout.kind]


@app.command()
def tui(
    runs: Optional[list[Path]] = typer.Argument(None, help="Run directories or folders holding runs (default: ./runs)."),
    images: ImageMode = typer.Option(ImageMode.halfcell, "--images", help="How images are drawn: halfcell colour "
                                                                         "cells (any terminal, tmux, SSH), sixel, kitty, "
                                                                         "or auto-detect."),
) -> None:
    """Follow runs live: status, per-layer distance curves, tables and per-filter images."""
    open_tui(runs or [Path("runs")], images)


@app.command()
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
    from engine.training import visualise_from_checkpoints

    try:
        drawn = visualise_from_checkpoints(run_dir, layer, filter_index, split_list(classes), parse_epochs(epochs))
    except FtdynError as exc:
        fail(str(exc))
    folder = run_dir / "vis" / layer / f"f{filter_index:04d}"
    drew = f"drew epochs {', '.join(map(str, drawn))} → {folder} (montage-class.png, montage-sample.png)"
    out.print(Text(visible(drew, MESSAGE_LIMIT)))


@app.command()
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
    from engine.report import build_report

    readable = readable_runs(runs, "report")
    if out_dir is not None:
        write_tables(fmt, build_report(readable), out_dir)
    else:
        emit(fmt, build_report(readable), print_tables)


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


def emit(fmt: ReportFormat, tables: dict[str, list[dict]], print_as_tables, as_json: dict | None = None) -> None:
    """Tables to stdout as JSON (``as_json`` instead where given), CSV or terminal tables."""
    if fmt == ReportFormat.json:
        # ensure_ascii: every control character from a run directory is escaped
        out.print_json(json.dumps(tables if as_json is None else as_json), ensure_ascii=True)
    elif fmt == ReportFormat.csv:
        sys.stdout.write(tables_as_csv(tables))
    else:
        print_as_tables(tables)


transfer = typer.Typer(
    help="What was transferred (Neyshabur et al. 2020), from a run's checkpoints: the loss barrier between two "
         "models and module criticality. Results go to RUN/analyses/ and show in `ftdyn report` and the TUI.",
    no_args_is_help=True)
app.add_typer(transfer, name="transfer")

TRAIN_IMAGES_HELP = "Training images the train loss/error is measured on (a seeded subset; 0: all)."
BN_BATCHES_HELP = ("Training batches BatchNorm statistics are re-estimated on, wherever the weights differ from a "
                   "trained model's.")
DATA_HELP = "The run's data folder, if it has moved since training."


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
    from engine.analyses.barrier import run_barrier

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
    from engine.analyses.criticality import DEFAULT_SIGMAS, run_criticality

    try:
        grid = tuple(float(v) for v in split_list(sigmas)) if sigmas else DEFAULT_SIGMAS
    except ValueError:
        fail("--sigmas takes numbers in (0, 1], comma-separated")
    result, path = run_posthoc(lambda on_event: run_criticality(run_ref, points, epsilon, noise_draws, grid, train_images,
                                                          bn_batches, str(data) if data else None, on_event))
    emit_posthoc(result, path, fmt)


@app.command()
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
    from engine.analyses.feature_umap import run_feature_umap

    result, path = run_posthoc(lambda on_event: run_feature_umap(
        run_dir, layer, parse_epochs(epochs), features, neighbours, min_dist, metric, seed,
        str(data) if data else None, on_event))
    emit_posthoc(result, path, fmt)


@app.command()
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
    from engine.analyses.invariance import InversionSettings, run_invariance

    settings = InversionSettings(steps=steps, step_size=step_size, images=images, seed=seed)
    result, path = run_posthoc(lambda on_event: first_and_last(run_invariance(
        run_dir, split_list(layers), parse_epochs(epochs), settings, both_directions,
        str(data) if data else None, on_event)))
    from engine.analyses import read_results
    from engine.report import posthoc_tables

    chosen = {f"invariance-e{epoch}.json" for epoch in result["x"]} | {path.name}
    written = [r for r in read_results(run_dir) if r.get("file") in chosen]  # this call's, not older ones
    emit(fmt, posthoc_tables([(run_dir.name, r) for r in written]), print_posthoc, as_json=result)


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
    from engine.report import posthoc_tables

    emit(fmt, posthoc_tables([(path.parent.parent.name, result)], with_points=True), print_posthoc, as_json=result)


def tables_as_csv(tables: dict[str, list[dict]]) -> str:
    """All tables in one CSV stream, each preceded by a '# name' line."""
    return "".join(f"# {name}\n{table_csv(rows)}\n" for name, rows in tables.items())


def table_csv(rows: list[dict]) -> str:
    """One table as CSV with a header row (every column any row has; nested cells as JSON, text from run
    directories with control characters made visible); empty for a table without rows."""
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(key for row in rows for key in row)))
    writer.writeheader()
    writer.writerows({k: json.dumps(v) if isinstance(v, (dict, list)) else visible(v, 10_000)
                      if isinstance(v, str) else v for k, v in row.items()} for row in rows)
    return buffer.getvalue()


def write_tables(fmt: ReportFormat, tables: dict[str, list[dict]], folder: Path) -> None:
    """--out: one CSV file per table (each one ``pandas.read_csv`` reads as it is), or report.json."""
    from engine.record import write_atomic

    try:
        folder.mkdir(parents=True, exist_ok=True)
        if fmt == ReportFormat.json:
            files = {"report.json": json.dumps(tables, indent=1)}
        else:
            files = {f"{name}.csv": table_csv(rows) for name, rows in tables.items()}
        for name, text in files.items():
            write_atomic(folder / name, text.encode())
    except OSError as exc:
        fail(f"cannot write the report into '{folder}' ({exc.strerror}); choose another --out")
    say("wrote", "green", f"{', '.join(files)} into {folder}")


def fmt_number(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    """A terminal table whose cells are plain text: names from run directories are never markup."""
    table = Table(title=title)
    for column in columns:
        table.add_column(Text(visible(column)), justify="right" if column.isdigit() else "left")
    for row in rows:
        table.add_row(*[Text(visible(cell)) for cell in row])
    out.print(table)


def print_tables(tables: dict[str, list[dict]]) -> None:
    print_table("Table 1 · accuracy",
                ["run", "model", "strategy", "state", "epochs", "train acc", "held-out acc", "best held-out"],
                [[r["run"], str(r["model"]), str(r["strategy"]), r["state"], r["epochs"], fmt_number(r["train_accuracy"]),
                  fmt_number(r["held_out_accuracy"]), fmt_number(r["best_held_out_accuracy"])]
                 for r in tables["accuracy"]])
    print_table("Table 2 · reusability: mean ± std over epochs 1…T of the mean layer distance"
                + interval_note(tables["reusability"], "interval of the mean: "),
                ["run", "measure", "mean ± std", "interval", "epochs"],
                [[r["run"], r["measure"], f"{fmt_number(r['mean'])} ± {fmt_number(r['std'])}", interval_cell(r),
                  str(r["epochs"])] for r in tables["reusability"]])
    print_table("Pearson r between measures (per layer over epochs 1…T; mean ± std over layers and runs)",
                ["measures", "r mean ± std", "layers", "undefined"],
                [[r["measures"], f"{fmt_number(r['mean_r'], 2)} ± {fmt_number(r['std_r'], 2)}", str(r["layers"]),
                  str(r["undefined"])] for r in tables["correlation"]])
    print_table("Strategies: parameters and per-group learning rates at the last epoch",
                ["run", "strategy", "parameters", "learning rates"],
                [[r["run"], str(r["strategy"]), ", ".join(f"{k}={v}" for k, v in r["parameters"].items()) or "—",
                  ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                            for k, v in r["learning_rates"].items()) or "—"] for r in tables["strategies"]])
    print_by_epoch("Layer distance by epoch (early → deep)" + interval_note(tables["layers"], "± half-width of the "),
                   ["run", "measure", "layer"], tables["layers"], ("run", "measure", "layer"))
    if tables.get("changes"):
        print_table("Still moving? Each layer's distance at the last recorded epoch minus the one before, a paired "
                    "difference (same probe images; moved: its interval excludes 0)" + interval_note(tables["changes"], ""),
                    ["run", "measure", "layer", "change", "interval", "moved"],
                    [[r["run"], r["measure"], r["layer"], f"{r['difference']:+.4f}", interval_cell(r),
                      "yes" if r["moved"] else "no"] for r in tables["changes"]])
    for row in tables.get("warnings", []):
        say("warning:", "yellow", f"{row['run']}: {row['warning']}")
    if tables.get("transfer"):
        print_transfer(tables["transfer"])
    if tables["series"]:
        print_by_epoch("Other analyses by epoch (drift: ‖θᵗ − θ⁰‖ per module; BatchNorm statistics left out)",
                       ["run", "analysis", "measure", "module"], tables["series"], ("run", "analysis", "measure", "row"))
    print_posthoc(tables)


def print_transfer(rows: list[dict]) -> None:
    """Neyshabur et al.'s block-shuffle table: P-T beside RI-T per block size, and the seed barriers."""
    from engine.report import INITS, TARGET_SHARE

    def accuracy(row: dict, init: str) -> str:
        mean, std = row[f"{init}_final_accuracy"], row[f"{init}_final_accuracy_std"]
        return "—" if mean is None else fmt_number(mean) + (f" ± {fmt_number(std)}" if std is not None else "")

    def speed(row: dict, init: str) -> str:
        if not row[f"{init}_runs"]:
            return "—"
        epochs = row[f"{init}_epochs_to_target"]
        return fmt_number(epochs, 1) if epochs is not None else f"not reached ({row[f'{init}_reached_target']}/{row[f'{init}_runs']})"

    def barrier(row: dict, init: str) -> str:
        train, held = row[f"{init}_barrier_train_loss"], row[f"{init}_barrier_held_out_loss"]
        return "—" if train is None and held is None else f"{fmt_number(train)} / {fmt_number(held)}"

    print_table(f"Transfer · block shuffle (Neyshabur et al. 2020): final held-out accuracy (mean ± std over seeds), "
                f"epochs to {TARGET_SHARE:.0%} of the better final accuracy at that block size, loss barrier between "
                f"two seeds (training / held-out loss)",
                ["model", "data", "block", "target", "P-T acc", "RI-T acc", "P-T epochs", "RI-T epochs",
                 "P-T barrier", "RI-T barrier"],
                [[str(r["model"]), Path(str(r["data"])).name, r["block"], fmt_number(r["target_accuracy"]),
                  *[accuracy(r, key) for key in INITS.values()], *[speed(r, key) for key in INITS.values()],
                  *[barrier(r, key) for key in INITS.values()]] for r in rows])


def interval_cell(row: dict) -> str:
    """'[0.301, 0.327]', or '—' where the row has no interval."""
    return "—" if row.get("low") is None else f"[{fmt_number(row['low'])}, {fmt_number(row['high'])}]"


def interval_note(rows: list[dict], what: str) -> str:
    """'; <what>90 % jackknife over G=10 probe-image groups' for the intervals in ``rows`` ('' if none)."""
    kinds = sorted({(r["level"], r["groups"], r.get("estimate") or "plug-in") for r in rows if r.get("low") is not None})
    return "" if not kinds else "; " + what + ", ".join(
        f"{level:.0%} jackknife over G={groups} probe-image groups, {estimate} values"
        for level, groups, estimate in kinds)


def print_by_epoch(title: str, columns: list[str], rows: list[dict], keys: tuple[str, ...]) -> None:
    """A long table (one row per key and epoch) printed wide: one line per key, one column per epoch;
    a value with an interval shows its half-width (value ± t·SE)."""
    wide: dict[tuple, dict[int, str]] = {}
    for row in rows:
        cell = fmt_number(row["value"])
        if row.get("low") is not None and row["value"] is not None:
            cell += f"±{fmt_number((row['high'] - row['low']) / 2)}"
        wide.setdefault(tuple(row[k] for k in keys), {})[row["epoch"]] = cell
    epochs = sorted({row["epoch"] for row in rows})
    print_table(title, columns + [str(e) for e in epochs],
                [[*map(str, key), *[series.get(e, "—") for e in epochs]] for key, series in wide.items()])


def print_posthoc(tables: dict[str, list[dict]]) -> None:
    """Barrier numbers with their curves drawn, and criticality as a module × α table."""
    if tables.get("barrier"):
        names = ("held_out_loss", "held_out_error", "train_loss", "train_error")
        print_table("Loss barrier: max over λ of the value above the line between the endpoints",
                    ["run", "A", "B", *[n.replace("_", " ") for n in names]],
                    [[r["run"], str(r["A"]), str(r["B"]), *[fmt_number(r.get(f"barrier_{n}")) for n in names]]
                     for r in tables["barrier"]])
        curves: dict[tuple, list[dict]] = {}
        for row in tables["barrier_curve"]:
            curves.setdefault((row["run"], row["A"], row["B"]), []).append(row)
        for (run, a, b), rows in curves.items():
            out.print(curve_text(visible(f"{run}: A = {a} → B = {b}"), [r["lambda"] for r in rows],
                                 {n.replace("_", " "): [r[n] for r in rows] for n in names}, "λ"))
    if tables.get("criticality"):
        from ftdyn_tui.model import heatmap_text

        grid: dict[str, dict[str, dict[float, float]]] = {}
        for row in tables["criticality_curve"]:
            grid.setdefault(row["run"], {}).setdefault(row["module"], {})[row["alpha"]] = row["train_error"]
        for run, modules in grid.items():
            alphas = sorted({a for values in modules.values() for a in values})
            matrix = [[values.get(a, float("nan")) for a in alphas] for values in modules.values()]
            out.print(heatmap_text(list(modules), [f"{a:.2g}" for a in alphas], matrix, width=min(out.width, 100),
                                   title=f"{visible(run)}: train error after rewinding one module to (1 − α)·θ⁰ + α·θᵀ "
                                         f"(columns: α)", unit="train error"))
        print_table("Module criticality", ["run", "module", "smallest α within ε", "ε", "μ", "‖θᵀ − θ⁰‖"],
                    [[r["run"], r["module"], fmt_number(r["alpha_min"], 2), str(r["epsilon"]), fmt_number(r["mu"], 3),
                      fmt_number(r["drift"], 3)] for r in tables["criticality"]])
    if tables.get("umap"):
        print_umap(tables["umap"])
    if tables.get("invariance"):
        print_invariance(tables["invariance"], tables.get("invariance_inversion", []))


def print_invariance(rows: list[dict], inversions: list[dict]) -> None:
    """Per run and epoch: STIR(tuned j | source i) as a heatmap, its diagonal beside CKA; the inversions' errors."""
    from ftdyn_tui.model import heatmap_text

    grids: dict[tuple, list[dict]] = {}
    for row in rows:
        grids.setdefault((row["run"], row["epoch"]), []).append(row)
    for (run, epoch), cells in grids.items():
        sources = list(dict.fromkeys(r["source_layer"] for r in cells))
        tuned = list(dict.fromkeys(r["tuned_layer"] for r in cells))
        value = {(r["source_layer"], r["tuned_layer"]): r["stir_tuned_given_source"] for r in cells}
        matrix = [[value.get((a, b)) if value.get((a, b)) is not None else float("nan") for b in tuned] for a in sources]
        out.print(heatmap_text(sources, tuned, matrix, width=min(out.width, 100),
                               title=f"{visible(run)} @ epoch {epoch}: STIR(tuned layer j | source layer i) — rows i "
                                     f"(inverted through the source), columns j", unit="STIR"))
        print_table(f"{run} @ epoch {epoch}: each layer with itself",
                    ["layer", "STIR(tuned | source)", "STIR(source | tuned)", "CKA"],
                    [[r["source_layer"], fmt_number(r["stir_tuned_given_source"]),
                      fmt_number(r["stir_source_given_tuned"]), fmt_number(r["cka"])]
                     for r in cells if r["source_layer"] == r["tuned_layer"]])
    if inversions:
        print_table("Inversions through the source: relative error ‖f(x′) − f(x)‖ / ‖f(x)‖ of the best iterate",
                    ["run", "layer", "median", "max", "seconds (— reused)"],
                    [[r["run"], r["layer"], fmt_number(r["median_error"]), fmt_number(r["max_error"]),
                      fmt_number(r["seconds"], 1)] for r in inversions])


def print_umap(rows: list[dict]) -> None:
    print_table("UMAP fitted on the source: images' median move (× the source map's RMS radius; UMAP's own "
                "placement noise beside it) and the share whose 5 nearest neighbours have their class, on the map "
                "and in the features",
                ["run", "layer", "features", "epoch", "move", "UMAP noise", "neighbours (map)", "neighbours (features)"],
                [[r["run"], r["layer"], r["features"], str(r["epoch"]), fmt_number(r.get("shift")),
                  fmt_number(r.get("shift_floor")), fmt_number(r.get("neighbours_map")),
                  fmt_number(r.get("neighbours_features"))] for r in rows])


def curve_text(title: str, xs: list[float], series: dict[str, list[float]], x_label: str,
               width: int = 78, height: int = 16):
    """A small terminal plot (plotext) of a few curves over one axis."""
    import plotext as plt
    from rich.text import Text

    plt.clear_figure()
    plt.plotsize(width, height)
    plt.theme("clear")
    from ftdyn_tui.model import CURVE_COLOURS

    for (name, ys), colour in zip(series.items(), CURVE_COLOURS):
        points = [(x, y) for x, y in zip(xs, ys) if y is not None]
        if points:
            plt.plot([p[0] for p in points], [p[1] for p in points], label=name, marker="braille", color=colour)
    plt.title(title)
    plt.xlabel(x_label)
    return Text.from_ansi(plt.build())


def main() -> None:
    app()


if __name__ == "__main__":
    main()
