"""Peak memory of one layer's analysis as the probe set grows.

Each configuration runs in a fresh process: activations of a (c, h, w) layer for n probe images are
generated batch by batch (64 images at a time, then dropped, as the probe pass hands them over) and
fed to a `LayerAccumulator`; the figure is the process's peak resident memory above what it held
before the first batch (CPU), or torch's peak allocated memory (CUDA). The `positions` view folds
each batch into c×c moments and must stay flat; the `filter` view compares images with each other,
so it keeps the batches (2 · n · c · h · w float32) and its chunked Grams.

    python benchmarks/bench_memory.py                  # c=256, 14×14, n = 128 … 2048
    python benchmarks/bench_memory.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BATCH = 64


def measure(view: str, n: int, c: int, hw: int, device: str) -> dict:
    """Runs inside the child process."""
    import torch

    sys.path.insert(0, str(ROOT))
    from engine.similarity import LayerAccumulator

    generator = torch.Generator().manual_seed(0)
    accumulator = LayerAccumulator(view, ["pwsm", "procrustes", "cka"])
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
    else:
        start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for first in range(0, n, BATCH):
        a = torch.randn(min(BATCH, n - first), c, hw, hw, generator=generator).relu_().to(device)
        b = (a + 0.3 * torch.randn(a.shape, generator=generator).to(device)).relu_()
        accumulator.update(a, b)
        del a, b
    accumulator.result()
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - start
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - start
    kept = 2 * n * c * hw * hw * 4 if view == "filter" else 0
    return {"peak": peak, "kept": kept}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--size", type=int, default=14, help="h = w of the layer's maps")
    parser.add_argument("--sizes", default="128,256,512,1024,2048", help="probe sizes n")
    parser.add_argument("--child", nargs=3, metavar=("VIEW", "N", "DEVICE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        view, n, device = args.child
        print(json.dumps(measure(view, int(n), args.channels, args.size, device)))
        return
    print(f"layer c={args.channels} {args.size}×{args.size}, batches of {BATCH}, device={args.device}; "
          f"peak memory above the process's start, MiB")
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"{'view':>10s} " + " ".join(f"{'n=' + str(n):>9s}" for n in sizes) + "   filter batches kept (MiB)")
    for view in ("positions", "filter"):
        row, kept = [], []
        for n in sizes:
            out = subprocess.run([sys.executable, __file__, "--channels", str(args.channels), "--size", str(args.size),
                                  "--child", view, str(n), args.device], capture_output=True, text=True, check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            row.append(result["peak"] / 2**20)
            kept.append(result["kept"] / 2**20)
        extra = " ".join(f"{k:.0f}" for k in kept) if view == "filter" else ""
        print(f"{view:>10s} " + " ".join(f"{v:9.1f}" for v in row) + f"   {extra}", flush=True)


if __name__ == "__main__":
    main()
