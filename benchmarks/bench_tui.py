"""TUI responsiveness on a large run record (100 epochs, 16 layers, 3 measures).

1. Start-up: wall time from launching `python` to the app's first rendered frame (headless),
   measured from the parent process, so interpreter start-up and every import are included; the
   app as `ftdyn tui` opens it (half-block images: textual-image, and its terminal query, are not
   loaded). Baselines in the same run: a bare `python -c pass`, and a bare Textual app (header, one
   table, footer) to its first frame — the floor no Textual app can beat. Python writes its
   bytecode cache as it does for users (PYTHONDONTWRITEBYTECODE, set on some machines, is cleared
   for these processes; the first of the five runs writes the cache, the median is reported).
2. Redraw: time from a new epoch record landing on disk to the dynamics plot redrawn with it
   (poll + series + plotext build + Textual render of the plot), median over 20 new epochs; and
   to the whole screen updated (the side panel's accuracy plot and tables follow one frame later).

Goals: start-up ≤ 0.5 s, redraw ≤ 50 ms.

    python benchmarks/bench_tui.py
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from run_factory import epoch_record, layer_names, write_fake_run  # noqa: E402

FIRST_FRAME = """
import sys
from ftdyn_tui.app import create_app

async def first_frame(pilot):
    await pilot.pause()
    pilot.app.exit()

create_app([sys.argv[1]]).run(headless=True, size=(120, 40), auto_pilot=first_frame)
"""

BARE_TEXTUAL = """
from textual.app import App
from textual.widgets import DataTable, Footer, Header

class Bare(App):
    def compose(self):
        yield Header()
        yield DataTable()
        yield Footer()

async def first_frame(pilot):
    await pilot.pause()
    pilot.app.exit()

Bare().run(headless=True, size=(120, 40), auto_pilot=first_frame)
"""


def wall_time(args: list[str], repeats: int = 5) -> float:
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True, env=environment)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


async def redraw_times(run_root: Path, writer, epochs: int, layers: list[str]) -> tuple[list[float], list[float]]:
    import textual_image.widget  # noqa: F401

    from ftdyn_tui.app import create_app

    app = create_app([run_root], poll_seconds=3600)  # polled by hand below, to time it exactly
    plot_times, screen_times = [], []
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("enter")
        screen = app.screen
        plot = screen.query_one("#distance")
        rendered = []
        render = plot.render

        def timed_render():
            result = render()
            rendered.append(time.perf_counter())
            return result

        plot.render = timed_render
        for epoch in range(epochs + 1, epochs + 21):
            writer.append_record(epoch_record(epoch, layers, 64))
            start = time.perf_counter()
            assert app.workspace.poll()
            screen.runs_changed()
            await pilot.pause()
            plot_times.append(rendered[-1] - start)
            screen_times.append(time.perf_counter() - start)
    return plot_times, screen_times


def main() -> None:
    epochs, layer_count = 100, 16
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        layers = layer_names(layer_count)
        writer = write_fake_run(root / "big", epochs=epochs, layers=layer_count, filters=64, total=200,
                                state="running", vis=False)
        size = (root / "big" / "records.jsonl").stat().st_size
        floor = wall_time([sys.executable, "-c", "pass"])
        textual_floor = wall_time([sys.executable, "-c", BARE_TEXTUAL])
        startup = wall_time([sys.executable, "-c", FIRST_FRAME, str(root)])
        plot_times, screen_times = asyncio.run(redraw_times(root, writer, epochs, layers))
    print(f"record: {epochs} epochs × {layer_count} layers × 3 measures, {size / 1e6:.1f} MB")
    print(f"start-up to first frame: {startup:.3f} s (goal ≤ 0.5 s); bare python start: {floor:.3f} s; "
          f"a bare Textual app to its first frame: {textual_floor:.3f} s; ratio to the bare Textual app "
          f"{startup / textual_floor:.2f}×")
    print(f"dynamics plot redrawn after a new epoch: median {1000 * statistics.median(plot_times):.1f} ms, "
          f"max {1000 * max(plot_times):.1f} ms over {len(plot_times)} epochs (goal ≤ 50 ms)")
    print(f"whole screen updated (side panel included): median {1000 * statistics.median(screen_times):.1f} ms")


if __name__ == "__main__":
    main()
