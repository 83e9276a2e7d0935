"""Fine-tuning strategies, as published (PAPER-NOTES.md §2), not as the seed notebooks did them.

| strategy         | what trains                               | learning rates                       | BatchNorm statistics |
|------------------|-------------------------------------------|--------------------------------------|----------------------|
| `full`           | everything                                | one rate                             | updated              |
| `linear-probe`   | the new head only                         | one rate                             | frozen               |
| `lp-ft`          | head fitted first (logistic regression on | one rate in the fine-tuning phase    | frozen (Kumar et al. |
|                  | frozen features), then everything         |                                      | keep eval mode)      |
| `surgical`       | the chosen block groups, and the new head | one rate                             | frozen               |
| `discriminative` | everything                                | lr · decay^(k) for the k-th group    | updated              |
|                  |                                           | below the head; linear warm-up from 0|                      |
| `autorgn`        | every non-BN tensor                       | lr · RGN/max RGN, recomputed (not    | frozen               |
|                  |                                           | compounded) at each epoch start      |                      |

Block groups (input → output, the head last) per architecture: ResNet `stem+layer1`, `layer2`,
`layer3`, `layer4`, `head`; VGG `block1`…`block5` (split at the max-pools), `classifier`, `head`;
DenseNet `stem`, `denseblock1`…`denseblock4` (each with the transition after it), `head`; any other
model: its top-level children (children of `features` when it has one).

`surgical` always trains the new head too: it replaces the source's classifier, so it starts
random and must learn the target classes (Lee et al. kept the source head because their classes
did not change).
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize
from torch import nn

from engine.errors import FtdynError
from engine.models import head_name, head_names, layer_segments, stage_layers

STRATEGIES = ("full", "linear-probe", "lp-ft", "surgical", "discriminative", "autorgn")
BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
RGN_BATCHES = 5
LP_C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


@dataclass
class StrategyConfig:
    name: str = "full"
    train_blocks: list[str] = field(default_factory=list)  # surgical
    layer_decay: float = 0.9  # discriminative
    warmup_epochs: float = 1.0  # discriminative


def check_strategy(config: StrategyConfig) -> None:
    if config.name not in STRATEGIES:
        raise FtdynError(f"unknown strategy '{config.name}'; choose from {', '.join(STRATEGIES)}")
    if config.name == "surgical" and not config.train_blocks:
        raise FtdynError("--strategy surgical needs --train-blocks (e.g. layer2 or stem+layer1; "
                         "`ftdyn layers MODEL` lists a model's groups)")
    if config.name != "surgical" and config.train_blocks:
        raise FtdynError("--train-blocks only applies to --strategy surgical")
    if not 0.0 < config.layer_decay <= 1.0:
        raise FtdynError(f"--layer-decay must be in (0, 1], got {config.layer_decay}")
    if config.warmup_epochs < 0:
        raise FtdynError(f"--warmup-epochs must be ≥ 0, got {config.warmup_epochs}")


# ------------------------------------------------------------------------------------------------
# Block groups


def block_groups(model_name: str, model: nn.Module, stages: list[str] | None = None) -> "OrderedDict[str, list[str]]":
    """Parameter names per block group, input → output, the head last.

    ResNets, VGGs and DenseNets have named groups; any other network gets one group per default
    layer (``stages``, computed when not given): the parameters that produce that stage's output
    from the previous one (a ViT's encoder blocks, a Swin's or EfficientNet's stages)."""
    head = head_name(model)
    heads = head_names(model)  # a network that averages several classifiers has them all in "head"
    names = [n for n, _ in model.named_parameters()]

    def under(*prefixes: str) -> list[str]:
        return [n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes)]

    groups: OrderedDict[str, list[str]] = OrderedDict()
    if re.match(r"(resnet|resnext|wide_resnet)\d", model_name):
        groups["stem+layer1"] = under("conv1", "bn1", "layer1")
        for stage in ("layer2", "layer3", "layer4"):
            groups[stage] = under(stage)
    elif model_name.startswith("vgg"):
        block, start = 1, 0
        features = model.features
        for index, module in enumerate(features):
            if isinstance(module, nn.MaxPool2d):
                groups[f"block{block}"] = under(*[f"features.{i}" for i in range(start, index + 1)])
                block, start = block + 1, index + 1
        groups["classifier"] = [n for n in under("classifier") if not n.startswith(head + ".")]
    elif model_name.startswith("densenet"):
        groups["stem"] = under("features.conv0", "features.norm0")
        for block in range(1, 5):
            extra = [f"features.transition{block}"] if block < 4 else ["features.norm5"]
            groups[f"denseblock{block}"] = under(f"features.denseblock{block}", *extra)
    else:
        groups.update(layer_segments(model, stages or stage_layers(model_name, model), heads))
    groups["head"] = under(*heads)
    claimed = {n for group in groups.values() for n in group}
    leftover = [n for n in names if n not in claimed]
    if leftover:  # anything unnamed joins the group before the head (e.g. a final norm)
        last = [k for k in groups if k != "head"][-1]
        groups[last] = groups[last] + leftover
    return OrderedDict((k, v) for k, v in groups.items() if v)


