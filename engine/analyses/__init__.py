"""Analyses as parts: everything ftdyn measures beyond training, one file per analysis.

An analysis is a *part*. Each part says five things, and nothing else in ftdyn needs to know it:

1. **name** — what `--analyses` selects and what the run record calls it (`distance`, `drift`, …).
2. **when** — ``"epoch"``: at the end of every epoch (and every ``--every-steps`` N steps) from
   the live source and tuned models; ``"posthoc"``: afterwards, from checkpoints, by a command
   (`ftdyn transfer barrier`, `ftdyn transfer criticality`, `ftdyn umap`, `ftdyn invariance`;
   their code is in :mod:`engine.posthoc`).
3. **what it needs** — an epoch part that sets ``uses_probe`` receives every hooked layer's paired
   activations (source, tuned) batch by batch from *one* forward pass over the probe set, shared
   by every part and by the visualisations; a part that does not (parameter drift) is not sent them.
4. **what it writes** — an epoch part returns its own section of the epoch record
   (``record[section]``); a post-hoc part writes its own file ``RUN/analyses/<name>-<tag>.json``.
5. **how it is shown** — its *declaration*, written into ``config.json`` (epoch parts) or into its
   result file (post-hoc parts), tells the TUI and ``ftdyn report`` how to draw it with no code of
   their own: ``series`` (a value per row and measure, every epoch: curves and a row × epoch
   heatmap), ``curve`` (y series over one x axis), ``matrix`` (a row × column heatmap) or ``scatter``
   (2-D points per epoch with a class each: the UMAP of features); a post-hoc result adds ``show``,
   the tables it holds (:mod:`engine.results`, docs/RUN-DIRECTORY.md).

An epoch part is a class with ``name``, ``when = "epoch"``, ``section``, ``uses_probe``, ``default``
(on unless `--analyses` says otherwise), a one-line ``summary``, a ``build(context)`` class method
(:class:`engine.analyses.parts.PartContext`: source model, block groups, head, hooked layers,
measures) and these methods::

    declaration() -> dict           # {"title", "unit", "measures", "rows": {view: [row, …]}, "note"}
    begin(model)                    # a measurement starts (the tuned model as it is now)
    observe(layer, source, tuned)   # per probe batch, only when uses_probe: (n, c, h, w) maps
    finish() -> dict                # the record section; called once per measurement

and optionally ``observe_class_token(layer, source, tuned)``: the (n, d, 1, 1) class tokens of layers
that have one (ViTs), which the maps leave out.

Series sections are laid out ``section[view][metric][row] = value`` for a measure ``metric@view``
(drift: ``relative@groups`` → ``record["drift"]["groups"]["relative"]["layer3"]``). Feature
distances keep the schema-1 layout ``record["layers"][layer][view]["values"][metric]`` so runs
recorded before parts existed read unchanged; their declaration says so (``"layout": "layers"``).

To add an analysis: write ``engine/analyses/<name>.py`` with its definition (ANALYSES.md section)
in the docstring and a class as above — nothing else: :mod:`engine.analyses.parts` finds it,
`--analyses` accepts it, and the loop, the record, the TUI and the report need no change.
To add a post-hoc analysis: write ``engine/posthoc/<name>.py`` (a function that reopens the run
through :class:`engine.run_inputs.RunInputs` and writes its result with :func:`write_result`,
``show`` included) and its command in ``ftdyn_tui/cli/posthoc.py``; the report, the figures and the
app show it from its file (tests/test_results.py adds one in a throw-away module).

This module imports no torch: the TUI reads declarations and sections through it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.errors import FtdynError
from engine.untrusted import number_or_none, read_plain

RESULTS_DIR = "analyses"  # RUN/analyses/<name>-<tag>.json: post-hoc results
DISPLAY_KINDS = ("series", "curve", "matrix", "scatter")


def distance_declaration(measures: list[str], layers: list[str]) -> dict[str, Any]:
    """The feature-distance part's declaration (also synthesised for schema-1 runs)."""
    views = list(dict.fromkeys(m.rpartition("@")[2] for m in measures))
    return {"name": "distance", "when": "epoch", "section": "layers", "layout": "layers", "display": "series",
            "title": "feature distance to the source model", "unit": "distance (0 = identical)",
            "measures": list(measures), "rows": {view: list(layers) for view in views}, "row_kind": "layer"}


