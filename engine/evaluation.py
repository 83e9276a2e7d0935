"""Held-out evaluation: mean cross-entropy and accuracy of a classifier, exact over processes."""

from __future__ import annotations

import torch
from torch import nn

from engine.accelerate import autocast, to_memory_format


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, autocast_mode: str = "off", processes=None,
             channels_last: bool = False) -> dict[str, float]:
    """Mean cross-entropy and accuracy of ``model`` (eval mode) over every batch of ``loader``. In a
    distributed run each process's ``loader`` holds its own shard of the images (engine.distributed)
    and the sums are added over the processes in float64: every image counted once, as on one."""
    model.eval()
    criterion = nn.CrossEntropyLoss(reduction="sum")
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, images
    for images, labels in loader:
        images = to_memory_format(images.to(device), channels_last)
        labels = labels.to(device)
        with autocast(device, autocast_mode):
            logits = model(images)
        totals[0] += criterion(logits.to(torch.float64), labels)
        totals[1] += (logits.argmax(1) == labels).sum()
        totals[2] += len(labels)
    if processes is not None and processes.distributed:
        totals = processes.sum(totals.to(processes.device()))
    loss_sum, correct, seen = totals.tolist()
    return {"loss": loss_sum / seen, "accuracy": correct / seen}
