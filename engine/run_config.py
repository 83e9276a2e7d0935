"""A run's settings (`ftdyn run`'s options) and the run directory's saved config.json read back
as them: what every command that starts, resumes or reopens a run checks first."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from engine.analyses import declared_parts
from engine.analyses.parts import default_epoch_parts
from engine.data import scanned_folders
from engine.defaults import METRICS
from engine.errors import FtdynError
from engine.intervals import DEFAULT_GROUPS, DEFAULT_LEVEL, IntervalSettings, settings_for
from engine.record import CONFIG, RunFormatError, RunReader
from engine.record_checks import config_problem, setting_fits
from engine.untrusted import visible


# config.json's ``recorded_by`` for a run of `ftdyn run` (absent in runs recorded before the monitor)
TRAINER = "ftdyn run"

PAPER_PRESET = {
    "optimizer": "adam",
    "lr": 1e-4,
    "batch_size": 196,
    "metrics": ["pwsm:0@positions", "procrustes@filter-map"],
}


@dataclass
class RunConfig:
    model: str
    data: str
    out: str
    weights: str = "DEFAULT"
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-4
    optimizer: str = "adam"
    weight_decay: float = 0.0
    grad_clip: float | None = None
    image_size: int = 224
    augment: bool = False
    layers: list[str] | None = None
    probe_size: int = 256
    metrics: list[str] = field(default_factory=lambda: list(METRICS))
    view: str = "positions"
    alpha: float = 0.5
    every_steps: int = 0
    device: str = "auto"
    autocast: str = "off"  # off, bf16 or fp16 (engine.accelerate; CUDA only)
    channels_last: bool = False
    compile: bool = False  # torch.compile the training forward
    workers: int = 2
    seed: int = 0
    val_fraction: float = 0.2
    save_every_epoch: bool = False
    preset: str | None = None
    strategy: str = "full"
    train_blocks: list[str] = field(default_factory=list)
    layer_decay: float = 0.9
    warmup_epochs: float = 1.0
    vis: bool = True
    vis_epochs: list[int] | None = None  # None: every epoch
    vis_filters: str | None = None  # 'layer:index,…'
    vis_k: int = 8
    analyses: list[str] = field(default_factory=lambda: default_epoch_parts())
    shuffle_blocks: str | None = None  # block side in pixels, 'pixel', or None (ANALYSES.md §4)
    shuffle_seed: int = 0  # the permutation's seed: one task for every run of a sweep
    intervals: str = "auto"  # jackknife intervals (engine.intervals): auto (streaming views), all, off
    interval_groups: int = DEFAULT_GROUPS
    interval_level: float = DEFAULT_LEVEL
    invariance_steps: int = 500  # shared invariance (--analyses …,invariance): inversion steps per image
    invariance_step_size: float = 0.5  # η of the inversions' L2-normalised steps
    invariance_images: int = 0  # probe images inverted (0: all)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def apply_preset(config: RunConfig, explicit: set[str]) -> RunConfig:
    """`--preset paper`: what the paper reports, for every option the user did not set."""
    if config.preset is None:
        return config
    if config.preset != "paper":
        raise FtdynError(f"unknown preset '{config.preset}'; the one preset is 'paper'")
    values = {k: v for k, v in PAPER_PRESET.items() if k not in explicit}
    return dataclasses.replace(config, **values)


# How a run of N processes (engine.distributed) sets its batches and learning rate, recorded with it.
LR_RULE = ("--batch-size is the effective batch: each of the N processes trains on batch-size / N images "
           "a step and DDP averages their gradients; --lr applies to the effective batch unchanged (no "
           "scaling with N), so a run's settings mean the same optimisation on any number of processes")


def process_batch(batch_size: int, world: int) -> int:
    """Each process's share of the effective batch (LR_RULE); refused when it does not divide."""
    if batch_size % world:
        low = max(world, batch_size // world * world)
        raise FtdynError(f"--batch-size {batch_size} does not split evenly over {world} processes; use a "
                         f"multiple of {world} (e.g. {low} or {low + world})")
    return batch_size // world


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise FtdynError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise FtdynError(f"unknown device '{name}'; use auto, cpu or cuda")
    return torch.device(name)


def seed_epoch(seed: int, epoch: int) -> int:
    """One seed per (run seed, epoch): what makes an epoch replayable after a resume."""
    return (seed * 1_000_003 + epoch) % 2**63


def check_config(config: RunConfig) -> None:
    """Settings no run can use, refused before anything is written."""
    for name, value, low in (("--lr", config.lr, "> 0"), ("--weight-decay", config.weight_decay, "≥ 0"),
                             ("--grad-clip", config.grad_clip, "> 0"), ("--layer-decay", config.layer_decay, "> 0")):
        if value is None:
            continue
        if not math.isfinite(value) or (value <= 0 if low == "> 0" else value < 0):
            raise FtdynError(f"{name} must be a finite number {low} (got {value})")
    data, out = Path(config.data).expanduser().resolve(), Path(config.out).expanduser().resolve()
    if any(out == folder or out.is_relative_to(folder) for folder in map(Path.resolve, scanned_folders(data))):
        raise FtdynError(f"--out '{config.out}' is inside --data '{config.data}': the next scan would take the run's "
                         f"checkpoints/ and vis/ for classes; put runs outside the data folder")
    try:  # the intervals' own check, also for --intervals off: a resumed run may turn them on
        settings_for(config.interval_groups, config.interval_level, "auto")
    except ValueError as exc:
        raise FtdynError(str(exc)) from None
    if data.is_relative_to(out):
        raise FtdynError(f"--data '{config.data}' is inside --out '{config.out}'; put runs and data in separate folders")
    if out.exists() and not out.is_dir():
        raise FtdynError(f"--out '{config.out}' is a file, not a folder; choose another --out")


def check_run_directory(run_dir: Path, resume: bool, resume_option: str = "--resume", out_option: str = "--out") -> None:
    """A new run needs a directory without a run; a resumed one a directory with a run. The options
    are named as the caller takes them (`ftdyn run`'s, or the monitor's arguments)."""
    exists = (run_dir / CONFIG).exists()
    if exists and not resume:
        raise FtdynError(f"run directory '{run_dir}' already holds a run; pass {resume_option} to continue it "
                         f"or choose another {out_option}")
    if resume and not exists:
        raise FtdynError(f"nothing to resume in '{run_dir}' (no {CONFIG}); start it without {resume_option}")


def recorded_estimate(run_dir: Path) -> str:
    """What the run's recorded intervals are centred on ("bias-corrected", or "plug-in" for a run
    recorded before bias correction); a run without recorded intervals starts bias-corrected."""
    try:
        config = saved_config(run_dir)
    except FtdynError:
        return "bias-corrected"
    part = next((p for p in declared_parts(config) if p.get("name") == "distance"), {})
    found = IntervalSettings.from_json(part.get("intervals"))
    return found.estimate if found is not None else "bias-corrected"


def saved_config(run_dir: Path) -> dict[str, Any]:
    """A run's config.json, checked: a foreign, damaged or hostile one is a one-line error naming it."""
    try:
        saved = RunReader(run_dir).config()
    except (RunFormatError, OSError, UnicodeDecodeError) as exc:
        raise FtdynError(f"'{run_dir}' is not a readable ftdyn run ({exc})") from None
    if saved is None:
        raise FtdynError(f"'{run_dir}' is not an ftdyn run directory (no {CONFIG})")
    if isinstance(saved, dict) and saved.get("recorded_by", TRAINER) != TRAINER:
        raise FtdynError(f"'{run_dir}' was recorded by {visible(str(saved['recorded_by']), 60)}: ftdyn cannot "
                         f"rebuild its model, data and probe images, which this needs (report, figures and the app "
                         f"read it); run this on a run made by `ftdyn run`")
    problem = config_problem(saved)
    if problem is None and not all(key in saved for key in ("run", "dataset", "model", "layers")):
        problem = f"{CONFIG} has no run, dataset, model and layers settings"
    if problem is None and not isinstance(saved["dataset"].get("classes"), list):
        problem = f"{CONFIG} names no classes"
    if problem:
        raise FtdynError(f"'{run_dir}' is not a readable ftdyn run ({problem})")
    config_from_saved(run_dir, saved)  # its settings are checked here, before any command relies on them
    return saved


def config_from_saved(run_dir: Path, saved: dict[str, Any], **changes: Any) -> RunConfig:
    """The RunConfig a run was started with (``changes`` applied); settings this version does not know
    are refused by name rather than guessed."""
    settings = dict(saved["run"], out=str(run_dir), **changes)
    settings.setdefault("analyses", ["distance"])  # a schema-1 run measured feature distances only
    if "amp" in settings:  # before --autocast: --amp was fp16 autocast on CUDA
        settings.setdefault("autocast", "fp16" if settings.pop("amp") is True else "off")
    known = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise FtdynError(f"'{run_dir}' was written by another ftdyn version (unknown setting "
                         f"'{visible(unknown[0], 40)}'); open it with that version")
    for spec in dataclasses.fields(RunConfig):
        if spec.name in settings and not setting_fits(settings[spec.name], spec.type):
            raise FtdynError(f"'{run_dir}' has a damaged {CONFIG}: setting '{spec.name}' is not {spec.type}")
    try:
        return RunConfig(**settings)
    except TypeError as exc:
        raise FtdynError(f"'{run_dir}' lacks settings this version needs ({exc})") from None


def hooked_layers(saved: dict[str, Any], wanted: list[str]) -> list[str]:
    """The layers a run hooked (from its checked config.json); a one-line error naming the first of
    ``wanted`` it did not hook."""
    hooked = [entry["name"] for entry in saved["layers"]]
    unknown = [name for name in wanted if name not in hooked]
    if unknown:
        raise FtdynError(f"layer '{unknown[0]}' was not hooked in this run; choose from {', '.join(hooked)}")
    return hooked
