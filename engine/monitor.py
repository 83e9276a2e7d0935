"""The monitor: feature dynamics recorded from any training loop.

    from engine import Monitor

    with Monitor("runs/mine", model, (probe_images, probe_labels)) as monitor:   # copies the source now
        for epoch in range(1, epochs + 1):
            train_one_epoch(model)
            monitor.epoch(model, train={"loss": loss}, held_out={"accuracy": accuracy, "loss": val_loss})

Each :meth:`Monitor.epoch` measures every hooked layer of the live model against the frozen source on
the probe set (the epoch parts of :mod:`engine.analyses`, on one shared probe pass), draws the filter
visualisations, appends the epoch's record to RUN/records.jsonl and keeps RUN/status.json's
heartbeat: the run directory that `ftdyn run` writes, which the app, `ftdyn report` and `ftdyn
figures` read, live too. Epoch 0 — the untouched source, every distance exactly 0 — is recorded
before the first measured epoch. The monitor holds the run directory's writer lock from
:meth:`~Monitor.start` to :meth:`~Monitor.close`, which records the run finished, failed (with a
one-line reason) or interrupted. ``resume=True`` continues a recorded run. Under torch.distributed
every process calls it with its model: each passes its share of the probe set, and rank 0 adds the
shares' statistics and writes (engine.distributed), as in `ftdyn run`.

`ftdyn run` (:mod:`engine.training`) is a client of this class: its loop trains and calls it.
Settings have `ftdyn run`'s names and defaults (:class:`engine.run_config.RunConfig`).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from engine.analyses.parts import PartContext, build_epoch_parts, epoch_parts, parse_analyses
from engine.analyses.runner import EpochAnalyses
from engine.capture import parse_measures
from engine.distributed import Processes, current_processes
from engine.errors import FtdynError, Stopped, exception_line
from engine.events import Event, quiet
from engine.failures import failure_message
from engine.models import LayerInfo, head_name, select_layers, source_fingerprint
from engine.probe_checks import check_measures, interval_settings
from engine.probe_set import display_pixels, probe_dataset, probe_image_size
from engine.record import NoWriter, RunFormatError, RunReader, RunWriter
from engine.report import epoch_summary
from engine.run_config import RunConfig, check_run_directory
from engine.run_lock import RunClaim
from engine.strategies import block_groups
from engine.visualise import FilterEvidence, Visualiser, filter_visualiser, per_filter_changes


def run_defaults() -> dict[str, Any]:
    """`ftdyn run`'s defaults (RunConfig's): the monitor's settings mean the same and start the same."""
    return {spec.name: spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()
            for spec in dataclasses.fields(RunConfig)
            if spec.default is not dataclasses.MISSING or spec.default_factory is not dataclasses.MISSING}


# config.json's ``recorded_by`` for a run recorded by the monitor in the user's own loop
PLAIN_LOOP = "ftdyn's Monitor in a PyTorch training loop"

# The file the monitor keeps the source's weights in when it copied them from the live model: what a
# resumed loop is measured against (`ftdyn run` rebuilds its source from --model and --weights instead).
SOURCE_FILE = "source.pt"

# How messages name the settings: the monitor's keyword arguments (`ftdyn run` passes its options)
USER_OPTIONS = {"layers": "layers=", "resume": "resume=True", "out": "run_dir", "probe_size": "a larger probe set",
                "interval_groups": "interval_groups", "analyses": "analyses="}

PROBE_BATCH = 64  # the probe pass's batch (`ftdyn run`: min(--batch-size, 64))


