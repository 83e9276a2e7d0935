"""Fine-tuning with feature dynamics recorded every epoch (the paper's pipeline, §3–4).

    epoch 0: evaluate the untouched model and record its distances (exactly 0: the anchor)
    for each epoch t = 1…T:
        train one pass over the training split (optionally measuring every N steps)
        evaluate on the held-out split
        measure every hooked layer against the frozen source model on the probe set
        save the checkpoint (with the epoch's record inside), then append the record

Resuming continues after the last complete epoch: each epoch's randomness (shuffling,
augmentation, dropout) is seeded from (seed, epoch), so a resumed run on CPU records the same
history as one that was never interrupted.
"""

from __future__ import annotations

import copy
import dataclasses
import errno
import math
import os
import re
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, RandomSampler, Sampler, Subset

from engine.accelerate import autocast, check_accelerator_options, compiled, memory_format, to_memory_format
from engine.analyses import declared_parts
from engine.analyses.parts import PartContext, build_epoch_parts, default_epoch_parts, epoch_parts, parse_analyses
from engine.analyses.runner import EpochAnalyses
from engine.capture import feature_map_shape, parse_measures
from engine.data import (
    ImageList,
    UnreadableImage,
    image_transform,
    load_image_data,
    scanned_folders,
    pixel_transform,
    probe_indices,
    seeded_generator,
)
from engine.shuffle import BlockShuffle, parse_shuffle
from engine.errors import FtdynError, Stopped, exception_line
from engine.intervals import (
    DEFAULT_GROUPS,
    DEFAULT_LEVEL,
    MOMENT_VIEWS,
    ROWS_PER_FEATURE_TO_COVER,
    IntervalSettings,
    groups_within_memory,
    moment_bytes,
    settings_for,
)
from engine.models import LayerInfo, build_model, head_name, select_layers, trace_layers
from engine.receptive import patch_fields, receptive_fields
from engine.distributed import PEER_STOPPED, Processes
from engine.report import epoch_summary
from engine.record import CONFIG, NoWriter, RunFormatError, RunReader, RunWriter, config_problem, setting_fits, write_atomic
from engine.run_lock import RunLock
from engine.similarity.metrics import DegenerateWhiteningError, DegenerateWhiteningWarning
from engine.untrusted import NOFOLLOW, visible
from engine.strategies import (
    BATCHNORM,
    LP_C_GRID,
    RGN_BATCHES,
    StrategyConfig,
    block_groups,
    check_strategy,
    fit_linear_probe,
    load_head,
    make_optimizer,
    penultimate_features,
    plan_parameters,
    relative_gradient_norms,
    rgn_multipliers,
    set_train_mode,
    warmup_factor,
)
from engine.similarity.debiased import DEBIASED
from engine.similarity.views import check_metrics_for_view, replicate_metrics, view_shape
from engine.visualise import FilterEvidence, Visualiser, VisSettings, parse_named_filters

LP_SETTINGS = {"method": "multinomial logistic regression, L2, L-BFGS (scipy), max 200 iterations",
               "standardisation": "one scalar mean and std over all features",
               "C_grid": list(LP_C_GRID), "C_selection": "accuracy on a seeded 20% split of the training features",
               "finetune_batchnorm": "frozen (eval mode), as Kumar et al."}

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
    metrics: list[str] = field(default_factory=lambda: ["pwsm", "procrustes", "cka"])
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


class NonFiniteLoss(FtdynError):
    pass


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


def source_fingerprint(model: nn.Module) -> float:
    """A checksum of the source weights, to refuse resuming against a different source model."""
    with torch.no_grad():
        return float(sum(p.double().abs().sum() for p in model.state_dict().values() if p.is_floating_point()))


class WithoutLoneLastBatch(Sampler[list[int]]):
    """``sampler``'s indices in batches of ``batch``, the last one shorter, except that with ``drop`` a
    last batch of a single image is left out: a training BatchNorm whose input is 1×1 (a small image's
    last stage, or after pooling) gets one value per channel from one image, which has no variance
    and torch refuses, and a run whose training set is one more than a multiple of the batch would
    stop at its first epoch, resume or not (:func:`batchnorm_needs_two_images` decides). The order is
    reshuffled every epoch, so a different image sits out each time; the run records a warning."""

    def __init__(self, sampler: Sampler[int], batch: int, drop: bool = True):
        self.batches = BatchSampler(sampler, batch, drop_last=False)
        self.lone = drop and lone_last_image(len(sampler), batch)

    def __iter__(self):
        batches = iter(self.batches)
        for _ in range(len(self)):
            yield next(batches)

    def __len__(self) -> int:
        return len(self.batches) - self.lone


def batchnorm_needs_two_images(model: nn.Module, image_size: int, frozen_batchnorm: bool) -> bool:
    """True when one image would give a BatchNorm that trains a single value per channel (its input
    has one position: torch refuses a batch of one there); False with frozen BatchNorm statistics."""
    if frozen_batchnorm:
        return False
    modules = dict(model.named_modules())
    return any(isinstance(modules.get(info.name), BATCHNORM) and math.prod(info.shape[1:]) == 1
               for info in trace_layers(model, image_size))


def lone_last_image(images: int, batch: int) -> bool:
    """True when ``images`` in batches of ``batch`` (> 1) leave a last batch of one (see
    WithoutLoneLastBatch); batches of one are what --batch-size 1 asks for, and are kept."""
    return batch > 1 and images > 1 and images % batch == 1