def declared_parts(config: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The epoch parts a run recorded, in order; schema-1 runs recorded feature distances only."""
    config = config or {}
    parts = config.get("analyses")
    if isinstance(parts, list) and parts:
        return [p for p in parts if isinstance(p, dict) and p.get("display") == "series"]
    measures = [m.get("label") for m in config.get("measures", []) if isinstance(m, dict)]
    layers = [layer.get("name") for layer in config.get("layers", []) if isinstance(layer, dict)]
    return [distance_declaration([m for m in measures if isinstance(m, str)],
                                 [n for n in layers if isinstance(n, str)])]


def measure_rows(part: dict[str, Any], measure: str) -> list[str]:
    """The rows (layers, modules) a measure of ``part`` has a value for."""
    return list((part.get("rows") or {}).get(measure.rpartition("@")[2], []))


def part_value(record: dict[str, Any], part: dict[str, Any], measure: str, row: str,
               plug_in: bool = False) -> float | None:
    """One value of a series part in one record as shown — a feature distance's bias-corrected estimate
    where the run recorded one (engine.intervals), else (or with ``plug_in``) its plug-in value on every
    probe image — or None where it was not measured."""
    metric, _, view = measure.rpartition("@")
    section = part.get("section", part.get("name", ""))
    if part.get("layout") == "layers":
        value = None if plug_in else dig(record, section, row, view, "estimate", metric)
        if number_or_none(value) is None:
            value = dig(record, section, row, view, "values", metric)
    else:
        value = dig(record, section, view, metric, row)
    return number_or_none(value)


def part_interval(record: dict[str, Any], part: dict[str, Any], measure: str, row: str) -> tuple[float, float] | None:
    """The recorded interval [low, high] of one value (feature distances with intervals on), or None."""
    if part.get("layout") != "layers":
        return None
    metric, _, view = measure.rpartition("@")
    found = dig(record, part.get("section", "layers"), row, view, "interval", metric)
    if not isinstance(found, list) or len(found) != 2:
        return None
    low, high = (number_or_none(v) for v in found)
    return None if low is None or high is None else (low, high)


def dig(value: Any, *keys: str) -> Any:
    """value[k1][k2]… or None where a level is missing or not an object (a record from someone else
    may hold anything)."""
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def epoch_points(result: dict[str, Any], key: str = "points", kind: type = list) -> dict[int, Any]:
    """A scatter result's epoch → its points (``result["points"]``; with ``key`` and ``kind`` another
    per-epoch field, such as ``stats`` holding objects), for the keys that are plain epoch numbers ('5',
    not '05' or '²') holding a ``kind``; a damaged result gives what it can, never an error."""
    points = result.get(key)
    if not isinstance(points, dict):
        return {}
    return {int(k): v for k, v in points.items()
            if isinstance(k, str) and k.isascii() and k.isdigit() and len(k) < 10 and str(int(k)) == k
            and isinstance(v, kind)}


def scatter_point(point: Any) -> tuple[float, float] | None:
    """A scatter result's point as (x, y), or None where it is not two finite numbers."""
    if not isinstance(point, list) or len(point) < 2:
        return None
    x, y = number_or_none(point[0]), number_or_none(point[1])
    return None if x is None or y is None else (x, y)


def scatter_class(result: dict[str, Any], label: Any) -> str:
    """The class a scatter result's label stands for: its name in ``result["classes"]``, else the label."""
    classes = result.get("classes") if isinstance(result.get("classes"), list) else []
    return str(classes[label]) if isinstance(label, int) and 0 <= label < len(classes) else str(label)


def series_matrix(records: list[dict[str, Any]], part: dict[str, Any], measure: str,
                  plug_in: bool = False) -> "np.ndarray":
    """(records × rows) values of one measure of a series part (:func:`part_value`); NaN where nothing
    was measured."""
    import numpy as np

    rows = measure_rows(part, measure)
    matrix = np.full((len(records), len(rows)), np.nan)
    for i, record in enumerate(records):
        for j, row in enumerate(rows):
            value = part_value(record, part, measure, row, plug_in)
            if value is not None:
                matrix[i, j] = value
    return matrix


def result_file(run_dir: Path, tag: str) -> Path:
    """Where a post-hoc result named ``tag`` is: RUN/analyses/<tag>.json (never through a link)."""
    from engine.errors import FtdynError

    folder = Path(run_dir) / RESULTS_DIR
    if folder.is_symlink():
        raise FtdynError(f"'{folder}' is a link; ftdyn writes results only inside the run directory")
    return folder / f"{tag}.json"


def parse_endpoint(text: str) -> tuple[Path, int | None]:
    """'RUN' or 'RUN@epoch' → (run directory, epoch or None for the newest checkpoint)."""
    path, at, epoch = text.rpartition("@")
    if at and epoch.isdigit():
        return Path(path), int(epoch)
    if at and epoch:
        raise FtdynError(f"'{text}': the part after @ must be an epoch number (RUN@5)")
    return Path(text), None


def result_path(run_dir: Path, tag: str) -> Path:
    """Where a post-hoc result named ``tag`` goes (:func:`result_file`), refused in one line, before any
    work, while the run's writer holds it (a run training or drawing): see :func:`write_result`."""
    refuse_while_written(run_dir)
    return result_file(run_dir, tag)


def refuse_while_written(run_dir: str | Path) -> None:
    """A one-line refusal while the run's writer holds its lock (a run training, or filters being drawn)."""
    from engine.errors import FtdynError
    from engine.run_lock import writer_alive

    if writer_alive(run_dir) is True:
        raise FtdynError(f"run directory '{run_dir}' is being written by its run; run this again when it has "
                         f"finished (or stop it)")


def write_result(target: Path, result: dict[str, Any]) -> None:
    """Write a post-hoc result as the run directory's one writer: under its lock (a run started meanwhile
    is refused, or refuses this, in one line), atomically."""
    from engine.record import write_json_atomic
    from engine.run_lock import RunLock

    lock = RunLock(target.parent.parent)
    lock.acquire(instead="run this again when the run has finished")
    try:
        target.parent.mkdir(exist_ok=True)
        write_json_atomic(target, result)
    finally:
        lock.release()


def read_results(run_dir: str | Path) -> list[dict[str, Any]]:
    """Post-hoc results of a run (RUN/analyses/*.json), oldest first. Only regular files inside the
    run directory are read (a shared run directory is untrusted: no links followed); unreadable
    files are reported as such instead of failing the reader."""
    folder = Path(run_dir) / RESULTS_DIR
    if not folder.is_dir() or folder.is_symlink():
        return []
    found = []
    for path in sorted(folder.glob("*.json")):
        try:
            data = read_plain(path)
            if data is None:
                continue
            result = json.loads(data)
        except (OSError, ValueError, RecursionError) as exc:  # RunFormatError (a link, a FIFO) is a ValueError
            found.append({"name": path.stem, "file": path.name, "problem": f"unreadable ({type(exc).__name__})"})
            continue
        if isinstance(result, dict) and result.get("display") in DISPLAY_KINDS:
            found.append(dict(result, file=path.name))
    return sorted(found, key=lambda r: (r.get("created_at") or 0, r["file"]))
