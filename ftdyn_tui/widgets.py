"""Textual and plotext drawing the screens share: run-directory text as widget content, the image widget
for each --images mode (and why a terminal may leave images blank), a UMAP drawn on a plotext plot.
"""

from __future__ import annotations

import os

from rich.text import Text
from textual_plotext import PlotextPlot

from engine.colours import RUN_PALETTE
from engine.untrusted import visible
from ftdyn_tui.maps import MAP_KEY_CLASSES, map_class_order, map_limits, map_points
from ftdyn_tui.picture import HalfcellPicture

IMAGE_MODES = ("halfcell", "sixel", "kitty", "auto")


def plain(value: object, style: str = "") -> Text:
    """A string from a run directory as a widget's content: never markup, control characters visible."""
    return Text(visible(value), style=style)


def graphics_note(mode: str) -> str | None:
    """Why images may stay blank: the terminal did not answer textual-image's query for the protocol
    asked for (sixel or kitty) — tmux without passthrough, a terminal without it. None where it did."""
    from textual_image import renderable

    wanted = {"sixel": renderable.SixelImage, "kitty": renderable.TGPImage}.get(mode)
    if wanted is None or not renderable.is_tty or renderable.Image is wanted:
        return None
    tmux = " (inside tmux: `set -g allow-passthrough on`, then reattach)" if os.environ.get("TMUX") else ""
    return (f"this terminal did not answer for {mode} graphics{tmux}: images may stay blank; "
            f"--images halfcell works in any terminal")


def image_widget_class(mode: str):
    """The image widget for ``mode``: our half-block pictures, or textual-image's sixel and kitty
    widgets. textual-image asks the terminal about its graphics support when imported, so the CLI
    imports it before the app starts (see ``ftdyn tui``), and only for those modes."""
    if mode == "halfcell":
        return HalfcellPicture
    from textual_image import widget

    return {"sixel": widget.SixelImage, "kitty": widget.TGPImage, "auto": widget.Image}[mode]


def draw_map(plot: PlotextPlot, result: dict, epoch: int) -> None:
    """A UMAP result as two panels on the same axes: the source (what the map was fitted on) and
    ``epoch`` placed on it, one colour per class (a key where there are few enough classes)."""
    plt = plot.plt
    plt.clear_data()
    plt.clear_figure()
    plt.subplots(1, 2)
    (x_low, x_high), (y_low, y_high) = map_limits(result)
    classes = map_class_order(result)  # colours follow the run's classes, as in `ftdyn figures`
    for column, shown in ((1, 0), (2, epoch)):
        panel = plt.subplot(1, column)  # the figure's own methods would act on every panel
        by_class = map_points(result, shown)
        for name, (xs, ys) in sorted(by_class.items()):
            panel.scatter(xs, ys, marker="braille", color=RUN_PALETTE[classes.index(name) % len(RUN_PALETTE)],
                          label=name if len(classes) <= MAP_KEY_CLASSES and column == 2 else None)
        panel.xlim(x_low, x_high)
        panel.ylim(y_low, y_high)
        panel.title("source (epoch 0)" if shown == 0 else f"epoch {shown}")
    plot.refresh()
