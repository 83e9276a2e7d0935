"""The paper's summaries from run records (METRICS.md §5), torch-free.

* Table 1 — train / held-out accuracy per run.
* Table 2 — reusability per run and measure: D_t = mean over the run's layers of the layer distance
  at epoch t; reusability = mean_t D_t ± std_t D_t over epochs 1…T (population std).
* Correlation between two measures: for each layer, Pearson r between their epoch series 1…T;
  summarised as mean ± std over layers and runs (the paper reports 0.83 ± 0.43). A layer whose
  series is constant (r undefined) is left out and counted.
* Per-layer distances by epoch.
* Transfer (ANALYSES.md §4, Neyshabur et al. 2020): where runs differ in block shuffle or in
  initialisation, final held-out accuracy and epochs to a target accuracy per block size, P-T
  (pretrained) beside RI-T (random init), means over seeds, and the loss barriers (training and
  held-out loss) between two seeds.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from engine.analyses import declared_parts, dig, measure_rows, part_value, read_results, series_matrix
from engine.intervals import Estimate, IntervalSettings, derived, estimate, paired_difference
from engine.record import RunSnapshot, recorded_warnings
from engine.results import ShownTable, shown_tables, tables_by_name
from engine.untrusted import number_or_none


def run_name(run: RunSnapshot) -> str:
    return run.path.name


def measure_labels(run: RunSnapshot) -> list[str]:
    return [m["label"] for m in (run.config or {}).get("measures", [])]


def layer_names(run: RunSnapshot) -> list[str]:
    return [layer["name"] for layer in (run.config or {}).get("layers", [])]


DISTANCE_SECTION = {"section": "layers", "layout": "layers"}  # where feature distances are in a record


def layer_value(record: dict[str, Any], layer: str, measure: str) -> float | None:
    """The layer distance on every probe image (the plug-in value the jackknife starts from)."""
    return part_value(record, DISTANCE_SECTION, measure, layer, plug_in=True)


def shown_value(record: dict[str, Any], layer: str, measure: str) -> float | None:
    """The layer distance a reader shows: the jackknife's bias-corrected estimate where the run recorded
    one (engine.intervals), else the plug-in value — what runs recorded before it read as (the app's
    reader, :func:`engine.analyses.part_value`, on the distance part's section)."""
    return part_value(record, DISTANCE_SECTION, measure, layer)


def layer_replicates(record: dict[str, Any], layer: str, measure: str, groups: int) -> list[float] | None:
    """The jackknife's ``groups`` replicates of one layer distance (engine.intervals), or None."""
    metric, _, view = measure.rpartition("@")
    found = dig(record, "layers", layer, view, "jackknife", metric)
    if not isinstance(found, list) or len(found) != groups:
        return None
    values = [number_or_none(v) for v in found]
    return None if any(v is None for v in values) else values


def interval_settings(run: RunSnapshot) -> IntervalSettings | None:
    """How the run's feature distances were given intervals, or None (off, or recorded before them)."""
    part = next((p for p in declared_parts(run.config) if p.get("name") == "distance"), {})
    return IntervalSettings.from_json(part.get("intervals"))


def replicate_matrix(epochs: list[dict[str, Any]], layers: list[str], measure: str, groups: int) -> np.ndarray:
    """(G × epochs × layers) replicates of ``measure``; NaN where a value has none."""
    cube = np.full((groups, len(epochs), len(layers)), np.nan)
    for i, record in enumerate(epochs):
        for j, layer in enumerate(layers):
            reps = layer_replicates(record, layer, measure, groups)
            if reps is not None:
                cube[:, i, j] = reps
    return cube


def layer_estimate(record: dict[str, Any], layer: str, measure: str, settings: IntervalSettings | None) -> Estimate | None:
    if settings is None:
        return None
    return estimate(layer_value(record, layer, measure), layer_replicates(record, layer, measure, settings.groups),
                    settings.t, settings.corrected)


def epoch_summary(record: dict[str, Any]) -> str:
    """'epoch 3: held-out acc 0.812, train acc 0.874  (train 41.0s, analysis 2.2s)': what a training run
    says of each epoch (torch-free, so the command line says it without importing the trainer). A loop
    with the monitor may record no held-out or train results and no training time: those parts are left out."""
    train, held, timing = record.get("train"), record.get("held_out"), record.get("timing") or {}
    results = ([f"held-out acc {held['accuracy']:.3f}"] if held else []) + \
        ([f"train acc {train['accuracy']:.3f}"] if train else [])
    seconds = ([f"train {timing['train_s']:.1f}s"] if isinstance(timing.get("train_s"), (int, float)) else []) + \
        ([f"analysis {timing['analysis_s']:.1f}s"] if isinstance(timing.get("analysis_s"), (int, float)) else [])
    return (f"epoch {record['epoch']}: " + (", ".join(results) or "measured")
            + (f"  ({', '.join(seconds)})" if seconds else ""))


def accuracy_table(runs: list[RunSnapshot]) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        trained = [r for r in run.epochs if r["epoch"] >= 1]
        last = trained[-1] if trained else None
        config = run.config or {}
        held = [r["held_out"]["accuracy"] for r in run.epochs if r.get("held_out")]
        rows.append({
            "run": run_name(run), "model": config.get("model", {}).get("name"),
            "strategy": config.get("strategy", {}).get("name"),
            "dataset": config.get("dataset", {}).get("root"), "state": run.state,
            "epochs": f"{last['epoch'] if last else 0}/{(run.status or {}).get('total_epochs') or '?'}",
            "train_accuracy": (last.get("train") or {}).get("accuracy") if last else None,
            "held_out_accuracy": (last.get("held_out") or {}).get("accuracy") if last else None,
            "best_held_out_accuracy": max(held) if held else None,
        })
    return rows


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std())