def chosen_groups(groups: "OrderedDict[str, list[str]]", train_blocks: list[str]) -> list[str]:
    """'stem+layer1', 'layer2+layer3' … → the group names; unknown ones get the list of valid ones."""
    chosen = []
    for item in train_blocks:
        if item in groups:
            chosen.append(item)
            continue
        for part in item.split("+"):
            if part not in groups and not any(part in key.split("+") for key in groups):
                raise FtdynError(f"unknown block group '{part}'; this model's groups are {', '.join(groups)}")
            chosen += [key for key in groups if key == part or part in key.split("+")]
    return list(dict.fromkeys(chosen))


# ------------------------------------------------------------------------------------------------
# Parameter groups and learning rates


@dataclass
class ParamGroupPlan:
    """Which parameters train, in which optimiser groups, at which base rates."""

    groups: list[dict[str, Any]]  # {"name", "params", "lr"} each
    frozen_batchnorm: bool


def plan_parameters(model_name: str, model: nn.Module, config: StrategyConfig, lr: float,
                    groups: "OrderedDict[str, list[str]] | None" = None) -> ParamGroupPlan:
    groups = groups or block_groups(model_name, model)
    named = dict(model.named_parameters())
    batchnorm_params = {f"{m_name}.{p_name}" if m_name else p_name
                        for m_name, module in model.named_modules() if isinstance(module, BATCHNORM)
                        for p_name, _ in module.named_parameters(recurse=False)}
    name = config.name
    if name in ("full", "lp-ft"):
        trainable = {"all": list(named)}
    elif name == "linear-probe":
        trainable = {"head": groups["head"]}
    elif name == "surgical":
        picked = chosen_groups(groups, config.train_blocks)
        trainable = {key: groups[key] for key in picked + (["head"] if "head" not in picked else [])}
    elif name == "discriminative":
        trainable = dict(groups)
    else:  # autorgn: one group per non-BN tensor; rates set at each epoch start
        trainable = {n: [n] for n in named if n not in batchnorm_params}
    plan = []
    order = list(groups)
    for group_name, params in trainable.items():
        rate = lr
        if name == "discriminative":
            rate = lr * config.layer_decay ** (len(order) - 1 - order.index(group_name))
        plan.append({"name": group_name, "params": params, "lr": rate})
    train = {n for g in plan for n in g["params"]}
    for n, p in named.items():
        p.requires_grad_(n in train)
    return ParamGroupPlan(plan, frozen_batchnorm=name in ("linear-probe", "lp-ft", "surgical", "autorgn"))


