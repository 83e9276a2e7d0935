"""What the TUI shows, computed from run directories — no Textual, no torch here.

A :class:`Workspace` follows every run under the paths it was given (new runs appear as they are
created); each :class:`TrackedRun` keeps a :class:`engine.record.RunReader` and only reads what is
new on each poll. The series, tables and rankings below are what the screens draw.
"""

from __future__ import annotations

import colorsys
import csv
import io
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.record import VIS_INDEX, JsonlFollower, RunReader, RunSnapshot, effective_state, find_runs
from engine.report import (
    correlation_row,
    distance_matrix,
    layer_correlations,
    layer_value,
    measure_pairs,
    reusability,
)

SMOOTHING_STEPS = (0.0, 0.6, 0.9)


@dataclass
class TrackedRun:
    path: Path
    reader: RunReader = field(init=False)
    config: dict[str, Any] | None = None
    status: dict[str, Any] | None = None
    problem: str | None = None

    def __post_init__(self):
        self.reader = RunReader(self.path)
        self._vis = JsonlFollower(self.path / VIS_INDEX)
        self._matrices: dict[str, tuple[int, np.ndarray]] = {}

    def refresh(self) -> bool:
        """Read what changed (only new lines of the record and image index); True when anything did."""
        before = (self.config is None, self.status, len(self.records), self.problem, len(self.vis))
        snapshot = self.reader.snapshot()
        self.config, self.status, self.problem = snapshot.config, snapshot.status, snapshot.problem
        if self.config is not None and not self.problem:
            try:
                self._vis.poll()
            except (ValueError, UnicodeDecodeError, OSError) as exc:
                self.problem = f"'{self.path}' has an unreadable image index ({type(exc).__name__}: {exc})"
        return before != (self.config is None, self.status, len(self.records), self.problem, len(self.vis))

    @property
    def vis(self) -> list[dict[str, Any]]:
        return self._vis.items

    def matrix(self, measure: str) -> tuple[np.ndarray, np.ndarray]:
        """(epoch numbers, epochs × layers distances) of ``measure``, extended as epochs arrive."""
        epochs = self.epochs
        cached_rows, matrix = self._matrices.get(measure, (0, np.empty((0, len(self.layers)))))
        if cached_rows > len(epochs):  # the record was rewritten by a resume: start over
            cached_rows, matrix = 0, np.empty((0, len(self.layers)))
        if cached_rows < len(epochs):
            matrix = np.vstack([matrix, distance_matrix(epochs[cached_rows:], self.layers, measure)])
            self._matrices[measure] = (len(epochs), matrix)
        return np.array([r["epoch"] for r in epochs], dtype=np.int64), matrix

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.reader.records

    @property
    def epochs(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("kind") == "epoch"]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def state(self) -> str:
        return "corrupt" if self.problem else effective_state(self.status)

    @property
    def model_name(self) -> str:
        return (self.config or {}).get("model", {}).get("name", "?")

    @property
    def dataset_name(self) -> str:
        root = (self.config or {}).get("dataset", {}).get("root")
        return Path(root).name if root else "?"

    @property
    def strategy(self) -> str:
        return (self.config or {}).get("strategy", {}).get("name", "?")

    @property
    def measures(self) -> list[str]:
        return [m["label"] for m in (self.config or {}).get("measures", [])]

    @property
    def layers(self) -> list[str]:
        return [layer["name"] for layer in (self.config or {}).get("layers", [])]

    @property
    def progress(self) -> str:
        epochs = self.epochs
        total = (self.status or {}).get("total_epochs", "?")
        return f"{epochs[-1]['epoch'] if epochs else 0}/{total}"

    @property
    def best_accuracy(self) -> float | None:
        values = [r["held_out"]["accuracy"] for r in self.epochs if r.get("held_out")]
        return max(values) if values else None

    def snapshot(self) -> RunSnapshot:
        return RunSnapshot(self.path, self.config, self.status, list(self.records), self.problem)


