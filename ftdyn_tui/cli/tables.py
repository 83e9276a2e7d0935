"""Tables as text, CSV and JSON: how every command prints what it measured."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

from rich.table import Table
from rich.text import Text

from engine.numbers import fmt_number
from engine.untrusted import visible
from ftdyn_tui.cli.common import fail, out, say
from ftdyn_tui.cli.options import ReportFormat


def emit(fmt: ReportFormat, tables: dict[str, list[dict]], print_as_tables, as_json: dict | None = None) -> None:
    """Tables to stdout as JSON (``as_json`` instead where given), CSV or terminal tables."""
    if fmt == ReportFormat.json:
        # ensure_ascii: every control character from a run directory is escaped
        out.print_json(json.dumps(tables if as_json is None else as_json), ensure_ascii=True)
    elif fmt == ReportFormat.csv:
        sys.stdout.write(tables_as_csv(tables))
    else:
        print_as_tables(tables)


def tables_as_csv(tables: dict[str, list[dict]]) -> str:
    """All tables in one CSV stream, each preceded by a '# name' line."""
    return "".join(f"# {name}\n{table_csv(rows)}\n" for name, rows in tables.items())


def table_csv(rows: list[dict]) -> str:
    """One table as CSV with a header row (every column any row has; nested cells as JSON, text from run
    directories with control characters made visible); empty for a table without rows."""
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(key for row in rows for key in row)))
    writer.writeheader()
    writer.writerows({k: json.dumps(v) if isinstance(v, (dict, list)) else visible(v, 10_000)
                      if isinstance(v, str) else v for k, v in row.items()} for row in rows)
    return buffer.getvalue()


def write_tables(fmt: ReportFormat, tables: dict[str, list[dict]], folder: Path) -> None:
    """--out: one CSV file per table (each one ``pandas.read_csv`` reads as it is), or report.json."""
    from engine.record import write_atomic

    try:
        folder.mkdir(parents=True, exist_ok=True)
        if fmt == ReportFormat.json:
            files = {"report.json": json.dumps(tables, indent=1)}
        else:
            files = {f"{name}.csv": table_csv(rows) for name, rows in tables.items()}
        for name, text in files.items():
            write_atomic(folder / name, text.encode())
    except OSError as exc:
        fail(f"cannot write the report into '{folder}' ({exc.strerror}); choose another --out")
    say("wrote", "green", f"{', '.join(files)} into {folder}")


def print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    """A terminal table whose cells are plain text: names from run directories are never markup."""
    table = Table(title=title)
    for column in columns:
        table.add_column(Text(visible(column)), justify="right" if column.isdigit() else "left")
    for row in rows:
        table.add_row(*[Text(visible(cell)) for cell in row])
    out.print(table)


def print_tables(tables: dict[str, list[dict]]) -> None:
    print_table("Table 1 · accuracy",
                ["run", "model", "strategy", "state", "epochs", "train acc", "held-out acc", "best held-out"],
                [[r["run"], str(r["model"]), "—" if r["strategy"] is None else str(r["strategy"]), r["state"], r["epochs"], fmt_number(r["train_accuracy"]),
                  fmt_number(r["held_out_accuracy"]), fmt_number(r["best_held_out_accuracy"])]
                 for r in tables["accuracy"]])
    print_table("Table 2 · reusability: mean ± std over epochs 1…T of the mean layer distance"
                + interval_note(tables["reusability"], "interval of the mean: "),
                ["run", "measure", "mean ± std", "interval", "epochs"],
                [[r["run"], r["measure"], f"{fmt_number(r['mean'])} ± {fmt_number(r['std'])}", interval_cell(r),
                  str(r["epochs"])] for r in tables["reusability"]])
    print_table("Pearson r between measures (per layer over epochs 1…T; mean ± std over layers and runs)",
                ["measures", "r mean ± std", "layers", "undefined"],
                [[r["measures"], f"{fmt_number(r['mean_r'], 2)} ± {fmt_number(r['std_r'], 2)}", str(r["layers"]),
                  str(r["undefined"])] for r in tables["correlation"]])
    print_table("Strategies: parameters and per-group learning rates at the last epoch",
                ["run", "strategy", "parameters", "learning rates"],
                [[r["run"], str(r["strategy"]), ", ".join(f"{k}={v}" for k, v in r["parameters"].items()) or "—",
                  ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                            for k, v in r["learning_rates"].items()) or "—"] for r in tables["strategies"]])
    print_by_epoch("Layer distance by epoch (early → deep)" + interval_note(tables["layers"], "± half-width of the "),
                   ["run", "measure", "layer"], tables["layers"], ("run", "measure", "layer"))
    if tables.get("changes"):
        print_table("Still moving? Each layer's distance at the last recorded epoch minus the one before, a paired "
                    "difference (same probe images; moved: its interval excludes 0)" + interval_note(tables["changes"], ""),
                    ["run", "measure", "layer", "change", "interval", "moved"],
                    [[r["run"], r["measure"], r["layer"], f"{r['difference']:+.4f}", interval_cell(r),
                      "yes" if r["moved"] else "no"] for r in tables["changes"]])
    for row in tables.get("warnings", []):
        say("warning:", "yellow", f"{row['run']}: {row['warning']}")
    if tables.get("transfer"):
        print_transfer(tables["transfer"])
    if tables["series"]:
        print_by_epoch("Other analyses by epoch (drift: ‖θᵗ − θ⁰‖ per module; BatchNorm statistics left out)",
                       ["run", "analysis", "measure", "module"], tables["series"], ("run", "analysis", "measure", "row"))
    print_posthoc(tables)


def print_transfer(rows: list[dict]) -> None:
    """Neyshabur et al.'s block-shuffle table: P-T beside RI-T per block size, and the seed barriers."""
    from engine.report import INITS, TARGET_SHARE

    def accuracy(row: dict, init: str) -> str:
        mean, std = row[f"{init}_final_accuracy"], row[f"{init}_final_accuracy_std"]
        return "—" if mean is None else fmt_number(mean) + (f" ± {fmt_number(std)}" if std is not None else "")

    def speed(row: dict, init: str) -> str:
        if not row[f"{init}_runs"]:
            return "—"
        epochs = row[f"{init}_epochs_to_target"]
        return fmt_number(epochs, 1) if epochs is not None else f"not reached ({row[f'{init}_reached_target']}/{row[f'{init}_runs']})"

    def barrier(row: dict, init: str) -> str:
        train, held = row[f"{init}_barrier_train_loss"], row[f"{init}_barrier_held_out_loss"]
        return "—" if train is None and held is None else f"{fmt_number(train)} / {fmt_number(held)}"

    print_table(f"Transfer · block shuffle (Neyshabur et al. 2020): final held-out accuracy (mean ± std over seeds), "
                f"epochs to {TARGET_SHARE:.0%} of the better final accuracy at that block size, loss barrier between "
                f"two seeds (training / held-out loss)",
                ["model", "data", "block", "target", "P-T acc", "RI-T acc", "P-T epochs", "RI-T epochs",
                 "P-T barrier", "RI-T barrier"],
                [[str(r["model"]), Path(str(r["data"])).name, r["block"], fmt_number(r["target_accuracy"]),
                  *[accuracy(r, key) for key in INITS.values()], *[speed(r, key) for key in INITS.values()],
                  *[barrier(r, key) for key in INITS.values()]] for r in rows])


