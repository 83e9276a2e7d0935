"""Fine-tuning with feature dynamics recorded every epoch (the paper's pipeline, §3–4): `ftdyn run`.

    epoch 0: evaluate the untouched model and record its distances (exactly 0: the anchor)
    for each epoch t = 1…T:
        train one pass over the training split (optionally measuring every N steps)
        evaluate on the held-out split
        measure every hooked layer against the frozen source model on the probe set
        save the checkpoint (with the epoch's record inside), then append the record

The loop trains; everything measured, drawn and recorded goes through the monitor
(:class:`engine.monitor.Monitor`), which any other training loop calls the same way. What the run is
made of (data, probe set, source model, layers) comes from :mod:`engine.run_inputs`.

Resuming continues after the last complete epoch: each epoch's randomness (shuffling,
augmentation, dropout) is seeded from (seed, epoch), so a resumed run on CPU records the same
history as one that was never interrupted.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, RandomSampler, Sampler

from engine.accelerate import autocast, compiled, to_memory_format
from engine.checkpoints import load_checkpoint, save_atomic
from engine.data import ImageList, seeded_generator
from engine.distributed import Processes
from engine.errors import FtdynError, Stopped, exception_line
from engine.evaluation import evaluate
from engine.events import Event, quiet
from engine.models import trace_layers
from engine.failures import failure_message
from engine.monitor import Monitor, recorded
from engine.run_lock import RunClaim
from engine.record import NoWriter, RunWriter, write_atomic
from engine.run_config import (
    LR_RULE,
    PAPER_PRESET,
    TRAINER,
    RunConfig,
    check_config,
    check_run_directory,
    process_batch,
    saved_config,
    seed_epoch,
)
from engine.run_inputs import RunInputs, describe
from engine.strategies import (
    BATCHNORM,
    LP_C_GRID,
    RGN_BATCHES,
    StrategyConfig,
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
from engine.zoos import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["RunConfig", "Trainer", "run_training"]  # RunConfig: where `ftdyn run`'s settings were always found


LP_SETTINGS = {"method": "multinomial logistic regression, L2, L-BFGS (scipy), max 200 iterations",
               "standardisation": "one scalar mean and std over all features",
               "C_grid": list(LP_C_GRID), "C_selection": "accuracy on a seeded 20% split of the training features",
               "finetune_batchnorm": "frozen (eval mode), as Kumar et al."}


class NonFiniteLoss(FtdynError):
    pass


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
        self.on_event = recorded(on_event, self.writer)
        self.global_step = 0
        self.best_accuracy = -math.inf
        self.rgn: dict[str, float] = {}
        self.interrupt = InterruptRequest()

    # -- set-up ---------------------------------------------------------------------------------

    def prepare(self) -> None:
        config = self.config
        inputs = RunInputs(config, self.on_event, self.processes)
        inputs.prepare()
        self.inputs, self.device, self.data = inputs, inputs.device, inputs.data
        self.train_set, self.held_out, self.probe = inputs.train_set, inputs.held_out, inputs.probe
        self.eval_loader, self.loader_options = inputs.eval_loader, inputs.loader_options
        self.batch_per_process = process_batch(config.batch_size, self.processes.world)
        self.model = inputs.model
        self.strategy = StrategyConfig(config.strategy, list(config.train_blocks), config.layer_decay,
                                       config.warmup_epochs)
        check_strategy(self.strategy)
        self.groups = inputs.groups
        self.plan = plan_parameters(config.model, self.model, self.strategy, config.lr, self.groups)
        self.leave_out_lone_images()
        self.optimizer = make_optimizer(config.optimizer, self.model, self.plan, config.weight_decay)
        self.total_epochs = config.epochs + (1 if config.strategy == "lp-ft" else 0)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.autocast == "fp16")
        self.criterion = nn.CrossEntropyLoss()
        self.monitor = Monitor(
            self.dir, self.model, inputs.probe, source=inputs.source, model_name=config.model, layers=config.layers,
            metrics=config.metrics, view=config.view, alpha=config.alpha, analyses=config.analyses,
            intervals=config.intervals, interval_groups=config.interval_groups, interval_level=config.interval_level,
            vis=config.vis, vis_epochs=config.vis_epochs, vis_filters=config.vis_filters, vis_k=config.vis_k,
            classes=inputs.data.classes, epochs=self.total_epochs, device=self.device, seed=config.seed,
            resume=self.resume_requested, on_event=self.on_event, processes=self.processes,
            writer=self.writer, claim=getattr(self, "claim", None), layer_infos=inputs.layers, groups=self.groups,
            probe_loader=inputs.probe_loader, probe_share=inputs.probe_share, image_size=config.image_size,
            probe_pixels=inputs.probe_pixels() if config.vis and self.processes.leader else None,
            warnings=inputs.warnings + self.lone_image_warnings, autocast=config.autocast,
            channels_last=config.channels_last, shuffle_blocks=config.shuffle_blocks,
            inversion={"steps": config.invariance_steps, "step_size": config.invariance_step_size,
                       "images": config.invariance_images, "seed": config.seed,
                       "normalisation": None if inputs.normalisation == (IMAGENET_MEAN, IMAGENET_STD) else inputs.normalisation},
            describe_failure=lambda exc: failure_message(exc, config.out, self.processes, config.batch_size),
            options={"layers": "--layers", "resume": "--resume", "out": "--out", "probe_size": "--probe-size",
                     "interval_groups": "--interval-groups", "analyses": "--analyses"},
            settings=self.config_record())
        # training runs through DDP (gradients averaged over the processes) and, with --compile, a
        # compiled forward; everything else uses the plain module, whose parameters they share
        self.train_model = DistributedDataParallel(
            self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None) \
            if self.processes.distributed else self.model
        self.train_model = compiled(self.train_model, config.compile)

    def leave_out_lone_images(self) -> None:
        """A lone last batch: each process's share of the epoch, and AutoRGN's first batches of the whole
        set; the model is traced for a BatchNorm that cannot take one only where one can occur."""
        config, world = self.config, self.processes.world
        lone_share = lone_last_image(-(-len(self.train_set) // world), self.batch_per_process)
        lone_whole = config.strategy == "autorgn" and lone_last_image(len(self.train_set), config.batch_size)
        needs_two = (lone_share or lone_whole) and batchnorm_needs_two_images(self.model, config.image_size,
                                                                              self.plan.frozen_batchnorm)
        self.lone_image_left_out, self.rgn_lone_image_left_out = lone_share and needs_two, lone_whole and needs_two
        self.lone_image_warnings = []
        if self.lone_image_left_out:
            text = (f"{len(self.train_set)} training images in batches of {config.batch_size} leave a last batch of "
                    f"one image, which this model's BatchNorm cannot train on (a 1×1 input): it is left out, a "
                    f"different image each epoch (the order is reshuffled); a --batch-size that does not leave "
                    f"one keeps every image")
            self.lone_image_warnings.append(text)
            self.on_event("warning", text=text)

    def config_record(self) -> dict[str, Any]:
        """What config.json says of the run beyond what the monitor measures: its settings, data and strategy."""
        return {
            "recorded_by": TRAINER,
            "run": self.config.to_json(),
            "preset_settings": PAPER_PRESET if self.config.preset == "paper" else None,
            "dataset": describe(self.inputs),
            "model": {"weights": self.inputs.weights_description,
                      "normalisation": dict(zip(("mean", "std"), map(list, self.inputs.normalisation)))},
            "strategy": {"name": self.strategy.name, "train_blocks": self.strategy.train_blocks,
                         "layer_decay": self.strategy.layer_decay, "warmup_epochs": self.strategy.warmup_epochs,
                         "frozen_batchnorm": self.plan.frozen_batchnorm,
                         "groups": [{"name": g["name"], "lr": g["lr"], "tensors": len(g["params"])}
                                    for g in self.plan.groups],
                         "probe": LP_SETTINGS if self.strategy.name == "lp-ft" else None},
            "processes": {"effective_batch": self.config.batch_size, "batch_per_process": self.batch_per_process,
                          "lr_rule": LR_RULE},
        }

    def record_resumed_settings(self) -> None:
        """config.json follows what a resume may change about how the run is computed: the number of
        processes (and the batch each takes) and --autocast."""
        saved = saved_config(self.dir)
        run = {k: v for k, v in saved["run"].items() if k != "amp"} | {"autocast": self.config.autocast}
        processes = dict(self.processes.describe(), effective_batch=self.config.batch_size,
                         batch_per_process=self.batch_per_process, lr_rule=LR_RULE)
        before = saved.get("processes") or {"world_size": 1}
        if run != saved["run"] or before.get("world_size") != processes["world_size"]:
            self.writer.write_config(dict(saved, run=run, processes=processes))

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> Path:
        """The whole run, as the one writer of its directory (a second writer is refused)."""
        check_config(self.config)
        try:
            if self.processes.leader:  # rank 0 holds the directory and its lock for every process
                self.claim = RunClaim(self.dir, self.on_event)
            try:
                return self.run_claimed()
            finally:
                if self.processes.leader:
                    self.claim.release()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # for rank 0 to record when this is not rank 0 (engine.distributed)
            self.processes.report_failure(failure_message(exc, self.config.out, self.processes, self.config.batch_size)
                                          or f"{type(exc).__name__}: {exc}")
            raise

    def run_claimed(self) -> Path:
        if self.processes.leader:  # the others may already see what rank 0 wrote
            check_run_directory(self.dir, self.resume_requested)
        self.prepare()
        start_epoch, saved_record = self.restore() if self.resume_requested else (None, None)
        self.monitor.start(resume=start_epoch is not None, resumed_at=start_epoch, resumed_record=saved_record)
        try:
            if start_epoch is not None:
                self.record_resumed_settings()
            if self.data.skipped and self.processes.leader:
                write_atomic(self.dir / "skipped_files.txt", ("\n".join(self.data.skipped) + "\n").encode())
        except OSError as exc:  # nothing trained yet
            self.monitor.close(exc)
            raise FtdynError(failure_message(exc, self.config.out) or f"cannot write into '{self.dir}' ({exc})") \
                from None
        try:
            with self.interrupt:
                self.run_epochs(start_epoch)
        except BaseException as exc:
            failure = self.monitor.close(exc)
            if failure is None or isinstance(exc, KeyboardInterrupt):  # a defect: its traceback is needed
                raise
            raise FtdynError(failure) from None
        self.monitor.close()
        return self.dir

    def run_epochs(self, start_epoch: int | None) -> None:
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
            self.check_loss(loss, epoch, step)
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
                record = self.monitor.step(self.model, step=self.global_step, epoch=epoch,
                                           train={"loss": loss_sum / seen, "accuracy": correct / seen})
                analysis_seconds += record["timing"]["analysis_s"]
                set_train_mode(self.model, self.plan.frozen_batchnorm)
        self.check_interrupt()  # a stop during the last step: before the epoch's evaluation and measuring
        train_seconds = time.perf_counter() - start - analysis_seconds
        if self.processes.distributed:  # every process's images (with the sampler's few repeats)
            totals = self.processes.sum(torch.tensor([loss_sum, correct, seen], dtype=torch.float64,
                                                     device=self.processes.device()))
            loss_sum, correct, seen = totals.tolist()
        return {"loss": loss_sum / max(seen, 1), "accuracy": correct / max(seen, 1),
                "step_analysis_s": analysis_seconds}, train_seconds

    def check_loss(self, loss: torch.Tensor, epoch: int, step: int) -> None:
        """Stop every process at this step, before the gradients are averaged, when one was asked to
        stop or any loss became non-finite (one collective for both)."""
        finite = bool(torch.isfinite(loss))
        stop, non_finite = self.processes.flags(self.interrupt.requested is not None, not finite)
        if stop:
            raise self.interrupt.stopped()
        if non_finite and finite:
            raise NonFiniteLoss(f"the loss became non-finite on another process at epoch {epoch}, step {step}; "
                                f"lower --lr or set --grad-clip (recorded epochs are kept)")
        if non_finite:
            raise NonFiniteLoss(f"loss became {loss.item()} at epoch {epoch}, step {step}; lower --lr or set "
                                f"--grad-clip (recorded epochs are kept)")

    def held_out_results(self) -> tuple[dict[str, float], float]:
        """Accuracy and loss on the held-out split, and the seconds it took."""
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
            plain = ImageList(self.train_set.samples, self.inputs.transform(augment=False))
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
        """Evaluate, measure through the monitor, save the checkpoint (with the record inside), then
        append the record: a kill between the two loses nothing (see :meth:`restore`)."""
        self.on_event("phase", name=f"epoch {epoch}: evaluating and measuring")
        self.processes.broadcast_buffers(self.model)  # one network evaluated and measured: the checkpoint's
        held_out, eval_seconds = self.held_out_results()
        step_analysis = train.pop("step_analysis_s", 0.0) if train else 0.0
        record = self.monitor.epoch_record(
            self.model, epoch, step=self.global_step, phase=phase, train=train, held_out=held_out,
            extra={"lr": [group["lr"] for group in self.optimizer.param_groups],
                   "lr_groups": {group["name"]: group["lr"] for group in self.optimizer.param_groups},
                   "rgn": dict(self.rgn) if self.config.strategy == "autorgn" and epoch > 0 else None},
            timing={"train_s": train_seconds, "eval_s": eval_seconds, "step_analysis_s": step_analysis})
        self.best_accuracy = max(self.best_accuracy, held_out["accuracy"])
        self.save_checkpoint(epoch, record, is_best=held_out["accuracy"] >= self.best_accuracy)
        self.monitor.append(record)

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

    def restore(self) -> tuple[int | None, dict[str, Any] | None]:
        """Load the last checkpoint: its epoch and record (None when the run was killed before its first
        checkpoint: it starts over). The monitor reconciles the record file with it when it starts."""
        saved = saved_config(self.dir)
        if saved["dataset"].get("classes") != self.data.classes:
            raise FtdynError(f"the data at '{self.config.data}' has classes {self.data.classes[:5]}… but the run "
                             f"was started with {(saved['dataset'].get('classes') or [])[:5]}…; resume with the same --data")
        self.monitor.check_source()
        path = self.dir / "checkpoints" / "last.pt"
        if not path.exists():
            if self.monitor.recorded_epochs():
                raise FtdynError(f"cannot resume '{self.dir}': its records reach epoch "
                                 f"{max(self.monitor.recorded_epochs())} but checkpoints/last.pt is missing; "
                                 f"restore it, or start a new run")
            return None, None  # killed before its first checkpoint: it starts over
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
        return last, state["record"]


def run_training(config: RunConfig, resume: bool = False, on_event: Event = quiet,
                 processes: Processes | None = None) -> Path:
    return Trainer(config, on_event, resume, processes).run()
