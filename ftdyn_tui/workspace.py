"""The runs the app follows, read from their run directories — no Textual, no torch here.

A :class:`Workspace` follows every run under the paths it was given (new runs appear as they are
created); each :class:`TrackedRun` keeps a :class:`engine.record.RunReader` and only reads what is
new on each poll. Beside them: a run's values over epochs or steps (:func:`part_series`, from what a
followed run keeps), its settings flattened and diffed, and durations as the runs screen shows them.
The other UI-free modules (series, filters, maps, render, host, transfer) compute from these runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.untrusted import number_or_none
from engine.analyses import declared_parts, dig, measure_rows, part_value, read_results, series_matrix
from engine.jsonl import JsonlFollower
from engine.record import VIS_INDEX, RunReader, RunSnapshot, effective_state, find_runs
from engine.record_checks import vis_entry_problem

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
# Settings and durations


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


# ------------------------------------------------------------------------------------------------
# A run's values over epochs or steps, from what it keeps


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
