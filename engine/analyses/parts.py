"""The analysis parts ftdyn knows, found by name: what `--analyses` selects and the post-hoc commands run.

Epoch parts are found, not listed: every class in a module of this package with ``when = "epoch"``
is one (with ``name``, ``summary``, ``default`` and a ``build(context)`` class method taking the
:class:`PartContext`), so a new analysis is one new file. They run and are listed in name order.
Post-hoc parts run afterwards from a run's checkpoints, each by its own command (`ftdyn transfer …`,
`ftdyn umap`, `ftdyn invariance`); their code lives in :mod:`engine.posthoc`, outside this package,
because discovery imports every module here and a post-hoc command imports the run's settings,
which ask this module for their defaults.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from engine.errors import FtdynError

# Post-hoc analyses that --analyses may be asked for by mistake: name → the command that computes it.
# Shared invariance is both: its epoch part (STIR per layer, `--analyses invariance`) is found like any
# other, and `ftdyn invariance` computes the full matrices afterwards (engine.posthoc.invariance).
POSTHOC_PARTS = {
    "barrier": "ftdyn transfer barrier",  # loss and error along the line between two models, and the barrier
    "criticality": "ftdyn transfer criticality",  # rewinding one block group at a time
    "umap": "ftdyn umap",  # a layer's probe features on one UMAP fitted on the source
}


@dataclass(frozen=True)
class PartContext:
    """What an epoch part may build itself from."""

    source: Any  # the frozen source model (θ⁰)
    groups: dict[str, list[str]]  # block groups → parameter names (ftdyn layers MODEL)
    head: str  # the new head's module name
    layer_names: list[str]  # the hooked layers, early → deep
    measures: list = field(default_factory=list)  # metric@view (engine.capture.Measure)
    precision: str | None = None
    class_token_layers: tuple[str, ...] = ()
    intervals: Any = None  # engine.intervals.IntervalSettings, or None when intervals are off
    # for parts that make their own passes over the probe images (shared invariance)
    probe: Any = None  # the probe dataset: (normalised image, label) pairs
    run_dir: Any = None  # where such a part caches what it computed once (RUN/invariance/)
    device: Any = None
    inversion: Any = None  # InversionSettings fields (engine.analyses.invariance): steps, images, seed
    on_event: Any = None
    shuffle_blocks: str | None = None  # the run's block shuffle (--shuffle-blocks)
    # a run of several processes (engine.distributed): this one sees the probe images from first_image on
    processes: Any = None
    first_image: int = 0


@cache
def epoch_parts() -> dict[str, type]:
    """name → class of every epoch part in this package, in name order."""
    import engine.analyses as package

    found = {}
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for value in vars(module).values():
            if isinstance(value, type) and value.__module__ == module.__name__ and getattr(value, "when", None) == "epoch":
                found[value.name] = value
    return dict(sorted(found.items()))


def default_epoch_parts() -> list[str]:
    return [name for name, part in epoch_parts().items() if part.default]


def parse_analyses(names: list[str] | None) -> list[str]:
    """``--analyses`` → the epoch parts, in name order; unknown names get the list."""
    if not names:
        return default_epoch_parts()
    known = epoch_parts()
    for name in names:
        if name in POSTHOC_PARTS:
            raise FtdynError(f"'{name}' runs after training, from checkpoints: use `{POSTHOC_PARTS[name]}` "
                             f"(--analyses takes {', '.join(known)})")
        if name not in known:
            raise FtdynError(f"unknown analysis '{name}'; --analyses takes {', '.join(known)}")
    return [name for name in known if name in names]


def build_epoch_parts(names: list[str], context: PartContext) -> list:
    """The part objects for ``names`` (see :mod:`engine.analyses` for their protocol)."""
    return [epoch_parts()[name].build(context) for name in names]
