"""The filters screen's content, computed from a followed run — no Textual, no torch here.

A layer's filters ranked by how far they moved, the images the run drew of each (only files inside the
run's vis/ folder), and those images read and made fit for the terminal.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from engine.untrusted import RunFormatError, inside, number_or_none, read_plain
from engine.analyses import dig
from ftdyn_tui.workspace import TrackedRun


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
