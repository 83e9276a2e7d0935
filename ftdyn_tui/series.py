"""The curves screen's series and side tables, computed from followed runs — no Textual, no torch here.

A row's recorded intervals, smoothing and log-axis filtering, the runs' overlay styles, accuracy, loss
and learning-rate series, the values at the cursor, the reusability and correlation tables, and the
curves' CSV export. A row's values themselves come from :func:`ftdyn_tui.workspace.part_series`.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from engine.untrusted import number_or_none, safe_file_name
from engine.analyses import dig, measure_rows, part_interval, part_value
from engine.colours import RUN_PALETTE, Colour
from engine.intervals import IntervalSettings
from engine.report import correlation_row, layer_correlations, measure_pairs, reusability
from ftdyn_tui.workspace import TrackedRun

SMOOTHING_STEPS = (0.0, 0.6, 0.9)


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
# Export


def export_path(run: TrackedRun, part: str, measure: str) -> Path:
    """Where the curves' CSV export goes: the first run's folder, under a name made from the measure's
    label with nothing but letters, digits and ``._+-`` (a label from a run directory names no path)."""
    prefix = "" if part == "distance" else f"{part}-"
    return run.path / f"export-{safe_file_name(prefix + measure)}.csv"


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
