"""What the TUI shows, computed from run directories — no Textual, no torch here.

A :class:`Workspace` follows every run under the paths it was given (new runs appear as they are
created); each :class:`TrackedRun` keeps a :class:`engine.record.RunReader` and only reads what is
new on each poll. The series, tables and rankings below are what the screens draw.
"""

from __future__ import annotations

import csv
import io
import math
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.untrusted import RunFormatError, inside, number_or_none, read_plain, safe_file_name, visible
from engine.analyses import (declared_parts, dig, epoch_points, measure_rows, part_interval, part_value,
                             read_results, scatter_class, scatter_point, series_matrix)
from engine.colours import RUN_PALETTE, Colour
from engine.intervals import IntervalSettings
from engine.results import shown_tables, shown_value
from engine.system import read_samples, tail_bytes, tail_objects
from engine.record import (
    EVENTS,
    VIS_INDEX,
    JsonlFollower,
    RunReader,
    RunSnapshot,
    effective_state,
    find_runs,
    vis_entry_problem,
)
from engine.report import (
    correlation_row,
    epoch_change,
    layer_correlations,
    measure_pairs,
    INITS,
    SEED_BARRIERS,
    reusability,
    transfer_table,
    unshuffled_row,
)

SMOOTHING_STEPS = (0.0, 0.6, 0.9)
# Colours of the few curves of one post-hoc result (barrier: held-out/train × loss/error).
CURVE_COLOURS = ("blue", "red", "green", "orange", "magenta", "cyan")


# The step records a followed run keeps for drawing, at most: thinned evenly beyond (the stride doubles),
# so between half this and this many, evenly spread, are drawn on the step axis — more than the columns of
# any terminal. Each is cut to the values drawn (drawn_values).
STEP_RECORDS_DRAWN = 2048


@dataclass
class TrackedRun:
    """One run followed live. It keeps what it draws: every epoch record (one per epoch), and of the
    step records (--every-steps, which grow without bound) at most ``STEP_RECORDS_DRAWN``, evenly thinned,
    each cut to the values the step axis draws (:func:`drawn_values`). A damaged line of its record or
    image index is skipped and named in ``damage``: the run is marked damaged and still drawn."""

    path: Path
    reader: RunReader = field(init=False)
    config: dict[str, Any] | None = None
    status: dict[str, Any] | None = None
    problem: str | None = None
    damage: list[str] = field(default_factory=list)  # lines skipped as damaged, a note each

    def __post_init__(self):
        self.reader = RunReader(self.path, skip_damaged=True, steps=STEP_RECORDS_DRAWN, slim=self.drawn_step)
        self._vis = JsonlFollower(self.path / VIS_INDEX, vis_entry_problem, VIS_INDEX, skip_damaged=True)
        self._matrices: dict[tuple[str, str], tuple[int, np.ndarray]] = {}
        self._parts: tuple[dict | None, list[dict[str, Any]]] | None = None
        self._step_parts: tuple[dict | None, list[dict[str, Any]]] | None = None

    def refresh(self) -> bool:
        """Read what changed (only new lines of the record and image index); True when anything did."""
        before = (self.config is None, self.status, self.reader.changes, self.problem, len(self.vis), self.damage)
        snapshot = self.reader.snapshot()
        self.config, self.status, self.problem = snapshot.config, snapshot.status, snapshot.problem
        if self.config is not None and not self.problem:
            try:
                self._vis.poll()
            except (ValueError, UnicodeDecodeError, OSError) as exc:
                self.problem = f"'{self.path}' has an unreadable image index ({exc})"
        self.damage = snapshot.damage + self._vis.damage
        return before != (self.config is None, self.status, self.reader.changes, self.problem, len(self.vis),
                          self.damage)

    def drawn_step(self, record: dict[str, Any]) -> dict[str, Any]:
        """What is kept of a step record: the values the step axis draws (the config's parts, read once
        it is there and well-formed; before, none)."""
        config = self.reader.checked_config
        if self._step_parts is None or self._step_parts[0] is not config:
            self._step_parts = (config, declared_parts(config) if isinstance(config, dict) else [])
        return drawn_values(record, self._step_parts[1])

    @property
    def damaged(self) -> bool:
        return bool(self.damage) and not self.problem

    @property
    def vis(self) -> list[dict[str, Any]]:
        return self._vis.items

    def matrix(self, measure: str, part: str = "distance") -> tuple[np.ndarray, np.ndarray]:
        """(epoch numbers, epochs × rows) values of ``measure`` of the analysis ``part`` (rows: the
        layers or modules it declares), extended as epochs arrive."""
        epochs = self.epochs
        declaration = self.part(part)
        if declaration is None:
            return np.empty(0, dtype=np.int64), np.empty((0, 0))
        width = len(measure_rows(declaration, measure))
        cached_rows, matrix = self._matrices.get((part, measure), (0, np.empty((0, width))))
        if cached_rows > len(epochs):  # the record was rewritten by a resume: start over
            cached_rows, matrix = 0, np.empty((0, width))
        if cached_rows < len(epochs):
            matrix = np.vstack([matrix, series_matrix(epochs[cached_rows:], declaration, measure)])
            self._matrices[(part, measure)] = (len(epochs), matrix)
        return np.array([r["epoch"] for r in epochs], dtype=np.int64), matrix

    @property
    def parts(self) -> list[dict[str, Any]]:
        """The analyses recorded every epoch (feature distances alone for schema-1 runs); read from
        the config, which is written once, so worked out once."""
        if self._parts is None or self._parts[0] is not self.config:
            self._parts = (self.config, declared_parts(self.config))
        return self._parts[1]

    def part(self, name: str) -> dict[str, Any] | None:
        return next((p for p in self.parts if p.get("name") == name), None)

    @property
    def results(self) -> list[dict[str, Any]]:
        """Post-hoc results (RUN/analyses/*.json): loss barriers, module criticality."""
        return read_results(self.path)

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
        return "corrupt" if self.problem else effective_state(self.status, run_dir=self.path)

    @property
    def model_name(self) -> str:
        return dig(self.config, "model", "name") or "?"

    @property
    def dataset_name(self) -> str:
        root = dig(self.config, "dataset", "root")
        return Path(root).name if root else "?"

    @property
    def strategy(self) -> str:
        return dig(self.config, "strategy", "name") or "?"

    @property
    def measures(self) -> list[str]:
        return [m["label"] for m in (self.config or {}).get("measures", [])]

    @property
    def layers(self) -> list[str]:
        return [layer["name"] for layer in (self.config or {}).get("layers", [])]

    @property
    def progress(self) -> str:
        epochs = self.epochs
        total = (self.status or {}).get("total_epochs") or "?"  # a loop with the monitor may not say
        return f"{epochs[-1]['epoch'] if epochs else 0}/{total}"

    def timing(self, at: float | None = None) -> tuple[str, str, str]:
        """(elapsed, ETA, throughput) as the runs screen shows them: time since the run (re)started — to
        its end where it ended —, the remaining epochs × the mean recorded epoch time while it runs, and
        training images per second in its last epoch. '—' where the record does not tell."""
        status, epochs = self.status or {}, [r for r in self.epochs if r.get("epoch", 0) >= 1]
        started, ended = number_or_none(status.get("started_at")), number_or_none(status.get("finished_at"))
        now = at if at is not None else time.time()
        elapsed = "—" if started is None else duration((ended if ended and self.state != "running" else now) - started)
        seconds = [sum(number_or_none(v) or 0.0 for v in r["timing"].values() if not isinstance(v, dict))
                   for r in epochs if isinstance(r.get("timing"), dict)]
        total, done = status.get("total_epochs"), (self.epochs[-1]["epoch"] if self.epochs else 0)
        eta = "—"
        if self.state == "running" and seconds and isinstance(total, int):
            eta = "~" + duration(max(0, total - done) * sum(seconds) / len(seconds))
        images = number_or_none(dig(self.config, "dataset", "train_images"))
        train_s = number_or_none(dig(epochs[-1], "timing", "train_s")) if epochs else None
        rate = f"{images / train_s:.0f} img/s" if images and train_s else "—"
        return elapsed, eta, rate

    @property
    def best_accuracy(self) -> float | None:
        values = [r["held_out"]["accuracy"] for r in self.epochs if r.get("held_out")]
        return max(values) if values else None

    def snapshot(self) -> RunSnapshot:
        return RunSnapshot(self.path, self.config, self.status, list(self.records), self.problem, list(self.damage))


