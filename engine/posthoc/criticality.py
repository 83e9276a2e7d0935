"""Module criticality (ANALYSES.md §3; Chatterji, Neyshabur, Sedghi 2020, used by Neyshabur et al.
2020 §3.5): which block groups must stay where fine-tuning took them?

Rewind one module m towards its start while every other module keeps its final value:

    θ_m(α) = (1 − α) θ_m⁰ + α θ_mᵀ

* **Rewinding curve**: train error of (θ_m(α), θ_{−m}ᵀ) for α on an even grid, per block group. The
  module is critical when rewinding hurts; ``alpha_min`` is the smallest grid α whose error stays
  within ε of the final model's train error, Err ≤ Err(θᵀ) + ε (0: the module can go back to its
  start for free).
* **Criticality μ** (``noise_draws`` K > 0), as Chatterji et al. define it:

      μ_m = min over α, σ on their grids of  α² ‖θ_mᵀ − θ_m⁰‖²_F / σ²
            subject to  E_u[ Err_train(θ_m(α) + u, θ_{−m}ᵀ) ] ≤ Err(θᵀ) + ε,   u ~ N(0, σ² I)

  the expectation over K draws, σ an absolute standard deviation in (0, 1] (the paper's range;
  Google's Meta-Dataset implementation also adds unscaled noise). Chatterji et al. state the
  constraint as E[L] ≤ ε on the train 0–1 loss; we measure ε from the final error so a model
  that does not fit its training set perfectly still has feasible points. None when no grid point
  is feasible.

Train error is measured on a seeded subset of the training images (evaluation transform);
BatchNorm statistics are re-estimated wherever the rewound (or noisy) weights differ from the
final ones (:mod:`engine.posthoc.interpolation`). Only parameters are rewound; the head is left
out (it has no θ⁰). The result goes to ``RUN/analyses/criticality-e<t>.json`` (display: matrix,
module × α).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from engine.analyses import parse_endpoint, refuse_while_written, result_path, write_result
from engine.posthoc.interpolation import batchnorm_effect, load_and_evaluate, make_splits
from engine.checkpoints import last_epoch
from engine.errors import FtdynError
from engine.events import Event, quiet
from engine.record import SCHEMA_VERSION
from engine.posthoc.shown import criticality_shown
from engine.run_config import saved_config
from engine.run_inputs import model_state, open_run

DEFAULT_SIGMAS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def rewound(final: dict[str, torch.Tensor], start: dict[str, torch.Tensor], names: list[str], alpha: float,
            noise: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The final state with the module's parameters at (1 − α) θ⁰ + α θᵀ (+ noise)."""
    state = dict(final)
    for name in names:
        value = final[name] if alpha == 1.0 else torch.lerp(start[name], final[name], alpha)
        state[name] = value + noise[name] if noise is not None else value
    return state


def smallest_alpha(alphas: list[float], errors: list[float], limit: float) -> float | None:
    within = [a for a, e in zip(alphas, errors) if e <= limit]
    return min(within) if within else None


def run_criticality(run: str, points: int = 11, epsilon: float = 0.01, noise_draws: int = 0,
                    sigmas: tuple[float, ...] = DEFAULT_SIGMAS, train_images: int = 2048, bn_batches: int = 20,
                    data: str | None = None, on_event: Event = quiet) -> tuple[dict, Path]:
    if points < 2:
        raise FtdynError("--points must be at least 2 (α = 0 and α = 1)")
    if epsilon < 0:
        raise FtdynError("--epsilon must be ≥ 0")
    if noise_draws < 0 or any(not 0.0 < s <= 1.0 for s in sigmas):
        raise FtdynError("--noise-draws must be ≥ 0 and every σ in (0, 1]")
    run_dir, epoch = parse_endpoint(run)
    refuse_while_written(run_dir)  # before any work: the result goes into the run directory
    saved_config(run_dir)
    epoch = last_epoch(run_dir) if epoch is None else epoch
    started = time.perf_counter()
    inputs = open_run(run_dir, on_event, data=data)
    device = inputs.device
    final = model_state(run_dir, epoch, device)
    start = inputs.source.state_dict()
    groups = {name: params for name, params in inputs.groups.items() if name != "head"}
    target = result_path(run_dir, f"criticality-e{epoch}")
    splits = make_splits(inputs, train_images, bn_batches)
    final_row = load_and_evaluate(inputs.model, final, splits, reestimate=False, held_out=False)
    final_error = final_row["train_error"]
    check = batchnorm_effect(inputs.model, final, final_row, splits, epsilon, held_out=False)
    limit = final_error + epsilon
    alphas = [float(a) for a in np.linspace(0.0, 1.0, points)]
    generator = torch.Generator(device="cpu").manual_seed(inputs.config.seed)
    work = len(groups) * len(alphas) * (1 + noise_draws * len(sigmas))
    done = 0
    values, summary = [], {}
    for group, names in groups.items():
        drift = math.sqrt(sum(float(torch.linalg.vector_norm(final[n] - start[n], dtype=torch.float64)) ** 2
                              for n in names))
        moved = drift > 0
        errors = []
        for alpha in alphas:
            row = load_and_evaluate(inputs.model, rewound(final, start, names, alpha), splits,
                                    reestimate=moved and alpha < 1.0, held_out=False)
            errors.append(row["train_error"])
            done += 1
            on_event("progress", task="criticality", done=done, total=work, info=f"{group} α = {alpha:.2f}")
        mu = None
        if noise_draws:
            for alpha in alphas:
                for sigma in sigmas:
                    draws = []
                    for _ in range(noise_draws):
                        noise = {n: (torch.randn(final[n].shape, generator=generator) * sigma).to(final[n])
                                 for n in names}
                        draws.append(load_and_evaluate(inputs.model, rewound(final, start, names, alpha, noise),
                                                       splits, reestimate=True, held_out=False)["train_error"])
                    done += noise_draws
                    on_event("progress", task="criticality", done=done, total=work,
                             info=f"{group} α = {alpha:.2f} σ = {sigma:g}")
                    if float(np.mean(draws)) <= limit:
                        value = alpha ** 2 * drift ** 2 / sigma ** 2
                        mu = value if mu is None else min(mu, value)
        values.append(errors)
        summary[group] = {"alpha_min": smallest_alpha(alphas, errors, limit), "drift": drift, "mu": mu}
    result = {
        "schema": SCHEMA_VERSION, "name": "criticality", "display": "matrix", "created_at": time.time(),
        "title": f"train error after rewinding one module to (1 − α)·θ⁰ + α·θᵀ ({run_dir.name}@{epoch})",
        "row_label": "module", "rows": list(groups), "column_label": "α", "columns": alphas,
        "value_label": "train error", "values": values,
        "final_train_error": final_error, "summary": summary, "batchnorm_check": check,
        "notes": [f"final model: {check['note']}"] if check and check["note"] else [],
        "settings": {"epoch": epoch, "points": points, "epsilon": epsilon, "noise_draws": noise_draws,
                     "sigmas": list(sigmas) if noise_draws else [], **splits.settings(), "data": inputs.config.data},
        "seconds": time.perf_counter() - started,
    }
    result["show"] = criticality_shown(result)
    write_result(target, result)
    return result, target
