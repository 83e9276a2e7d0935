"""Runs the epoch parts (see :mod:`engine.analyses`): one forward pass of the source and the tuned
model over the probe set, shared by every part that uses activations and by the visualisations;
then each part's record section, with what each part cost.

The source model and the probe set never change during a run, so the first pass keeps the probe
images and the source's hooked activations (up to SOURCE_CACHE_BYTES of host memory, so that a GPU's
memory stays the training's) and every later epoch runs the tuned model only. Above the budget
nothing is kept and each epoch runs both models, as before; the values are the same either way.

In a run of several processes (:mod:`engine.distributed`) each process passes over its own share of
the probe set; the parts that observe it then add every share's statistics together on rank 0
(``part.reduce()``), and rank 0 alone finishes the parts, so the sections are those of one pass
over the whole set. Parts that make no probe pass (drift, shared invariance) exist on rank 0 only.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from engine.accelerate import autocast, to_memory_format
from engine.capture import Layout, capture

# Memory the source side's probe activations (and the probe images) may keep between epochs.
SOURCE_CACHE_BYTES = 1 << 30


class EpochAnalyses:
    """``layers``: the hooked layers, with their layouts where known (:class:`engine.capture.Layout`)."""

    def __init__(self, source: nn.Module, layers: list[str] | dict[str, Layout | None], parts: list,
                 processes=None):
        self.source = source
        self.processes = processes if processes is not None and processes.distributed else None
        self.layouts = layers if isinstance(layers, dict) else dict.fromkeys(layers)
        self.layer_names = list(self.layouts)
        self.parts = parts
        self.cache_budget = SOURCE_CACHE_BYTES
        self.source_cache: list[tuple[torch.Tensor, dict]] | None = None  # complete after a first pass

    def part(self, name: str):
        return next((p for p in self.parts if p.name == name), None)

    def declarations(self) -> list[dict[str, Any]]:
        return [dict(part.declaration(), name=part.name, when="epoch", section=part.section, display="series")
                for part in self.parts]

    @torch.no_grad()
    def run(self, model: nn.Module, probe_batches, device: torch.device, autocast_mode: str = "off",
            observer=None, channels_last: bool = False) -> tuple[dict[str, Any], dict[str, float]]:
        """({section: value} for every part, {"probe_pass": s, part name: s, …} seconds); on the
        processes other than rank 0 of a distributed run, no sections.

        ``observer`` (visualisation evidence) sees every layer's paired batch of the same pass.
        ``autocast_mode`` and ``channels_last``: how the forward passes run (engine.accelerate)."""
        spent = {part.name: 0.0 for part in self.parts}
        for part in self.parts:
            start = time.perf_counter()
            part.begin(model)
            spent[part.name] += time.perf_counter() - start
        probe_parts = [part for part in self.parts if part.uses_probe]
        probe_seconds = 0.0
        if probe_parts or observer is not None:
            forward = (autocast_mode, channels_last)
            probe_seconds = self.probe_pass(model, probe_batches, device, forward, probe_parts, observer, spent)
        if self.processes is not None:
            self.reduce(probe_parts, observer, spent)
            if not self.processes.leader:
                return {}, {"probe_pass": probe_seconds, **spent}
        sections = {}
        for part in self.parts:
            start = time.perf_counter()
            sections[part.section] = part.finish()
            spent[part.name] += time.perf_counter() - start
        return sections, {"probe_pass": probe_seconds, **spent}

    def reduce(self, probe_parts, observer, spent) -> None:
        """Every process's share of the probe pass added together on rank 0."""
        for part in probe_parts:
            start = time.perf_counter()
            part.reduce()
            spent[part.name] += time.perf_counter() - start
        if observer is not None:
            observer.gather(self.processes)

    def probe_pass(self, model, probe_batches, device, forward, parts, observer, spent) -> float:
        """The forward passes' share of the time (the parts' own work is counted to each part)."""
        start = time.perf_counter()
        inside = 0.0
        was_training = model.training
        model.eval()
        self.source.eval()
        try:
            for images, source_out, tuned_out in self.paired_outputs(model, probe_batches, device, *forward):
                for layer in self.layer_names:
                    a, b = source_out[layer], tuned_out[layer].float()
                    tokens = (source_out[(layer, "cls")], tuned_out[(layer, "cls")].float()) \
                        if (layer, "cls") in source_out else None
                    for part in parts:
                        t = time.perf_counter()
                        part.observe(layer, a, b)
                        if tokens is not None and hasattr(part, "observe_class_token"):
                            part.observe_class_token(layer, *tokens)
                        spent[part.name] += time.perf_counter() - t
                        inside += time.perf_counter() - t
                    if observer is not None:
                        observer.update(layer, a, b)
                if observer is not None:
                    observer.batch_done(images.shape[0])
        finally:
            model.train(was_training)
        return time.perf_counter() - start - inside

    def paired_outputs(self, model, probe_batches, device, autocast_mode, channels_last):
        """(images, source activations, tuned activations) per probe batch; the source side from the
        cache when a first pass filled it."""
        with capture(model, self.layouts) as tuned_out:
            if self.source_cache is not None:
                for images, source_out in self.source_cache:
                    images = to_memory_format(images.to(device, non_blocking=True), channels_last)
                    source_out = {key: value.to(device, non_blocking=True) for key, value in source_out.items()}
                    with autocast(device, autocast_mode):
                        model(images)
                    yield images, source_out, tuned_out
                return
            kept, size = [], 0
            with capture(self.source, self.layouts) as live_source:
                for images, _labels in probe_batches:
                    images = to_memory_format(images.to(device, non_blocking=True), channels_last)
                    with autocast(device, autocast_mode):
                        self.source(images)
                        model(images)
                    source_out = {key: value.float() for key, value in live_source.items()}
                    if kept is not None:
                        size += images.numel() * images.element_size() + sum(
                            v.numel() * v.element_size() for v in source_out.values())
                        kept = None if size > self.cache_budget else kept
                        if kept is not None:
                            kept.append((images.cpu(), {key: value.cpu() for key, value in source_out.items()}))
                    yield images, source_out, tuned_out
            self.source_cache = kept
