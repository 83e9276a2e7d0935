"""The monitor (:mod:`engine.monitor`) as a PyTorch Lightning callback (``pip install -e ".[lightning]"``).

    trainer = lightning.Trainer(max_epochs=10, callbacks=[FtdynCallback("runs/lit", (images, labels), module="net")])

The source is copied from the network when fitting starts; each training epoch's end (after its
validation) measures the network and records the epoch with the logged metrics: ``train_metrics``
and ``held_out_metrics`` name the (loss, accuracy) pair of each split, and every other logged number
is recorded as a scalar. The run directory follows the Trainer: ``fit(ckpt_path=…)`` continues the
record from the epoch the checkpoint resumes at, and under DDP every process measures its share of
the probe images and rank 0 writes. An exception or Ctrl-C is recorded as failed or interrupted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from engine.errors import FtdynError
from engine.monitor import Monitor

LIGHTNING = "ftdyn's Monitor in a Lightning Trainer"


class FtdynCallback(pl.Callback):
    """``module``: the attribute of the LightningModule that holds the network to measure (default:
    the LightningModule itself where it defines ``forward``, else the one network it holds). Other keywords are the monitor's settings (:class:`Monitor`):
    layers, metrics, view, alpha, analyses, intervals, vis, classes, …"""

    def __init__(self, run_dir: str | Path, probe, *, module: str | None = None, resume: bool = False,
                 train_metrics: tuple[str, str] = ("train_loss", "train_acc"),
                 held_out_metrics: tuple[str, str] = ("val_loss", "val_acc"), **settings: Any):
        self.run_dir, self.probe, self.module, self.resume = Path(run_dir), probe, module, resume
        self.splits = {"train": train_metrics, "held_out": held_out_metrics}
        self.settings = settings
        self.monitor: Monitor | None = None
        self.restored: dict[str, Any] | None = None

    def network(self, pl_module: pl.LightningModule):
        """The network measured: ``module``'s attribute; else the LightningModule where it defines
        ``forward``; else the one child holding parameters (a LightningModule that wraps one network
        and calls it in its steps)."""
        if self.module:
            if not isinstance(getattr(pl_module, self.module, None), torch.nn.Module):
                raise FtdynError(f"{type(pl_module).__name__} has no network '{self.module}'; pass the attribute "
                                 f"that holds it as module=")
            return getattr(pl_module, self.module)
        if type(pl_module).forward is not pl.LightningModule.forward:
            return pl_module
        holders = [child for child in pl_module.children() if next(child.parameters(), None) is not None]
        if len(holders) != 1:
            raise FtdynError(f"{type(pl_module).__name__} defines no forward and holds {len(holders)} networks; "
                             f"pass the attribute that holds the one to measure as module= (e.g. module=\"net\")")
        return holders[0]

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        resuming = self.resume or self.restored is not None or trainer.ckpt_path is not None
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        self.monitor = Monitor(self.run_dir, self.network(pl_module), self.probe, resume=resuming, epochs=epochs,
                               recorded_by=LIGHTNING, **self.settings)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """After the checkpoint's training state is restored: the record keeps the epochs the loop keeps."""
        self.monitor.start()
        if self.monitor.resume:
            self.monitor.rewind(trainer.current_epoch)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        logged = {}
        for key, value in trainer.callback_metrics.items():
            try:
                logged[key] = float(value)
            except (TypeError, ValueError, RuntimeError):
                continue  # not one number
        results = {}
        for split, (loss, accuracy) in self.splits.items():
            results[split] = {"loss": logged.pop(loss, None), "accuracy": logged.pop(accuracy)} \
                if accuracy in logged else None
        lrs = [group["lr"] for optimizer in trainer.optimizers for group in optimizer.param_groups]
        self.monitor.epoch(self.network(pl_module), trainer.current_epoch + 1, step=trainer.global_step,
                           lr=lrs or None, scalars=logged, **results)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.monitor is not None:
            self.monitor.close()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self.monitor is not None:
            self.monitor.close(exception)

    def state_dict(self) -> dict[str, Any]:
        return self.monitor.state_dict() if self.monitor is not None else dict(self.restored or {})

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.restored = dict(state_dict)
