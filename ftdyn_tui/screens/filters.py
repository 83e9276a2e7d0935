"""The filters screen: a layer's filters ranked by how far they moved, with their images (source beside the
chosen epoch), or the layer's UMAP."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, OptionList, Static
from textual_plotext import PlotextPlot

from engine.numbers import fmt_number
from engine.untrusted import MESSAGE_LIMIT, visible
from ftdyn_tui.filters import (NO_RANKING, filter_images, filter_rows, for_terminal, image_display, load_picture,
                               path_lines)
from ftdyn_tui.maps import layer_maps, map_caption, map_epochs, stepped
from ftdyn_tui.widgets import draw_map, graphics_note, image_widget_class, plain
from ftdyn_tui.workspace import TrackedRun


class FilterScreen(Screen):
    AUTO_FOCUS = "#filters"
    BINDINGS = [
        Binding("left", "epoch(-1)", "Epoch −"),
        Binding("right", "epoch(1)", "Epoch +"),
        Binding("c", "next_class", "Class"),
        Binding("k", "next_kind", "Class/sample"),
        Binding("p", "write_path", "Path"),
        Binding("u", "toggle_map", "UMAP"),
        Binding("escape", "app.pop_screen", "Back"),
    ]
    DEFAULT_CSS = """
    FilterScreen #map { height: 1fr; }
    FilterScreen #pickers { width: 36; }
    FilterScreen #layers { height: 9; }
    FilterScreen #images Horizontal { height: 1fr; }
    FilterScreen .picture { width: 1fr; height: auto; max-height: 100%; }
    FilterScreen #caption { height: auto; max-height: 6; }
    """

    def __init__(self, run: TrackedRun):
        super().__init__()
        self.tracked = run
        self.current_layer = run.layers[0] if run.layers else None
        self.filter_index: int | None = None
        self.kind = "class"
        self.label_index = 0
        self.epoch: int | None = None
        self.ranking_note: str | None = None
        self.map_shown = False  # `u`: the layer's UMAP instead of the filter's images
        self.maps: list[dict] = []  # the current layer's UMAPs, newest first
        self.map_epoch: int | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            with Vertical(id="pickers"):
                yield OptionList(*[plain(layer) for layer in self.tracked.layers], id="layers")
                yield DataTable(id="filters", cursor_type="row")
            with Vertical(id="images"):
                yield Static(id="caption")
                with Horizontal():
                    image_class = image_widget_class(self.app.images)
                    yield image_class(id="source", classes="picture")
                    yield image_class(id="current", classes="picture")
                yield PlotextPlot(id="map")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#map").display = False
        self.query_one("#filters", DataTable).add_columns("filter", "distance", "chosen", "img")
        self.fill_filters()
        note = graphics_note(self.app.images)
        if note:
            self.notify(note, severity="warning", timeout=12)

    def runs_changed(self) -> None:
        self.fill_filters(keep=True)

    @on(OptionList.OptionHighlighted, "#layers")
    def layer_chosen(self, event: OptionList.OptionHighlighted) -> None:
        self.current_layer = self.tracked.layers[event.option_index]
        self.fill_filters()

    def action_toggle_map(self) -> None:
        if not self.map_shown and not self.maps:
            self.notify(f"No UMAP of {visible(self.current_layer, 60)} yet: `ftdyn umap {visible(self.tracked.path, 80)} "
                        f"--layer {visible(self.current_layer, 60)}` computes it from the run's checkpoints.",
                        severity="warning", markup=False, timeout=10)
            return
        self.map_shown = not self.map_shown
        self.query_one("#map").display = self.map_shown
        self.query_one("#images Horizontal").display = not self.map_shown
        self.show_images()

    def show_map(self) -> None:
        """The current layer's newest UMAP: source beside the chosen epoch (the last by default)."""
        caption = self.query_one("#caption", Static)
        if not self.maps:
            self.query_one("#map").display = False
            caption.update(plain(f"No UMAP of {self.current_layer} yet: `ftdyn umap RUN --layer "
                                 f"{self.current_layer}` computes it from the run's checkpoints."))
            return
        result = self.maps[0]
        try:
            epochs = map_epochs(result)
            if self.map_epoch not in epochs:
                self.map_epoch = epochs[-1]
            self.query_one("#map").display = True
            draw_map(self.query_one("#map", PlotextPlot), result, self.map_epoch)
            lines = [map_caption(result, self.map_epoch),
                     f"left: source (epoch 0)   right: epoch {self.map_epoch}  [{epochs[0]}…{epochs[-1]}]  "
                     f"← → epoch, u images"]
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            self.query_one("#map").display = False
            lines = [f"{result.get('file', 'the map')} cannot be drawn ({type(exc).__name__})"]
        caption.update(Text("\n").join(plain(line) for line in lines))

    def fill_filters(self, keep: bool = False) -> None:
        table = self.query_one("#filters", DataTable)
        cursor = table.cursor_row
        table.clear()
        rows, dead, measure = filter_rows(self.tracked, self.current_layer) if self.current_layer else ([], None, None)
        # read here, when the layer or the run changed, not on every key
        self.maps = layer_maps(self.tracked.results, self.current_layer) if self.current_layer else []
        for row in rows:
            table.add_row(str(row.index), fmt_number(row.distance), plain(row.chosen_by or ""), str(row.images),
                          key=str(row.index))
        table.border_title = plain(f"{self.current_layer} · {measure or 'not ranked'} · "
                                   f"dead {dead if dead is not None else '?'}")
        table.border_subtitle = None if measure else plain("no per-filter measure: see the caption")
        self.ranking_note = None if measure else NO_RANKING
        if rows:
            table.move_cursor(row=min(cursor, len(rows) - 1) if keep else 0)
            self.filter_index = int(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        else:
            self.filter_index = None
        self.show_images()

    @on(DataTable.RowHighlighted, "#filters")
    def filter_chosen(self, event: DataTable.RowHighlighted) -> None:
        self.filter_index = int(event.row_key.value)
        self.show_images()

    def shown(self) -> tuple[dict[int, Path], str | None]:
        """{epoch: path} of the image in view (kind, class or sample cycled by `c`) and its label."""
        images = self.images_of_kind()
        if not images:
            return {}, None
        label = sorted(images)[self.label_index % len(images)]
        return images[label], label

    def show_images(self) -> None:
        if self.map_shown:
            self.show_map()
            return
        by_epoch, label = self.shown()
        caption = self.query_one("#caption", Static)
        source, current = self.query_one("#source"), self.query_one("#current")
        if not by_epoch:
            source.image = current.image = None
            self.shown_paths = {"source": None, "current": None}
            caption.update(self.caption_text([
                "No images for this filter. Runs draw them with --vis (the default); `ftdyn vis RUN --layer "
                f"{self.current_layer} --filter {self.filter_index}` draws any filter from saved checkpoints."]))
            return
        epochs = sorted(by_epoch)
        if self.epoch not in epochs:
            self.epoch = epochs[-1]
        self.shown_paths = {"source": by_epoch[epochs[0]] if epochs[0] == 0 else None, "current": by_epoch[self.epoch]}
        pictures = [load_picture(path) if path else (None, None) for path in self.shown_paths.values()]
        colours = self.app.console.color_system
        source.image, current.image = (picture and for_terminal(picture, colours) for picture, _ in pictures)
        problems = [problem for _, problem in pictures if problem]
        display = image_display(self.tracked, self.current_layer, self.filter_index, self.kind)
        lines = [f"filter {self.filter_index} · {self.kind}-based · {label}" + (f" · {display}" if display else ""),
                 f"left: source (epoch 0)   right: epoch {self.epoch}  [{epochs[0]}…{epochs[-1]}]"] + problems[:1]
        caption.update(self.caption_text(lines))

    def caption_text(self, lines: list[str]) -> Text:
        """The caption's lines as plain text, after why the filters are not ranked where they are not."""
        return Text("\n").join(plain(line) for line in ([self.ranking_note] if self.ranking_note else []) + lines)

    def action_epoch(self, step: int) -> None:
        if self.map_shown:
            self.step_map(step)
            return
        by_epoch, _ = self.shown()
        if not by_epoch:
            self.notify("No images of this filter to step through.", severity="warning")
            return
        epochs = sorted(by_epoch)
        position = epochs.index(self.epoch) if self.epoch in epochs else len(epochs) - 1
        target = max(0, min(len(epochs) - 1, position + step))
        if target == position:
            self.notify(f"epoch {self.epoch} is the {'first' if step < 0 else 'last'} one drawn "
                        f"(drawn: {', '.join(map(str, epochs))})")
            return
        self.epoch = epochs[target]
        self.show_images()

    def step_map(self, step: int) -> None:
        self.map_epoch = stepped(map_epochs(self.maps[0]) if self.maps else [], self.map_epoch, step)
        self.show_map()

    def action_next_class(self) -> None:
        labels = self.images_of_kind()
        if len(labels) < 2:
            self.notify(f"this filter has {'one' if labels else 'no'} {self.kind}-based image; "
                        f"`k` switches between class- and sample-based")
            return
        self.label_index += 1
        self.show_images()

    def images_of_kind(self) -> dict[str, dict[int, Path]]:
        """label → {epoch: path} of the filter's images of the kind in view (one pass over the index)."""
        if self.filter_index is None or self.current_layer is None:
            return {}
        found = filter_images(self.tracked, self.current_layer, self.filter_index)
        return {label: by_epoch for (kind, label), by_epoch in found.items() if kind == self.kind}

    def action_next_kind(self) -> None:
        self.kind = "sample" if self.kind == "class" else "class"
        self.label_index = 0
        self.show_images()

    def action_write_path(self) -> None:
        by_epoch, _ = self.shown()
        if not by_epoch:
            self.notify("No image shown.", severity="warning")
            return
        path = str(by_epoch[self.epoch].resolve())
        shown = visible(path, MESSAGE_LIMIT)
        self.app.copy_to_clipboard(shown)  # OSC 52: reaches the local clipboard over SSH where the terminal allows
        self.notify(f"{path_lines(shown)}\n(copied to the clipboard where the terminal allows; scp it off the box)",
                    markup=False)
        self.last_written_path = path