def distance_matrix(epochs: list[dict[str, Any]], layers: list[str], measure: str, plug_in: bool = False) -> np.ndarray:
    """(epochs × layers) layer distances of ``measure`` as shown (:func:`shown_value`), or with
    ``plug_in`` the values on every probe image, which the jackknife's statistics start from; NaN
    where a layer had no live filter."""
    part = {**DISTANCE_SECTION, "rows": {measure.rpartition("@")[2]: list(layers)}}
    return series_matrix(epochs, part, measure, plug_in)


def reusability(epoch_numbers: np.ndarray, matrix: np.ndarray) -> tuple[float | None, float | None, int]:
    """mean_t D_t ± std_t D_t over epochs ≥ 1, D_t the mean over layers; and how many epochs."""
    rows = matrix[(epoch_numbers >= 1) & ~np.isnan(matrix).all(axis=1)] if matrix.size else matrix
    per_epoch = [float(np.nanmean(row)) for row in rows]
    mean, std = mean_std(per_epoch)
    return mean, std, len(per_epoch)


def layer_correlations(epoch_numbers: np.ndarray, first: np.ndarray, second: np.ndarray) -> tuple[list[float], int]:
    """Per layer (column), Pearson r between two measures' series over epochs ≥ 1; plus the number
    of layers where r is undefined."""
    rs, undefined = [], 0
    later = epoch_numbers >= 1
    for j in range(first.shape[1]):
        a, b = first[later, j], second[later, j]
        both = ~np.isnan(a) & ~np.isnan(b)
        r = pearson(list(a[both]), list(b[both]))
        if r is None:
            undefined += 1
        else:
            rs.append(r)
    return rs, undefined


def epoch_numbers(run: RunSnapshot) -> np.ndarray:
    return np.array([r["epoch"] for r in run.epochs], dtype=np.int64)


def reusability_table(runs: list[RunSnapshot]) -> list[dict[str, Any]]:
    """Table 2, with the jackknife interval of the mean where the run recorded replicates."""
    rows = []
    for run in runs:
        settings = interval_settings(run)
        for measure in measure_labels(run):
            matrix = distance_matrix(run.epochs, layer_names(run), measure)
            mean, std, count = reusability(epoch_numbers(run), matrix)
            found = reusability_estimate(run, measure, settings)
            rows.append({"run": run_name(run), "measure": measure, "mean": mean, "std": std, "epochs": count,
                         **interval_fields(found, settings)})
    return rows


