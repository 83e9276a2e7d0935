"""`ftdyn figures`: the paper's figures and tables from run directories, ready for a two-column paper.

Written into one folder:

* ``distance-<measure>.<fmt>`` — per-layer distance to the source over epochs (the paper's Figs 2–5),
  one panel per model; each run in its colour of :mod:`engine.colours` (in the order the runs are
  given), its layers light (early) → dark (deep), with the jackknife interval as a band where the run
  recorded one;
* ``table1.tex``/``.csv`` — accuracy per run (Table 1); ``table2.tex``/``.csv`` — reusability per run and
  measure, mean ± std over epochs, with the interval of the mean where recorded (Table 2);
  ``warnings.csv`` — where there are any: what the runs warned about their measures, and the lines of
  their records skipped as damaged (the figures leave those lines out);
* ``<part>-<measure>-<run>.<fmt>`` — every other epoch analysis a run recorded (parameter drift): a row ×
  epoch heatmap;
* ``barrier-<run>-<n>.<fmt>``, ``criticality-<run>-<n>.<fmt>``, ``umap-<run>-<n>.<fmt>`` — the post-hoc
  results (loss and error along the line between two models; train error per module and rewinding α;
  a layer's UMAP, source and epochs on the source's axes);
* ``montages/<run>/<layer>-f<filter>-class.png`` and ``…-sample.png`` — the class-based and sample-based
  montages the runs drew (copied as they are).

Sizes and fonts fit a two-column paper: a panel is one column (3.3 in) wide, text is 7 pt, fonts are
embedded as text (TrueType in PDF, text in SVG) so the paper's fonts and search work. Names from run
directories are untrusted: they are escaped for LaTeX, made visible (no control characters) and only
files inside each run are read.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

import numpy as np

from engine.analyses import (declared_parts, epoch_points, measure_rows, part_interval, read_results,
                             scatter_point, series_matrix)
from engine.colours import RUN_PALETTE, layer_colour
from engine.numbers import fmt_number
from engine.record import VIS_INDEX, RunSnapshot, write_atomic
from engine.report import (
    accuracy_table,
    distance_matrix,
    interval_settings,
    layer_names,
    measure_labels,
    reusability_table,
    run_name,
    warning_table,
)
from engine.untrusted import inside, read_plain, safe_file_name, visible

FORMATS = ("pdf", "png", "svg")
COLUMN_INCHES = 3.3  # one column of a two-column paper
STYLE = {"font.size": 7, "axes.titlesize": 7, "axes.labelsize": 7, "legend.fontsize": 6, "xtick.labelsize": 6,
         "ytick.labelsize": 6, "lines.linewidth": 1.0, "axes.linewidth": 0.6, "savefig.dpi": 300,
         "savefig.bbox": "tight", "pdf.fonttype": 42, "svg.fonttype": "none", "axes.spines.top": False,
         "axes.spines.right": False}


def write_figures(runs: list[RunSnapshot], out: Path, fmt: str = "pdf") -> list[Path]:
    """Every figure and table the runs allow, into ``out``; the files written, in order."""
    if fmt not in FORMATS:
        raise ValueError(f"--format takes {', '.join(FORMATS)}, not {fmt!r}")
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a remote box
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with plt.rc_context(STYLE):
        for measure in dict.fromkeys(m for run in runs for m in measure_labels(run)):
            written.append(save(distance_figure(runs, measure), out / f"distance-{safe_file_name(measure)}.{fmt}"))
        for run in runs:
            for figure, name in part_figures(run):
                written.append(save(figure, out / f"{name}.{fmt}"))
    written += table_files(runs, out)
    written += montage_files(runs, out / "montages")
    return written


def save(figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format=path.suffix[1:])
    plt.close(figure)
    write_atomic(path, buffer.getvalue())
    return path


def run_colours(runs: list[RunSnapshot]) -> dict[Path, tuple[int, int, int]]:
    """Each run's base colour: the palette in the order the runs were given."""
    return {run.path: RUN_PALETTE[i % len(RUN_PALETTE)] for i, run in enumerate(runs)}


def rgb(colour) -> tuple[float, float, float]:
    return tuple(c / 255 for c in colour)