def drawn_values(record: dict[str, Any], parts: list[dict[str, Any]]) -> dict[str, Any]:
    """``record`` cut to what the app draws of a step record: its kind, epoch, step and train numbers, and
    each value of the declared ``parts`` where :func:`engine.analyses.part_value` finds it (per-filter
    values, replicates and intervals are left out: a step record of 25 kB keeps a few hundred bytes)."""
    kept: dict[str, Any] = {key: record[key] for key in ("kind", "epoch", "step") if key in record}
    train = record.get("train")
    if isinstance(train, dict):
        kept["train"] = {key: train[key] for key in ("loss", "accuracy") if key in train}
    for part in parts:
        section = part.get("section", part.get("name", ""))
        if not isinstance(section, str):
            continue
        for measure in part.get("measures") or []:
            if not isinstance(measure, str):
                continue
            metric, _, view = measure.rpartition("@")
            for row in measure_rows(part, measure):
                value = part_value(record, part, measure, row)
                if value is None or not isinstance(row, str):
                    continue
                keys = (section, row, view, "values", metric) if part.get("layout") == "layers" \
                    else (section, view, metric, row)
                place = kept
                for key in keys[:-1]:
                    place = place.setdefault(key, {})
                    if not isinstance(place, dict):  # a section named like a kept key ('train'): not drawn
                        break
                else:
                    place[keys[-1]] = value
    return kept