def reusability_estimate(run: RunSnapshot, measure: str, settings: IntervalSettings | None = None) -> Estimate | None:
    """The reusability mean with its jackknife interval: the statistic recomputed inside each replicate
    (same image groups for every layer and epoch, so the pairing is kept) from the plug-in values, and
    bias-corrected where the run's settings say so (a mean: the mean of the corrected values)."""
    settings = settings or interval_settings(run)
    if settings is None:
        return None
    numbers, layers = epoch_numbers(run), layer_names(run)
    matrix = distance_matrix(run.epochs, layers, measure, plug_in=True)
    keep = (numbers >= 1) & ~np.isnan(matrix).all(axis=1)
    matrix = matrix[keep]
    cube = replicate_matrix(run.epochs, layers, measure, settings.groups)[:, keep]
    measured = ~np.isnan(matrix)  # a layer without a value (no live filter) is left out, as in the mean
    if not measured.any() or np.isnan(cube[:, measured]).any():
        return None
    mean_of = lambda m: float(np.mean([row[ok].mean() for row, ok in zip(m, measured) if ok.any()]))  # noqa: E731
    return derived(mean_of, np.where(measured, matrix, 0.0), np.where(measured, cube, 0.0), settings.t,
                   settings.corrected)


def interval_fields(found: Estimate | None, settings: IntervalSettings | None) -> dict[str, Any]:
    """The interval columns of a report row (None when there is no interval); ``estimate`` says what the
    value is and the interval is centred on (bias-corrected, or plug-in for runs recorded before), and
    ``plug_in`` gives the value on every probe image beside a corrected one."""
    return {"low": found.low if found else None, "high": found.high if found else None,
            "se": found.se if found else None, "level": settings.level if settings else None,
            "groups": settings.groups if settings else None,
            "estimate": settings.estimate if settings and found else None,
            "plug_in": found.plug_in if found else None}


def pearson(x: list[float], y: list[float]) -> float | None:
    """Pearson r, or None where it is undefined (fewer than 2 points, or a constant series)."""
    if len(x) < 2:
        return None
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    a, b = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / denominator if denominator > 0 else None


def measure_pairs(runs: list[RunSnapshot]) -> list[tuple[str, str]]:
    return sorted({pair for run in runs for pair in itertools.combinations(measure_labels(run), 2)})


def correlation_row(first: str, second: str, rs: list[float], undefined: int) -> dict[str, Any]:
    mean, std = mean_std(rs)
    return {"measures": f"{first} vs {second}", "mean_r": mean, "std_r": std, "layers": len(rs),
            "undefined": undefined}


def correlation_table(runs: list[RunSnapshot]) -> list[dict[str, Any]]:
    """Per pair of measures: Pearson r of the epoch series 1…T per layer, mean ± std over layers and runs."""
    rows = []
    for first, second in measure_pairs(runs):
        rs, undefined = [], 0
        for run in runs:
            if first in measure_labels(run) and second in measure_labels(run):
                layers = layer_names(run)
                r, u = layer_correlations(epoch_numbers(run), distance_matrix(run.epochs, layers, first),
                                          distance_matrix(run.epochs, layers, second))
                rs += r
                undefined += u
        rows.append(correlation_row(first, second, rs, undefined))
    return rows


def layer_table(runs: list[RunSnapshot]) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        settings = interval_settings(run)
        for measure in measure_labels(run):
            for layer in layer_names(run):
                for record in run.epochs:
                    found = layer_estimate(record, layer, measure, settings)
                    rows.append({"run": run_name(run), "measure": measure, "layer": layer, "epoch": record["epoch"],
                                 "value": shown_value(record, layer, measure), **interval_fields(found, settings)})
    return rows


def strategy_table(runs: list[RunSnapshot]) -> list[dict[str, Any]]:
    """Per run: the strategy, its parameters, and each block group's learning rate at the last epoch."""
    rows = []
    for run in runs:
        strategy = (run.config or {}).get("strategy", {})
        last = run.epochs[-1] if run.epochs else {}
        params = {k: strategy.get(k) for k in ("train_blocks", "layer_decay", "warmup_epochs") if strategy.get(k)}
        if strategy.get("name") not in ("surgical",):
            params.pop("train_blocks", None)
        if strategy.get("name") != "discriminative":
            params.pop("layer_decay", None)
            params.pop("warmup_epochs", None)
        lrs = last.get("lr_groups") or {}
        if strategy.get("name") == "autorgn" and lrs:  # one group per tensor: summarise
            values = list(lrs.values())
            lrs = {"tensors": len(values), "min": min(values), "max": max(values)}
        rows.append({"run": run_name(run), "strategy": strategy.get("name"), "parameters": params,
                     "phase": last.get("phase"), "epoch": last.get("epoch"), "learning_rates": lrs})
    return rows