def interval_cell(row: dict) -> str:
    """'[0.301, 0.327]', or '—' where the row has no interval."""
    return "—" if row.get("low") is None else f"[{fmt_number(row['low'])}, {fmt_number(row['high'])}]"


def interval_note(rows: list[dict], what: str) -> str:
    """'; <what>90 % jackknife over G=10 probe-image groups' for the intervals in ``rows`` ('' if none)."""
    kinds = sorted({(r["level"], r["groups"], r.get("estimate") or "plug-in") for r in rows if r.get("low") is not None})
    return "" if not kinds else "; " + what + ", ".join(
        f"{level:.0%} jackknife over G={groups} probe-image groups, {estimate} values"
        for level, groups, estimate in kinds)


def print_by_epoch(title: str, columns: list[str], rows: list[dict], keys: tuple[str, ...]) -> None:
    """A long table (one row per key and epoch) printed wide: one line per key, one column per epoch;
    a value with an interval shows its half-width (value ± t·SE)."""
    wide: dict[tuple, dict[int, str]] = {}
    for row in rows:
        cell = fmt_number(row["value"])
        if row.get("low") is not None and row["value"] is not None:
            cell += f"±{fmt_number((row['high'] - row['low']) / 2)}"
        wide.setdefault(tuple(row[k] for k in keys), {})[row["epoch"]] = cell
    epochs = sorted({row["epoch"] for row in rows})
    print_table(title, columns + [str(e) for e in epochs],
                [[*map(str, key), *[series.get(e, "—") for e in epochs]] for key, series in wide.items()])


