"""The help screen: every key of every screen."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen


HELP = """\
# ftdyn — keys

| where | key | action |
|---|---|---|
| everywhere | `?` | this help |
| | `ctrl+p` | command palette (every action) |
| | `q` | quit (a run started with `--tui` keeps training) |
| runs | `enter` | curves of the marked runs (or the highlighted one) |
| | `c` | the highlighted run's settings; with two runs marked, the settings in which they differ |
| | `space` | mark a run for overlay |
| | `f` | filters of the highlighted run |
| | `/` | filter the list; `escape` clears |
| | `t` | post-hoc analyses of the highlighted run (loss barrier, criticality, UMAPs; accuracy against block size where runs vary the shuffle) |
| curves | `a` | next analysis (feature distance, parameter drift, …) |
| | `m` / `v` | next metric / next view (drift: relative or absolute / block groups or hooked layers) |
| | `h` | heatmap: rows × epochs, colour = value |
| | `l` | log y (the exact zeros of epoch 0 are left out) |
| | `s` | smoothing 0 → 0.6 → 0.9 |
| | `x` | x axis: epoch or optimiser step |
| | `e` | export the curves as CSV into the run directory |
| | `g` | show or hide the key (under the plot) |
| | `1`…`9` / `0` | hide or show the n-th layer (row) / show all |
| | `[` `]` | move the cursor along the epochs: every curve's value there, under the plot |
| | `y` | side plot: accuracy → loss → learning rate |
| | `f` | filters of the first run |
| | `t` | post-hoc analyses of the first run |
| transfer | `↑` `↓` | choose a result: a barrier's curves, criticality's module × α heatmap or a UMAP |
| | `←` `→` | a UMAP's epoch (source on the left) |
| filters | `←` `→` | epoch (of the images, or of the map) |
| | `c` | next class (or sample image) |
| | `k` | class-based / sample-based |
| | `p` | show the image's path (and copy it) |
| | `u` | the layer's UMAP (`ftdyn umap`): source beside an epoch, instead of the images |
| | `escape` | back |

Runs are re-read every half second; a run whose heartbeat stopped shows as *stalled*.
"""


class HelpScreen(ModalScreen):
    BINDINGS = [Binding("escape", "app.pop_screen", "Close"), Binding("question_mark", "app.pop_screen", "Close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 80; max-width: 100%; height: 90%; border: round $accent; background: $surface; }
    """

    def compose(self) -> ComposeResult:
        from textual.widgets import Markdown  # pulls in pygments: only when help is asked for

        with VerticalScroll():
            yield Markdown(HELP)
