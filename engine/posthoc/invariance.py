"""`ftdyn invariance`: shared invariance (STIR) between a recorded run's source and its saved epochs,
from its checkpoints — the command half of :mod:`engine.analyses.invariance`, which defines the
measure, the inversions and their cache, and the epoch part that records it while a run trains."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from engine.analyses import refuse_while_written, result_path, write_result
from engine.analyses.invariance import (
    CACHE_DIR,
    InversionSettings,
    cached_inversions,
    gram_cka,
    invert_in_batches,
    layer_grams,
    probe_pixels,
    refuse_channel_mixing,
    stir_matrix,
)
from engine.checkpoints import available_checkpoints, require_checkpoints
from engine.data import IMAGENET_MEAN, IMAGENET_STD
from engine.errors import FtdynError
from engine.events import Event, quiet
from engine.record import SCHEMA_VERSION
from engine.posthoc.shown import invariance_shown
from engine.run_config import hooked_layers, saved_config
from engine.run_inputs import model_state, open_run


def run_invariance(run_dir: str | Path, layers: list[str] | None = None, epochs: list[int] | None = None,
                   settings: InversionSettings = InversionSettings(), both_directions: bool = False,
                   data: str | None = None, on_event: Event = quiet) -> tuple[dict[str, Any], list[Path]]:
    """STIR matrices (and CKA) between the source and each chosen epoch; one result file per epoch,
    plus the diagonal over epochs. Returns (the diagonal result, files written)."""
    settings.check()
    run_dir = Path(run_dir)
    hooked = hooked_layers(saved_config(run_dir), layers or [])
    layers = list(dict.fromkeys(layers or hooked))
    checkpoints = available_checkpoints(run_dir)
    wanted = sorted(set(epochs) if epochs else set(checkpoints))
    if not wanted:
        raise FtdynError("the run saved no checkpoint to compare with the source (--epochs 0 compares the source "
                         "with itself); run with --save-every-epoch to keep them all")
    require_checkpoints(wanted, checkpoints)
    refuse_while_written(run_dir)  # before the inversions: their cache is the run's too
    started = time.perf_counter()
    inputs = open_run(run_dir, on_event, data=data)
    refuse_channel_mixing(inputs.config.shuffle_blocks)
    if settings.seed is None:
        settings = dataclasses.replace(settings, seed=inputs.config.seed)
    missing = [layer for layer in layers if layer not in [entry.name for entry in inputs.layers]]
    if missing:
        raise FtdynError(f"'{run_dir}' has a damaged config.json: its layer '{missing[0]}' is not one the run hooks")
    if inputs.normalisation != (IMAGENET_MEAN, IMAGENET_STD):  # a timm or Hugging Face model's own
        settings = dataclasses.replace(settings, normalisation=inputs.normalisation)
    pixels = probe_pixels(inputs.probe, settings.images, settings.normalisation)
    pixels = pixels.to(inputs.device)
    if len(pixels) < 3:
        raise FtdynError(f"STIR needs at least 3 probe images (the run has {len(pixels)})")

    notes, source_side, errors, costs = [], {}, {}, {}
    for layer in layers:
        began = time.perf_counter()
        try:
            images, error, reused = cached_inversions(run_dir, inputs.source, layer, pixels, settings, on_event)
        except FloatingPointError as exc:
            notes.append(f"{layer}: inversion stopped ({exc}); its STIR is left out")
            source_side[layer] = None
            continue
        source_side[layer] = images
        errors[layer] = {"median": float(error.median()), "max": float(error.max())}
        costs[layer] = None if reused else time.perf_counter() - began
        if reused:
            notes.append(f"{layer}: inversions reused from {CACHE_DIR}/ (same source, probe set and settings)")

    files, diagonal = [], {layer: [] for layer in layers}
    source_clean = layer_grams(inputs.source, pixels, layers, settings.normalisation)  # the same every epoch
    for epoch in wanted:
        tuned = inputs.model
        tuned.load_state_dict(inputs.source.state_dict() if epoch == 0 else model_state(run_dir, epoch, inputs.device))
        tuned.eval()
        began = time.perf_counter()
        kept = stir_matrix(tuned, source_side, pixels, layers, settings.normalisation)
        tuned_clean = layer_grams(tuned, pixels, layers, settings.normalisation)
        similar = [[gram_cka(a, b) for b in tuned_clean.values()] for a in source_clean.values()]
        reverse = None
        if both_directions:
            tuned_side = {}
            for layer in layers:
                try:
                    tuned_side[layer], _ = invert_in_batches(tuned, layer, pixels, settings, on_event,
                                                             f"inverting {layer} of epoch {epoch}")
                except FloatingPointError as exc:
                    notes.append(f"epoch {epoch}, {layer} of the tuned model: inversion stopped ({exc})")
                    tuned_side[layer] = None
            reverse = [list(row) for row in zip(*stir_matrix(inputs.source, tuned_side, pixels, layers,
                                                               settings.normalisation))]
        for i, layer in enumerate(layers):
            diagonal[layer].append(kept[i][i])
        result = {
            "schema": SCHEMA_VERSION, "name": "invariance", "display": "matrix", "created_at": time.time(),
            "title": f"STIR(epoch {epoch} layer j | source layer i): the source's invariances the tuned model shares",
            "row_label": "source layer i (inverted)", "rows": layers, "column_label": "tuned layer j",
            "columns": layers, "value_label": "STIR", "unit": "STIR (1: shared)", "values": kept,
            "reverse": reverse, "cka": similar, "epoch": epoch,
            "inversion_error": errors, "notes": list(notes),
            "settings": {"epoch": epoch, **asdict(settings), "probe_images": len(pixels), "both_directions": both_directions},
            "seconds": time.perf_counter() - began,
        }
        target = result_path(run_dir, f"invariance-e{epoch}")
        result["show"] = invariance_shown(result)
        write_result(target, result)
        files.append(target)
        on_event("progress", task="invariance", done=wanted.index(epoch) + 1, total=len(wanted), info=f"epoch {epoch}")
    summary = {
        "schema": SCHEMA_VERSION, "name": "invariance", "display": "curve", "created_at": time.time(),
        "title": "STIR(tuned layer i | source layer i) over epochs", "x_label": "epoch", "x": wanted,
        "y_label": "STIR", "series": diagonal, "inversion_error": errors,
        "inversion_seconds": costs, "notes": notes,
        "settings": {**asdict(settings), "probe_images": len(pixels), "layers": layers},
        "seconds": time.perf_counter() - started,
    }
    target = result_path(run_dir, "invariance-diagonal")
    summary["show"] = invariance_shown(summary)
    write_result(target, summary)
    return summary, files + [target]