class Workspace:
    """Every run under the given paths, followed live."""

    def __init__(self, paths: list[Path]):
        self.paths = [Path(p) for p in paths]
        self.runs: dict[Path, TrackedRun] = {}
        self.first_seen: dict[Path, int] = {}  # the order runs appeared in: their colours in overlays
        self.ended: list[tuple[TrackedRun, str]] = []  # runs followed while running that ended since

    def poll(self) -> set[Path]:
        """Find new runs and read new records; returns the runs that changed. A run that cannot be
        read becomes *corrupt* with its reason; every other run goes on. A run seen running that has
        ended since is added to ``ended`` (the app says so)."""
        changed = set()
        was_running = {path for path, run in self.runs.items() if run.state == "running"}
        for root in self.paths:
            for path in find_runs(root):
                if path not in self.runs:
                    self.runs[path] = TrackedRun(path)
                    self.first_seen[path] = len(self.first_seen)
        for path, run in self.runs.items():
            try:
                refreshed = run.refresh()
            except Exception as exc:  # noqa: BLE001 — whatever a hostile file does, it stays in its run
                run.problem = f"'{path}' is not a readable ftdyn run ({type(exc).__name__}: {exc})"
                refreshed = True
            if refreshed:
                changed.add(path)
                if path in was_running and run.state != "running":
                    self.ended.append((run, run.state))
        return changed

    def missing(self) -> list[Path]:
        return [p for p in self.paths if not p.exists()]

    def ordered(self) -> list[TrackedRun]:
        return [self.runs[p] for p in sorted(self.runs)]


# ------------------------------------------------------------------------------------------------
# Series


def flatten_config(config: dict[str, Any] | None, prefix: str = "") -> dict[str, str]:
    """config.json as dotted keys → short text (``run.lr`` → ``0.0001``; lists of scalars joined,
    longer structures as compact JSON), for the config view and its diff."""
    import json

    flat: dict[str, str] = {}
    for key, value in (config or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten_config(value, name + "."))
        elif isinstance(value, list) and all(isinstance(v, (str, int, float, bool)) or v is None for v in value):
            flat[name] = ", ".join(map(str, value)) if value else "[]"
        elif isinstance(value, (dict, list)):
            flat[name] = json.dumps(value, separators=(",", ":"))
        else:
            flat[name] = str(value)
    return flat