class Monitor:
    """Records how ``model``'s features move away from its source (its weights now, or ``source``) on
    the ``probe`` images, into the run directory ``run_dir``.

    ``probe``: a tensor of images (n, 3, s, s), a pair (images, labels), a ``Dataset`` of (image,
    label) pairs or of images, or a ``DataLoader`` (passed once and kept in order). Labels are
    needed for the class-based filter images (``vis``, on by default): without them, pass
    ``vis=False``. ``classes`` names the labels (default: their numbers).

    ``layers`` (default: the rules of `ftdyn layers`, for any network: stage outputs, every block
    of a ViT), ``metrics``, ``view``, ``alpha``, ``analyses``, ``intervals``, ``interval_groups``,
    ``interval_level`` and the ``vis_*`` settings have `ftdyn run`'s names and defaults (its
    ``--help``). ``model_name`` names the architecture for the layer and block rules that depend on
    it (a torchvision name such as ``"resnet18"``; default: the class name). ``epochs``: how many the
    loop will run, for the progress shown. ``device``: where the probe pass runs (default: the
    model's), in batches of ``probe_batch_size``. ``seed``: the visualisations' random choices.
    """

    def __init__(self, run_dir: str | Path, model: nn.Module, probe, *, source: nn.Module | None = None,
                 model_name: str | None = None, layers: list[str] | None = None, metrics: list[str] | None = None,
                 view: str | None = None, alpha: float | None = None, analyses: list[str] | None = None,
                 intervals: str | None = None, interval_groups: int | None = None,
                 interval_level: float | None = None, vis: bool | None = None, vis_epochs: list[int] | None = None,
                 vis_filters: str | None = None, vis_k: int | None = None, classes: list[str] | None = None,
                 epochs: int | None = None, device: str | torch.device | None = None, seed: int = 0,
                 probe_batch_size: int = PROBE_BATCH,
                 resume: bool = False, on_event: Event = quiet, recorded_by: str = PLAIN_LOOP,
                 processes: Processes | None = None, **client: Any):
        """``client``: what `ftdyn run` hands over that a loop's own user does not (see
        :meth:`engine.training.Trainer.prepare`): ``settings`` (config.json sections), ``writer``,
        ``claim`` (the writer lock it took), ``layer_infos``, ``groups``, ``probe_loader`` and
        ``probe_share``, ``probe_pixels``, ``warnings``, ``autocast``, ``channels_last``,
        ``shuffle_blocks``, ``inversion``, ``image_size``, ``describe_failure``, ``options``."""
        self.dir = Path(run_dir)
        self.resume = resume
        self.processes = processes or current_processes()
        self.writer = client.get("writer") or (RunWriter(self.dir) if self.processes.leader else NoWriter())
        self.on_event = recorded(on_event, self.writer) if "writer" not in client else on_event
        self.client = client
        self.recorded_by = recorded_by
        self.options = client.get("options", USER_OPTIONS)
        self.settings = dict(layers=layers, metrics=metrics, view=view, alpha=alpha, analyses=analyses,
                             intervals=intervals, interval_groups=interval_groups, interval_level=interval_level,
                             vis=vis, vis_epochs=vis_epochs, vis_filters=vis_filters, vis_k=vis_k, seed=seed)
        defaults = run_defaults()
        self.settings = {k: defaults[k] if v is None and k != "vis_epochs" else v for k, v in self.settings.items()}
        self.epochs = epochs
        self.run_warnings: list[str] = list(client.get("warnings", []))  # recorded in config.json's warnings
        self.intervals_short: dict[str, list[str]] = {}  # view → layers whose intervals fall short of their level
        self.field_kinds: dict[str, str] = {}  # per layer: how class-based images locate a unit
        self.best_accuracy: float | None = None
        self.last_epoch: int | None = None  # the newest epoch recorded
        self.claim: RunClaim | None = client.get("claim")  # `ftdyn run` takes the run directory before it builds
        self.owns_claim = False
        self.started = self.closed = False

        model = plain_module(model)
        self.model = model
        self.device = torch.device(device) if device is not None else parameter_device(model)
        self.probe_set, self.labelled = probe_dataset(probe)
        self.model_name = model_name or type(model).__name__
        self.image_size = client.get("image_size") or probe_image_size(self.probe_set)
        self.source = self.source_copy(model, source)
        self.layers = client.get("layer_infos") or select_layers(
            self.model_name, self.source, self.settings["layers"], self.image_size,
            option=self.options["layers"], lister=None if "layer_infos" in client else "engine.hookable_layers(model)")
        self.given_classes = classes
        if "probe_loader" in client:
            self.probe_loader, self.probe_share = client["probe_loader"], client["probe_share"]
        else:
            share, batch = self.processes.batch_shard(len(self.probe_set), probe_batch_size)
            part = Subset(self.probe_set, list(share)) if self.processes.distributed else self.probe_set
            self.probe_loader, self.probe_share = DataLoader(part, batch_size=batch, shuffle=False), share
        self.measures = parse_measures(self.settings["metrics"], self.settings["view"], self.settings["alpha"])
        parts = parse_analyses(self.settings["analyses"])
        if "distance" in parts:
            check_measures(self.layers, self.measures, len(self.probe_set), self.model_name, self.warn)
        self.groups = client.get("groups") or block_groups(self.model_name, self.source)
        self.intervals, self.intervals_short = interval_settings(
            self.layers, self.measures, len(self.probe_set), self.settings, self.options, self.warn, self.on_event,
            self.dir if self.resume else None)
        class_token_layers = tuple(layer.name for layer in self.layers if layer.layout and layer.layout.class_token)
        context = PartContext(source=self.source, groups=self.groups, head=head_name(self.source),
                              layer_names=[layer.name for layer in self.layers], measures=self.measures,
                              class_token_layers=class_token_layers, intervals=self.intervals,
                              probe=self.probe_set, run_dir=self.dir, device=self.device,
                              inversion=client.get("inversion"), on_event=self.on_event,
                              shuffle_blocks=client.get("shuffle_blocks"), processes=self.processes,
                              first_image=self.probe_share.start)
        self.analyses = EpochAnalyses(self.source, {layer.name: layer.layout for layer in self.layers},
                                      build_epoch_parts(self.process_parts(parts), context), self.processes)
        self.visualiser = self.make_visualiser() if self.settings["vis"] and self.processes.leader else None
        # the probe images whose whole maps the visualisation keeps (every process collects its share)
        self.vis_samples = self.visualiser.samples if self.visualiser is not None else None
        if self.settings["vis"] and self.processes.distributed:
            self.vis_samples = self.processes.broadcast_object(self.vis_samples)

    # -- set-up (nothing is written) -----------------------------------------------------------------

    def source_copy(self, model: nn.Module, source: nn.Module | None) -> nn.Module:
        """The frozen source: ``source``, the weights kept in RUN/source.pt (resuming a run whose source
        the monitor copied), or a copy of ``model`` as it is now."""
        if source is None:
            source = copy.deepcopy(model)
            kept = self.dir / SOURCE_FILE
            if self.resume and "settings" not in self.client:
                if not kept.is_file() or kept.is_symlink():
                    raise FtdynError(f"cannot resume '{self.dir}': it keeps no {SOURCE_FILE} (the source's weights); "
                                     f"pass the source model as source=")
                try:
                    source.load_state_dict(torch.load(kept, map_location="cpu", weights_only=True))
                except Exception as exc:  # damaged, foreign, or another architecture's
                    raise FtdynError(f"cannot resume '{self.dir}': {SOURCE_FILE} does not fit this model "
                                     f"({exception_line(exc, last=True)[:160]}); pass the source model as source=") \
                        from None
        source = plain_module(source).to(self.device).eval()
        for p in source.parameters():
            p.requires_grad_(False)
        return source

    def process_parts(self, names: list[str]) -> list[str]:
        """The epoch parts this process runs: all of them on rank 0; on the others those that observe
        the probe pass, which every process shares (engine.analyses.runner)."""
        if not self.processes.distributed:
            return names
        parts = epoch_parts()
        for name in names:
            if parts[name].uses_probe and not hasattr(parts[name], "reduce"):
                raise FtdynError(f"the '{name}' analysis cannot yet be split over processes; run it with one "
                                 f"process or leave it out of {self.options['analyses']}")
        return names if self.processes.leader else [name for name in names if parts[name].uses_probe]

    @functools.cached_property
    def labels(self) -> list[int] | None:
        """The probe images' class labels (None without): given with the pixels, or read from the set."""
        if self.client.get("probe_pixels"):
            return self.client["probe_pixels"][1]
        return [int(self.probe_set[i][1]) for i in range(len(self.probe_set))] if self.labelled else None

    @functools.cached_property
    def classes(self) -> list[str]:
        return self.given_classes or [str(c) for c in range(max(self.labels or [-1]) + 1)]

    def make_visualiser(self) -> Visualiser:
        s = self.settings
        if not self.labels:
            raise FtdynError("the probe images have no class labels, which the class-based filter images need; "
                             "pass (images, labels) or a Dataset of (image, label) pairs, or vis=False")
        images, labels = self.client.get("probe_pixels") or (display_pixels(self.probe_set), self.labels)
        visualiser, self.field_kinds = filter_visualiser(self.dir, self.model, self.layers, self.image_size, images,
                                                         labels, self.classes, s, self.on_event)
        return visualiser

    def warn(self, text: str) -> None:
        """Say ``text`` now and record it with the run's warnings (config.json), for the report and the app."""
        self.run_warnings.append(text)
        self.on_event("warning", text=text)

    def config_record(self) -> dict[str, Any]:
        """config.json: what the monitor measures, with the client's sections (`ftdyn run`'s settings,
        data and strategy) where it has them."""
        settings = dict(self.client.get("settings") or {
            "run": dict(self.settings, model=self.model_name, image_size=self.image_size, epochs=self.epochs,
                        probe_size=len(self.probe_set)),
            "dataset": {"classes": self.classes, "probe_images": len(self.probe_set)}})
        model = {"name": self.model_name, "source_fingerprint": source_fingerprint(self.source),
                 **settings.pop("model", {})}
        return {
            "recorded_by": self.recorded_by,
            **settings,
            "model": model,
            "layers": [{"name": layer.name, "shape": list(layer.shape),
                        "layout": layer.layout.to_json() if layer.layout else None} for layer in self.layers],
            "measures": [{"label": m.label, "metric": m.metric.label, "view": m.view} for m in self.measures]
            if self.analyses.part("distance") else [],
            "analyses": self.analyses.declarations(),
            "warnings": self.run_warnings,
            "intervals_short": self.intervals_short,
            "vis_fields": self.field_kinds or None,
            "device": str(self.device),
            "processes": dict(self.processes.describe(), **settings.get("processes", {})),
            "torch": torch.__version__,
        }

    # -- the run directory -------------------------------------------------------------------------

    def start(self, resume: bool | None = None, resumed_at: int | None = None,
              resumed_record: dict[str, Any] | None = None) -> "Monitor":
        """Take the run directory (its writer lock, on rank 0) and record the run as running: a new
        run's config.json, or a resumed run's record cut back to its last complete epoch
        (``resumed_at``, where the loop's own checkpoint is; ``resumed_record``: that epoch's record
        when the record file lost it). ``resume``: False where a resume found nothing to continue
        (`ftdyn run` killed before its first checkpoint starts over)."""
        if self.started:
            return self
        resume = self.resume if resume is None else resume
        if self.processes.leader and self.claim is None:
            self.claim = RunClaim(self.dir, self.on_event, instead=f"choose another {self.options['out']}")
            self.owns_claim = True
        try:
            if self.processes.leader:
                check_run_directory(self.dir, self.resume, self.options["resume"], self.options["out"])
                if resume:
                    self.check_source()
                    self.resume_at(resumed_at, resumed_record)
                else:
                    self.writer.write_config(self.config_record())
                    if "settings" not in self.client:
                        torch.save(self.source.state_dict(), self.dir / SOURCE_FILE)
            self.writer.start(self.epochs, epoch=self.last_epoch or 0,
                              processes=self.processes.describe() if self.processes.distributed else None)
        except OSError as exc:  # nothing measured yet: the run's recorded state is left as it was
            self.release()
            raise FtdynError(failure_message(exc, self.dir) or f"cannot write into '{self.dir}' ({exc})") from None
        except BaseException:
            self.release()
            raise
        self.last_epoch = self.processes.broadcast_object(self.last_epoch)
        self.started = True
        return self

    def check_source(self) -> None:
        """A resumed run is measured against the source it started from."""
        saved = RunReader(self.dir).config() or {}
        recorded = (saved.get("model") or {}).get("source_fingerprint")
        if not isinstance(recorded, (int, float)) or abs(recorded - source_fingerprint(self.source)) > 1e-6 * abs(recorded):
            raise FtdynError("the source model's weights differ from the ones this run started with; "
                             f"resume with the same {'--model and --weights' if 'settings' in self.client else 'source'}")

    def resume_at(self, epoch: int | None, record: dict[str, Any] | None = None) -> None:
        """Keep the records up to ``epoch`` (default: the last complete epoch recorded); the records of
        an epoch in progress when the run stopped are dropped (it is run again)."""
        reader = self.read_records()
        epochs = [r["epoch"] for r in reader.records if r["kind"] == "epoch"]
        if epoch is None:
            epoch = max(epochs, default=None)
        if epoch is None:
            keep = []
        else:
            keep = [r for r in reader.records if r.get("epoch", 0) <= epoch and not (
                r["kind"] == "step" and r.get("epoch", 0) == epoch and epoch not in epochs)]
            if record is not None and epoch not in epochs:
                keep.append(record)  # killed between checkpoint and record: the checkpoint holds it
        if keep != reader.records:
            self.writer.truncate_records(keep)
        held = [r["held_out"]["accuracy"] for r in keep if r["kind"] == "epoch" and r.get("held_out")]
        self.best_accuracy = max(held, default=None)
        self.last_epoch = max((r["epoch"] for r in keep if r["kind"] == "epoch"), default=None)
        self.on_event("phase", name=f"resuming after epoch {self.last_epoch}" if self.last_epoch is not None
                      else "resuming: nothing was recorded yet")

    def read_records(self) -> RunReader:
        reader = RunReader(self.dir)
        try:
            reader.poll()
        except RunFormatError as exc:
            raise FtdynError(f"cannot resume '{self.dir}': {exc}; the record was not written by ftdyn as it is") \
                from None
        return reader

    def recorded_epochs(self) -> list[int]:
        return [r["epoch"] for r in self.read_records().records if r["kind"] == "epoch"]

    def rewind(self, epoch: int) -> None:
        """Drop what was recorded after ``epoch``: the loop went back to an earlier checkpoint (a
        resumed Lightning or Hugging Face trainer calls this with its checkpoint's epoch)."""
        if self.processes.leader:
            self.resume_at(epoch)
        self.last_epoch = self.processes.broadcast_object(self.last_epoch)

    def close(self, exc: BaseException | None = None) -> str | None:
        """Record how the run ended — finished (no ``exc``), interrupted (a KeyboardInterrupt) or failed —
        and let go of the run directory. Returns the failure's one line where it is an input or
        environment problem (None for a defect, whose traceback is needed)."""
        if self.closed or not self.started:
            self.release()
            return None
        self.closed = True
        failure = None
        resume = self.options["resume"]
        try:
            if exc is None:
                if self.visualiser is not None:
                    self.on_event("phase", name="writing the visualisation montages")
                    self.visualiser.write_all_montages()
                self.writer.finish("finished")
            elif isinstance(exc, KeyboardInterrupt):
                elsewhere = self.processes.reported_failure()  # torchrun stops every process when one fails
                if elsewhere:
                    self.writer.finish_if_possible("failed", f"{elsewhere}; recorded epochs are kept, "
                                                             f"continue with {resume}")
                else:
                    how = "SIGTERM" if isinstance(exc, Stopped) and exc.signal_name == "SIGTERM" else "Ctrl-C"
                    self.writer.finish_if_possible("interrupted", f"stopped by {how}; continue with {resume}")
            else:
                describe = self.client.get("describe_failure") or (lambda e: failure_message(e, self.dir, self.processes,
                                                                                             resume=resume))
                failure = describe(exc)
                self.processes.report_failure(failure or f"{type(exc).__name__}: {exc}")  # the first one stays
                self.writer.finish_if_possible("failed", self.processes.reported_failure() or failure
                                               or f"{type(exc).__name__}: {exc}")
        finally:
            self.release()
        return failure

    def release(self) -> None:
        if self.owns_claim:
            self.claim.release()
            self.claim, self.owns_claim = None, False

    def __enter__(self) -> "Monitor":
        return self.start()

    def __exit__(self, _type, exc, _traceback) -> bool:
        self.close(exc)
        return False

    # -- measuring ---------------------------------------------------------------------------------

    def epoch(self, model: nn.Module | None = None, epoch: int | None = None, *, train: dict | None = None,
              held_out: dict | None = None, lr: float | list[float] | None = None, step: int | None = None,
              scalars: dict[str, float] | None = None, **more_scalars: float) -> dict[str, Any]:
        """Measure ``model`` (default: the one the monitor was made with) after ``epoch`` (default: the
        one after the last recorded) and record it, with the loop's ``train`` and ``held_out`` results
        ({"loss": …, "accuracy": …}), learning rate(s) and any other numbers (``scalars``, or as
        keywords). Returns the record."""
        record = self.epoch_record(model, epoch, train=train, held_out=held_out, step=step,
                                   extra={"lr": [lr] if isinstance(lr, (int, float)) else lr,
                                          "scalars": clean_scalars({**(scalars or {}), **more_scalars}) or None})
        self.append(record)
        return record

    def epoch_record(self, model: nn.Module | None, epoch: int | None, *, train: dict | None = None,
                     held_out: dict | None = None, step: int | None = None, phase: str = "finetune",
                     extra: dict | None = None, timing: dict | None = None) -> dict[str, Any]:
        """The record of ``epoch`` (see :meth:`epoch`), measured but not yet appended: `ftdyn run` puts it
        in its checkpoint first. ``extra``: more of the record's fields; ``timing``: the loop's seconds."""
        self.start()
        model = plain_module(model) if model is not None else self.model
        epoch = self.next_epoch(epoch)
        if epoch > 0 and self.last_epoch is None:  # the anchor: the untouched source, every distance 0
            self.append(self.epoch_record(self.source, 0, phase="source"))
        check_results(train, "train")
        check_results(held_out, "held_out")
        self.processes.broadcast_buffers(model)  # one network measured: the one every process holds
        visualise = self.settings["vis"] and (self.settings["vis_epochs"] is None or epoch in self.settings["vis_epochs"])
        evidence = FilterEvidence(self.analyses.layer_names, self.vis_samples, self.probe_share.start) \
            if visualise else None
        sections, spent = self.measure(model, evidence)
        vis_seconds = self.visualiser.render(epoch, evidence, per_filter_changes(sections.get("layers", {}))) \
            if visualise and self.visualiser is not None else 0.0
        return {"kind": "epoch", "epoch": epoch, "step": step, "phase": "source" if epoch == 0 else phase,
                "train": train, "held_out": held_out, **(extra or {}), **sections,
                "timing": {**(timing or {}), "analysis_s": sum(spent.values()), "analyses_s": spent,
                           "vis_s": vis_seconds}}

    def append(self, record: dict[str, Any]) -> None:
        """Append an epoch's record and update the run's status."""
        self.writer.append_record(record)
        self.last_epoch = record["epoch"]
        if record.get("held_out"):
            accuracy = record["held_out"]["accuracy"]
            self.best_accuracy = accuracy if self.best_accuracy is None else max(self.best_accuracy, accuracy)
        self.writer.update_status(epoch=record["epoch"], best_accuracy=self.best_accuracy)
        self.on_event("epoch_done", epoch=record["epoch"], record=record)

    def step(self, model: nn.Module | None = None, *, step: int, epoch: int | None = None, train: dict | None = None,
             scalars: dict[str, float] | None = None, **more_scalars: float) -> dict[str, Any]:
        """Measure ``model`` during ``epoch`` (default: the one in progress) at the loop's global
        ``step`` and record it as a step record (`ftdyn run --every-steps`). Returns the record."""
        self.start()
        model = plain_module(model) if model is not None else self.model
        check_results(train, "train")
        self.processes.broadcast_buffers(model)
        sections, spent = self.measure(model)
        record = {"kind": "step", "epoch": epoch if epoch is not None else (self.last_epoch or 0) + 1, "step": step,
                  "train": train, **({"scalars": clean_scalars({**(scalars or {}), **more_scalars})}
                                     if scalars or more_scalars else {}), **sections,
                  "timing": {"analysis_s": sum(spent.values()), "analyses_s": spent}}
        self.writer.append_record(record)
        return record

    def measure(self, model: nn.Module, evidence: FilterEvidence | None = None) -> tuple[dict, dict]:
        return self.analyses.run(model, self.probe_loader, self.device, self.client.get("autocast", "off"),
                                 observer=evidence, channels_last=self.client.get("channels_last", False))

    def next_epoch(self, epoch: int | None) -> int:
        last = self.last_epoch
        if epoch is None:
            return 1 if last is None else last + 1
        if not isinstance(epoch, int) or epoch < 0:
            raise FtdynError(f"epoch must be a whole number ≥ 0 (got {epoch!r})")
        if last is not None and epoch <= last:
            raise FtdynError(f"epoch {epoch} is already recorded in '{self.dir}' (it reaches epoch {last}); a loop "
                             f"that went back to an earlier checkpoint calls monitor.rewind(that epoch) first")
        return epoch

    def state_dict(self) -> dict[str, Any]:
        """What a loop's checkpoint keeps of the monitor: the last epoch it recorded."""
        return {"last_epoch": self.last_epoch}