class InterruptRequest:
    """Ctrl-C (SIGINT) or SIGTERM (``kill``, a scheduler's pre-emption, ``docker stop``) during the
    loop asks it to stop at the next step boundary (the epoch in progress is dropped, as after a
    kill) and the run is recorded as interrupted. Python's default handler raises KeyboardInterrupt
    wherever the signal lands, and one raised inside a finaliser (a DataLoader's or a tensor's
    ``__del__``) is swallowed: the run then went on. A second signal raises at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested: str | None = None  # the signal's name once one arrived
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> "InterruptRequest":
        self.requested = None
        if threading.current_thread() is threading.main_thread():
            self.previous = {number: signal.signal(number, self.handle) for number in self.SIGNALS}
        return self

    def handle(self, signum, _frame) -> None:
        if self.requested:
            raise Stopped(signal.Signals(signum).name)
        self.requested = signal.Signals(signum).name

    def check(self) -> None:
        if self.requested:
            raise Stopped(self.requested)

    def stopped(self) -> Stopped:
        """The stop to raise when this process or another asked for one (another's signal is not known
        here: Ctrl-C's, unless this process had one)."""
        return Stopped(self.requested or "SIGINT")

    @property
    def how(self) -> str:
        return "SIGTERM" if self.requested == "SIGTERM" else "Ctrl-C"

    def __exit__(self, *exc) -> None:
        for number, previous in self.previous.items():
            signal.signal(number, previous)
        self.previous = {}


def source_model(config: RunConfig, classes: int) -> tuple[nn.Module, str]:
    """The run's epoch-0 model: its weights with the new head for ``classes`` classes."""
    torch.manual_seed(config.seed)  # with --weights none the backbone's initialisation is the source
    return build_model(config.model, config.weights, classes, config.seed, config.image_size)


Event = Callable[..., None]


def quiet(kind: str, **info: Any) -> None:
    return None


class Trainer:
    """Holds everything one run needs; :meth:`run` is the loop."""

    def __init__(self, config: RunConfig, on_event: Event = quiet, resume: bool = False,
                 processes: Processes | None = None):
        self.config = config
        self.resume_requested = resume
        self.dir = Path(config.out)
        # a run of several processes (engine.distributed): rank 0 alone writes the run directory
        self.processes = processes or Processes()
        self.writer = RunWriter(self.dir) if self.processes.leader else NoWriter()
        self.on_event = self.recording(on_event)
        self.global_step = 0
        self.best_accuracy = -math.inf
        self.rgn: dict[str, float] = {}
        self.field_kinds: dict[str, str] = {}  # per layer: how class-based images locate a unit
        self.interrupt = InterruptRequest()

    def recording(self, on_event: Event) -> Event:
        """``on_event``, with what a viewer should read later (phases, warnings, epoch summaries) also
        written to the run's event log (RUN/events.jsonl), which the app's log panel follows."""
        def event(kind: str, **info: Any) -> None:
            text = {"phase": lambda: info.get("name"), "warning": lambda: info.get("text"),
                    "epoch_done": lambda: epoch_summary(info["record"])}.get(kind, lambda: None)()
            if text:
                self.writer.log_event(kind, text)
            on_event(kind, **info)
        return event

    # -- set-up ---------------------------------------------------------------------------------

    def prepare(self) -> None:
        config = self.config
        processes = self.processes
        self.device = pick_device(config.device)
        if self.device.type == "cuda" and processes.distributed:  # one GPU per process (torchrun's LOCAL_RANK)
            self.device = torch.device("cuda", processes.local_rank)
        check_accelerator_options(config.autocast, self.device)
        self.batch_per_process = process_batch(config.batch_size, processes.world)
        try:
            self.shuffle = parse_shuffle(config.shuffle_blocks, config.image_size, config.shuffle_seed)
        except ValueError as exc:
            raise FtdynError(str(exc)) from None
        self.run_warnings: list[str] = []  # what the run reduced or doubts, recorded in config.json's warnings
        self.intervals_short: dict[str, list[str]] = {}  # view → layers whose intervals fall short of their level
        self.on_event("phase", name="scanning images")
        data = load_image_data(config.data, config.val_fraction, config.seed,
                               progress=lambda i, n: self.on_event("scan", done=i, total=n))
        self.data = data
        if data.skipped:
            self.on_event("warning", text=f"skipped {len(data.skipped)} unreadable files "
                                          f"(listed in {self.dir / 'skipped_files.txt'})")
        train_set = ImageList(data.train.samples, self.transform(config.augment))
        eval_transform = self.transform(augment=False)
        held_out = ImageList(data.held_out.samples, eval_transform)
        probe = Subset(held_out, probe_indices(data.held_out.targets, config.probe_size, config.seed))
        self.train_set, self.held_out, self.probe = train_set, held_out, probe
        self.warn_about_data(len(held_out), len(probe))
        if len(probe) < processes.world:
            raise FtdynError(f"the probe set has {len(probe)} images for {processes.world} processes; use "
                             f"--probe-size {processes.world} or more")
        loader = dict(num_workers=config.workers, pin_memory=self.device.type == "cuda",
                      persistent_workers=False)
        # held-out and probe images: each process passes its own share, in whole batches (engine.distributed)
        self.eval_loader, _ = self.share_loader(held_out, config.batch_size, loader)
        self.probe_loader, self.probe_share = self.share_loader(probe, min(config.batch_size, 64), loader)
        self.loader_options = loader

        self.on_event("phase", name="building model")
        model, weights = source_model(config, len(data.classes))
        self.weights_description = weights
        self.layers = select_layers(config.model, model, config.layers, config.image_size)
        self.measures = parse_measures(config.metrics, config.view, config.alpha)
        parts = parse_analyses(config.analyses)
        if "distance" in parts:
            self.check_measures()
        self.source = copy.deepcopy(model).to(self.device, memory_format=memory_format(config.channels_last)).eval()
        for p in self.source.parameters():
            p.requires_grad_(False)
        self.model = model.to(self.device, memory_format=memory_format(config.channels_last))
        self.strategy = StrategyConfig(config.strategy, list(config.train_blocks), config.layer_decay,
                                       config.warmup_epochs)
        check_strategy(self.strategy)
        self.groups = block_groups(config.model, self.model)
        self.plan = plan_parameters(config.model, self.model, self.strategy, config.lr, self.groups)
        # a lone last batch: each process's share of the epoch, and AutoRGN's first batches of the whole set;
        # the model is traced for a BatchNorm that cannot take one only where one can occur
        lone_share = lone_last_image(-(-len(train_set) // processes.world), self.batch_per_process)
        lone_whole = config.strategy == "autorgn" and lone_last_image(len(train_set), config.batch_size)
        needs_two = (lone_share or lone_whole) and batchnorm_needs_two_images(self.model, config.image_size,
                                                                              self.plan.frozen_batchnorm)
        self.lone_image_left_out, self.rgn_lone_image_left_out = lone_share and needs_two, lone_whole and needs_two
        if self.lone_image_left_out:
            self.warn(f"{len(train_set)} training images in batches of {config.batch_size} leave a last batch of one "
                      f"image, which this model's BatchNorm cannot train on (a 1×1 input): it is left out, a "
                      f"different image each epoch (the order is reshuffled); a --batch-size that does not leave "
                      f"one keeps every image")
        self.optimizer = make_optimizer(config.optimizer, self.model, self.plan, config.weight_decay)
        self.total_epochs = config.epochs + (1 if config.strategy == "lp-ft" else 0)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.autocast == "fp16")
        layer_names = [layer.name for layer in self.layers]
        class_token_layers = tuple(layer.name for layer in self.layers if layer.layout and layer.layout.class_token)
        self.intervals = self.interval_settings()
        context = PartContext(source=self.source, groups=self.groups, head=head_name(self.model),
                              layer_names=layer_names, measures=self.measures, class_token_layers=class_token_layers,
                              intervals=self.intervals, probe=self.probe, run_dir=self.dir, device=self.device,
                              inversion={"steps": config.invariance_steps, "step_size": config.invariance_step_size,
                                         "images": config.invariance_images, "seed": config.seed},
                              on_event=self.on_event, shuffle_blocks=config.shuffle_blocks,
                              processes=processes, first_image=self.probe_share.start)
        self.analyses = EpochAnalyses(self.source, {layer.name: layer.layout for layer in self.layers},
                                      build_epoch_parts(self.process_parts(parts), context), processes)
        self.criterion = nn.CrossEntropyLoss()
        self.visualiser = self.make_visualiser(model) if config.vis and processes.leader else None
        # the probe images whose whole maps the visualisation keeps (every process collects its share)
        self.vis_samples = self.visualiser.samples if self.visualiser is not None else None
        if config.vis and processes.distributed:
            self.vis_samples = processes.broadcast_object(self.vis_samples)
        # training runs through DDP (gradients averaged over the processes) and, with --compile, a
        # compiled forward; everything else uses the plain module, whose parameters they share
        self.train_model = DistributedDataParallel(
            self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None) \
            if processes.distributed else self.model
        self.train_model = compiled(self.train_model, config.compile)

    def share_loader(self, images, batch_size: int, options: dict) -> tuple[DataLoader, range]:
        """A loader over this process's share of ``images`` (all of them on one process), and the share."""
        share, batch_size = self.processes.batch_shard(len(images), batch_size)
        if self.processes.distributed:
            images = Subset(images, list(share))
        return DataLoader(images, batch_size=batch_size, shuffle=False, **options), share

    def process_parts(self, names: list[str]) -> list[str]:
        """The epoch parts this process runs: all of them on rank 0; on the others those that observe
        the probe pass, which every process shares (engine.analyses.runner)."""
        if not self.processes.distributed:
            return names
        parts = epoch_parts()
        for name in names:
            if parts[name].uses_probe and not hasattr(parts[name], "reduce"):
                raise FtdynError(f"the '{name}' analysis cannot yet be split over processes; run it with one "
                                 f"process or leave it out of --analyses")
        return names if self.processes.leader else [name for name in names if parts[name].uses_probe]

    def interval_settings(self) -> IntervalSettings | None:
        """The jackknife's settings; fewer groups than asked for when per-group c×c moments of the
        widest streamed layer would not fit MOMENT_GROUPS_BYTES (said once, recorded in config.json)."""
        config = self.config
        try:
            settings = settings_for(config.interval_groups, config.interval_level, config.intervals)
        except ValueError as exc:
            raise FtdynError(str(exc)) from None
        if settings is None:
            return None
        groups, why = settings.groups, ""
        if {m.view for m in self.measures} & set(MOMENT_VIEWS):
            widest = max(feature_map_shape(layer.shape, layer.layout)[0] for layer in self.layers)
            if groups_within_memory(groups, widest) < groups:
                groups = groups_within_memory(groups, widest)
                why = (f"per-group moments of the {widest}-channel layer take {moment_bytes(widest) / 2**21:.0f} MiB "
                       f"a group in float32")
        if len(self.probe) < groups:  # an empty group would replicate the full value and shrink the interval
            groups, why = len(self.probe), f"the probe set has {len(self.probe)} images"
        if groups < 2:
            self.on_event("warning", text=f"intervals: off ({why}; a jackknife needs 2 groups)")
            return None
        if groups < settings.groups:
            self.on_event("warning", text=f"intervals: {groups} image groups instead of {settings.groups} ({why}); "
                                          f"the t quantile of the interval accounts for it")
            settings = settings_for(groups, config.interval_level, config.intervals)
        if self.resume_requested:  # a run recorded before bias correction keeps recording as it began
            settings = dataclasses.replace(settings, estimate=recorded_estimate(self.dir))
        self.warn_replicates_without_whitening(settings)
        self.warn_intervals_that_may_not_cover(settings)
        return settings

    def warn_intervals_that_may_not_cover(self, settings: IntervalSettings) -> None:
        """Where a layer has few samples per feature on a view, the plug-in bias is not first-order and
        its bias-corrected interval still undercovers (METRICS.md, "Intervals that cover"): said before
        training, once per layer and view, and recorded with the run's warnings."""
        n = len(self.probe)
        for layer in self.layers:
            c, h, w = feature_map_shape(layer.shape, layer.layout)
            for view in dict.fromkeys(m.view for m in self.measures if settings.covers(m.view)):
                affected = [m.label for m in self.measures if m.view == view and m.metric.name != DEBIASED]
                if view not in MOMENT_VIEWS or not affected or (view == "cls" and not (
                        layer.layout and layer.layout.class_token)):
                    continue
                rows, features = view_shape(view, n, c, h, w)
                if rows < ROWS_PER_FEATURE_TO_COVER * features:
                    self.intervals_short.setdefault(view, []).append(layer.name)
                    self.warn(f"layer {layer.name}, {view}: {rows} samples for {features} features (fewer than "
                              f"{ROWS_PER_FEATURE_TO_COVER} a feature): the bias correction is first-order, and "
                              f"intervals of {', '.join(affected)} covered 0.6–0.85 instead of {settings.level:g} "
                              f"in simulation there; more probe images (--probe-size), or cka-debiased")

    def warn_replicates_without_whitening(self, settings: IntervalSettings) -> None:
        """PWSM α = 0 that is defined on the whole probe set but not once a group is left out has no
        interval (replicate_metrics): said before training and recorded with the run's warnings."""
        kept = len(self.probe) - -(-len(self.probe) // settings.groups)  # the smallest replicate
        for layer in self.layers:
            shape = (kept, *feature_map_shape(layer.shape, layer.layout))
            for measure in self.measures:
                if not settings.covers(measure.view) or (measure.view == "cls" and not (
                        layer.layout and layer.layout.class_token)):
                    continue
                if not replicate_metrics([measure.metric], measure.view, shape):
                    text = (f"layer {layer.name}, {measure.label}: no interval — with a group of probe images left "
                            f"out, full whitening (α = 0) is degenerate there; use more probe images, fewer "
                            f"--interval-groups or α > 0")
                    self.warn(text)

    def transform(self, augment: bool):
        """The run's image transform: resize (and augmentation), normalisation, block shuffle."""
        return image_transform(self.config.image_size, augment, self.shuffle)

    def make_visualiser(self, model: nn.Module) -> Visualiser:
        config = self.config
        try:
            named = parse_named_filters(config.vis_filters)
        except ValueError as exc:
            raise FtdynError(str(exc)) from None
        fields = self.layer_fields(model)
        probe_samples = [self.held_out.samples[i] for i in self.probe.indices]
        images = np.stack([np.asarray(image) for image, _ in ImageList(probe_samples, pixel_transform(config.image_size))])
        if self.shuffle is not None:  # show the inputs the network saw
            shuffle = BlockShuffle(self.shuffle, config.image_size)
            images = np.stack([shuffle.pixels(image) for image in images])
        labels = [label for _, label in probe_samples]
        filters = {layer.name: feature_map_shape(layer.shape, layer.layout)[0] for layer in self.layers}
        try:
            return Visualiser(self.dir, fields, filters, images, labels, self.data.classes,
                              VisSettings(top_k=config.vis_k, random_k=config.vis_k, named=named, seed=config.seed))
        except ValueError as exc:
            raise FtdynError(str(exc)) from None

    def layer_fields(self, model: nn.Module) -> dict:
        """Exact receptive fields for convolutional maps; where none is defined (tokens, after
        attention, or a network torch.fx cannot trace) the patch each position starts from, said
        once as a warning and recorded in the config (``vis_fields``)."""
        size = self.config.image_size
        maps = [layer.name for layer in self.layers if layer.layout and layer.layout.kind == "channels_first"]
        fields = {}
        if maps:
            try:
                fields = receptive_fields(model, maps, size)
            except FtdynError as exc:
                self.on_event("warning", text=f"no exact receptive fields ({exc}); class-based images show the "
                                              f"patch each position starts from")
        shapes = {layer.name: feature_map_shape(layer.shape, layer.layout) for layer in self.layers
                  if layer.name not in fields}
        self.field_kinds = {name: "receptive field" for name in fields}
        self.field_kinds.update({name: "patch origin" for name in shapes})
        fields.update(patch_fields(shapes, size))
        return fields

    def check_measures(self) -> None:
        """Refuse a degenerate PWSM α = 0 before any training, with the probe size it would see; small α
        there is allowed and kept in ``run_warnings`` (recorded in config.json as ``warnings``)."""
        n = len(self.probe)
        if any(m.view == "cls" for m in self.measures) and not any(
                layer.layout and layer.layout.class_token for layer in self.layers):
            raise FtdynError(f"the 'cls' view measures a class token, and no hooked layer of {self.config.model} has "
                             f"one (ViTs do); choose another view")
        for layer in self.layers:
            shape = (n, *feature_map_shape(layer.shape, layer.layout))
            for measure in self.measures:
                if measure.view == "cls" and not (layer.layout and layer.layout.class_token):
                    continue
                try:
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always", DegenerateWhiteningWarning)
                        check_metrics_for_view([measure.metric], measure.view, shape)
                except DegenerateWhiteningError as exc:
                    raise FtdynError(f"layer {layer.name}: {exc}") from None
                for warning in caught:  # small α in the degenerate regime: allowed, recorded and shown
                    if issubclass(warning.category, DegenerateWhiteningWarning):
                        self.warn(f"layer {layer.name}, {measure.label}: {warning.message}")

    def warn_about_data(self, held_out_images: int, probe_images: int) -> None:
        """What the data made the run reduce, said now and recorded with the run's warnings (the last
        batch of one image is said where the model is known: WithoutLoneLastBatch)."""
        if probe_images < self.config.probe_size:
            self.warn(f"--probe-size {self.config.probe_size} asks for more images than the held-out split has "
                      f"({held_out_images}): the probe set is all {probe_images} of them")

    def warn(self, text: str) -> None:
        """Say ``text`` now and record it with the run's warnings (config.json), for the report and the app."""
        self.run_warnings.append(text)
        self.on_event("warning", text=text)

    def config_record(self) -> dict[str, Any]:
        return {
            "run": self.config.to_json(),
            "preset_settings": PAPER_PRESET if self.config.preset == "paper" else None,
            "dataset": {"root": str(Path(self.config.data).resolve()), "classes": self.data.classes,
                        "train_images": len(self.train_set), "held_out_images": len(self.held_out),
                        "held_out_split": self.data.held_out_name, "probe_images": len(self.probe),
                        "skipped_files": len(self.data.skipped)},
            "model": {"name": self.config.model, "weights": self.weights_description,
                      "source_fingerprint": source_fingerprint(self.source)},
            "layers": [{"name": layer.name, "shape": list(layer.shape),
                        "layout": layer.layout.to_json() if layer.layout else None} for layer in self.layers],
            "measures": [{"label": m.label, "metric": m.metric.label, "view": m.view} for m in self.measures]
            if self.analyses.part("distance") else [],
            "analyses": self.analyses.declarations(),
            "warnings": self.run_warnings,
            "intervals_short": self.intervals_short,
            "vis_fields": self.field_kinds or None,
            "strategy": {"name": self.strategy.name, "train_blocks": self.strategy.train_blocks,
                         "layer_decay": self.strategy.layer_decay, "warmup_epochs": self.strategy.warmup_epochs,
                         "frozen_batchnorm": self.plan.frozen_batchnorm,
                         "groups": [{"name": g["name"], "lr": g["lr"], "tensors": len(g["params"])}
                                    for g in self.plan.groups],
                         "probe": LP_SETTINGS if self.strategy.name == "lp-ft" else None},
            "device": str(self.device),
            "processes": self.processes_record(),
            "torch": torch.__version__,
        }

    def record_resumed_settings(self) -> None:
        """config.json follows what a resume may change about how the run is computed: the number of
        processes (and the batch each takes) and --autocast."""
        saved = saved_config(self.dir)
        run = {k: v for k, v in saved["run"].items() if k != "amp"} | {"autocast": self.config.autocast}
        processes = self.processes_record()
        before = saved.get("processes") or {"world_size": 1}
        if run != saved["run"] or before.get("world_size") != processes["world_size"]:
            self.writer.write_config(dict(saved, run=run, processes=processes))

    def processes_record(self) -> dict[str, Any]:
        """config.json's ``processes``: how many ran the run, and the batch and learning-rate rule."""
        return dict(self.processes.describe(), effective_batch=self.config.batch_size,
                    batch_per_process=self.batch_per_process, lr_rule=LR_RULE)

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> Path:
        """The whole run, as the one writer of its directory (a second writer is refused)."""
        check_config(self.config)
        try:
            if not self.processes.leader:  # rank 0 holds the directory and its lock for every process
                return self.run_locked()
            return self.run_as_writer()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # for rank 0 to record when this is not rank 0 (engine.distributed)
            self.processes.report_failure(failure_message(exc, self.config, self.processes)
                                          or f"{type(exc).__name__}: {exc}")
            raise

    def run_as_writer(self) -> Path:
        created = not self.dir.exists()
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FtdynError(f"cannot create the run directory '{self.dir}' ({exc.strerror}); choose another "
                             f"--out") from None
        lock = RunLock(self.dir)
        warning = lock.acquire()
        try:
            if warning:
                self.on_event("warning", text=warning)
            return self.run_locked()
        finally:  # a run refused before it wrote anything leaves no folder behind
            lock.release(remove_empty_folder=created)

    def run_locked(self) -> Path:
        if self.processes.leader:  # the others may already see what rank 0 wrote
            check_run_directory(self.dir, self.resume_requested)
        self.prepare()
        start_epoch = self.restore() if self.resume_requested else None
        try:
            if self.data.skipped and self.processes.leader:
                write_atomic(self.dir / "skipped_files.txt", ("\n".join(self.data.skipped) + "\n").encode())
            if start_epoch is None:
                self.writer.write_config(self.config_record())
            else:
                self.record_resumed_settings()
            self.writer.start(self.total_epochs, epoch=start_epoch or 0,
                              processes=self.processes.describe() if self.processes.distributed else None)
        except OSError as exc:  # nothing trained yet: the run's recorded state is left as it was
            raise FtdynError(failure_message(exc, self.config) or f"cannot write into '{self.dir}' ({exc})") from None
        try:
            with self.interrupt:
                self.epochs(start_epoch)
                if self.visualiser is not None:
                    self.on_event("phase", name="writing the visualisation montages")
                    self.visualiser.write_all_montages()
                self.writer.finish("finished")
        except KeyboardInterrupt:
            elsewhere = self.processes.reported_failure()  # torchrun stops every process when one fails
            if elsewhere:
                self.writer.finish_if_possible("failed", f"{elsewhere}; recorded epochs are kept, continue with --resume")
            else:
                self.writer.finish_if_possible("interrupted", f"stopped by {self.interrupt.how}; continue with --resume")
            raise
        except BaseException as exc:
            failure = failure_message(exc, self.config, self.processes)
            self.processes.report_failure(failure or f"{type(exc).__name__}: {exc}")  # the first one stays
            self.writer.finish_if_possible("failed", self.processes.reported_failure() or failure
                                           or f"{type(exc).__name__}: {exc}")
            if failure is None:  # not an input or environment problem: a defect, with its traceback
                raise
            raise FtdynError(failure) from None
        return self.dir

    def epochs(self, start_epoch: int | None) -> None:
        """Epoch 0 (unless resuming), then every epoch after the last complete one."""
        config = self.config
        if start_epoch is None:
            self.finish_epoch(0, train=None, train_seconds=0.0)
            start_epoch = 0
        for epoch in range(start_epoch + 1, self.total_epochs + 1):
            self.check_interrupt()
            # dropout and augmentation differ between processes, as between the images they train on
            torch.manual_seed(seed_epoch(config.seed, epoch) + self.processes.rank)
            if config.strategy == "lp-ft" and epoch == 1:
                train, train_seconds = self.fit_probe()
                self.finish_epoch(epoch, train, train_seconds, phase="linear-probe")
            else:
                train, train_seconds = self.train_epoch(epoch)
                self.finish_epoch(epoch, train, train_seconds)

    def check_interrupt(self) -> None:
        """Stop at this step boundary when Ctrl-C or SIGTERM reached this process or any other: every
        process of a distributed run stops at the same step (one flag added over them)."""
        if self.processes.any(self.interrupt.requested is not None):
            raise self.interrupt.stopped()

    def train_loader(self, epoch: int) -> DataLoader:
        """The epoch's training batches, shuffled by (seed, epoch): on one process all of them; on N, this
        process's part (DistributedSampler, whose padding repeats up to N − 1 images so that every
        process takes the same number of steps) in batches of batch-size / N."""
        config, processes = self.config, self.processes
        if not processes.distributed:  # the loader draws its workers' seed from ``order`` first, as shuffle=True did
            order = seeded_generator(seed_epoch(config.seed, epoch))
            sampler = RandomSampler(self.train_set, generator=order)
        else:
            order = None
            sampler = DistributedSampler(self.train_set, num_replicas=processes.world, rank=processes.rank,
                                         shuffle=True, seed=seed_epoch(config.seed, epoch), drop_last=False)
        return DataLoader(self.train_set, generator=order, **self.loader_options, batch_sampler=WithoutLoneLastBatch(
            sampler, self.batch_per_process, drop=self.lone_image_left_out))

    def train_epoch(self, epoch: int) -> tuple[dict[str, float], float]:
        config = self.config
        loader = self.train_loader(epoch)
        if config.strategy == "autorgn":
            self.start_autorgn_epoch(epoch)
        set_train_mode(self.model, self.plan.frozen_batchnorm)
        warmup_steps = round(config.warmup_epochs * len(loader)) if config.strategy == "discriminative" else 0
        loss_sum, correct, seen = 0.0, 0, 0
        start = time.perf_counter()
        analysis_seconds = 0.0
        self.on_event("epoch", epoch=epoch, total=self.total_epochs, steps=len(loader))
        for step, (images, labels) in enumerate(loader, 1):
            images = to_memory_format(images.to(self.device, non_blocking=True), config.channels_last)
            labels = labels.to(self.device, non_blocking=True)
            self.optimizer.zero_grad(set_to_none=True)
            for group in self.optimizer.param_groups:  # linear warm-up (discriminative); factor 1 otherwise
                group["lr"] = group["initial_lr"] * warmup_factor(self.global_step + 1, warmup_steps)
            with autocast(self.device, config.autocast):
                logits = self.train_model(images)
                loss = self.criterion(logits, labels)
            finite = bool(torch.isfinite(loss))
            stop, non_finite = self.processes.flags(self.interrupt.requested is not None, not finite)
            if stop:
                raise self.interrupt.stopped()
            if non_finite and finite:  # every process stops here, before the gradients are averaged
                raise NonFiniteLoss(f"the loss became non-finite on another process at epoch {epoch}, step {step}; "
                                    f"lower --lr or set --grad-clip (recorded epochs are kept)")
            if non_finite:
                raise NonFiniteLoss(f"loss became {loss.item()} at epoch {epoch}, step {step}; lower --lr or set "
                                    f"--grad-clip (recorded epochs are kept)")
            self.scaler.scale(loss).backward()
            if config.grad_clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.global_step += 1
            loss_sum += loss.item() * len(labels)
            correct += int((logits.argmax(1) == labels).sum())
            seen += len(labels)
            elapsed = time.perf_counter() - start - analysis_seconds
            self.on_event("step", epoch=epoch, step=step, steps=len(loader),
                          images_per_s=seen * self.processes.world / max(elapsed, 1e-9),
                          loss=loss_sum / seen, lrs=[group["lr"] for group in self.optimizer.param_groups])
            if config.every_steps and self.global_step % config.every_steps == 0 and step < len(loader):
                self.check_interrupt()
                self.processes.broadcast_buffers(self.model)
                sections, spent = self.analyses.run(self.model, self.probe_loader, self.device, config.autocast,
                                                    channels_last=config.channels_last)
                seconds = sum(spent.values())
                analysis_seconds += seconds
                self.writer.append_record({"kind": "step", "epoch": epoch, "step": self.global_step,
                                           "train": {"loss": loss_sum / seen, "accuracy": correct / seen},
                                           **sections, "timing": {"analysis_s": seconds, "analyses_s": spent}})
                set_train_mode(self.model, self.plan.frozen_batchnorm)
        self.check_interrupt()  # a stop during the last step: before the epoch's evaluation and measuring
        train_seconds = time.perf_counter() - start - analysis_seconds
        if self.processes.distributed:  # every process's images (with the sampler's few repeats)
            totals = self.processes.sum(torch.tensor([loss_sum, correct, seen], dtype=torch.float64,
                                                     device=self.processes.device()))
            loss_sum, correct, seen = totals.tolist()
        return {"loss": loss_sum / max(seen, 1), "accuracy": correct / max(seen, 1),
                "step_analysis_s": analysis_seconds}, train_seconds

    def evaluate(self) -> tuple[dict[str, float], float]:
        start = time.perf_counter()
        result = evaluate(self.model, self.eval_loader, self.device, self.config.autocast, self.processes,
                          self.config.channels_last)
        return result, time.perf_counter() - start

    def start_autorgn_epoch(self, epoch: int) -> None:
        """AutoRGN: relative gradient norms over the epoch's first batches set each tensor's rate for
        this epoch (from the base rate: not compounded), and a fresh optimiser is built, as in the
        official code. The batches come from a loader seeded like the epoch's, so resuming replays them."""
        config = self.config
        if self.processes.leader:  # as on one process (the full batches); the others take its rates
            order = seeded_generator(seed_epoch(config.seed, epoch) + 1)
            loader = DataLoader(self.train_set, generator=order, **self.loader_options, batch_sampler=WithoutLoneLastBatch(
                RandomSampler(self.train_set, generator=order), config.batch_size, drop=self.rgn_lone_image_left_out))
            batches = [batch for batch, _ in zip(loader, range(RGN_BATCHES))]
            set_train_mode(self.model, self.plan.frozen_batchnorm)
            names = [g["name"] for g in self.plan.groups]
            self.rgn = rgn_multipliers(relative_gradient_norms(self.model, batches, self.criterion, self.device, names))
        self.rgn = self.processes.broadcast_object(self.rgn)
        for group in self.plan.groups:
            group["lr"] = config.lr * self.rgn[group["name"]]
        self.optimizer = make_optimizer(config.optimizer, self.model, self.plan, config.weight_decay)

    def fit_probe(self) -> tuple[dict[str, Any], float]:
        """LP-FT's first phase: the head fitted by logistic regression on frozen features."""
        start = time.perf_counter()
        summary = None
        if self.processes.leader:  # fitted once, as on one process; the others take its head
            self.on_event("phase", name="linear probe: extracting frozen features")
            plain = ImageList(self.train_set.samples, self.transform(augment=False))
            loader = DataLoader(plain, batch_size=self.config.batch_size, shuffle=False, **self.loader_options)
            features, labels = penultimate_features(self.model, loader, self.device)
            self.on_event("phase", name=f"linear probe: logistic regression on {features.shape[1]} features")
            fit = fit_linear_probe(features, labels, len(self.data.classes), self.config.seed)
            load_head(self.model, fit)
            summary = {"accuracy": fit.train_accuracy, "loss": None, "probe_C": fit.C,
                       "probe_validation_accuracy": fit.validation_accuracy, "probe_iterations": fit.iterations}
        self.processes.broadcast_module(self.model)
        return self.processes.broadcast_object(summary), time.perf_counter() - start

    def finish_epoch(self, epoch: int, train: dict[str, float] | None, train_seconds: float,
                     phase: str = "finetune") -> None:
        self.on_event("phase", name=f"epoch {epoch}: evaluating and measuring")
        self.processes.broadcast_buffers(self.model)  # one network measured: the checkpoint's
        held_out, eval_seconds = self.evaluate()
        visualise = self.config.vis and (self.config.vis_epochs is None or epoch in self.config.vis_epochs)
        evidence = FilterEvidence(self.analyses.layer_names, self.vis_samples, self.probe_share.start) \
            if visualise else None
        sections, spent = self.analyses.run(self.model, self.probe_loader, self.device, self.config.autocast,
                                            observer=evidence, channels_last=self.config.channels_last)
        vis_seconds = self.visualiser.render(epoch, evidence, per_filter_changes(sections.get("layers", {}))) \
            if visualise and self.visualiser is not None else 0.0
        step_analysis = train.pop("step_analysis_s", 0.0) if train else 0.0
        record = {
            "kind": "epoch", "epoch": epoch, "step": self.global_step, "phase": "source" if epoch == 0 else phase,
            "train": train, "held_out": held_out,
            "lr": [group["lr"] for group in self.optimizer.param_groups],
            "lr_groups": {group["name"]: group["lr"] for group in self.optimizer.param_groups},
            "rgn": dict(self.rgn) if self.config.strategy == "autorgn" and epoch > 0 else None,
            **sections,
            "timing": {"train_s": train_seconds, "eval_s": eval_seconds, "analysis_s": sum(spent.values()),
                       "analyses_s": spent, "step_analysis_s": step_analysis, "vis_s": vis_seconds},
        }
        self.best_accuracy = max(self.best_accuracy, held_out["accuracy"])
        self.save_checkpoint(epoch, record, is_best=held_out["accuracy"] >= self.best_accuracy)
        self.writer.append_record(record)
        self.writer.update_status(epoch=epoch, best_accuracy=self.best_accuracy)
        self.on_event("epoch_done", epoch=epoch, record=record)

    # -- checkpoints and resume -----------------------------------------------------------------

    def save_checkpoint(self, epoch: int, record: dict[str, Any], is_best: bool) -> None:
        if not self.processes.leader:
            return
        folder = self.dir / "checkpoints"
        folder.mkdir(parents=True, exist_ok=True)
        state = {"epoch": epoch, "global_step": self.global_step, "best_accuracy": self.best_accuracy,
                 "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scaler": self.scaler.state_dict(), "record": record}
        save_atomic(state, folder / "last.pt")
        if is_best:
            save_atomic({"epoch": epoch, "model": self.model.state_dict()}, folder / "best.pt")
        if self.config.save_every_epoch:
            save_atomic({"epoch": epoch, "model": self.model.state_dict()}, folder / f"epoch-{epoch:03d}.pt")

    def restore(self) -> int | None:
        """Load the last checkpoint and reconcile the record file with it; returns its epoch
        (None when the run was killed before its first checkpoint: it starts over)."""
        saved = saved_config(self.dir)
        if saved["dataset"].get("classes") != self.data.classes:
            raise FtdynError(f"the data at '{self.config.data}' has classes {self.data.classes[:5]}… but the run "
                             f"was started with {(saved['dataset'].get('classes') or [])[:5]}…; resume with the same --data")
        recorded = saved["model"].get("source_fingerprint")
        if not isinstance(recorded, (int, float)) or abs(recorded - source_fingerprint(self.source)) > 1e-6 * abs(recorded):
            raise FtdynError("the source model's weights differ from the ones this run started with; "
                             "resume with the same --model and --weights")
        path = self.dir / "checkpoints" / "last.pt"
        reader = RunReader(self.dir)
        try:
            reader.poll()
        except RunFormatError as exc:
            raise FtdynError(f"cannot resume '{self.dir}': {exc}; the record was not written by ftdyn as it is") from None
        if not path.exists():
            if any(r["kind"] == "epoch" for r in reader.records):
                raise FtdynError(f"cannot resume '{self.dir}': its records reach epoch {reader.records[-1]['epoch']} "
                                 f"but checkpoints/last.pt is missing; restore it, or start a new run")
            return None  # killed before its first checkpoint: it starts over
        state = load_checkpoint(path, self.device)
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if state["scaler"]:  # empty when the run had no fp16 scaler (resumed with --autocast fp16)
                self.scaler.load_state_dict(state["scaler"])
            self.global_step, self.best_accuracy = int(state["global_step"]), float(state["best_accuracy"])
            last = int(state["epoch"])
            if not isinstance(state["record"], dict):
                raise TypeError("its record is not an object")
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise FtdynError(f"cannot resume from '{path}': it does not fit this run "
                             f"({exception_line(exc, last=True)[:200]}); it may come "
                             f"from another run or be damaged") from None
        # Records of the epoch in progress when the run stopped are dropped; it is run again.
        keep = [r for r in reader.records if r.get("epoch", 0) <= last]
        if not any(r["kind"] == "epoch" and r["epoch"] == last for r in keep):
            keep.append(state["record"])  # killed between checkpoint and record: the checkpoint holds it
        self.writer.truncate_records(keep)
        self.on_event("phase", name=f"resuming after epoch {last}")
        return last


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, autocast_mode: str = "off", processes=None,
             channels_last: bool = False) -> dict[str, float]:
    """Mean cross-entropy and accuracy of ``model`` (eval mode) over every batch of ``loader``. In a
    distributed run each process's ``loader`` holds its own shard of the images (engine.distributed)
    and the sums are added over the processes in float64: every image counted once, as on one."""
    model.eval()
    criterion = nn.CrossEntropyLoss(reduction="sum")
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, images
    for images, labels in loader:
        images = to_memory_format(images.to(device), channels_last)
        labels = labels.to(device)
        with autocast(device, autocast_mode):
            logits = model(images)
        totals[0] += criterion(logits.to(torch.float64), labels)
        totals[1] += (logits.argmax(1) == labels).sum()
        totals[2] += len(labels)
    if processes is not None and processes.distributed:
        totals = processes.sum(totals.to(processes.device()))
    loss_sum, correct, seen = totals.tolist()
    return {"loss": loss_sum / seen, "accuracy": correct / seen}


def per_filter_changes(layers: dict[str, dict]) -> dict[str, np.ndarray]:
    """Per layer, how far each filter moved: the first filter-view measure's per-filter distances, else
    the per-filter angle the `positions` view gives for free (METRICS.md, "Ranking filters")."""
    changes = {}
    for layer, views in layers.items():
        for _, entry in sorted(views.items(), key=lambda item: item[0] not in ("filter", "filter-map")):
            if entry.get("per_filter"):
                first = next(iter(entry["per_filter"].values()))
                changes[layer] = np.array([np.nan if v is None else v for v in first], dtype=np.float64)
                break
    return changes


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """torch.save to a temp file renamed over ``path``: a reader never sees half a checkpoint, and a
    failed save (disk full) leaves the previous checkpoint and no temp file."""
    tmp = path.with_name(f".{path.name}.tmp")
    target = WriteChecked(tmp)
    try:
        try:
            torch.save(state, target)
            os.fsync(target.fd)
        finally:
            target.close()
        tmp.replace(path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if target.error is not None and target.error is not exc:
            raise target.error from None  # torch reports a failed write as "unexpected pos …": say what it was
        raise


class WriteChecked:
    """The file torch.save writes a checkpoint through. torch turns a failed write (disk full, quota)
    into a bare RuntimeError; this keeps the OSError, with its errno, for the one-line message."""

    def __init__(self, path: Path):
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | NOFOLLOW, 0o644)
        self.error: OSError | None = None

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as exc:
            exc.filename = exc.filename or str(self.path)
            self.error = self.error or exc
            raise
        return len(data) if isinstance(data, (bytes, bytearray)) else memoryview(data).nbytes

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


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
    if not isinstance(config.interval_groups, int) or config.interval_groups < 2:
        raise FtdynError(f"--interval-groups must be an integer ≥ 2 (got {config.interval_groups}); "
                         f"--intervals off turns intervals off")
    if not 0 < config.interval_level < 1:
        raise FtdynError(f"--interval-level must lie strictly between 0 and 1 (got {config.interval_level}), e.g. 0.9")
    if data.is_relative_to(out):
        raise FtdynError(f"--data '{config.data}' is inside --out '{config.out}'; put runs and data in separate folders")
    if out.exists() and not out.is_dir():
        raise FtdynError(f"--out '{config.out}' is a file, not a folder; choose another --out")


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


def check_run_directory(run_dir: Path, resume: bool) -> None:
    """A new run needs a directory without a run; --resume one with a run."""
    exists = (run_dir / CONFIG).exists()
    if exists and not resume:
        raise FtdynError(f"run directory '{run_dir}' already holds a run; pass --resume to continue it "
                         f"or choose another --out")
    if resume and not exists:
        raise FtdynError(f"nothing to resume in '{run_dir}' (no {CONFIG}); start it without --resume")


def failure_message(exc: BaseException, config: RunConfig, processes: Processes | None = None) -> str | None:
    """A failure of the environment (memory, disk, a file, another process) worded as what happened and
    what to do; None for anything else (a defect, whose traceback is needed). Recorded epochs are
    always kept."""
    kept = "recorded epochs are kept, continue with --resume"
    if processes is not None and processes.distributed and collective_failure(exc):
        # gloo and NCCL prefix their messages with their source file: '[…/pair.cc:545] Read error …'
        said = re.sub(r"^\[[^\]]*\]\s*", "", exception_line(exc)).split(". ")[0]
        return f"{PEER_STOPPED} ({type(exc).__name__}: {said[:160]}); {kept}"
    if isinstance(exc, UnreadableImage):
        return exc.one_line()
    if isinstance(exc, FtdynError):
        return str(exc)
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return (f"CUDA out of memory at batch size {config.batch_size}; try --batch-size "
                f"{max(1, config.batch_size // 2)} (or a smaller --probe-size / --image-size); {kept}")
    if isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and (
            "DefaultCPUAllocator" in str(exc) or "not enough memory" in str(exc))):
        return (f"out of memory (CPU RAM) at batch size {config.batch_size}; try a smaller --batch-size, "
                f"--probe-size, --image-size or --workers; {kept}")
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" writing '{exc.filename}'" if exc.filename else ""
        return f"disk full{where} ({exc.strerror}); free space under '{config.out}', then {kept}"
    if isinstance(exc, OSError) and exc.errno == errno.EROFS:
        return f"'{config.out}' is on a read-only file system; remount it writable, then {kept}"
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied{f' on {exc.filename!r}' if exc.filename else ''}; fix its permissions, then {kept}"
    return None


def collective_failure(exc: BaseException) -> bool:
    """A collective operation that failed because a peer went away (its connection closed)."""
    if isinstance(exc, torch.distributed.DistError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        sign in text for sign in ("connection closed by peer", "connection reset by peer", "broken pipe"))


def visualise_from_checkpoints(run_dir: str | Path, layer: str, filter_index: int, classes: list[str] | None = None,
                               epochs: list[int] | None = None, on_event: Event = quiet) -> list[int]:
    """Draw one filter's class- and sample-based images from saved checkpoints, exactly as the run
    draws them, into RUN/vis (with its montages). Epoch 0 is the source model. Returns the epochs drawn."""
    run_dir = Path(run_dir)
    saved = saved_config(run_dir)
    hooked_layers(saved, [layer])
    if classes and set(classes) - set(saved["dataset"]["classes"]):
        raise FtdynError(f"unknown class {sorted(set(classes) - set(saved['dataset']['classes']))[0]!r}; the run's "
                         f"classes are {', '.join(saved['dataset']['classes'])}")
    checkpoints = available_checkpoints(run_dir)
    wanted = sorted(set(epochs) if epochs else {0, *checkpoints})
    require_checkpoints(wanted, checkpoints)
    trainer = open_run(run_dir, on_event)
    filters = trainer.layers[[entry.name for entry in trainer.layers].index(layer)]
    if not 0 <= filter_index < feature_map_shape(filters.shape, filters.layout)[0]:
        raise FtdynError(f"layer '{layer}' has no filter {filter_index}")
    lock = RunLock(run_dir)  # the images and their index are the run's: one writer, as for training
    lock.acquire(instead="draw it when the run has finished (the run draws its --vis-epochs itself)")
    try:
        draw_filter(trainer, filters, filter_index, classes, wanted, checkpoints, on_event)
    finally:
        lock.release()
    return wanted


def draw_filter(trainer: Trainer, filters: LayerInfo, filter_index: int, classes: list[str] | None, wanted: list[int],
                checkpoints: dict[int, Path], on_event: Event) -> None:
    layer = filters.name
    visualiser = trainer.make_visualiser(trainer.model)
    visualiser.settings.classes = classes
    visualiser.focus(layer, filter_index)
    for epoch in wanted:
        state = trainer.source.state_dict() if epoch == 0 else load_checkpoint(checkpoints[epoch], trainer.device)["model"]
        trainer.model.load_state_dict(state)
        evidence = FilterEvidence([layer], visualiser.samples)
        EpochAnalyses(trainer.source, {layer: filters.layout}, []).run(trainer.model, trainer.probe_loader,
                                                                       trainer.device, observer=evidence)
        visualiser.render(epoch, evidence, {}, redraw=True)
        on_event("phase", name=f"drew epoch {epoch}")
    visualiser.write_montages(layer, filter_index)


def hooked_layers(saved: dict[str, Any], wanted: list[str]) -> list[str]:
    """The layers a run hooked (from its checked config.json); a one-line error naming the first of
    ``wanted`` it did not hook."""
    hooked = [entry["name"] for entry in saved["layers"]]
    unknown = [name for name in wanted if name not in hooked]
    if unknown:
        raise FtdynError(f"layer '{unknown[0]}' was not hooked in this run; choose from {', '.join(hooked)}")
    return hooked


def require_checkpoints(wanted: list[int], checkpoints: dict[int, Path]) -> None:
    """A one-line error for the first of the ``wanted`` epochs that has no checkpoint (0, the source,
    needs none)."""
    missing = [e for e in wanted if e != 0 and e not in checkpoints]
    if missing:
        raise FtdynError(f"no checkpoint for epoch {missing[0]} (available: source 0 and "
                         f"{', '.join(map(str, sorted(checkpoints))) or 'none'}); run with --save-every-epoch "
                         f"to keep them all")


def saved_config(run_dir: Path) -> dict[str, Any]:
    """A run's config.json, checked: a foreign, damaged or hostile one is a one-line error naming it."""
    try:
        saved = RunReader(run_dir).config()
    except (RunFormatError, OSError, UnicodeDecodeError) as exc:
        raise FtdynError(f"'{run_dir}' is not a readable ftdyn run ({exc})") from None
    if saved is None:
        raise FtdynError(f"'{run_dir}' is not an ftdyn run directory (no {CONFIG})")
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


def open_run(run_dir: str | Path, on_event: Event = quiet, data: str | None = None) -> Trainer:
    """A finished (or running) run's trainer rebuilt from its config.json — data splits, probe set,
    source model, layers — for work from its checkpoints. ``data`` replaces a moved data folder."""
    run_dir = Path(run_dir)
    saved = saved_config(run_dir)
    # Work from checkpoints runs no epoch part (building them would cost: the invariance part inverts
    # the probe images through the source when it is built), and no autocast, which is CUDA-only: it
    # runs wherever the run can be read.
    changes = dict(vis=False, workers=0, analyses=[], autocast="off") | ({"data": str(data)} if data is not None else {})
    trainer = Trainer(config_from_saved(run_dir, saved, **changes), on_event)
    trainer.prepare()
    return trainer


def load_checkpoint(path: Path, device: torch.device | str = "cpu", mmap: bool = False) -> dict[str, Any]:
    """A checkpoint of a run directory, which may come from someone else: never unpickled (weights
    only), and a damaged or foreign file is a one-line error naming it."""
    try:
        state = torch.load(path, map_location=device, weights_only=True, mmap=mmap)
    except Exception as exc:  # torch raises many types for truncated, foreign or unsafe files
        raise FtdynError(f"cannot read checkpoint '{path}' ({type(exc).__name__}: "
                         f"{exception_line(exc)[:160]}); it is damaged or not an ftdyn "
                         f"checkpoint — move it away and use another (runs keep every epoch with --save-every-epoch)") \
            from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict) or \
            not isinstance(state.get("epoch"), int):
        raise FtdynError(f"checkpoint '{path}' is not an ftdyn checkpoint (no model state and epoch)")
    return state


