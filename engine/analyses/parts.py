"""The analysis parts ftdyn knows, by name: what `--analyses` selects and `ftdyn transfer` runs.

Epoch parts run at the end of every epoch (and every ``--every-steps`` N steps); post-hoc parts
run afterwards from a run's checkpoints, each by its own `ftdyn transfer` command.
"""

from __future__ import annotations

from engine.errors import FtdynError

EPOCH_PARTS = {
    "distance": "feature distance of every hooked layer to the source model (--metrics, --view)",
    "drift": "parameter drift ‖θᵗ − θ⁰‖ per block group, per hooked layer's module and for the backbone",
}
DEFAULT_EPOCH_PARTS = ("distance", "drift")  # both cheap: measured in the closing note of issue 10
POSTHOC_PARTS = {
    "barrier": "loss and error along the line between two models, and the barrier (ftdyn transfer barrier)",
    "criticality": "module criticality: rewinding one block group at a time (ftdyn transfer criticality)",
}


def parse_analyses(names: list[str] | None) -> list[str]:
    """``--analyses`` → the epoch parts, in a fixed order; unknown names get the list."""
    if not names:
        return list(DEFAULT_EPOCH_PARTS)
    for name in names:
        if name in POSTHOC_PARTS:
            raise FtdynError(f"'{name}' runs after training, from checkpoints: use `ftdyn transfer {name}` "
                             f"(--analyses takes {', '.join(EPOCH_PARTS)})")
        if name not in EPOCH_PARTS:
            raise FtdynError(f"unknown analysis '{name}'; --analyses takes {', '.join(EPOCH_PARTS)}")
    return [name for name in EPOCH_PARTS if name in names]


def build_epoch_parts(names: list[str], *, source, groups, head: str, layer_names: list[str], measures,
                      precision: str | None = None, class_token_layers: tuple[str, ...] = ()) -> list:
    """The part objects for ``names`` (see :mod:`engine.analyses` for their protocol)."""
    from engine.analyses.distance import FeatureDistance
    from engine.analyses.drift import ParameterDrift

    makers = {
        "distance": lambda: FeatureDistance(layer_names, measures, precision=precision,
                                            class_token_layers=class_token_layers),
        "drift": lambda: ParameterDrift(source, groups, layer_names, head),
    }
    return [makers[name]() for name in names]
