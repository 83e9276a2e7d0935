"""One process of a distributed measurement, for tests/test_distributed.py.

`python -m torch.distributed.run --standalone --nproc-per-node N tests/sharded_worker.py OUT` measures a
small network's probe pass and held-out evaluation sharded over N gloo processes (engine.distributed),
the way a distributed run does; rank 0 saves what it got to OUT. The test runs :func:`measure` in
one process on the same problem and compares.
"""

from __future__ import annotations

import pickle
import sys

import torch
from torch import nn

from engine.analyses.distance import FeatureDistance
from engine.analyses.runner import EpochAnalyses
from engine.capture import parse_measures
from engine.distributed import Processes, join_processes
from engine.intervals import settings_for
from engine.evaluation import evaluate
from engine.visualise import FilterEvidence

PROBE_IMAGES = 11  # odd: the shards differ in size
HELD_OUT_IMAGES = 13
BATCH = 4
LAYERS = ["1", "4"]
MEASURES = ["pwsm", "procrustes", "cka", "cka-debiased", "cka@pooled", "procrustes@filter-map", "pwsm@flat",
            "procrustes@filter"]
SAMPLES = [2, 7, 10]  # probe images whose whole maps the visualisation keeps


def network() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Conv2d(6, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))


def problem():
    """The source, two tuned models (two epochs: the second reads the source cache), the images."""
    torch.manual_seed(0)
    source = network().eval()
    tuned = []
    for scale in (0.05, 0.2):
        model = network()
        model.load_state_dict(source.state_dict())
        with torch.no_grad():
            for p in model.parameters():
                p.add_(scale * p.std() * torch.randn_like(p))
        tuned.append(model.eval())
    probe = torch.randn(PROBE_IMAGES, 3, 9, 9)
    held_out = torch.randn(HELD_OUT_IMAGES, 3, 9, 9)
    labels = torch.randint(0, 3, (HELD_OUT_IMAGES,))
    return source, tuned, probe, held_out, labels


def batches(images: torch.Tensor, labels: torch.Tensor, processes: Processes) -> tuple[list, range]:
    """This process's share of the images in batches (engine.distributed.batch_shard), and the share."""
    share, size = processes.batch_shard(len(images), BATCH)
    chosen = list(share)
    return [(images[chosen[i:i + size]], labels[chosen[i:i + size]]) for i in range(0, len(chosen), size)], share


def measure(processes: Processes) -> dict | None:
    """Each epoch's sections, evaluation and visualisation evidence (rank 0; None on the others)."""
    source, tuned, probe, held_out, labels = problem()
    measures = parse_measures(MEASURES, "positions", 0.5)
    probe_batches, share = batches(probe, torch.zeros(PROBE_IMAGES, dtype=torch.long), processes)
    part = FeatureDistance(LAYERS, measures, intervals=settings_for(3, 0.9, "all"), processes=processes,
                           first_image=share.start)
    runner = EpochAnalyses(source, LAYERS, [part], processes)
    out = {"epochs": [], "images": processes.gather_objects(list(share))}
    for model in tuned:
        if not processes.leader:  # after a training epoch each process's BatchNorm statistics differ a little
            model[3].running_mean.add_(0.1 * processes.rank)
        processes.broadcast_buffers(model)  # what the trainer does before measuring: rank 0's everywhere
        evidence = FilterEvidence(LAYERS, SAMPLES, first_image=share.start)
        sections, _ = runner.run(model, probe_batches, torch.device("cpu"), observer=evidence)
        evaluation = evaluate(model, batches(held_out, labels, processes)[0], torch.device("cpu"),
                              processes=processes)
        out["epochs"].append({"sections": sections, "evaluation": evaluation, "peaks": {
            (layer, side): evidence.peaks(layer, side) for layer in LAYERS for side in ("source", "tuned")}
            if processes.leader else None, "samples": evidence.samples, "moments": evidence.moments,
            "seen": evidence.seen})
    return out if processes.leader else None


if __name__ == "__main__":
    processes = join_processes("cpu")
    result = measure(processes)
    if processes.leader:
        with open(sys.argv[1], "wb") as file:  # read back by the test that started this process only
            pickle.dump({"world": processes.world, "hosts": processes.hosts, **result}, file)
    processes.leave()