def model_state(run_dir: Path, epoch: int, device: torch.device) -> dict[str, torch.Tensor]:
    """A run's model after ``epoch`` (0: the untouched source with the run's new head)."""
    run_dir = Path(run_dir)
    saved = saved_config(run_dir)
    if epoch == 0:
        model, _ = source_model(config_from_saved(run_dir, saved), len(saved["dataset"]["classes"]))
        return model.to(device).state_dict()
    checkpoints = available_checkpoints(run_dir)
    if epoch not in checkpoints:
        raise FtdynError(f"'{run_dir}' has no checkpoint for epoch {epoch} (available: "
                         f"{', '.join(map(str, sorted({0, *checkpoints})))}); runs keep every epoch with "
                         f"--save-every-epoch")
    return load_checkpoint(checkpoints[epoch], device)["model"]


def last_epoch(run_dir: Path) -> int:
    """The newest epoch a checkpoint holds (0 when there is none: the source)."""
    return max(available_checkpoints(Path(run_dir)), default=0)


def available_checkpoints(run_dir: Path) -> dict[int, Path]:
    """Epoch → checkpoint file, from epoch-NNN.pt, best.pt and last.pt. Links are not followed: a run
    directory from someone else must not make us read files outside it."""
    found: dict[int, Path] = {}
    folder = run_dir / "checkpoints"
    if folder.is_symlink():
        return found
    for path in sorted(folder.glob("*.pt")):
        if path.is_symlink() or not path.is_file():
            continue
        try:
            state = load_checkpoint(path, mmap=True)  # only the epoch is read
        except FtdynError:
            continue  # a damaged file is not offered; the ones that load are
        found.setdefault(state["epoch"], path)
    return found


def run_training(config: RunConfig, resume: bool = False, on_event: Event = quiet,
                 processes: Processes | None = None) -> Path:
    return Trainer(config, on_event, resume, processes).run()
