"""What the loss barrier and module criticality share (ANALYSES.md §2–§3): models between two sets
of weights, BatchNorm statistics re-estimated for them, and their loss and error on a run's splits.

    θ(λ) = (1 − λ) θ_A + λ θ_B      over every floating-point state-dict entry

BatchNorm: running statistics interpolated along with the weights do not describe the interpolated
network's activations, so wherever the weights differ from both endpoints they are re-estimated
on training batches (train mode, no gradient, momentum None = cumulative average; what
``torch.optim.swa_utils.update_bn`` does). An endpoint is the trained model itself and is evaluated
with its own statistics, so λ = 0 and λ = 1 reproduce the recorded accuracies exactly. Where the
weights did not move (a frozen module) nothing is re-estimated either: the model is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader, Subset

from engine.data import ImageList
from engine.run_inputs import RunInputs
from engine.evaluation import evaluate

BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def interpolate(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], lam: float) -> dict[str, torch.Tensor]:
    """(1 − λ) a + λ b for floating-point entries; integer buffers (BatchNorm's batch counters) from a.
    λ = 0 and λ = 1 give the endpoints themselves, bit for bit."""
    if lam == 0.0:
        return dict(a)
    if lam == 1.0:
        return dict(b)
    return {k: torch.lerp(v, b[k].to(v.device), lam) if v.is_floating_point() else v for k, v in a.items()}


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, BATCHNORM) for m in model.modules())


@dataclass
class Splits:
    """Where interpolated models are evaluated: the run's held-out split (as each epoch was), a
    seeded subset of its training images (evaluation transform), and the batches BatchNorm
    statistics are re-estimated on."""

    inputs: RunInputs
    train_loader: DataLoader
    bn_batches: list[torch.Tensor]
    train_images: int
    bn_images: int

    def settings(self) -> dict:
        return {"held_out_images": len(self.inputs.held_out), "train_images": self.train_images,
                "batchnorm_batches": len(self.bn_batches), "batchnorm_images": self.bn_images,
                "held_out_split": self.inputs.data.held_out_name}


def make_splits(inputs: RunInputs, train_images: int, bn_batches: int) -> Splits:
    config = inputs.config
    samples = inputs.train_set.samples
    plain = ImageList(samples, inputs.transform(augment=False))
    order = np.random.default_rng(config.seed).permutation(len(samples))
    chosen = sorted(order[:train_images].tolist()) if 0 < train_images < len(samples) else list(range(len(samples)))
    loader = DataLoader(Subset(plain, chosen), batch_size=config.batch_size, shuffle=False, num_workers=0)
    # BatchNorm batches: training images in a seeded order, at the run's batch size.
    bn_loader = DataLoader(Subset(plain, order.tolist()), batch_size=config.batch_size, shuffle=False, num_workers=0)
    batches = [images for images, _ in zip((b for b, _ in bn_loader), range(bn_batches))]
    return Splits(inputs, loader, batches, len(chosen), sum(len(b) for b in batches))


def reestimate_batchnorm(model: nn.Module, splits: Splits) -> None:
    update_bn(splits.bn_batches, model, device=splits.inputs.device)
    model.eval()


def evaluate_splits(model: nn.Module, splits: Splits, held_out: bool = True) -> dict[str, float]:
    """Loss and error on the training subset, and on the held-out split unless told not to."""
    device, autocast_mode = splits.inputs.device, splits.inputs.config.autocast
    out = {}
    splits_to_run = [("train", splits.train_loader)] + ([("held_out", splits.inputs.eval_loader)] if held_out else [])
    for name, loader in splits_to_run:
        result = evaluate(model, loader, device, autocast_mode, channels_last=splits.inputs.config.channels_last)
        out[f"{name}_loss"] = result["loss"]
        out[f"{name}_error"] = 1.0 - result["accuracy"]
    return out


def load_and_evaluate(model: nn.Module, state: dict[str, torch.Tensor], splits: Splits, reestimate: bool,
                      held_out: bool = True) -> dict[str, float]:
    """Evaluate ``model`` with ``state``; re-estimate BatchNorm statistics first when asked and the
    model has any. Returns the losses and errors and whether statistics were re-estimated."""
    model.load_state_dict(state)
    reestimated = reestimate and has_batchnorm(model)
    if reestimated:
        reestimate_batchnorm(model, splits)
    return dict(evaluate_splits(model, splits, held_out), batchnorm_reestimated=reestimated)


def batchnorm_effect(model: nn.Module, state: dict[str, torch.Tensor], evaluated: dict[str, float], splits: Splits,
                     tolerance: float, held_out: bool = True) -> dict | None:
    """An endpoint evaluated again with re-estimated BatchNorm statistics, and a note when that
    alone moves an error by more than ``tolerance``: interior points are re-estimated and the
    endpoints are not, so the curve then mixes two effects (None for a model without BatchNorm)."""
    if not has_batchnorm(model):
        return None
    again = load_and_evaluate(model, state, splits, reestimate=True, held_out=held_out)
    shifts = {k: again[k] - evaluated[k] for k in again if k.endswith("_error")}
    worst = max(shifts, key=lambda k: abs(shifts[k]))
    note = None
    if abs(shifts[worst]) > tolerance:
        note = (f"re-estimating BatchNorm statistics alone moves the {worst.replace('_', ' ')} from "
                f"{evaluated[worst]:.3f} to {again[worst]:.3f}: part of the curve's shape is BatchNorm, not the weights")
    return {"reestimated": {k: v for k, v in again.items() if k != "batchnorm_reestimated"}, "note": note}
