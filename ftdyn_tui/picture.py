"""Pictures in half-block cells, the app's default way of drawing images.

Each terminal cell shows two pixels, one above the other: ``▀`` in the upper pixel's colour on the
lower pixel's colour, so a cell of the usual 1:2 shape holds two roughly square pixels. It needs
nothing from the terminal but colour — no graphics protocol and no query at start-up, which over SSH
costs a round trip per question — so it works in tmux and any plain SSH session. Sixel and kitty
graphics, which do need the query, come from textual-image (`--images sixel|kitty|auto`).
"""

from __future__ import annotations

import math

from PIL import Image
from rich.color import Color
from rich.console import Console, ConsoleOptions, RenderResult
from rich.segment import Segment
from rich.style import Style
from textual.reactive import reactive
from textual.widget import Widget


def cell_size(image_size: tuple[int, int], columns: int, rows: int | None) -> tuple[int, int]:
    """The (columns, rows) an image of ``image_size`` pixels takes at most ``columns`` wide and ``rows``
    high (None: any height), keeping its shape: a cell is one pixel wide and two high."""
    width, height = image_size
    fit = min(columns / width, (2 * rows) / height if rows else math.inf)
    high = math.ceil(height * fit / 2 - 1e-9)  # the tolerance: 23 · (94/23) / 2 must give 47, not 48
    return max(1, min(columns, round(width * fit))), max(1, min(rows, high) if rows else high)


class HalfcellPictureRenderable:
    """A Rich renderable of a PIL image, scaled to fit the space it is given, in half-block cells."""

    def __init__(self, image: Image.Image):
        self.image = image.convert("RGB")

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        columns, rows = cell_size(self.image.size, options.max_width, options.height or options.max_height)
        pixels = self.image.resize((columns, 2 * rows), Image.Resampling.BOX).load()
        for row in range(rows):
            for column in range(columns):
                top, bottom = pixels[column, 2 * row], pixels[column, 2 * row + 1]
                yield Segment("▀", Style(color=Color.from_rgb(*top), bgcolor=Color.from_rgb(*bottom)))
            yield Segment.line()


class HalfcellPicture(Widget):
    """An image widget: as wide as its container allows, as high as the image's shape asks (within
    ``max-height``); set ``image`` to a PIL image, or None for nothing."""

    DEFAULT_CSS = "HalfcellPicture { height: auto; }"
    image: reactive[Image.Image | None] = reactive(None, layout=True)

    def get_content_height(self, container, viewport, width: int) -> int:
        return cell_size(self.image.size, width, None)[1] if self.image is not None else 0

    def render(self):
        return HalfcellPictureRenderable(self.image) if self.image is not None else ""