def config_diff(first: dict[str, Any] | None, second: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """(key, first's value, second's value) for every setting the two configs do not share ('—': absent)."""
    a, b = flatten_config(first), flatten_config(second)
    return [(key, a.get(key, "—"), b.get(key, "—")) for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]


def duration(seconds: float) -> str:
    """12s, 4m05s, 3h12m, 2d04h: the two largest units."""
    seconds = max(0, int(round(seconds)))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def part_series(run: TrackedRun, part: str, measure: str, row: str,
                x_axis: str = "epoch") -> tuple[list[float], list[float]]:
    """One row's values (a layer's distance, a module's drift) over epochs (x = epoch), or over
    optimiser steps including the every-N-steps records (x = step; every epoch record, and the step
    records the run keeps: at most ``STEP_RECORDS_DRAWN``, evenly thinned). Unmeasured points are skipped."""
    declaration = run.part(part)
    if declaration is None or row not in measure_rows(declaration, measure):
        return [], []
    if x_axis == "epoch":
        epochs, matrix = run.matrix(measure, part)
        column = matrix[:, measure_rows(declaration, measure).index(row)]
        live = ~np.isnan(column)
        return epochs[live].astype(float).tolist(), column[live].tolist()
    xs, ys = [], []
    for record in run.records:
        value = part_value(record, declaration, measure, row)
        if value is not None and record.get("step") is not None:
            xs.append(float(record["step"]))
            ys.append(float(value))
    return xs, ys


def interval_series(run: TrackedRun, part: str, measure: str, row: str) -> tuple[list[float], list[float], list[float]]:
    """One row's recorded intervals over epochs: (epochs, lows, highs); empty where none were recorded."""
    declaration = run.part(part)
    xs, lows, highs = [], [], []
    if declaration is None:
        return xs, lows, highs
    for record in run.epochs:
        found = part_interval(record, declaration, measure, row)
        if found is not None:
            xs.append(float(record["epoch"]))
            lows.append(found[0])
            highs.append(found[1])
    return xs, lows, highs


def interval_caption(run: TrackedRun, part: str) -> str | None:
    """'90% jackknife intervals, G=10, bias-corrected' for a part whose values carry intervals (the
    values shown and the intervals around them bias-corrected, or plug-in for runs recorded before),
    else None."""
    declaration = run.part(part) or {}
    settings = IntervalSettings.from_json(declaration.get("intervals"))
    return None if settings is None else (f"{settings.level:.0%} jackknife intervals, G={settings.groups}, "
                                          f"{settings.estimate}")


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


# Runs in an overlay: the palette of engine.colours (shared with `ftdyn figures`), and a marker per run,
# so that runs differ in two ways.
RUN_MARKERS = ("braille", "hd", "·", "+", "x", "o", "*", "#", "%", "~")


def overlay_styles(runs: list[TrackedRun], first_seen: dict[Path, int]) -> dict[Path, tuple[Colour, str]]:
    """Each run's (colour, marker): the palette in the order the runs first appeared in the workspace, so a
    run keeps its colour from one overlay to the next; where two runs of one overlay would share a colour
    (more runs than colours), the later one takes the next free one."""
    used: set[int] = set()
    styles = {}
    for run in runs:
        index = first_seen.get(run.path, len(first_seen)) % len(RUN_PALETTE)
        while index in used and len(used) < len(RUN_PALETTE):
            index = (index + 1) % len(RUN_PALETTE)
        used.add(index)
        styles[run.path] = (RUN_PALETTE[index], RUN_MARKERS[index])
    return styles


def accuracy_series(run: TrackedRun, split: str, key: str) -> tuple[list[float], list[float]]:
    """split 'train' or 'held_out', key 'accuracy' or 'loss', per epoch (unrecorded points left out)."""
    points = [(float(r["epoch"]), number_or_none(dig(r, split, key))) for r in run.epochs]
    return [x for x, y in points if y is not None], [y for _, y in points if y is not None]


def learning_rate_series(run: TrackedRun) -> dict[str, tuple[list[float], list[float]]]:
    """Per parameter group, its learning rate at the end of each epoch (warm-up and AutoRGN included)."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    for record in run.epochs:
        groups = record.get("lr_groups")
        if not isinstance(groups, dict):
            groups = {f"group {i}": v for i, v in enumerate(record.get("lr") or [])} \
                if isinstance(record.get("lr"), list) else {}
        for name, value in groups.items():
            if number_or_none(value) is not None:
                xs, ys = series.setdefault(str(name), ([], []))
                xs.append(float(record["epoch"]))
                ys.append(float(value))
    return series


def integer_ticks(low: float, high: float, room: int) -> list[int]:
    """Whole-number ticks (epochs) from ``low`` to ``high``, at most ``room`` of them, evenly stepped."""
    low, high = int(math.floor(low)), int(math.ceil(high))
    step = max(1, math.ceil((high - low + 1) / max(1, room)))
    return list(range(low, high + 1, step))


def legend_text(entries: list[tuple[str | None, str, list[tuple[str, Colour]]]], width: int) -> "Text":
    """The curves' key, outside the plot: per run (its name, its marker) the rows in their colours, wrapped
    to ``width``; a single run's rows on their own."""
    from rich.text import Text

    text = Text(no_wrap=True, overflow="ellipsis")
    for i, (run_name, marker, rows) in enumerate(entries):
        if i:
            text.append("\n")
        column = 0
        if run_name is not None:
            head = f"{visible(run_name, 30)} ({marker}): "
            text.append(head, style="bold")
            column = len(head)
        for row, (r, g, b) in rows:  # an entry is never split: a new line when the next does not fit
            name = visible(row, 30)
            if column and column + 2 + len(name) > width:
                text.append("\n  ")
                column = 2
            text.append("■ ", style=f"rgb({r},{g},{b})")
            text.append(name + "  ")
            column += len(name) + 4
    return text


def value_at(xs: list[float], ys: list[float], x: float) -> float | None:
    """The series' value at ``x`` (None where it has none)."""
    return next((y for px, y in zip(xs, ys) if px == x), None)


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


SIDE_WIDTH = 26  # characters a cell of the curves screen's side tables shows at 80 columns


def short_pair(pair: str) -> str:
    """'pwsm:0.5@positions vs cka@positions' → 'pwsm:0.5 ~ cka @positions' (narrow terminals); measures on
    two views on two lines, so that no name is cut."""
    first, _, second = pair.partition(" vs ")
    (m1, _, v1), (m2, _, v2) = first.rpartition("@"), second.rpartition("@")
    if v1 != v2:
        return f"{first}\n~ {second}"
    one = f"{m1} ~ {m2} @{v1}"
    return one if len(one) <= SIDE_WIDTH else f"{m1} ~ {m2}\n  @{v1}"


# ------------------------------------------------------------------------------------------------
# Filters and images


@dataclass
class FilterRow:
    index: int
    distance: float | None
    chosen_by: str | None
    images: int


CHANNEL_ANGLE_MEASURE = "channel-angle@positions"
NO_RANKING = ("not ranked: this run recorded no distance per filter (runs since ftdyn records the `positions` "
              "view's channel angle rank every filter; add procrustes@filter to --metrics for the paper's measure)")


def filter_measure(run: TrackedRun) -> str | None:
    """The measure that ranks a layer's filters: the first measure on a filter view, else the channel angle
    of the `positions` view (METRICS.md, "Ranking filters"), else None (a run recorded before either)."""
    measure = next((m for m in run.measures if m.rpartition("@")[2] in ("filter", "filter-map")), None)
    if measure is None and run.epochs:
        layers = run.epochs[-1].get("layers")
        if isinstance(layers, dict) and any(dig(entry, "positions", "per_filter", "channel-angle") is not None
                                            for entry in layers.values()):
            measure = CHANNEL_ANGLE_MEASURE
    return measure


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
        entry = run.epochs[-1]
        dead = dig(entry, "layers", layer, view, "dead")
        dead = dead if isinstance(dead, int) else None
        values = dig(entry, "layers", layer, view, "per_filter", metric)
        distances = dict(enumerate(map(number_or_none, values if isinstance(values, list) else [])))
    indices = set(distances) | set(images)
    rows = [FilterRow(i, distances.get(i), chosen.get(i), images.get(i, 0)) for i in indices]
    rows.sort(key=lambda row: (row.distance is None, -(row.distance or 0.0), row.index))
    return rows, dead, measure


def filter_images(run: TrackedRun, layer: str, index: int) -> dict[tuple[str, str], dict[int, Path]]:
    """(kind, class or image label) → {epoch: path} for one filter. Only files inside the run's vis/
    folder are offered: an index entry naming an absolute path, ``..`` or a link that leads out is
    left out (a shared run directory must not make the app open other files)."""
    found: dict[tuple[str, str], dict[int, Path]] = {}
    for entry in run.vis:
        if entry["layer"] == layer and entry["filter"] == index:
            path = inside(run.path, f"vis/{entry['path']}")  # against the run itself: vis/ may be a link
            if path is None:
                continue
            label = entry["class"] if entry["kind"] == "class" else f"{entry['class']} #{entry['image']}"
            found.setdefault((entry["kind"], label), {})[entry["epoch"]] = path
    return found


# The 16 colours a 'standard' terminal has, as Rich maps RGB onto them (VGA).
ANSI16 = ((0, 0, 0), (170, 0, 0), (0, 170, 0), (170, 85, 0), (0, 0, 170), (170, 0, 170), (0, 170, 170),
          (170, 170, 170), (85, 85, 85), (255, 85, 85), (85, 255, 85), (255, 255, 85), (85, 85, 255),
          (255, 85, 255), (85, 255, 255), (255, 255, 255))


def for_terminal(picture, color_system: str | None):
    """A picture as this terminal can show it. With 16 colours (or fewer), each half-block cell would be
    snapped to the nearest of them and class averages turn into flat patches: the picture is dithered
    (Floyd–Steinberg) onto those 16 colours instead, so shades survive as patterns. Truecolor and
    256-colour terminals get it unchanged."""
    from PIL import Image

    if color_system in ("truecolor", "256"):
        return picture
    palette = Image.new("P", (1, 1))
    palette.putpalette([v for colour in ANSI16 for v in colour] + [0] * (768 - 48))
    return picture.convert("RGB").quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG).convert("RGB")


