"""The block-shuffle experiment around a run, as a post-hoc result — no Textual, no torch here.

Post-hoc results are read from RUN/analyses/*.json (:attr:`ftdyn_tui.workspace.TrackedRun.results`);
this one is worked out from the runs followed beside it, for the results screen.
"""

from __future__ import annotations

from typing import Any

from engine.report import INITS, SEED_BARRIERS, transfer_table, unshuffled_row
from ftdyn_tui.workspace import TrackedRun


def transfer_result(run: "TrackedRun", peers: list["TrackedRun"]) -> dict[str, Any] | None:
    """The block-shuffle experiment around ``run`` as a post-hoc curve: final held-out accuracy against
    block size, P-T and RI-T, over the runs that share its model and data (None where they do not
    vary the shuffle or the initialisation)."""
    if run.config is None:
        return None
    same = [p.snapshot() for p in peers if p.config is not None and not p.problem
            and p.config.get("model", {}).get("name") == run.config.get("model", {}).get("name")
            and p.config.get("dataset", {}).get("root") == run.config.get("dataset", {}).get("root")]
    rows = [r for r in transfer_table(same) if r["block"] != "pixel"]
    if not rows:
        return None
    size = int(run.config.get("run", {}).get("image_size") or 224)
    pixels = lambda row: size if row["block"] == "none" else int(row["block"])  # noqa: E731
    rows.sort(key=pixels)
    unshuffled = unshuffled_row(rows)
    return {"name": "transfer", "display": "curve",
            "title": "final held-out accuracy against block size (no shuffle = image size)",
            "x_label": "block size (px)", "x": [pixels(r) for r in rows],
            "series": {init: [r[f"{key}_final_accuracy"] for r in rows] for init, key in INITS.items()},
            "show": {"label": "transfer: accuracy against block size (P-T, RI-T)", "tables": [
                {"name": "transfer_curve", "kind": "curve", "x": "block_size"},
                {"name": "transfer_barriers", "kind": "numbers", "title": "loss barrier between two seeds",
                 "values": {f"{init} seeds, {name.replace('_', ' ')}": unshuffled[f"{key}_barrier_{name}"]
                            for init, key in INITS.items() for name in SEED_BARRIERS if unshuffled is not None}}]}}
