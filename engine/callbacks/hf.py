"""The monitor (:mod:`engine.monitor`) as a Hugging Face ``transformers.TrainerCallback``
(``pip install -e ".[hf]"``).

    callback = FtdynCallback("runs/hf", (images, labels))
    trainer = transformers.Trainer(model, args, train_dataset=…, eval_dataset=…, callbacks=[callback])
    with callback:            # records a failure or Ctrl-C (the Trainer has no hook for them)
        trainer.train()

The source is copied from the model when training begins; each epoch's end measures the model, and
the record is appended once the epoch's evaluation has been logged (``eval_strategy="epoch"``), with
the logs: ``eval_loss`` and ``eval_accuracy`` (``compute_metrics`` returning ``accuracy``) as the
held-out split, the rest — the training loss, the learning rate — as scalars. ``train(
resume_from_checkpoint=…)`` continues the record from the checkpoint's epoch; under DDP every
process measures its share of the probe images and rank 0 writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import transformers

from engine.monitor import Monitor

HF_TRAINER = "ftdyn's Monitor in a Hugging Face Trainer"


class FtdynCallback(transformers.TrainerCallback):
    """Keywords are the monitor's settings (:class:`Monitor`): layers, metrics, view, alpha, analyses,
    intervals, vis, classes, … The probe pass calls the model with the images as its first argument
    (``pixel_values`` of Hugging Face vision models)."""

    def __init__(self, run_dir: str | Path, probe, *, resume: bool = False, **settings: Any):
        self.run_dir, self.probe, self.resume, self.settings = Path(run_dir), probe, resume, settings
        self.monitor: Monitor | None = None
        self.pending: dict[str, Any] | None = None  # measured at the epoch's end, appended after its evaluation
        self.logs: dict[str, float] = {}

    def on_train_begin(self, args, state, control, model=None, **kwargs) -> None:
        resuming = self.resume or state.global_step > 0
        epochs = int(args.num_train_epochs) if args.max_steps is None or args.max_steps <= 0 else None
        self.monitor = Monitor(self.run_dir, model, self.probe, resume=resuming, epochs=epochs,
                               recorded_by=HF_TRAINER, **self.settings)
        self.monitor.start()
        if resuming:
            self.monitor.rewind(round(state.epoch or 0))

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:
        for key, value in (logs or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch":
                self.logs[key] = float(value)

    def on_epoch_begin(self, args, state, control, **kwargs) -> None:
        self.flush()

    def on_epoch_end(self, args, state, control, model=None, **kwargs) -> None:
        self.flush()
        self.logs = {key: value for key, value in self.logs.items() if not key.startswith("eval_")}
        self.pending = self.monitor.epoch_record(model, round(state.epoch), step=state.global_step)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs) -> None:
        self.on_log(args, state, control, logs=metrics)
        self.flush()

    def on_save(self, args, state, control, **kwargs) -> None:
        self.flush()

    def on_train_end(self, args, state, control, **kwargs) -> None:
        self.flush()
        self.monitor.close()

    def flush(self) -> None:
        """Append the measured epoch with what has been logged since (its evaluation, its loss)."""
        if self.pending is None:
            return
        logs = dict(self.logs)
        record, self.pending = self.pending, None
        if "eval_accuracy" in logs:
            record["held_out"] = {"accuracy": logs.pop("eval_accuracy"), "loss": logs.pop("eval_loss", None)}
        record["lr"] = [logs.pop("learning_rate")] if "learning_rate" in logs else None
        record["scalars"] = logs or None
        self.monitor.append(record)

    def __enter__(self) -> "FtdynCallback":
        return self

    def __exit__(self, _type, exc, _traceback) -> bool:
        if self.monitor is not None and exc is not None:
            self.monitor.close(exc)
        return False