def path_lines(path: str, width: int = 40) -> str:
    """A long path broken into lines after its separators, never inside a name (a toast wraps anywhere);
    the lines joined give the path back."""
    parts = path.split("/")
    lines, line = [], parts[0]
    for part in parts[1:]:
        if line and len(line) + 1 + len(part) > width:
            lines.append(line + "/")
            line = part
        else:
            line = f"{line}/{part}"
    return "\n".join(lines + [line])


def image_display(run: TrackedRun, layer: str, index: int, kind: str) -> str | None:
    """How the run drew this filter's images of ``kind``, where its index says (class-based: cropped to the
    field's part inside the image, contrast stretched); None for runs that did not record it."""
    return next((entry["display"] for entry in run.vis if entry["layer"] == layer and entry["filter"] == index
                 and entry["kind"] == kind and isinstance(entry.get("display"), str)), None)


def export_path(run: TrackedRun, part: str, measure: str) -> Path:
    """Where the curves' CSV export goes: the first run's folder, under a name made from the measure's
    label with nothing but letters, digits and ``._+-`` (a label from a run directory names no path)."""
    prefix = "" if part == "distance" else f"{part}-"
    return run.path / f"export-{safe_file_name(prefix + measure)}.csv"


def load_picture(path: Path):
    """A PNG of the run as a decoded PIL image, or None with the reason when it is missing, damaged or
    not a plain file (drawn as a message instead of failing the screen)."""
    from PIL import Image

    try:
        data = read_plain(path)
    except (OSError, RunFormatError) as exc:
        return None, f"{path.name} cannot be read ({exc})"
    if data is None:
        return None, f"{path.name} is missing"
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.copy(), None
    except Exception as exc:  # noqa: BLE001 — Pillow raises many types for damaged files
        return None, f"{path.name} cannot be decoded ({type(exc).__name__})"


