"""One process against N: the per-epoch probe pass and held-out evaluation sharded over processes
(engine.distributed), on the CPU with gloo or on GPUs with NCCL.

Each configuration runs under torchrun (`--nproc-per-node 1` is the baseline, measured in the same
run) on the same model state: a ResNet at the given size, its tuned side the source moved by seeded
noise. Printed per configuration: the seconds of a probe pass (the source side cached, as in every
epoch after the first), of the reduction of the statistics to rank 0 within it, and of the held-out
evaluation; then the largest |distance(N) − distance(1)| over every layer, measure and jackknife
replicate, and whether the held-out accuracy is the same.

    python benchmarks/bench_distributed.py                         # resnet18, 64 px, 256 probe images, 1 vs 2 on CPU
    python benchmarks/bench_distributed.py --device cuda --nprocs 1,2,4 --model resnet50 --image-size 224

On a CPU the processes share the machine's cores (each gets cores ÷ N threads), so the time ratio says
what splitting costs or saves there; on N GPUs the probe pass is split N ways.
"""

from __future__ import annotations

import argparse
import math
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def child(args: argparse.Namespace) -> None:
    import torch

    from engine.analyses.distance import FeatureDistance
    from engine.analyses.runner import EpochAnalyses
    from engine.capture import parse_measures
    from engine.distributed import join_processes
    from engine.intervals import settings_for
    from engine.models import build_model, select_layers
    from engine.evaluation import evaluate

    processes = join_processes(args.device)
    device = torch.device("cuda", processes.local_rank) if args.device == "cuda" else torch.device("cpu")
    torch.manual_seed(0)
    source, _ = build_model(args.model, "none", 10, 0, args.image_size)
    tuned, _ = build_model(args.model, "none", 10, 0, args.image_size)
    tuned.load_state_dict(source.state_dict())
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(0.05 * p.std().nan_to_num() * torch.randn_like(p))
    source, tuned = source.to(device).eval(), tuned.to(device).eval()
    layers = select_layers(args.model, source, None, args.image_size)
    generator = torch.Generator().manual_seed(1)
    probe = torch.randn(args.probe_size, 3, args.image_size, args.image_size, generator=generator)
    held_out = torch.randn(args.held_out, 3, args.image_size, args.image_size, generator=generator)
    labels = torch.randint(0, 10, (args.held_out,), generator=generator)

    def batches(images, targets, size):
        share, size = processes.batch_shard(len(images), size)
        chosen = list(share)
        return [(images[chosen[i:i + size]], targets[chosen[i:i + size]]) for i in range(0, len(chosen), size)], share

    probe_batches, share = batches(probe, torch.zeros(len(probe), dtype=torch.long), 64)
    measures = parse_measures(args.metrics.split(","), "positions", 0.5)
    names = [layer.name for layer in layers]
    part = FeatureDistance(names, measures, intervals=settings_for(10, 0.9, "auto"), processes=processes,
                           first_image=share.start)
    runner = EpochAnalyses(source, {layer.name: layer.layout for layer in layers}, [part], processes)
    runner.run(tuned, probe_batches, device)  # epoch 0: fills the source cache
    processes.barrier()
    start = time.perf_counter()
    sections, spent = runner.run(tuned, probe_batches, device)
    processes.barrier()
    probe_seconds = time.perf_counter() - start
    start = time.perf_counter()
    evaluation = evaluate(tuned, batches(held_out, labels, 64)[0], device, processes=processes)
    processes.barrier()
    eval_seconds = time.perf_counter() - start
    if processes.leader:
        with open(args.child, "wb") as file:
            pickle.dump({"sections": sections, "probe_s": probe_seconds, "distance_s": spent["distance"],
                         "eval_s": eval_seconds, "evaluation": evaluation}, file)
    processes.leave()


def largest_difference(a, b) -> float:
    if isinstance(a, dict):
        return max((largest_difference(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, list):
        return max((largest_difference(x, y) for x, y in zip(a, b)), default=0.0)
    if isinstance(a, float) and not math.isnan(a):
        return abs(a - b)
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--probe-size", type=int, default=256)
    parser.add_argument("--held-out", type=int, default=512)
    parser.add_argument("--metrics", default="pwsm,procrustes,cka")
    parser.add_argument("--nprocs", default="1,2", help="process counts; the first is the baseline")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    counts = [int(n) for n in args.nprocs.split(",")]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            out = Path(tmp) / f"{n}.pkl"
            env = dict(os.environ, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // n)))
            subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}",
                            __file__, "--child", str(out), *sys.argv[1:]], check=True, env=env)
            with open(out, "rb") as file:  # written by the child this process started
                results[n] = pickle.load(file)
    base = results[counts[0]]
    print(f"model={args.model} image={args.image_size}px probe={args.probe_size} held-out={args.held_out} "
          f"device={args.device} metrics={args.metrics} (jackknife, 10 groups)")
    print(f"{'processes':>9s} {'probe pass s':>13s} {'distance s':>11s} {'eval s':>7s} {'probe ratio':>12s} "
          f"{'max |Δ distance|':>17s} {'same accuracy':>14s}")
    for n, result in results.items():
        print(f"{n:9d} {result['probe_s']:13.2f} {result['distance_s']:11.2f} {result['eval_s']:7.2f} "
              f"{result['probe_s'] / base['probe_s']:12.2f} "
              f"{largest_difference(result['sections'], base['sections']):17.2e} "
              f"{str(result['evaluation']['accuracy'] == base['evaluation']['accuracy']):>14s}")


if __name__ == "__main__":
    main()