def recorded(on_event: Event, writer) -> Event:
    """``on_event``, with what a viewer should read later (phases, warnings, epoch summaries) also
    written to the run's event log (RUN/events.jsonl), which the app's log panel follows."""
    def event(kind: str, **info: Any) -> None:
        text = {"phase": lambda: info.get("name"), "warning": lambda: info.get("text"),
                "epoch_done": lambda: epoch_summary(info["record"])}.get(kind, lambda: None)()
        if text:
            writer.log_event(kind, text)
        on_event(kind, **info)
    return event


def plain_module(model: nn.Module) -> nn.Module:
    """The module whose layers are named: inside DistributedDataParallel and torch.compile's wrapper."""
    model = getattr(model, "module", model) if isinstance(model, nn.parallel.DistributedDataParallel) else model
    return getattr(model, "_orig_mod", model)


def parameter_device(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def check_results(results: dict | None, name: str) -> None:
    """``train`` and ``held_out`` are {"accuracy": a, "loss": l} (the loss may be None)."""
    if results is None:
        return
    if not isinstance(results, dict) or not isinstance(results.get("accuracy"), (int, float)) or \
            not (results.get("loss") is None or isinstance(results["loss"], (int, float))):
        raise FtdynError(f"{name} must be a dict with a numeric 'accuracy' and a numeric (or None) 'loss', e.g. "
                         f"{{'accuracy': 0.9, 'loss': 0.3}}; other numbers go in as keyword scalars")


def clean_scalars(scalars: dict[str, Any]) -> dict[str, float]:
    """The loop's other numbers (tensors of one value become floats); anything else is refused."""
    out = {}
    for key, value in scalars.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise FtdynError(f"scalar '{key}' is {type(value).__name__}; the monitor records numbers")
        out[str(key)] = float(value)
    return out


def hookable_layers(model: nn.Module, image_size: int = 224) -> list[LayerInfo]:
    """Every layer of ``model`` the monitor can hook (a feature map, tokens or a vector, run once per
    forward pass), with its output shape for one ``image_size`` image: what ``layers=`` may name."""
    from engine.models import trace_layers

    return [layer for layer in trace_layers(plain_module(model), image_size)
            if layer.layout is not None and layer.calls == 1]