def distance_figure(runs: list[RunSnapshot], measure: str):
    """One panel per model: every run's layers over epochs, bands where intervals were recorded."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    measured = [run for run in runs if measure in measure_labels(run)]
    models = list(dict.fromkeys(model_of(run) for run in measured))
    figure, axes = plt.subplots(1, len(models), figsize=(COLUMN_INCHES * min(len(models), 2), 2.1),
                                sharey=True, squeeze=False)
    colours = run_colours(runs)
    for axis, model in zip(axes[0], models):
        handles = []
        for run in (r for r in measured if model_of(r) == model):
            layers = layer_names(run)
            epochs = np.array([r["epoch"] for r in run.epochs], dtype=float)
            values = distance_matrix(run.epochs, layers, measure)
            bands = interval_bands(run, layers, measure)
            for depth, layer in enumerate(layers):
                colour = rgb(layer_colour(colours[run.path], depth, len(layers)))
                live = ~np.isnan(values[:, depth])
                axis.plot(epochs[live], values[live, depth], color=colour, marker="o", markersize=1.6)
                if bands is not None and np.isfinite(bands[:, depth]).all():
                    axis.fill_between(epochs, bands[:, depth, 0], bands[:, depth, 1], color=colour, alpha=0.2,
                                      linewidth=0)
            handles.append(Line2D([], [], color=rgb(layer_colour(colours[run.path], len(layers) - 1, len(layers))),
                                  label=visible(run_name(run), 40)))
        axis.set_title(visible(model, 40))
        axis.set_xlabel("epoch")
        axis.legend(handles=handles, frameon=False, loc="best")
    axes[0][0].set_ylabel(visible(measure, 40) + " (0 = source)")
    settings = [interval_settings(run) for run in measured]
    shown = next((s for s in settings if s is not None), None)
    note = "light → dark: early → deep layers"
    if shown is not None:
        note += f"; bands: {shown.level:.0%} jackknife interval, G = {shown.groups}"
        if shown.corrected:
            note += "; curves and bands bias-corrected"
    figure.text(0.5, -0.08, note, ha="center", va="top", fontsize=6)
    return figure


def model_of(run: RunSnapshot) -> str:
    return str(((run.config or {}).get("model") or {}).get("name") or "?")


def interval_bands(run: RunSnapshot, layers: list[str], measure: str) -> np.ndarray | None:
    """(epochs × layers × 2) recorded [low, high], NaN where none; None for a run without intervals."""
    if interval_settings(run) is None:
        return None
    part = next(p for p in declared_parts(run.config) if p.get("name") == "distance")
    bands = np.full((len(run.epochs), len(layers), 2), np.nan)
    for i, record in enumerate(run.epochs):
        for j, layer in enumerate(layers):
            found = part_interval(record, part, measure, layer)
            if found is not None:
                bands[i, j] = found
    return bands


def part_figures(run: RunSnapshot):
    """(figure, file stem) for each epoch analysis other than feature distance, and each post-hoc result."""
    import matplotlib.pyplot as plt

    name = safe_file_name(run_name(run))
    epochs = [str(r["epoch"]) for r in run.epochs]
    for part in declared_parts(run.config):
        if part.get("name") == "distance":
            continue
        for measure in part.get("measures", []):
            rows = measure_rows(part, measure)
            matrix = series_matrix(run.epochs, part, measure).T
            if not rows or not np.isfinite(matrix).any():
                continue
            figure, axis = plt.subplots(figsize=(COLUMN_INCHES, 0.35 + 0.16 * len(rows)))
            image = axis.imshow(matrix, aspect="auto", cmap="viridis", interpolation="nearest")
            axis.set_yticks(range(len(rows)), [visible(r, 30) for r in rows])
            ticks = list(range(0, len(epochs), max(1, len(epochs) // 8)))
            axis.set_xticks(ticks, [epochs[t] for t in ticks])
            axis.set_xlabel("epoch")
            axis.set_title(visible(f"{run_name(run)} · {part.get('title', part.get('name'))} · {measure}", 90))
            figure.colorbar(image, ax=axis, label=visible(part.get("unit", ""), 40), shrink=0.9)
            yield figure, f"{safe_file_name(str(part.get('name')))}-{safe_file_name(measure)}-{name}"
    for n, result in enumerate(r for r in read_results(run.path) if "problem" not in r):
        figure = result_figure(result, run_name(run))
        if figure is not None:
            yield figure, f"{safe_file_name(str(result.get('name', 'result')))}-{name}-{n}"


def result_figure(result: dict[str, Any], run: str):
    """A post-hoc result by its display kind: ``curve`` (x and named series) or ``matrix``."""
    import matplotlib.pyplot as plt

    title = visible(f"{run} · {result.get('title') or result.get('name')}", 90)
    if result.get("display") == "curve" and isinstance(result.get("series"), dict):
        x = [v for v in result.get("x") or [] if isinstance(v, (int, float))]
        figure, axis = plt.subplots(figsize=(COLUMN_INCHES, 2.0))
        for i, (label, ys) in enumerate(result["series"].items()):
            if isinstance(ys, list) and len(ys) == len(x):
                axis.plot(x, [y if isinstance(y, (int, float)) else np.nan for y in ys],
                          color=rgb(RUN_PALETTE[i % len(RUN_PALETTE)]), label=visible(label.replace("_", " "), 30))
        axis.set_xlabel(visible(result.get("x_label") or "λ", 30))
        axis.legend(frameon=False)
        axis.set_title(title)
        return figure
    if result.get("display") == "scatter":
        return map_figure(result, title)
    if result.get("display") == "matrix":
        rows, columns, values = result.get("rows") or [], result.get("columns") or [], result.get("values") or []
        matrix = np.array([[v if isinstance(v, (int, float)) else np.nan for v in row] for row in values], dtype=float)
        if matrix.ndim != 2 or matrix.shape != (len(rows), len(columns)) or not matrix.size:
            return None
        figure, axis = plt.subplots(figsize=(COLUMN_INCHES, 0.5 + 0.18 * len(rows)))
        image = axis.imshow(matrix, aspect="auto", cmap="viridis", interpolation="nearest")
        axis.set_yticks(range(len(rows)), [visible(r, 30) for r in rows])
        axis.set_xticks(range(len(columns)), [f"{c:.2g}" if isinstance(c, (int, float)) else visible(c, 8)
                                              for c in columns])
        axis.set_xlabel(visible(result.get("column_label") or "", 30))
        axis.set_title(title)
        figure.colorbar(image, ax=axis, label=visible(result.get("unit") or "", 40), shrink=0.9)
        return figure
    return None


MAP_PANELS = 6  # a UMAP figure: the source and at most five epochs (evenly spread, the last included)


def map_figure(result: dict[str, Any], title: str):
    """A UMAP result as one row of panels on the same axes — source, then epochs — one colour per
    class (a key with the class names where there are at most ten), across both columns of a paper."""
    import matplotlib.pyplot as plt

    points, labels = epoch_points(result), result.get("labels")
    if 0 not in points or not isinstance(labels, list):
        return None
    epochs = sorted(points)
    later = [e for e in epochs if e]
    shown = [0] + [later[round(i)] for i in np.linspace(0, len(later) - 1, min(len(later), MAP_PANELS - 1))] \
        if later else [0]
    shown = list(dict.fromkeys(shown))
    arrays = {}
    for epoch in shown:
        xy = np.array([scatter_point(p) or (np.nan, np.nan) for p in points[epoch]], dtype=float)
        if xy.shape != (len(labels), 2):
            return None
        arrays[epoch] = xy
    classes = result.get("classes") or []
    label_array = np.array([v if isinstance(v, int) else -1 for v in labels])
    everything = np.concatenate(list(arrays.values()))
    figure, axes = plt.subplots(1, len(shown), figsize=(min(6.9, 1.25 * len(shown) + 0.4), 1.6),
                                sharex=True, sharey=True, squeeze=False)
    for axis, epoch in zip(axes[0], shown):
        for value in sorted(set(label_array.tolist())):
            chosen = label_array == value
            # names are text, never mathtext, and never hidden from the key by a leading underscore
            name = visible(classes[value], 20) if 0 <= value < len(classes) else "?"
            name = name.replace("$", r"\$").lstrip("_") or "?"
            axis.scatter(arrays[epoch][chosen, 0], arrays[epoch][chosen, 1], s=2, linewidths=0,
                         color=rgb(RUN_PALETTE[value % len(RUN_PALETTE)]), label=name)
        axis.set_title("source" if epoch == 0 else f"epoch {epoch}")
        axis.set_xticks([])
        axis.set_yticks([])
    drawn = everything[np.isfinite(everything).all(1)]
    if len(drawn) and np.ptp(drawn, axis=0).all():
        axes[0][0].set_xlim(drawn[:, 0].min(), drawn[:, 0].max())
        axes[0][0].set_ylim(drawn[:, 1].min(), drawn[:, 1].max())
    if len(set(label_array.tolist())) <= len(RUN_PALETTE):
        axes[0][-1].legend(frameon=False, markerscale=3, loc="center left", bbox_to_anchor=(1.0, 0.5))
    figure.suptitle(title)
    return figure


# ------------------------------------------------------------------------------------------------
# Tables 1 and 2, as LaTeX (booktabs) and CSV

LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex(text: Any) -> str:
    """A cell for LaTeX: visible (no control characters) and every special character escaped."""
    return re.sub(r"[\\&%$#_{}~^]", lambda m: LATEX_SPECIAL[m.group()], visible(text, 200))


def table_files(runs: list[RunSnapshot], out: Path) -> list[Path]:
    table1 = [[run["run"], run["model"], run["strategy"], fmt_number(run["train_accuracy"]),
               fmt_number(run["held_out_accuracy"])] for run in accuracy_table(runs)]
    reuse = reusability_table(runs)
    table2 = [[row["run"], row["measure"], f"{fmt_number(row['mean'])} ± {fmt_number(row['std'])}",
               "—" if row["low"] is None else f"[{fmt_number(row['low'])}, {fmt_number(row['high'])}]"] for row in reuse]
    level = next((row["level"] for row in reuse if row["level"] is not None), None)
    interval_head = f"{level:.0%} interval of the mean" if level else "interval of the mean"
    tables = {
        "table1": (["run", "model", "strategy", "train accuracy", "held-out accuracy"], table1,
                   "Accuracy after fine-tuning (Table 1)."),
        "table2": (["run", "measure", "reusability (mean ± std over epochs)", interval_head], table2,
                   "Reusability: the mean layer distance to the source, mean ± std over epochs 1…T (Table 2); "
                   "the interval of the mean is a jackknife over probe-image groups."),
    }
    written = []
    warnings = warning_table(runs)  # what the runs warned about their measures, damaged lines skipped
    if warnings:
        buffer = io.StringIO()
        csv.writer(buffer).writerows([["run", "warning"], *[[visible(r["run"], 200), visible(r["warning"], 1000)]
                                                            for r in warnings]])
        write_atomic(out / "warnings.csv", buffer.getvalue().encode())
        written.append(out / "warnings.csv")
    for name, (head, rows, caption) in tables.items():
        caption = latex(caption).replace("…", r"\ldots{}")
        buffer = io.StringIO()
        csv.writer(buffer).writerows([head, *[[visible(c, 200) for c in row] for row in rows]])
        write_atomic(out / f"{name}.csv", buffer.getvalue().encode())
        lines = [r"\begin{table}[t]", r"\centering\small", rf"\begin{{tabular}}{{{'l' * len(head)}}}",
                 r"\toprule", " & ".join(latex(h) for h in head) + r" \\", r"\midrule",
                 *[" & ".join(latex(c).replace("±", r"$\pm$") for c in row) + r" \\" for row in rows],
                 r"\bottomrule", r"\end{tabular}", rf"\caption{{{caption}}}",
                 rf"\label{{tab:{name}}}", r"\end{table}", ""]
        write_atomic(out / f"{name}.tex", "\n".join(lines).encode())
        written += [out / f"{name}.csv", out / f"{name}.tex"]
    return written


def montage_files(runs: list[RunSnapshot], out: Path) -> list[Path]:
    """The class- and sample-based montages each run drew (RUN/vis/<layer>/f<filter>/montage-*.png)."""
    written = []
    for run in runs:
        vis = run.path / VIS_INDEX
        folder = vis.parent
        if not folder.is_dir() or folder.is_symlink():
            continue
        for found in sorted(folder.glob("*/f*/montage-*.png")):
            path = inside(run.path, str(found.relative_to(run.path)))
            if path is None:  # a link out of the run is never followed
                continue
            try:
                data = read_plain(path)
            except (OSError, ValueError):
                continue
            if data is None:
                continue
            layer, unit, kind = found.parent.parent.name, found.parent.name, found.stem.removeprefix("montage-")
            target = out / safe_file_name(run_name(run)) / f"{safe_file_name(layer)}-{safe_file_name(unit)}-{kind}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(target, data)
            written.append(target)
    return written
