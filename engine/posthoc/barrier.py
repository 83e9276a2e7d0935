"""Loss barrier along linear interpolation (ANALYSES.md §2; Neyshabur et al. 2020 §3.4, Frankle et
al. 2020): do two solutions lie in one basin?

    θ(λ) = (1 − λ) θ_A + λ θ_B,   λ on an even grid over [0, 1]
    barrier_Loss = max_λ [ Loss(θ(λ)) − ((1 − λ) Loss(θ_A) + λ Loss(θ_B)) ]      (the same with Err)

on the held-out split (as every epoch was evaluated) and on a seeded subset of the training
images (evaluation transform). BatchNorm statistics are re-estimated between the endpoints
(:mod:`engine.posthoc.interpolation`). Neyshabur et al.'s released code plots these curves
(50 points for DomainNet, 20 for CheXpert, on the test split) and states no scalar; the barrier
above is Frankle et al.'s, on the curve we record whole.

Endpoints are ``RUN[@epoch]`` (default: the newest checkpoint). One run alone compares its source
backbone with its epoch-t model, keeping the epoch-t head at every λ (the source has no head for
the target classes). Two endpoints must share the architecture and the class list. The result is
written to ``A/analyses/barrier-<tag>.json`` (display: curve).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np

from engine.analyses import parse_endpoint, refuse_while_written, result_path, write_result
from engine.posthoc.interpolation import batchnorm_effect, interpolate, load_and_evaluate, make_splits
from engine.errors import FtdynError
from engine.models import head_name
from engine.record import SCHEMA_VERSION
from engine.posthoc.shown import barrier_shown
from engine.events import Event, quiet
from engine.checkpoints import last_epoch
from engine.run_inputs import model_state, open_run
from engine.run_config import saved_config

SERIES = ("held_out_loss", "held_out_error", "train_loss", "train_error")
# An endpoint whose error moves by more than this under BatchNorm re-estimation alone gets a note.
BATCHNORM_NOTE_ERROR = 0.02


def barrier(lambdas: list[float], values: list[float]) -> float:
    """max over λ of the value above the straight line between the endpoints' values."""
    lam = np.asarray(lambdas, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    return float(np.max(v - ((1 - lam) * v[0] + lam * v[-1])))


def safe_tag(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "run"


def barrier_tag(run_a: Path, epoch_a: int, run_b: Path, epoch_b: int) -> str:
    """The result's name for the path from RUN_A@epoch_a to RUN_B@epoch_b."""
    if Path(run_b).resolve() == Path(run_a).resolve():
        return f"barrier-e{epoch_a}-e{epoch_b}"
    return f"barrier-e{epoch_a}-{safe_tag(Path(run_b).name)}-e{epoch_b}"


def check_compatible(first: Path, second: Path, a: dict, b: dict) -> None:
    """Same architecture (model name and every tensor's shape) and the same class list."""
    ca, cb = saved_config(first), saved_config(second)
    if ca["model"]["name"] != cb["model"]["name"]:
        raise FtdynError(f"'{first}' is a {ca['model']['name']} and '{second}' a {cb['model']['name']}: "
                         f"interpolation needs one architecture")
    if ca["dataset"]["classes"] != cb["dataset"]["classes"]:
        raise FtdynError(f"'{first}' and '{second}' were trained on different class lists; interpolation needs "
                         f"the same classes in the same order")
    mismatch = next((k for k in a if k not in b or a[k].shape != b[k].shape), None) or next(
        (k for k in b if k not in a), None)
    if mismatch is not None:
        raise FtdynError(f"'{first}' and '{second}' differ in tensor '{mismatch}'; interpolation needs one "
                         f"architecture")


def run_barrier(first: str, second: str | None = None, points: int = 11, train_images: int = 2048,
                bn_batches: int = 20, data: str | None = None, on_event: Event = quiet) -> tuple[dict, Path]:
    """Evaluate the interpolation path and write its result; returns (result, file)."""
    if points < 2:
        raise FtdynError("--points must be at least 2 (the two endpoints)")
    run_a, epoch_a = parse_endpoint(first)
    refuse_while_written(run_a)  # before any work: the result goes into the run directory
    saved_config(run_a)  # a clear error before any work
    epoch_a = last_epoch(run_a) if epoch_a is None else epoch_a
    started = time.perf_counter()
    on_event("phase", name=f"opening {run_a}")
    inputs = open_run(run_a, on_event, data=data)
    device = inputs.device
    state_a_run = model_state(run_a, epoch_a, device)
    if second is None:
        head = head_name(inputs.model)
        state_b = state_a_run
        state_a = {k: (state_b[k] if k == head or k.startswith(head + ".") else v)
                   for k, v in inputs.source.state_dict().items()}
        labels = (f"source backbone (epoch-{epoch_a} head)", f"{run_a.name}@{epoch_a}")
        tag = f"barrier-source-e{epoch_a}"
    else:
        run_b, epoch_b = parse_endpoint(second)
        saved_config(run_b)
        epoch_b = last_epoch(run_b) if epoch_b is None else epoch_b
        state_a, state_b = state_a_run, model_state(run_b, epoch_b, device)
        check_compatible(run_a, run_b, state_a, state_b)
        labels = (f"{run_a.name}@{epoch_a}", f"{run_b.name}@{epoch_b}")
        tag = barrier_tag(run_a, epoch_a, run_b, epoch_b)
    target = result_path(run_a, tag)
    splits = make_splits(inputs, train_images, bn_batches)
    endpoints_differ = any(not (state_a[k] == state_b[k]).all() for k in state_a if state_a[k].is_floating_point())
    lambdas = [float(x) for x in np.linspace(0.0, 1.0, points)]
    rows = []
    for i, lam in enumerate(lambdas):
        interior = 0.0 < lam < 1.0
        rows.append(load_and_evaluate(inputs.model, interpolate(state_a, state_b, lam), splits,
                                      reestimate=interior and endpoints_differ))
        on_event("progress", task="barrier", done=i + 1, total=len(lambdas), info=f"λ = {lam:.2f}")
    series = {name: [row[name] for row in rows] for name in SERIES}
    checks = {end: batchnorm_effect(inputs.model, state, row, splits, BATCHNORM_NOTE_ERROR)
              for end, state, row in (("A", state_a, rows[0]), ("B", state_b, rows[-1]))} if endpoints_differ else {}
    result = {
        "schema": SCHEMA_VERSION, "name": "barrier", "display": "curve", "created_at": time.time(),
        "title": f"θ(λ) = (1 − λ)·A + λ·B,  A = {labels[0]},  B = {labels[1]}",
        "endpoints": {"A": labels[0], "B": labels[1]},
        "x_label": "λ", "x": lambdas, "y_label": "loss / error", "series": series,
        "barriers": {name: barrier(lambdas, values) for name, values in series.items()},
        "batchnorm_reestimated": [row["batchnorm_reestimated"] for row in rows],
        "batchnorm_check": checks,
        "notes": [f"{end}: {check['note']}" for end, check in checks.items() if check and check["note"]],
        "settings": {"points": points, **splits.settings(), "data": inputs.config.data},
        "seconds": time.perf_counter() - started,
    }
    result["show"] = barrier_shown(result)
    write_result(target, result)
    return result, target
