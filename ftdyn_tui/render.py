"""Text drawing that needs no Textual (Rich text only), no torch: heatmaps, the curves' key and ticks.

What the screens and the command's tables (``ftdyn_tui/cli/tables.py``) draw alike: a row × column
heatmap as coloured text, with ≈ where a row did not move beyond noise; the curves' key; whole-number
ticks; the colours of a post-hoc result's curves.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np

from engine.untrusted import visible
from engine.analyses import measure_rows
from engine.colours import Colour
from engine.intervals import IntervalSettings
from engine.report import epoch_change
from ftdyn_tui.workspace import TrackedRun

# Colours of the few curves of one post-hoc result (barrier: held-out/train × loss/error).
CURVE_COLOURS = ("blue", "red", "green", "orange", "magenta", "cyan")


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
