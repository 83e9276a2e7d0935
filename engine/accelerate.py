"""What makes a run faster on a GPU without changing what it measures: `--autocast`, `--channels-last`
and `--compile` (README, "GPU options"). Each is recorded in config.json with the run.

* ``--autocast bf16|fp16`` — the forward passes (training, evaluation, the probe pass) run in
  reduced precision under torch.autocast; fp16 adds a gradient scaler. Activations captured for the
  analyses are taken to float32 before any metric sees them, and every metric is then computed at
  its own precision (METRICS.md): autocast changes the features the network computes, never the
  arithmetic of the distances. CUDA only: on a CPU it slows training down, so it is refused there.
* ``--channels-last`` — the model and its input batches in channels-last memory order, which
  tensor cores prefer for convolutions; the values are the same.
* ``--compile`` — the training step's forward runs through ``torch.compile``. The analyses run the
  plain module (their hooks would break the compiled graph), whose weights are the same tensors.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from engine.errors import FtdynError

AUTOCAST_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, mode: str):
    """The forward passes' autocast context for ``--autocast MODE`` (a no-op when off or off CUDA)."""
    dtype = AUTOCAST_DTYPES[mode]
    if dtype is None or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def check_accelerator_options(mode: str, device: torch.device) -> None:
    if mode not in AUTOCAST_DTYPES:
        raise FtdynError(f"--autocast takes {', '.join(AUTOCAST_DTYPES)}, not {mode!r}")
    if mode != "off" and device.type != "cuda":
        raise FtdynError(f"--autocast {mode} needs a CUDA device (on {device.type} it slows training down); "
                         f"leave it off there")
    if mode == "bf16" and torch.cuda.get_device_capability(device)[0] < 8:  # emulated before Ampere: slow
        raise FtdynError("--autocast bf16 needs a GPU with bfloat16 (Ampere or newer); use --autocast fp16")


def memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def to_memory_format(images: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A batch of images in the run's memory order (only 4-d image batches have one)."""
    return images.contiguous(memory_format=torch.channels_last) if channels_last and images.ndim == 4 else images


def compiled(module: nn.Module, enabled: bool) -> nn.Module:
    return torch.compile(module) if enabled else module
