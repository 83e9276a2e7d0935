"""Deterministic run directories written through the real RunWriter, for the TUI tests, snapshot
tests and the TUI benchmark: no training, fixed numbers, so screens render the same every time."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from engine.record import VIS_INDEX, RunWriter, append_lines

STARTED_AT = 1_790_000_000.0  # every fake run started at this moment (2026-09-21)
MEASURES = ["pwsm:0.5@positions", "procrustes@positions", "procrustes@filter"]
CLASSES = ["disc", "square", "triangle"]


def layer_names(count: int) -> list[str]:
    return [f"block{i}" for i in range(count)]


# The jackknife settings of fake runs recorded with intervals: G = 5 at 90 % (t of 4 degrees of freedom).
INTERVALS = {"method": "jackknife", "groups": 5, "level": 0.9, "t": 2.131846786, "mode": "auto",
             "views": ["positions", "pooled", "cls", "filter-map"]}


def fake_replicates(d: float, groups: int = 5) -> list[float]:
    """Replicates whose jackknife interval is d ± about 5 % of d."""
    return [d * (1 + 0.01 * (g - (groups - 1) / 2)) for g in range(groups)]


def epoch_record(epoch: int, layers: list[str], filters: int, step_per_epoch: int = 10,
                 intervals: bool = False) -> dict:
    """Distances that grow with depth and saturate over epochs, like the paper's curves."""
    from engine.intervals import interval

    entries = {}
    for depth, layer in enumerate(layers):
        scale = 0.1 + 0.6 * depth / max(1, len(layers) - 1)
        d = scale * (1 - math.exp(-epoch / 3))
        per_filter = [round(d * (0.5 + (f * 37 % filters) / filters), 6) for f in range(filters)]
        per_filter[-1] = None  # one dead filter
        positions = {"values": {"pwsm:0.5": d, "procrustes": 0.8 * d}, "dead": 0, "filters": filters}
        if intervals:
            positions["jackknife"] = {m: fake_replicates(v) for m, v in positions["values"].items()}
            positions["interval"] = {m: interval(v, positions["jackknife"][m], INTERVALS["t"])
                                     for m, v in positions["values"].items()}
        entries[layer] = {
            "positions": positions,
            "filter": {"values": {"procrustes": float(np.mean([v for v in per_filter if v is not None]))},
                       "dead": 1, "filters": filters, "per_filter": {"procrustes": per_filter}},
        }
    return {"kind": "epoch", "epoch": epoch, "step": epoch * step_per_epoch, "phase": "finetune",
            "train": None if epoch == 0 else {"loss": 1.0 / (epoch + 1), "accuracy": 1 - 0.5 / (epoch + 1)},
            "held_out": {"loss": 1.2 / (epoch + 1), "accuracy": 0.9 - 0.6 / (epoch + 1)},
            "lr": [1e-4], "layers": entries, "timing": {"train_s": 1.0, "eval_s": 0.1, "analysis_s": 0.1}}


def write_fake_run(path: Path, epochs: int = 5, layers: int = 4, filters: int = 12, total: int | None = None,
                   state: str = "finished", model: str = "resnet18", vis: bool = True, intervals: bool = False,
                   warnings: list[str] | None = None) -> RunWriter:
    """``intervals``: record jackknife replicates and intervals (INTERVALS) with the positions values;
    ``warnings``: what the run recorded about its measures."""
    from engine.analyses import distance_declaration

    names = layer_names(layers)
    writer = RunWriter(path)
    extra = {"warnings": warnings} if warnings else {}
    if intervals:
        extra["analyses"] = [dict(distance_declaration(MEASURES, names), intervals=INTERVALS)]
    writer.write_config({
        **extra,
        "run": {"epochs": total or epochs, "seed": 0}, "preset_settings": None,
        "dataset": {"root": "/data/shapes", "classes": CLASSES, "probe_images": 9},
        "model": {"name": model, "weights": "none"},
        "layers": [{"name": n, "shape": [filters, 8, 8]} for n in names],
        "measures": [{"label": m, "metric": m.split("@")[0], "view": m.split("@")[1]} for m in MEASURES],
        "strategy": {"name": "full"},
    })
    writer.status = {"state": "running", "pid": 1, "host": "test", "started_at": STARTED_AT, "epoch": epochs,
                     "total_epochs": total or epochs, "message": ""}
    for epoch in range(epochs + 1):
        writer.append_record(epoch_record(epoch, names, filters, intervals=intervals))
        if vis:
            write_fake_images(path, names[0], [0, 3], epoch)
    if state == "running":
        writer.update_status()
    else:  # an ended run took a fixed time, so what the screens show of it never depends on the clock
        writer.update_status(state=state, message="" if state != "failed" else "loss became nan at epoch 3",
                             finished_at=STARTED_AT + 61.0 * (epochs + 1))
    return writer


def write_fake_images(path: Path, layer: str, filters: list[int], epoch: int) -> None:
    entries = []
    for f in filters:
        folder = path / "vis" / layer / f"f{f:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        for c, name in enumerate(CLASSES):
            image = np.zeros((8, 8, 3), dtype=np.uint8)
            image[..., c] = (40 * epoch + 30 * f + 40) % 256
            file = folder / f"class-{c:03d}-e{epoch:03d}.png"
            Image.fromarray(image).save(file)
            entries.append({"layer": layer, "filter": f, "epoch": epoch, "chosen_by": "random", "kind": "class",
                            "class": name, "path": str(file.relative_to(path / "vis"))})
    append_lines(path / VIS_INDEX, entries)


def backdate_heartbeat(path: Path) -> None:
    """Make a 'running' run look abandoned (its process killed without a word)."""
    status = json.loads((path / "status.json").read_text())
    status["updated_at"] = STARTED_AT + 125.0  # long ago: the heartbeat stopped 2 min after the start
    (path / "status.json").write_text(json.dumps(status))


def write_fake_map(run_dir: Path, layer: str = "block0", epochs: tuple[int, ...] = (0, 2, 5)) -> dict:
    """A recorded UMAP result: three classes in three clumps that drift apart over epochs."""
    labels = [i % 3 for i in range(12)]
    points = {str(e): [[float(label * (1 + e)), float(i % 4) + 0.1 * e] for i, label in enumerate(labels)]
              for e in epochs}
    result = {"schema": 1, "name": "umap", "display": "scatter", "created_at": 1.0, "title": f"UMAP of {layer}",
              "layer": layer, "features": "pooled", "epochs": list(epochs), "points": points, "labels": labels,
              "classes": CLASSES, "settings": {"neighbours": 11, "k": 5},
              "stats": {str(e): {"shift": 0.1 * e, "neighbours_map": 1.0, "neighbours_features": 0.75} for e in epochs}}
    (run_dir / "analyses").mkdir(exist_ok=True)
    (run_dir / "analyses" / f"umap-{layer}.json").write_text(json.dumps(result))
    return result
