"""Post-hoc results shown from their declaration alone.

A post-hoc result (``RUN/analyses/<tag>.json``) carries its data under its display's keys —
``curve``: ``x``, ``x_label``, ``series`` {name: [y, …]}; ``matrix``: ``rows``, ``columns``, ``values``
(row × column), ``row_label``, ``column_label``, ``value_label``; ``scatter``: ``points`` {epoch: [[x, y],
…]}, ``labels``, ``classes`` — and a declaration of how it is read, ``show``::

    {"label":  "barrier: run@3 → run@5",            # one line naming it in a list
     "keys":   {"A": "run@3", "B": "run@5"},          # columns that tell its rows from another result's
     "tables": [table, …]}                            # what it says, in order

Each table is ``{"name", "kind", "title", "columns": [...], "labels": {column: header}}`` plus what its
kind needs; a row is always ``run``, the keys, then the kind's axes, then ``columns``:

========== ================================================================ ===========================
kind        rows                                                            in a terminal
========== ================================================================ ===========================
numbers     one: ``values`` {column: value}                                 a table row
rows        one per entry of ``values`` {row: {column: value}}; ``row``     table rows
            names the row column
epochs      one per entry of the result's ``stats`` {epoch: {column: …}};  table rows
            ``values`` holds columns that are the same at every epoch
curve       one per x: ``x`` names the x column; the series are the         a plot of the series
            columns, ``also`` {column: result key} adds per-x lists
matrix      one per cell: ``row``, ``column``, ``value`` name the columns;  a heatmap of ``value``
            ``also`` {column: result key} adds cells of matrices as large
diagonal    the cells of a matrix whose row and column are the same name,   table rows
            as ``matrix``; ``row`` names the one label column
points      one per placed point (scatter): epoch, image, class, x, y       —
========== ================================================================ ===========================

A table with ``"detail": true`` (every point of a map) is left out of ``ftdyn report`` and given only
by the command that wrote it. ``ftdyn report`` (JSON, CSV, terminal), ``ftdyn figures`` and the app
read nothing else, so a new post-hoc analysis writes its data and its declaration and needs no code
here or in any screen. Files written before declarations existed are read through the declaration
their analysis writes now (:mod:`engine.posthoc.shown`).

A result file is someone else's: every value is taken only where it has the declared shape
(a number, a list of numbers), and text is made visible before it is shown (:func:`visible`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.analyses import epoch_points, scatter_class, scatter_point
from engine.numbers import fmt_number
from engine.untrusted import number_or_none, visible

TABLE_KINDS = ("numbers", "rows", "epochs", "curve", "matrix", "diagonal", "points")


@dataclass
class ShownTable:
    """One table of one result: its rows and how a terminal shows them."""

    name: str
    kind: str
    title: str
    run: str
    keys: dict[str, Any]
    axes: list[str]  # the columns that place a row: the row label, the epoch, x, …
    columns: list[str]  # the values
    labels: dict[str, str] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    drawn: list[str] = field(default_factory=list)  # what a terminal draws: a curve's series, a matrix's value

    def header(self, column: str) -> str:
        return visible(self.labels.get(column) or column.replace("_", " "), 60)


def declaration(result: dict[str, Any]) -> dict[str, Any]:
    """The result's ``show``, or for a file written before declarations existed, the one its analysis
    writes now; an empty declaration where neither is there (the display is still drawn)."""
    show = result.get("show")
    if isinstance(show, dict):
        return show
    from engine.posthoc.shown import declared_before

    return declared_before(result) or {}


def result_label(result: dict[str, Any]) -> str:
    """One line naming a result in a list."""
    if result.get("problem"):
        return visible(f"{result.get('file')}: {result['problem']}")
    label = declaration(result).get("label")
    return visible(label if isinstance(label, str) else str(result.get("title") or result.get("name")), 200)


def shown_tables(run: str, result: dict[str, Any], with_detail: bool = False) -> list[ShownTable]:
    """The tables a result declares, filled from the file; a table that is not declared as this module
    reads it is left out (a damaged or newer file gives what it can, never an error)."""
    show = declaration(result)
    keys = show.get("keys") if isinstance(show.get("keys"), dict) else {}
    keys = {str(k): plain(v) for k, v in keys.items()}
    found = []
    for spec in show.get("tables") or []:
        if not isinstance(spec, dict) or spec.get("kind") not in TABLE_KINDS or not isinstance(spec.get("name"), str):
            continue
        if spec.get("detail") and not with_detail:
            continue
        table = ShownTable(name=spec["name"], kind=spec["kind"], run=run, keys=keys,
                           title=str(spec.get("title") or show.get("label") or result.get("title") or spec["name"]),
                           axes=[], columns=[str(c) for c in spec.get("columns") or [] if isinstance(c, str)],
                           labels={str(k): str(v) for k, v in (spec.get("labels") or {}).items()}
                           if isinstance(spec.get("labels"), dict) else {})
        FILL[spec["kind"]](table, spec, result)
        table.rows = [{"run": run, **keys, **row} for row in table.rows]
        found.append(table)
    return found


def tables_by_name(shown: list[ShownTable]) -> dict[str, list[dict[str, Any]]]:
    """Rows of every shown table, merged by table name (what JSON and CSV give)."""
    tables: dict[str, list[dict[str, Any]]] = {}
    for table in shown:
        tables.setdefault(table.name, []).extend(table.rows)
    return tables


def result_lines(result: dict[str, Any]) -> list[str]:
    """What a result says in numbers, a line each — every table a terminal shows as rows — then its
    settings and notes (the app's results screen)."""
    lines = []
    for table in shown_tables("", result):
        if table.kind in ("curve", "matrix", "points"):
            continue
        if table.kind != "numbers":
            lines.append(f"{visible(table.title, 200)}:")
        for row in table.rows:
            placed = " ".join(f"epoch {row.get(axis)}" if axis == "epoch" else visible(str(row.get(axis)), 40)
                              for axis in table.axes)
            values = ", ".join(f"{table.header(c)} {shown_value(row.get(c))}" for c in table.columns if c in row)
            lines.append(f"  {placed}: {values}" if placed else values)
    settings = result.get("settings")
    if isinstance(settings, dict) and settings:
        lines.append("settings: " + ", ".join(f"{k} {v}" for k, v in settings.items() if not isinstance(v, (list, dict))))
    notes = result.get("notes")
    lines += [f"note: {note}" for note in notes if isinstance(note, str)] if isinstance(notes, list) else []
    return [visible(line, 300) for line in lines]


def shown_value(value: Any) -> str:
    """A cell of a result as one line: numbers to three decimals (:func:`fmt_number`), '—' for none,
    text made visible."""
    if isinstance(value, float):
        return fmt_number(value)
    return "—" if value is None else visible(str(value), 200)


# ------------------------------------------------------------------------------------------------
# How each kind of table is filled from the file


def plain(value: Any) -> Any:
    """A cell as a file may give it: numbers (finite), text, booleans and None; anything else as text."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2 ** 53 else None
    if isinstance(value, float):
        return number_or_none(value)
    return visible(str(value), 200)


def listed(value: Any) -> list:
    return value if isinstance(value, list) else []


def fill_numbers(table: ShownTable, spec: dict[str, Any], result: dict[str, Any]) -> None:
    values = spec.get("values") if isinstance(spec.get("values"), dict) else {}
    table.columns = table.columns or [str(k) for k in values]
    table.rows = [{c: plain(values.get(c)) for c in table.columns}]


def fill_rows(table: ShownTable, spec: dict[str, Any], result: dict[str, Any]) -> None:
    values = spec.get("values") if isinstance(spec.get("values"), dict) else {}
    axis = str(spec.get("row") or "row")
    table.axes = [axis]
    entries = {str(k): v for k, v in values.items() if isinstance(v, dict)}
    table.columns = table.columns or list(dict.fromkeys(str(c) for v in entries.values() for c in v))
    table.rows = [{axis: visible(row, 200), **{c: plain(v.get(c)) for c in table.columns}} for row, v in entries.items()]


def fill_epochs(table: ShownTable, spec: dict[str, Any], result: dict[str, Any]) -> None:
    stats = epoch_points(result, "stats", dict)
    fixed = spec.get("values") if isinstance(spec.get("values"), dict) else {}
    table.axes = ["epoch"]
    for epoch in sorted(epoch_points(result) or stats):  # the epochs a map places, else those with numbers
        found = stats.get(epoch, {})
        table.rows.append({"epoch": epoch, **{c: plain(found[c] if c in found else fixed.get(c)) for c in table.columns}})


def fill_curve(table: ShownTable, spec: dict[str, Any], result: dict[str, Any]) -> None:
    axis = str(spec.get("x") or "x")
    series = result.get("series") if isinstance(result.get("series"), dict) else {}
    also = spec.get("also") if isinstance(spec.get("also"), dict) else {}
    table.axes = [axis]
    table.drawn = [str(name) for name in series]
    table.columns = table.drawn + [str(c) for c in also]
    for i, x in enumerate(listed(result.get("x"))):
        row = {axis: plain(x)}
        for name, ys in series.items():
            row[str(name)] = plain(listed(ys)[i]) if i < len(listed(ys)) else None
        for column, key in also.items():
            values = listed(result.get(key))
            row[str(column)] = plain(values[i]) if i < len(values) else None
        table.rows.append(row)


def matrix_cells(table: ShownTable, spec: dict[str, Any], result: dict[str, Any], diagonal: bool) -> None:
    row_axis, column_axis = str(spec.get("row") or "row"), str(spec.get("column") or "column")
    value = str(spec.get("value") or "value")
    also = spec.get("also") if isinstance(spec.get("also"), dict) else {}
    table.axes = [row_axis] if diagonal else [row_axis, column_axis]
    table.drawn = [value]
    table.columns = [value] + [str(c) for c in also]
    matrices = {value: listed(result.get("values")), **{str(c): listed(result.get(k)) for c, k in also.items()}}
    values = matrices[value]
    rows, columns = listed(result.get("rows")), listed(result.get("columns"))
    for i, row_name in enumerate(rows[:len(values)]):  # only cells the file holds values for
        width = len(values[i]) if isinstance(values[i], list) else 0
        for j, column_name in enumerate(columns[:width]):
            if diagonal and str(row_name) != str(column_name):
                continue
            cells = {name: cell(matrix, i, j) for name, matrix in matrices.items()}
            placed = {row_axis: plain(row_name)} if diagonal else {row_axis: plain(row_name), column_axis: plain(column_name)}
            table.rows.append({**placed, **cells})


def cell(matrix: list, i: int, j: int) -> float | None:
    row = matrix[i] if i < len(matrix) and isinstance(matrix[i], list) else []
    return number_or_none(row[j]) if j < len(row) else None


def fill_points(table: ShownTable, spec: dict[str, Any], result: dict[str, Any]) -> None:
    labels = listed(result.get("labels"))
    table.axes = ["epoch", "image"]
    table.columns = ["class", "x", "y"]
    for epoch, points in sorted(epoch_points(result).items()):
        for image, (point, label) in enumerate(zip(points, labels)):
            xy = scatter_point(point)
            if xy is not None:
                table.rows.append({"epoch": epoch, "image": image, "class": scatter_class(result, label),
                                   "x": xy[0], "y": xy[1]})


FILL = {"numbers": fill_numbers, "rows": fill_rows, "epochs": fill_epochs, "curve": fill_curve,
        "matrix": lambda t, s, r: matrix_cells(t, s, r, diagonal=False),
        "diagonal": lambda t, s, r: matrix_cells(t, s, r, diagonal=True), "points": fill_points}