def export_csv(runs: list[TrackedRun], measure: str, part: str = "distance") -> str:
    """Every (run, row, epoch) value of ``measure`` of the analysis ``part``, with its recorded interval
    (empty where none), plus accuracy, as CSV."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["run", "analysis", "measure", "row", "epoch", "step", "value", "low", "high",
                     "held_out_accuracy"])
    for run in runs:
        declaration = run.part(part)
        if declaration is None:
            continue
        for record in run.epochs:
            for row in measure_rows(declaration, measure):
                low_high = part_interval(record, declaration, measure, row) or (None, None)
                writer.writerow([run.name, part, measure, row, record["epoch"], record.get("step"),
                                 part_value(record, declaration, measure, row), *low_high,
                                 (record.get("held_out") or {}).get("accuracy")])
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------
# Heatmaps (rows × columns, colour = value), drawn as text so they work in any terminal


# Viridis at nine stops: ordered in lightness, readable by colour-blind viewers.
HEAT_RAMP = ((68, 1, 84), (72, 40, 120), (62, 74, 137), (49, 104, 142), (38, 130, 142), (31, 158, 137),
             (53, 183, 121), (109, 205, 89), (180, 222, 44))


def heat_colour(value: float, low: float, high: float) -> tuple[int, int, int]:
    t = 0.0 if high <= low else min(1.0, max(0.0, (value - low) / (high - low)))
    position = t * (len(HEAT_RAMP) - 1)
    i = min(int(position), len(HEAT_RAMP) - 2)
    f = position - i
    a, b = HEAT_RAMP[i], HEAT_RAMP[i + 1]
    return tuple(round(a[k] + f * (b[k] - a[k])) for k in range(3))


def heatmap_text(row_labels: list[str], column_labels: list[str], matrix: np.ndarray, width: int = 80,
                 title: str = "", unit: str = "", marks: np.ndarray | None = None, mark_note: str = "") -> "Text":
    """A row × column heatmap as Rich text: one coloured cell per value (blank where unmeasured),
    columns thinned evenly when they do not fit ``width``, and the colour scale with its range.
    ``marks`` (rows × columns, bool) draws ≈ on a cell; ``mark_note`` says what it means."""
    from rich.text import Text

    matrix = np.asarray(matrix, dtype=np.float64)
    row_labels = [visible(label, 64) for label in row_labels]  # names from a run directory: plain, one line
    column_labels = [visible(label, 16) for label in column_labels]
    title = visible(title)
    label_width = min(24, max([len(label) for label in row_labels] + [4]))
    room = max(8, width - label_width - 2)
    columns = list(range(len(column_labels)))
    widest = max([len(str(label)) for label in column_labels] + [1]) + 1  # a space between labels
    cell = next((w for w in (widest, 3, 2) if len(columns) * w <= room), 1)
    if len(columns) * cell > room:  # thin the columns, keeping the first and the last
        keep = np.unique(np.linspace(0, len(columns) - 1, room // cell).round().astype(int))
        columns = keep.tolist()
    finite = matrix[np.isfinite(matrix)] if matrix.size else np.empty(0)
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    text = Text(no_wrap=True, overflow="crop")
    if title:
        text.append(title + "\n", style="bold")
    if cell > 1:
        header = "".join(f"{column_labels[c]:>{cell}}"[-cell:] for c in columns)
    else:  # one character per column: the first and last labels at the ends
        first, last = str(column_labels[columns[0]]), str(column_labels[columns[-1]])
        header = first + last.rjust(max(0, len(columns) - len(first)))
    header = " " * (label_width + 1) + header
    text.append(header + "\n", style="dim")
    for i, label in enumerate(row_labels):
        text.append(f"{label[-label_width:]:>{label_width}} ")
        for c in columns:
            value = matrix[i, c] if i < matrix.shape[0] and c < matrix.shape[1] else np.nan
            if np.isfinite(value):
                r, g, b = heat_colour(float(value), low, high)
                marked = marks is not None and i < marks.shape[0] and c < marks.shape[1] and bool(marks[i, c])
                ink = "black" if (r + g + b) > 380 else "white"
                text.append(("≈" if marked else " ").center(cell), style=f"{ink} on rgb({r},{g},{b})")
            else:
                text.append("·".center(cell), style="dim")
        text.append("\n")
    text.append(" " * (label_width + 1))
    text.append(f"{low:.3g} ")
    for k in range(len(HEAT_RAMP)):
        r, g, b = HEAT_RAMP[k]
        text.append("  ", style=f"on rgb({r},{g},{b})")
    text.append(f" {high:.3g}")
    indent = " " * (label_width + 1)
    used = label_width + 1 + len(f"{low:.3g} ") + 2 * len(HEAT_RAMP) + len(f" {high:.3g}")
    if unit:  # beside the scale where it fits, else on a line of its own: never cut off
        shown = visible(unit, 60)
        text.append(f"  {shown}" if used + 2 + len(shown) <= width else f"\n{indent}{shown}")
    if marks is not None and mark_note:
        for line in textwrap.wrap(f"≈ {mark_note}", max(20, width - len(indent))):
            text.append(f"\n{indent}{line}", style="dim")
    return text


def unmoved_marks(run: TrackedRun, part: str, measure: str) -> np.ndarray | None:
    """(rows × epochs) True where a row's value did not change beyond noise since the epoch before:
    the paired difference of the two epochs (computed inside each jackknife replicate) has an
    interval that holds 0. None where the part records no intervals."""
    declaration = run.part(part) or {}
    settings = IntervalSettings.from_json(declaration.get("intervals"))
    if settings is None or declaration.get("layout") != "layers":
        return None
    rows = measure_rows(declaration, measure)
    epochs = run.epochs
    marks = np.zeros((len(rows), len(epochs)), dtype=bool)
    for j in range(1, len(epochs)):
        for i, row in enumerate(rows):
            found = epoch_change(epochs[j - 1], epochs[j], row, measure, settings)
            marks[i, j] = found is not None and not found.excludes_zero
    return marks


# ------------------------------------------------------------------------------------------------
# Post-hoc results (RUN/analyses/*.json)


def transfer_result(run: "TrackedRun", peers: list["TrackedRun"]) -> dict[str, Any] | None:
    """The block-shuffle experiment around ``run`` as a post-hoc curve: final held-out accuracy against
    block size, P-T and RI-T, over the runs that share its model and data (None where they do not
    vary the shuffle or the initialisation)."""
    if run.config is None:
        return None
    same = [p.snapshot() for p in peers if p.config is not None and not p.problem
            and p.config.get("model", {}).get("name") == run.config.get("model", {}).get("name")
            and p.config.get("dataset", {}).get("root") == run.config.get("dataset", {}).get("root")]
    rows = [r for r in transfer_table(same) if r["block"] != "pixel"]
    if not rows:
        return None
    size = int(run.config.get("run", {}).get("image_size") or 224)
    pixels = lambda row: size if row["block"] == "none" else int(row["block"])  # noqa: E731
    rows.sort(key=pixels)
    unshuffled = unshuffled_row(rows)
    return {"name": "transfer", "display": "curve",
            "title": "final held-out accuracy against block size (no shuffle = image size)",
            "x_label": "block size (px)", "x": [pixels(r) for r in rows],
            "series": {init: [r[f"{key}_final_accuracy"] for r in rows] for init, key in INITS.items()},
            "show": {"label": "transfer: accuracy against block size (P-T, RI-T)", "tables": [
                {"name": "transfer_curve", "kind": "curve", "x": "block_size"},
                {"name": "transfer_barriers", "kind": "numbers", "title": "loss barrier between two seeds",
                 "values": {f"{init} seeds, {name.replace('_', ' ')}": unshuffled[f"{key}_barrier_{name}"]
                            for init, key in INITS.items() for name in SEED_BARRIERS if unshuffled is not None}}]}}


# ------------------------------------------------------------------------------------------------
# UMAP of a layer's probe features (RUN/analyses/umap-*.json, display "scatter")

# The most classes a map colours apart with a key; more share colours and the key is left out.
MAP_KEY_CLASSES = len(RUN_PALETTE)


def layer_maps(results: list[dict[str, Any]], layer: str | None) -> list[dict[str, Any]]:
    """The scatter results (UMAPs) of ``layer``, newest first."""
    return [r for r in reversed(results) if r.get("display") == "scatter" and r.get("layer") == layer]


def map_epochs(result: dict[str, Any]) -> list[int]:
    """The epochs a map places, in order (0: the source the map was fitted on)."""
    return sorted(epoch_points(result))


def stepped(epochs: list[int], current: int | None, step: int) -> int | None:
    """The epoch ``step`` places from ``current`` in ``epochs``, kept within them (None when there are
    none); from an epoch not among them, the steps count from the last."""
    if not epochs:
        return None
    position = epochs.index(current) if current in epochs else len(epochs) - 1
    return epochs[max(0, min(len(epochs) - 1, position + step))]


# Coordinates beyond this are not a map anyone fitted: left out, like non-numbers.
MAP_LIMIT = 1e12


def map_points(result: dict[str, Any], epoch: int) -> dict[str, tuple[list[float], list[float]]]:
    """class name → (xs, ys) of the images placed at ``epoch``; points that are not two finite
    numbers of a sane size (a damaged file) are left out."""
    labels = result.get("labels") if isinstance(result.get("labels"), list) else []
    by_class: dict[str, tuple[list[float], list[float]]] = {}
    for point, label in zip(epoch_points(result).get(epoch, []), labels):
        xy = scatter_point(point)
        if xy is None or abs(xy[0]) > MAP_LIMIT or abs(xy[1]) > MAP_LIMIT:
            continue
        x, y = xy
        xs, ys = by_class.setdefault(visible(scatter_class(result, label), 30), ([], []))
        xs.append(x)
        ys.append(y)
    return by_class


def map_class_order(result: dict[str, Any]) -> list[str]:
    """Class names in the order of the run's classes (their colours follow it, as in `ftdyn figures`),
    then any other labels."""
    classes = [visible(c, 30) for c in result.get("classes") or [] if isinstance(c, str)] \
        if isinstance(result.get("classes"), list) else []
    seen = {name for epoch in map_epochs(result) for name in map_points(result, epoch)}
    return classes + sorted(seen - set(classes))


def map_limits(result: dict[str, Any]) -> tuple[tuple[float, float], tuple[float, float]]:
    """x and y limits that hold every epoch's points, so all epochs are drawn on the same axes."""
    placed = [points for epoch in map_epochs(result) for points in map_points(result, epoch).values()]
    xs = [x for epoch_xs, _ in placed for x in epoch_xs]
    ys = [y for _, epoch_ys in placed for y in epoch_ys]
    if not xs:
        return (0.0, 1.0), (0.0, 1.0)
    pad_x, pad_y = 0.05 * (max(xs) - min(xs) or 1.0), 0.05 * (max(ys) - min(ys) or 1.0)
    return (min(xs) - pad_x, max(xs) + pad_x), (min(ys) - pad_y, max(ys) + pad_y)


