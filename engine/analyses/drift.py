"""Parameter drift (ANALYSES.md §1; Neyshabur et al. 2020 §3.3): how far each module's weights have
moved from where fine-tuning started.

    drift_m(t) = ‖θ_mᵗ − θ_m⁰‖₂          relative_m(t) = drift_m(t) / ‖θ_m⁰‖₂

θ⁰ is the source model (for ``--weights none``, the initialisation), θᵗ the model after epoch t,
θ_m the parameters of module m, all entries of all its tensors as one vector, summed in float64.
Rows:

* ``groups``: the block groups ``ftdyn layers MODEL`` lists (the ones `surgical`,
  `discriminative` and `autorgn` use), input → output, and ``backbone`` = every parameter but the head.
* ``layers``: per hooked layer, the parameters that produce it from the previous hooked layer —
  those of the modules registered after the previous hooked layer's last sub-module, up to the
  hooked layer's own last sub-module (module order, which is execution order for torchvision's
  networks). For the stem ReLU that is conv1 + bn1; for a ResNet stage output, the stage.

The new head has no θ⁰ (it was created for the target classes): its norm ‖θ_headᵗ‖₂ is recorded as
``head_norm``, never a drift. BatchNorm running statistics are buffers, not parameters: left out.
Cost: one pass over the parameters per measurement (no probe images).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from engine.models import layer_segments

MEASURES = ("relative@groups", "absolute@groups", "relative@layers", "absolute@layers")


class ParameterDrift:
    name = "drift"
    when = "epoch"
    section = "drift"
    uses_probe = False
    default = True  # one pass over the parameters: about 0.2 % of a demo epoch
    summary = "parameter drift ‖θᵗ − θ⁰‖ per block group, per hooked layer's module and for the backbone"

    @classmethod
    def build(cls, context) -> "ParameterDrift":
        return cls(context.source, context.groups, context.layer_names, context.head)

    def __init__(self, source: nn.Module, groups: "OrderedDict[str, list[str]]", layer_names: list[str], head: str):
        # the frozen source holds θ⁰; nothing is copied
        self.start = {n: p.detach() for n, p in source.named_parameters()}
        self.head = [n for n in groups.get("head", []) if n in self.start]
        head_set = set(self.head)
        self.rows = {"groups": OrderedDict((g, names) for g, names in groups.items() if g != "head")}
        self.rows["groups"]["backbone"] = [n for n in self.start if n not in head_set]
        self.rows["layers"] = layer_segments(source, layer_names, head)
        self.size = {n: float(torch.linalg.vector_norm(p, dtype=torch.float64)) ** 2 for n, p in self.start.items()}
        self.model: nn.Module | None = None

    def declaration(self) -> dict:
        return {"title": "parameter drift ‖θᵗ − θ⁰‖ per module", "unit": "L2 norm (relative: ÷ ‖θ⁰‖)",
                "measures": list(MEASURES), "rows": {view: list(rows) for view, rows in self.rows.items()},
                "row_kind": "module",
                "note": "BatchNorm running statistics are buffers and are left out; the new head has no θ⁰ "
                        "(its norm is recorded as head_norm)"}

    def begin(self, model: nn.Module) -> None:
        self.model = model

    @torch.no_grad()
    def finish(self) -> dict:
        current = dict(self.model.named_parameters())
        moved = {n: float(torch.linalg.vector_norm(current[n] - p, dtype=torch.float64)) ** 2
                 for n, p in self.start.items()}
        size = self.size
        section: dict = {}
        for view, rows in self.rows.items():
            absolute, relative = {}, {}
            for row, names in rows.items():
                if not names:
                    absolute[row] = relative[row] = None
                    continue
                distance = sum(moved[n] for n in names) ** 0.5
                norm = sum(size[n] for n in names) ** 0.5
                absolute[row] = distance
                relative[row] = distance / norm if norm > 0 else None
            section[view] = {"absolute": absolute, "relative": relative}
        section["head_norm"] = sum(float(torch.linalg.vector_norm(current[n], dtype=torch.float64)) ** 2
                                   for n in self.head) ** 0.5
        return section