class Workspace:
    """Every run under the given paths, followed live."""

    def __init__(self, paths: list[Path]):
        self.paths = [Path(p) for p in paths]
        self.runs: dict[Path, TrackedRun] = {}

    def poll(self) -> set[Path]:
        """Find new runs and read new records; returns the runs that changed."""
        changed = set()
        for root in self.paths:
            for path in find_runs(root):
                if path not in self.runs:
                    self.runs[path] = TrackedRun(path)
        for path, run in self.runs.items():
            if run.refresh():
                changed.add(path)
        return changed

    def missing(self) -> list[Path]:
        return [p for p in self.paths if not p.exists()]

    def ordered(self) -> list[TrackedRun]:
        return [self.runs[p] for p in sorted(self.runs)]


# ------------------------------------------------------------------------------------------------
# Series


def distance_series(run: TrackedRun, measure: str, layer: str, x_axis: str = "epoch") -> tuple[list[float], list[float]]:
    """The layer's distance over epochs (x = epoch), or over optimiser steps including the
    every-N-steps records (x = step). Points where the layer had no live filter are skipped."""
    if x_axis == "epoch":
        epochs, matrix = run.matrix(measure)
        column = matrix[:, run.layers.index(layer)]
        live = ~np.isnan(column)
        return epochs[live].astype(float).tolist(), column[live].tolist()
    xs, ys = [], []
    for record in run.records:
        value = layer_value(record, layer, measure)
        if value is not None:
            xs.append(float(record["step"]))
            ys.append(float(value))
    return xs, ys


def smooth(values: list[float], weight: float) -> list[float]:
    """TensorBoard-style exponential moving average, debiased so the first point is kept."""
    if weight <= 0:
        return list(values)
    out, last, norm = [], 0.0, 0.0
    for v in values:
        last = weight * last + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out.append(last / norm)
    return out


def positive_only(xs: list[float], ys: list[float]) -> tuple[list[float], list[float]]:
    """For a log axis: drop the exact zeros (epoch 0) and anything non-positive."""
    kept = [(x, y) for x, y in zip(xs, ys) if y > 0]
    return [x for x, _ in kept], [y for _, y in kept]


def run_colour(run: TrackedRun) -> float:
    """A stable hue per run, from its folder and its parent's name, so a run keeps its colour across
    sessions and machines (wherever the runs folder is mounted)."""
    key = "/".join(run.path.resolve().parts[-2:])
    return (zlib.crc32(key.encode()) % 360) / 360.0


def layer_colour(hue: float | None, depth: int, layers: int) -> tuple[int, int, int]:
    """Early layers light, deep layers dark; one hue per run (or a blue→red ramp for a single run)."""
    t = depth / max(1, layers - 1)
    if hue is None:
        r, g, b = colorsys.hsv_to_rgb(0.62 - 0.62 * t, 0.85, 1.0)
    else:
        r, g, b = colorsys.hsv_to_rgb(hue, 0.35 + 0.6 * t, 1.0 - 0.45 * t)
    return int(r * 255), int(g * 255), int(b * 255)


def accuracy_series(run: TrackedRun, split: str, key: str) -> tuple[list[float], list[float]]:
    """split 'train' or 'held_out', key 'accuracy' or 'loss', per epoch."""
    points = [(float(r["epoch"]), float(r[split][key])) for r in run.epochs if r.get(split)]
    return [x for x, _ in points], [y for _, y in points]


def reusability_rows(runs: list[TrackedRun], measure: str) -> list[tuple[str, str]]:
    """Paper Table 2 for ``measure``: (run, 'mean ± std') from the cached distance matrices."""
    rows = []
    for run in runs:
        if measure in run.measures:
            mean, std, _ = reusability(*run.matrix(measure))
            if mean is not None:
                rows.append((run.name, f"{mean:.3f} ± {std:.3f}"))
    return rows


