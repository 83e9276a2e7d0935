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


def print_tables(tables: dict[str, list[dict]], posthoc: list) -> None:
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
    print_posthoc(posthoc)


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


def print_posthoc(shown: list) -> None:
    """Post-hoc results as their declarations say (engine.results): tables of the same name as one
    terminal table over every run, curves as plots, matrices as heatmaps, each under its result."""
    from engine.results import shown_value
    from ftdyn_tui.render import heatmap_text

    printed: set[str] = set()
    for table in shown:
        heading = visible(f"{table.run}{''.join(f' · {k} {v}' for k, v in table.keys.items())}: {table.title}", 300)
        if table.kind == "curve" and table.rows:
            x = table.axes[0]
            out.print(curve_text(heading, [row[x] for row in table.rows],
                                 {table.header(c): [row.get(c) for row in table.rows] for c in table.drawn},
                                 table.header(x)))
        elif table.kind == "matrix" and table.rows:
            row_axis, column_axis = table.axes
            rows = list(dict.fromkeys(r[row_axis] for r in table.rows))
            columns = list(dict.fromkeys(r[column_axis] for r in table.rows))
            value = {(r[row_axis], r[column_axis]): r[table.drawn[0]] for r in table.rows}
            matrix = [[float("nan") if value.get((a, b)) is None else value[(a, b)] for b in columns] for a in rows]
            out.print(heatmap_text([str(r) for r in rows], [column_label(c) for c in columns], matrix,
                                   width=min(out.width, 100), title=heading, unit=table.header(table.drawn[0])))
        elif table.kind != "points" and table.name not in printed:
            printed.add(table.name)
            same = [t for t in shown if t.name == table.name]
            keys = list(dict.fromkeys(k for t in same for k in t.keys))
            names = ["run", *keys, *table.axes, *table.columns]
            print_table(visible(table.title, 300), [table.header(n) for n in names],
                        [[shown_value(row.get(n)) for n in names] for t in same for row in t.rows])


def column_label(value) -> str:
    return f"{value:.2g}" if isinstance(value, float) else str(value)


def curve_text(title: str, xs: list[float], series: dict[str, list[float]], x_label: str,
               width: int = 78, height: int = 16):
    """A small terminal plot (plotext) of a few curves over one axis."""
    import plotext as plt
    from rich.text import Text

    plt.clear_figure()
    plt.plotsize(width, height)
    plt.theme("clear")
    from ftdyn_tui.render import CURVE_COLOURS

    for (name, ys), colour in zip(series.items(), CURVE_COLOURS):
        points = [(x, y) for x, y in zip(xs, ys) if y is not None]
        if points:
            plt.plot([p[0] for p in points], [p[1] for p in points], label=name, marker="braille", color=colour)
    plt.title(title)
    plt.xlabel(x_label)
    return Text.from_ansi(plt.build())