def map_numbers(result: dict[str, Any], epoch: int) -> str:
    """What the map at ``epoch`` says in numbers, as its declaration's per-epoch table gives them."""
    numbers = [f"{table.header(c)} {shown_value(row[c])}" for table in shown_tables("", result)
               if table.kind == "epochs" for row in table.rows if row["epoch"] == epoch
               for c in table.columns if row.get(c) is not None]
    return visible(f"epoch {epoch}: " + (", ".join(numbers) or "no numbers recorded"), 200)


def map_caption(result: dict[str, Any], epoch: int) -> str:
    return visible(f"UMAP of {result.get('layer')} ({result.get('features')}) fitted on the source · ", 120) + \
        map_numbers(result, epoch)


# ------------------------------------------------------------------------------------------------
# The training host and what the run said: the runs screen's system (s) and log (l) panels

SPARK = "▁▂▃▄▅▆▇█"
LOG = "train.log"


def sparkline(values: list[float | None], high: float = 100.0) -> str:
    """One character per value from 0 to ``high``; a gap where a value is missing."""
    return "".join(" " if v is None else SPARK[min(len(SPARK) - 1, max(0, int(v / high * len(SPARK))))]
                   for v in values)


def gibibytes(value: Any) -> str:
    number = number_or_none(value)
    return "?" if number is None else f"{number / 2**30:.1f}"


