"""UMAPs of a layer's probe features (RUN/analyses/umap-*.json, display "scatter") as the screens
place them — no Textual, no torch here.
"""

from __future__ import annotations

from typing import Any

from engine.untrusted import visible
from engine.analyses import epoch_points, scatter_class, scatter_point
from engine.colours import RUN_PALETTE
from engine.results import shown_tables, shown_value

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
