"""`ftdyn run`: one training run, on one process, several (`--nproc-per-node`, torchrun) or detached; resume."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.text import Text

from engine.defaults import INTERVAL_GROUPS, INTERVAL_LEVEL, METRICS
from engine.errors import stop_exit_code
from ftdyn_tui.cli.common import console, fail, open_tui, parse_epochs, say, split_list
from ftdyn_tui.cli.options import (
    ANALYSES_HELP, Autocast, INTERVALS_HELP, INTERVAL_GROUPS_HELP, INTERVAL_LEVEL_HELP, ImageMode, IntervalMode,
    Optimizer, Preset, Strategy,
)
from ftdyn_tui.cli.progress import TrainingProgress


def run(
    data: Optional[Path] = typer.Option(None, "--data", help="ImageFolder root: train/ and val/ (or test/) of class "
                                                             "folders, or one folder of class folders split by "
                                                             "--val-fraction. With --resume: the run's own, unless given."),
    out_dir: Path = typer.Option(..., "--out", help="Run directory to create (the record the TUI and report read)."),
    model: str = typer.Option("resnet50", "--model", help="Any torchvision classification model (vgg19, resnet50, "
                                                         "densenet121, …), timm:NAME (timm:convnext_tiny) or "
                                                         "hf:PATH_OR_NAME (a save_pretrained folder or Hub name)."),
    weights: str = typer.Option("DEFAULT", "--weights", help="torchvision weights name (IMAGENET1K_V1, DEFAULT), a local "
                                                            "state-dict or .safetensors file, or none (timm: DEFAULT "
                                                            "or a pretrained tag; hf: DEFAULT is the folder's own)."),
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
                                                                       f"@view (default: {','.join(METRICS)})."),
    view: str = typer.Option("positions", "--view", help="positions, pooled, flat, filter, filter-map or cls (docs/METRICS.md)."),
    alpha: float = typer.Option(0.5, "--alpha", min=0.0, max=1.0, help="PWSM α for a plain 'pwsm' metric."),
    intervals: IntervalMode = typer.Option(IntervalMode.auto, "--intervals", help=INTERVALS_HELP),
    interval_groups: int = typer.Option(INTERVAL_GROUPS, "--interval-groups", min=2, help=INTERVAL_GROUPS_HELP),
    interval_level: float = typer.Option(INTERVAL_LEVEL, "--interval-level", help=INTERVAL_LEVEL_HELP),
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
    from engine.run_config import RunConfig, apply_preset
    from engine.training import run_training

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
                metrics=split_list(metrics) or list(METRICS), view=view, alpha=alpha,
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
    from engine.run_config import check_config, check_run_directory, process_batch

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


def resumed_config(out_dir: Path, data: Optional[Path], epochs: Optional[int], device: str, workers: int,
                   autocast: Optional[Autocast] = None):
    """The run's own configuration; --epochs may extend it; --data (moved data), --device, --workers and
    --autocast (resuming on another machine) may change."""
    from engine.errors import FtdynError
    from engine.record import CONFIG
    from engine.run_config import config_from_saved, saved_config

    if not (out_dir / CONFIG).exists():
        raise FtdynError(f"nothing to resume in '{out_dir}' (no config.json); start it without --resume")
    saved = saved_config(out_dir)
    changes = dict(device=device, workers=workers) | ({"epochs": epochs} if epochs else {}) | \
        ({"data": str(data)} if data else {}) | ({"autocast": autocast.value} if autocast else {})
    return config_from_saved(out_dir, saved, **changes)