def processes_lines(status: dict[str, Any] | None, width: int = 80) -> list[str]:
    """A distributed run's processes as status.json lists them (none for a run of one process):
    '4 processes (nccl) on 2 hosts: gpu-a ×2, gpu-b ×2'. Host names are shown through visible()."""
    status = status if isinstance(status, dict) else {}
    world, hosts = number_or_none(status.get("world_size")), status.get("hosts")
    if world is None or world <= 1 or not isinstance(hosts, list):
        return []
    counts: dict[str, int] = {}
    for host in hosts:
        counts[str(host)] = counts.get(str(host), 0) + 1
    backend = status.get("backend") if isinstance(status.get("backend"), str) else "?"
    places = ", ".join(f"{host} ×{count}" for host, count in counts.items())
    return [visible(f"{world:.0f} processes ({backend}) on {len(counts)} host{'s' if len(counts) > 1 else ''}: "
                    f"{places} · the samples below are rank 0's host", width)]


def system_lines(run_dir: Path, width: int = 80, at: float | None = None) -> list[str]:
    """The training host as its run recorded it (RUN/system.jsonl): the latest sample, and the CPU and
    GPU load over the last samples. Every string from the file is shown through visible()."""
    samples = read_samples(run_dir)
    if not samples:
        return ["no system samples recorded (a run from before ftdyn recorded them, or one not started yet)"]
    last = samples[-1]
    age = (at if at is not None else time.time()) - float(last["at"])
    lines = [visible(f"host {last.get('host', '?')} · sampled {duration(max(0.0, age))} ago · "
                     f"{len(samples)} samples shown", width)]
    trail = max(8, width - 34)
    cpu = number_or_none(last.get("cpu_percent"))
    cpus = number_or_none(last.get("cpus"))
    lines.append(f"CPU  {'—' if cpu is None else f'{cpu:5.1f} %'}"
                 f"{'' if cpus is None else f' of {cpus:.0f}'}  "
                 + sparkline([number_or_none(s.get("cpu_percent")) for s in samples[-trail:]]))
    ram = last.get("memory") if isinstance(last.get("memory"), dict) else None
    if ram:
        lines.append(f"RAM  {gibibytes(ram.get('used'))} / {gibibytes(ram.get('total'))} GiB")
    disk = last.get("disk") if isinstance(last.get("disk"), dict) else None
    if disk:
        lines.append(f"disk {gibibytes(disk.get('free'))} GiB free of {gibibytes(disk.get('total'))} (the run's file system)")
    gpus = [g for g in last.get("gpus") or [] if isinstance(g, dict)] if isinstance(last.get("gpus"), list) else []
    for gpu in gpus:
        index = gpu.get("index")
        history = []
        for sample in samples[-trail:]:
            same = [g for g in sample.get("gpus") or [] if isinstance(g, dict) and g.get("index") == index] \
                if isinstance(sample.get("gpus"), list) else []
            history.append(number_or_none(same[0].get("utilisation")) if same else None)
        util, temp = number_or_none(gpu.get("utilisation")), number_or_none(gpu.get("temperature"))
        lines.append(visible(f"GPU{index} {gpu.get('name', '?')}: {'—' if util is None else f'{util:.0f} %'} busy, "
                             f"{gibibytes(gpu.get('memory_used'))} / {gibibytes(gpu.get('memory_total'))} GiB, "
                             f"{'—' if temp is None else f'{temp:.0f} °C'}", width - len(history) - 2)
                     + "  " + sparkline(history))
    notes = last.get("notes") if isinstance(last.get("notes"), list) else []
    lines += [visible(note, width) for note in notes if isinstance(note, str)]
    return lines


def log_lines(run_dir: Path, count: int = 12, width: int = 100) -> tuple[str, list[str]]:
    """The end of what the run printed: RUN/train.log for a detached run, else its recorded events
    (RUN/events.jsonl). Returns (which, lines); untrusted text, shown through visible()."""
    data = tail_bytes(run_dir / LOG)
    if data is not None:
        text = data.decode("utf-8", "replace").replace("\r", "\n")  # progress bars redraw with \r
        lines = [line for line in text.splitlines() if line.strip()]
        return LOG, [visible(line, width) for line in lines[-count:]]
    events = tail_objects(run_dir / EVENTS, count)
    shown = []
    for event in events:
        at = number_or_none(event.get("at"))
        stamp = time.strftime("%H:%M:%S", time.localtime(at)) if at is not None else "--:--:--"
        shown.append(visible(f"{stamp} {event.get('kind', '?')}: {event.get('text', '')}", width))
    return EVENTS, shown