def print_posthoc(tables: dict[str, list[dict]]) -> None:
    """Barrier numbers with their curves drawn, and criticality as a module × α table."""
    if tables.get("barrier"):
        names = ("held_out_loss", "held_out_error", "train_loss", "train_error")
        print_table("Loss barrier: max over λ of the value above the line between the endpoints",
                    ["run", "A", "B", *[n.replace("_", " ") for n in names]],
                    [[r["run"], str(r["A"]), str(r["B"]), *[fmt_number(r.get(f"barrier_{n}")) for n in names]]
                     for r in tables["barrier"]])
        curves: dict[tuple, list[dict]] = {}
        for row in tables["barrier_curve"]:
            curves.setdefault((row["run"], row["A"], row["B"]), []).append(row)
        for (run, a, b), rows in curves.items():
            out.print(curve_text(visible(f"{run}: A = {a} → B = {b}"), [r["lambda"] for r in rows],
                                 {n.replace("_", " "): [r[n] for r in rows] for n in names}, "λ"))
    if tables.get("criticality"):
        from ftdyn_tui.model import heatmap_text

        grid: dict[str, dict[str, dict[float, float]]] = {}
        for row in tables["criticality_curve"]:
            grid.setdefault(row["run"], {}).setdefault(row["module"], {})[row["alpha"]] = row["train_error"]
        for run, modules in grid.items():
            alphas = sorted({a for values in modules.values() for a in values})
            matrix = [[values.get(a, float("nan")) for a in alphas] for values in modules.values()]
            out.print(heatmap_text(list(modules), [f"{a:.2g}" for a in alphas], matrix, width=min(out.width, 100),
                                   title=f"{visible(run)}: train error after rewinding one module to (1 − α)·θ⁰ + α·θᵀ "
                                         f"(columns: α)", unit="train error"))
        print_table("Module criticality", ["run", "module", "smallest α within ε", "ε", "μ", "‖θᵀ − θ⁰‖"],
                    [[r["run"], r["module"], fmt_number(r["alpha_min"], 2), str(r["epsilon"]), fmt_number(r["mu"], 3),
                      fmt_number(r["drift"], 3)] for r in tables["criticality"]])
    if tables.get("umap"):
        print_umap(tables["umap"])
    if tables.get("invariance"):
        print_invariance(tables["invariance"], tables.get("invariance_inversion", []))


def print_invariance(rows: list[dict], inversions: list[dict]) -> None:
    """Per run and epoch: STIR(tuned j | source i) as a heatmap, its diagonal beside CKA; the inversions' errors."""
    from ftdyn_tui.model import heatmap_text

    grids: dict[tuple, list[dict]] = {}
    for row in rows:
        grids.setdefault((row["run"], row["epoch"]), []).append(row)
    for (run, epoch), cells in grids.items():
        sources = list(dict.fromkeys(r["source_layer"] for r in cells))
        tuned = list(dict.fromkeys(r["tuned_layer"] for r in cells))
        value = {(r["source_layer"], r["tuned_layer"]): r["stir_tuned_given_source"] for r in cells}
        matrix = [[value.get((a, b)) if value.get((a, b)) is not None else float("nan") for b in tuned] for a in sources]
        out.print(heatmap_text(sources, tuned, matrix, width=min(out.width, 100),
                               title=f"{visible(run)} @ epoch {epoch}: STIR(tuned layer j | source layer i) — rows i "
                                     f"(inverted through the source), columns j", unit="STIR"))
        print_table(f"{run} @ epoch {epoch}: each layer with itself",
                    ["layer", "STIR(tuned | source)", "STIR(source | tuned)", "CKA"],
                    [[r["source_layer"], fmt_number(r["stir_tuned_given_source"]),
                      fmt_number(r["stir_source_given_tuned"]), fmt_number(r["cka"])]
                     for r in cells if r["source_layer"] == r["tuned_layer"]])
    if inversions:
        print_table("Inversions through the source: relative error ‖f(x′) − f(x)‖ / ‖f(x)‖ of the best iterate",
                    ["run", "layer", "median", "max", "seconds (— reused)"],
                    [[r["run"], r["layer"], fmt_number(r["median_error"]), fmt_number(r["max_error"]),
                      fmt_number(r["seconds"], 1)] for r in inversions])


def print_umap(rows: list[dict]) -> None:
    print_table("UMAP fitted on the source: images' median move (× the source map's RMS radius; UMAP's own "
                "placement noise beside it) and the share whose 5 nearest neighbours have their class, on the map "
                "and in the features",
                ["run", "layer", "features", "epoch", "move", "UMAP noise", "neighbours (map)", "neighbours (features)"],
                [[r["run"], r["layer"], r["features"], str(r["epoch"]), fmt_number(r.get("shift")),
                  fmt_number(r.get("shift_floor")), fmt_number(r.get("neighbours_map")),
                  fmt_number(r.get("neighbours_features"))] for r in rows])


def curve_text(title: str, xs: list[float], series: dict[str, list[float]], x_label: str,
               width: int = 78, height: int = 16):
    """A small terminal plot (plotext) of a few curves over one axis."""
    import plotext as plt
    from rich.text import Text

    plt.clear_figure()
    plt.plotsize(width, height)
    plt.theme("clear")
    from ftdyn_tui.model import CURVE_COLOURS

    for (name, ys), colour in zip(series.items(), CURVE_COLOURS):
        points = [(x, y) for x, y in zip(xs, ys) if y is not None]
        if points:
            plt.plot([p[0] for p in points], [p[1] for p in points], label=name, marker="braille", color=colour)
    plt.title(title)
    plt.xlabel(x_label)
    return Text.from_ansi(plt.build())