def series_table(runs: list[RunSnapshot]) -> list[dict[str, Any]]:
    """Every epoch part other than feature distance (which has its own tables), from its declaration:
    one row per (run, part, measure, row, epoch)."""
    rows = []
    for run in runs:
        for part in declared_parts(run.config):
            if part.get("name") == "distance":
                continue
            for measure in part.get("measures", []):
                for row in measure_rows(part, measure):
                    for record in run.epochs:
                        rows.append({"run": run_name(run), "analysis": part.get("name"), "measure": measure,
                                     "row": row, "epoch": record["epoch"], "value": part_value(record, part, measure, row)})
    return rows


def posthoc_results(runs: list[RunSnapshot]) -> list[ShownTable]:
    """Every post-hoc result of the runs as the tables its declaration gives (engine.results), each
    run's oldest first; detail tables (every point of a map) are left to the command that wrote them."""
    return [table for run in runs for result in read_results(run.path) if "problem" not in result
            for table in shown_tables(run_name(run), result)]


# Epochs to target: the first epoch whose held-out accuracy reaches this share of the better of the
# two initialisations' final accuracies at the same block size.
TARGET_SHARE = 0.9


def run_settings(run: RunSnapshot) -> dict[str, Any]:
    return (run.config or {}).get("run", {})


# The two arms of the transfer experiment and the short key of each (column prefixes, cell names).
INITS = {"P-T": "pt", "RI-T": "rit"}


def init_label(weights: str | None) -> str:
    """P-T (pretrained, then trained) or RI-T (randomly initialised, then trained)."""
    return "RI-T" if str(weights).lower() == "none" else "P-T"


def init_of(run: RunSnapshot) -> str:
    return init_label(run_settings(run).get("weights", ""))