def make_optimizer(kind: str, model: nn.Module, plan: ParamGroupPlan, weight_decay: float) -> torch.optim.Optimizer:
    named = dict(model.named_parameters())
    groups = [{"params": [named[n] for n in g["params"]], "lr": g["lr"], "initial_lr": g["lr"], "name": g["name"]}
              for g in plan.groups]
    if kind == "adam":
        return torch.optim.Adam(groups, weight_decay=weight_decay)
    if kind == "sgd":
        return torch.optim.SGD(groups, momentum=0.9, weight_decay=weight_decay)
    raise FtdynError(f"unknown optimizer '{kind}'; use adam or sgd")


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear warm-up from 0: the s-th update (s = 1, 2, …) uses s / W of the rate, then 1."""
    return 1.0 if warmup_steps <= 0 else min(1.0, step / warmup_steps)


def set_train_mode(model: nn.Module, frozen_batchnorm: bool) -> None:
    """Training mode, with BatchNorm layers in eval mode when their statistics are frozen."""
    model.train()
    if frozen_batchnorm:
        for module in model.modules():
            if isinstance(module, BATCHNORM):
                module.eval()


# ------------------------------------------------------------------------------------------------
# AutoRGN (Lee et al. 2022, official definition)


def relative_gradient_norms(model: nn.Module, batches, criterion, device, names: list[str]) -> dict[str, float]:
    """Mean over the given batches of ‖∂L/∂w‖ / ‖w‖ per tensor (no optimiser step is taken)."""
    named = dict(model.named_parameters())
    sums = {n: 0.0 for n in names}
    count = 0
    for images, labels in batches:
        model.zero_grad(set_to_none=True)
        loss = criterion(model(images.to(device)), labels.to(device))
        loss.backward()
        for n in names:
            weight_norm = float(named[n].detach().norm())
            grad = named[n].grad
            sums[n] += (float(grad.norm()) / weight_norm) if grad is not None and weight_norm > 0 else math.nan
        count += 1
    model.zero_grad(set_to_none=True)
    return {n: s / max(count, 1) for n, s in sums.items()}


def rgn_multipliers(rgn: dict[str, float]) -> dict[str, float]:
    """RGN / max RGN ∈ (0, 1]; a tensor whose weight norm is 0 (RGN undefined) gets 1."""
    finite = [v for v in rgn.values() if math.isfinite(v) and v > 0]
    top = max(finite) if finite else 1.0
    return {n: (v / top if math.isfinite(v) and v > 0 else 1.0) for n, v in rgn.items()}


# ------------------------------------------------------------------------------------------------
# LP-FT's linear probe: multinomial logistic regression on frozen penultimate features


@dataclass
class ProbeFit:
    weight: np.ndarray  # (classes, features), for raw (unstandardised) features
    bias: np.ndarray
    C: float
    validation_accuracy: float
    train_accuracy: float
    iterations: int


def fit_logistic_regression(features: np.ndarray, labels: np.ndarray, classes: int, C: float,
                            max_iter: int = 200, init: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """argmin_W,b  mean cross-entropy + ‖W‖² / (2 C n), by L-BFGS with the exact gradient (as
    sklearn's LogisticRegression(C) with the lbfgs solver). Returns the (classes, features + 1) packed
    [W | b] and the iterations used."""
    n, d = features.shape
    onehot = np.eye(classes)[labels]

    def objective(flat):
        wb = flat.reshape(classes, d + 1)
        logits = features @ wb[:, :d].T + wb[:, d]
        logits -= logits.max(1, keepdims=True)
        log_prob = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        prob = np.exp(log_prob)
        loss = -(onehot * log_prob).sum() / n + (wb[:, :d] ** 2).sum() / (2 * C * n)
        grad_logits = (prob - onehot) / n
        grad = np.empty_like(wb)
        grad[:, :d] = grad_logits.T @ features + wb[:, :d] / (C * n)
        grad[:, d] = grad_logits.sum(0)
        return loss, grad.ravel()

    start = np.zeros(classes * (d + 1)) if init is None else init.ravel()
    result = minimize(objective, start, jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    return result.x.reshape(classes, d + 1), int(result.nit)


def fit_linear_probe(features: np.ndarray, labels: np.ndarray, classes: int, seed: int) -> ProbeFit:
    """Kumar et al.'s probe: features standardised by one scalar mean and std, C chosen on a seeded
    20 % validation split of the *training* features over a log grid (warm-started), then refitted
    on all of them. The returned head works on raw features."""
    mean, std = float(features.mean()), float(features.std()) or 1.0
    x = (features - mean) / std
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    cut = max(1, len(x) // 5)
    val, train = order[:cut], order[cut:]
    best = (-1.0, LP_C_GRID[0])
    init = None
    for C in LP_C_GRID:
        wb, _ = fit_logistic_regression(x[train], labels[train], classes, C, init=init)
        init = wb
        accuracy = float(((x[val] @ wb[:, :-1].T + wb[:, -1]).argmax(1) == labels[val]).mean())
        if accuracy > best[0] + 1e-12:
            best = (accuracy, C)
    wb, iterations = fit_logistic_regression(x, labels, classes, best[1], init=init)
    weight = wb[:, :-1] / std
    bias = wb[:, -1] - weight.sum(1) * mean
    train_accuracy = float(((features @ weight.T + bias).argmax(1) == labels).mean())
    return ProbeFit(weight, bias, best[1], best[0], train_accuracy, iterations)


@torch.no_grad()
def penultimate_features(model: nn.Module, loader, device) -> tuple[np.ndarray, np.ndarray]:
    """The head's inputs for every image of ``loader``, with the model in eval mode."""
    head = model.get_submodule(head_name(model))
    captured: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda _m, inputs: captured.append(inputs[0].detach().double().cpu()))
    labels = []
    was_training = model.training
    model.eval()
    try:
        for images, batch_labels in loader:
            model(images.to(device))
            labels.append(batch_labels)
    finally:
        hook.remove()
        model.train(was_training)
    return torch.cat(captured).numpy(), torch.cat(labels).numpy()


def load_head(model: nn.Module, fit: ProbeFit) -> None:
    head = model.get_submodule(head_name(model))
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(fit.weight, dtype=head.weight.dtype))
        head.bias.copy_(torch.as_tensor(fit.bias, dtype=head.bias.dtype))
