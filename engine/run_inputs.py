"""What a run of `ftdyn run` is made of, built from its settings (:class:`engine.run_config.RunConfig`):
the device, the image data and its splits, the probe set and the loaders over this process's share
of it, the source model with its new head, and the hooked layers.

The trainer (engine.training) trains on it; the post-hoc commands reopen a recorded run with
:func:`open_run` and work on the same splits, probe set and source model. Nothing here writes the
run directory.
"""

from __future__ import annotations

import copy
import functools
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from engine.accelerate import check_accelerator_options, memory_format
from engine.checkpoints import available_checkpoints, load_checkpoint
from engine.data import ImageList, image_transform, load_image_data, pixel_transform, probe_indices
from engine.distributed import Processes
from engine.errors import FtdynError
from engine.events import Event, quiet
from engine.models import build_model, normalisation, select_layers
from engine.run_config import RunConfig, config_from_saved, pick_device, saved_config
from engine.shuffle import BlockShuffle, parse_shuffle
from engine.strategies import block_groups


def source_model(config: RunConfig, classes: int) -> tuple[nn.Module, str]:
    """The run's epoch-0 model: its weights with the new head for ``classes`` classes."""
    torch.manual_seed(config.seed)  # with --weights none the backbone's initialisation is the source
    return build_model(config.model, config.weights, classes, config.seed, config.image_size)


class RunInputs:
    """Built by :meth:`prepare`; ``warnings`` holds what the data made the run reduce (recorded with
    the run's warnings in config.json)."""

    def __init__(self, config: RunConfig, on_event: Event = quiet, processes: Processes | None = None):
        self.config = config
        self.on_event = on_event
        self.processes = processes or Processes()
        self.warnings: list[str] = []

    def prepare(self) -> None:
        config, processes = self.config, self.processes
        self.device = pick_device(config.device)
        if self.device.type == "cuda" and processes.distributed:  # one GPU per process (torchrun's LOCAL_RANK)
            self.device = torch.device("cuda", processes.local_rank)
        check_accelerator_options(config.autocast, self.device)
        try:
            self.shuffle = parse_shuffle(config.shuffle_blocks, config.image_size, config.shuffle_seed)
        except ValueError as exc:
            raise FtdynError(str(exc)) from None
        self.on_event("phase", name="scanning images")
        data = load_image_data(config.data, config.val_fraction, config.seed,
                               progress=lambda i, n: self.on_event("scan", done=i, total=n))
        self.data = data
        if data.skipped:
            self.on_event("warning", text=f"skipped {len(data.skipped)} unreadable files "
                                          f"(listed in {Path(config.out) / 'skipped_files.txt'})")
        train_set = ImageList(data.train.samples, self.transform(config.augment))
        held_out = ImageList(data.held_out.samples, self.transform(augment=False))
        probe = Subset(held_out, probe_indices(data.held_out.targets, config.probe_size, config.seed))
        self.train_set, self.held_out, self.probe = train_set, held_out, probe
        if len(probe) < config.probe_size:
            self.warn(f"--probe-size {config.probe_size} asks for more images than the held-out split has "
                      f"({len(held_out)}): the probe set is all {len(probe)} of them")
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
        model, self.weights_description = source_model(config, len(data.classes))
        self.layers = select_layers(config.model, model, config.layers, config.image_size)
        self.source = copy.deepcopy(model).to(self.device, memory_format=memory_format(config.channels_last)).eval()
        for p in self.source.parameters():
            p.requires_grad_(False)
        self.model = model.to(self.device, memory_format=memory_format(config.channels_last))

    @functools.cached_property
    def groups(self) -> "OrderedDict[str, list[str]]":
        """The model's block groups (`ftdyn layers MODEL`): what strategies and criticality act on."""
        return block_groups(self.config.model, self.model)

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        self.on_event("warning", text=text)

    def share_loader(self, images, batch_size: int, options: dict) -> tuple[DataLoader, range]:
        """A loader over this process's share of ``images`` (all of them on one process), and the share."""
        share, batch_size = self.processes.batch_shard(len(images), batch_size)
        if self.processes.distributed:
            images = Subset(images, list(share))
        return DataLoader(images, batch_size=batch_size, shuffle=False, **options), share

    def transform(self, augment: bool):
        """The run's image transform: resize (and augmentation), normalisation, block shuffle."""
        return image_transform(self.config.image_size, augment, self.shuffle, self.normalisation)

    @functools.cached_property
    def normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) of the network's inputs: ImageNet's, or a timm or Hugging Face model's own."""
        return normalisation(self.config.model)

    def probe_pixels(self) -> tuple[np.ndarray, list[int]]:
        """The probe images as shown (the inputs the network saw, before normalisation), and their labels."""
        config = self.config
        samples = [self.held_out.samples[i] for i in self.probe.indices]
        images = np.stack([np.asarray(image) for image, _ in ImageList(samples, pixel_transform(config.image_size))])
        if self.shuffle is not None:  # show the inputs the network saw
            shuffle = BlockShuffle(self.shuffle, config.image_size)
            images = np.stack([shuffle.pixels(image) for image in images])
        return images, [label for _, label in samples]


def open_run(run_dir: str | Path, on_event: Event = quiet, data: str | None = None) -> RunInputs:
    """A recorded run's inputs rebuilt from its config.json — data splits, probe set, source model,
    layers — for work from its checkpoints. ``data`` replaces a moved data folder."""
    run_dir = Path(run_dir)
    saved = saved_config(run_dir)
    # Work from checkpoints runs no autocast, which is CUDA-only: it runs wherever the run can be read.
    changes = dict(vis=False, workers=0, analyses=[], autocast="off") | ({"data": str(data)} if data is not None else {})
    inputs = RunInputs(config_from_saved(run_dir, saved, **changes), on_event)
    inputs.prepare()
    return inputs


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


def describe(inputs: RunInputs) -> dict[str, Any]:
    """config.json's ``dataset``: where the images came from and how they were split."""
    config, data = inputs.config, inputs.data
    return {"root": str(Path(config.data).resolve()), "classes": data.classes,
            "train_images": len(inputs.train_set), "held_out_images": len(inputs.held_out),
            "held_out_split": data.held_out_name, "probe_images": len(inputs.probe),
            "skipped_files": len(data.skipped)}