def correlation_rows(runs: list[TrackedRun]) -> list[tuple[str, str, str]]:
    """Pearson r between each pair of measures, per layer over epochs, pooled over the runs."""
    rows = []
    for first, second in measure_pairs([run.snapshot() for run in runs]):
        rs, undefined = [], 0
        for run in runs:
            if first in run.measures and second in run.measures:
                epochs, a = run.matrix(first)
                r, u = layer_correlations(epochs, a, run.matrix(second)[1])
                rs += r
                undefined += u
        row = correlation_row(first, second, rs, undefined)
        r = "—" if row["mean_r"] is None else f"{row['mean_r']:.2f} ± {row['std_r']:.2f}"
        rows.append((short_pair(row["measures"]), r, str(row["layers"])))
    return rows


def short_pair(pair: str) -> str:
    """'pwsm:0.5@positions vs cka@positions' → 'pwsm:0.5 ~ cka @positions' (narrow terminals)."""
    first, _, second = pair.partition(" vs ")
    (m1, _, v1), (m2, _, v2) = first.rpartition("@"), second.rpartition("@")
    return f"{m1} ~ {m2} @{v1}" if v1 == v2 else f"{first} ~ {second}"


# ------------------------------------------------------------------------------------------------
# Filters and images


@dataclass
class FilterRow:
    index: int
    distance: float | None
    chosen_by: str | None
    images: int


def filter_measure(run: TrackedRun) -> str | None:
    """The first measure on a filter view (it gives a distance per filter)."""
    return next((m for m in run.measures if m.rpartition("@")[2] in ("filter", "filter-map")), None)


def filter_rows(run: TrackedRun, layer: str) -> tuple[list[FilterRow], int | None, str | None]:
    """Filters of ``layer`` sorted by how far they moved at the latest epoch (largest first),
    the layer's dead-filter count, and the measure used. Without a filter view, the visualised
    filters are listed without a distance."""
    measure = filter_measure(run)
    images: dict[int, int] = {}
    chosen: dict[int, str] = {}
    for entry in run.vis:
        if entry["layer"] == layer:
            images[entry["filter"]] = images.get(entry["filter"], 0) + 1
            chosen.setdefault(entry["filter"], entry.get("chosen_by"))
    dead = None
    distances: dict[int, float | None] = {}
    if measure and run.epochs:
        metric, _, view = measure.rpartition("@")
        entry = run.epochs[-1].get("layers", {}).get(layer, {}).get(view, {})
        dead = entry.get("dead")
        distances = dict(enumerate(entry.get("per_filter", {}).get(metric, [])))
    indices = set(distances) | set(images)
    rows = [FilterRow(i, distances.get(i), chosen.get(i), images.get(i, 0)) for i in indices]
    rows.sort(key=lambda row: (row.distance is None, -(row.distance or 0.0), row.index))
    return rows, dead, measure


def filter_images(run: TrackedRun, layer: str, index: int) -> dict[tuple[str, str], dict[int, Path]]:
    """(kind, class or image label) → {epoch: path} for one filter."""
    found: dict[tuple[str, str], dict[int, Path]] = {}
    for entry in run.vis:
        if entry["layer"] == layer and entry["filter"] == index:
            label = entry["class"] if entry["kind"] == "class" else f"{entry['class']} #{entry['image']}"
            found.setdefault((entry["kind"], label), {})[entry["epoch"]] = run.path / "vis" / entry["path"]
    return found


def export_csv(runs: list[TrackedRun], measure: str) -> str:
    """Every (run, layer, epoch) distance of ``measure``, plus accuracy, as CSV."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["run", "measure", "layer", "epoch", "step", "distance", "held_out_accuracy"])
    for run in runs:
        for record in run.epochs:
            for layer in run.layers:
                writer.writerow([run.name, measure, layer, record["epoch"], record["step"],
                                 layer_value(record, layer, measure),
                                 (record.get("held_out") or {}).get("accuracy")])
    return buffer.getvalue()