def unshuffled_row(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The transfer table's row without shuffling (where the seed barriers are)."""
    return next((r for r in rows if r["block"] == "none"), None)


def block_of(run: RunSnapshot) -> str:
    return str(run_settings(run).get("shuffle_blocks") or "none")


def block_order(block: str) -> tuple[int, int]:
    """none (no shuffle) first, then blocks from large to small, pixel last."""
    if block in ("none", "pixel"):
        return (0, 0) if block == "none" else (2, 0)
    return 1, -int(block)


def held_out_curve(run: RunSnapshot) -> list[tuple[int, float]]:
    return [(r["epoch"], r["held_out"]["accuracy"]) for r in run.epochs if r.get("held_out") and r["epoch"] >= 1]


# The seed-pair barriers the transfer table shows: the training loss first — a basin is a property of
# the training objective, and the held-out loss of overfit endpoints can sit above the whole path
# (a barrier of 0 that says nothing) — and the held-out loss beside it.
SEED_BARRIERS = ("train_loss", "held_out_loss")


def seed_barriers(group: list[RunSnapshot]) -> dict[str, float | None]:
    """The loss barriers recorded between two runs of the group (two seeds of one cell)."""
    names = {run_name(run) for run in group}
    for run in group:
        for result in read_results(run.path):
            if result.get("name") == "barrier" and "problem" not in result:
                ends = {end: str(dig(result, "endpoints", end)) for end in ("A", "B")}
                if ends["B"].rpartition("@")[0] in names and ends["A"].rpartition("@")[0] in names:
                    return {name: number_or_none(dig(result, "barriers", name)) for name in SEED_BARRIERS}
    return dict.fromkeys(SEED_BARRIERS)


def transfer_table(runs: list[RunSnapshot]) -> list[dict[str, Any]]:
    """One row per (model, data, strategy, block size): P-T beside RI-T (empty unless the runs vary
    the block shuffle or the initialisation)."""
    if len({block_of(r) for r in runs}) < 2 and len({init_of(r) for r in runs}) < 2:
        return []
    cells: dict[tuple, dict[str, list[RunSnapshot]]] = {}
    for run in runs:
        config = run.config or {}
        key = (config.get("model", {}).get("name"), config.get("dataset", {}).get("root"),
               config.get("strategy", {}).get("name"), block_of(run))
        cells.setdefault(key, {}).setdefault(init_of(run), []).append(run)
    rows = []
    for (model, data, strategy, block), inits in cells.items():
        finals = {init: [curve[-1][1] for curve in map(held_out_curve, group) if curve] for init, group in inits.items()}
        best = max((float(np.mean(v)) for v in finals.values() if v), default=None)
        target = None if best is None else TARGET_SHARE * best
        row = {"model": model, "data": data, "strategy": strategy, "block": block, "target_accuracy": target}
        for init, key in INITS.items():
            group = inits.get(init, [])
            reached = [next((e for e, acc in held_out_curve(run) if acc >= target), None) for run in group] \
                if target is not None else []
            prefix = key + "_"
            row.update({prefix + "runs": len(group),
                        prefix + "final_accuracy": float(np.mean(finals[init])) if finals.get(init) else None,
                        prefix + "final_accuracy_std": float(np.std(finals[init])) if len(finals.get(init, [])) > 1
                        else None,
                        prefix + "epochs_to_target": float(np.mean(reached)) if reached and None not in reached
                        else None,
                        prefix + "reached_target": sum(r is not None for r in reached),
                        **{f"{prefix}barrier_{name}": value for name, value in seed_barriers(group).items()}})
        rows.append(row)
    return sorted(rows, key=lambda r: (str(r["model"]), str(r["data"]), str(r["strategy"]), block_order(r["block"])))


def build_report(runs: list[RunSnapshot], posthoc: list[ShownTable] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Every table of the runs; ``posthoc``: their post-hoc results where the caller has read them
    already (:func:`posthoc_results`), so that they are read once."""
    posthoc = tables_by_name(posthoc_results(runs) if posthoc is None else posthoc)
    return {"accuracy": accuracy_table(runs), "reusability": reusability_table(runs),
            "correlation": correlation_table(runs), "strategies": strategy_table(runs), "layers": layer_table(runs),
            "series": series_table(runs), "transfer": transfer_table(runs), "warnings": warning_table(runs),
            "changes": change_table(runs), **posthoc}


def change_table(runs: list[RunSnapshot]) -> list[dict[str, Any]]:
    """Is a layer still moving? Per run, measure and layer with intervals: the last epoch's distance
    minus the one before, a paired difference (the same probe-image groups) computed inside each
    replicate; ``moved`` when its interval excludes 0."""
    rows = []
    for run in runs:
        settings = interval_settings(run)
        if settings is None or len(run.epochs) < 2:
            continue
        before, last = run.epochs[-2], run.epochs[-1]
        for measure in measure_labels(run):
            for layer in layer_names(run):
                found = epoch_change(before, last, layer, measure, settings)
                if found is not None:
                    rows.append({"run": run_name(run), "measure": measure, "layer": layer, "from_epoch": before["epoch"],
                                 "to_epoch": last["epoch"], "difference": found.value,
                                 **interval_fields(found, settings), "moved": found.excludes_zero})
    return rows


def epoch_change(before: dict[str, Any], after: dict[str, Any], layer: str, measure: str,
                 settings: IntervalSettings) -> Estimate | None:
    """A layer's distance in record ``after`` minus record ``before``, the paired jackknife difference
    (the same probe-image groups in both), or None where either lacks replicates."""
    return paired_difference(
        layer_value(after, layer, measure), layer_replicates(after, layer, measure, settings.groups),
        layer_value(before, layer, measure), layer_replicates(before, layer, measure, settings.groups), settings.t,
        settings.corrected)


def warning_table(runs: list[RunSnapshot]) -> list[dict[str, Any]]:
    """What each run warned about its own measures (recorded in config.json), and the lines of its record
    that were skipped as damaged (``RunSnapshot.damage``: the run's tables leave those lines out)."""
    return [{"run": run_name(run), "warning": text} for run in runs
            for text in [*recorded_warnings(run.config), *run.damage]]
