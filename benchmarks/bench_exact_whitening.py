"""What exact whitening costs (issue 35): a layer's streamed distances with the triangular factor
(engine.similarity.factor: whitened values exact under dense mixing) against the moments alone (the
route before), in one run, alternating, medians of the repeats.

1. The demo's layers: resnet18 at 64 px, 144 probe images, pwsm:0.5 / procrustes / cka on `positions`,
   G = 10 jackknife groups (shapes of relu … layer4, generated activations).
2. A wide layer: 2048 channels, 512 rows (the issue's case), G = 1 and G = 5.

    python benchmarks/bench_exact_whitening.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from engine.similarity import LayerAccumulator  # noqa: E402

MEASURES = ["pwsm:0.5", "procrustes", "cka"]
DEMO_LAYERS = {"relu": (64, 32), "layer1": (64, 16), "layer2": (128, 8), "layer3": (256, 4), "layer4": (512, 2)}


def seconds(a: torch.Tensor, b: torch.Tensor, groups: int, exact: bool, batch: int = 64) -> float:
    """One layer: every probe batch folded in, then the values and replicates."""
    started = time.perf_counter()
    accumulator = LayerAccumulator("positions", MEASURES, groups=groups)
    if not exact:
        accumulator.moments.factor = None  # the moments alone: the route before
    for start in range(0, a.shape[0], batch):
        accumulator.update(a[start:start + batch], b[start:start + batch])
    accumulator.result()
    return time.perf_counter() - started


def compare(name: str, a: torch.Tensor, b: torch.Tensor, groups: int, repeats: int) -> tuple[float, float]:
    before, after = [], []
    for _ in range(repeats):
        before.append(seconds(a, b, groups, exact=False))
        after.append(seconds(a, b, groups, exact=True))
    b_med, a_med = statistics.median(before), statistics.median(after)
    print(f"{name:34s} {b_med:9.3f} s {a_med:9.3f} s  ×{a_med / b_med:5.2f}", flush=True)
    return b_med, a_med


def activations(n: int, c: int, side: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    a = torch.relu(torch.randn(n, c, side, side, generator=generator))
    b = torch.relu(a + 0.3 * torch.randn(n, c, side, side, generator=generator))
    return a, b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; medians of {args.repeats}")
    print(f"{'case':34s} {'moments':>11s} {'+ factor':>11s}  ratio")
    totals = [0.0, 0.0]
    for name, (c, side) in DEMO_LAYERS.items():
        a, b = activations(144, c, side, seed=c)
        before, after = compare(f"demo {name} ({c}×{side}×{side}, G=10)", a, b, 10, args.repeats)
        totals[0] += before
        totals[1] += after
    print(f"{'demo, every layer':34s} {totals[0]:9.3f} s {totals[1]:9.3f} s  ×{totals[1] / totals[0]:5.2f}")
    for groups in (1, 5):
        a, b = activations(512, 2048, 1, seed=groups)
        compare(f"wide: 2048 channels, 512 rows, G={groups}", a, b, groups, args.repeats)


if __name__ == "__main__":
    main()
