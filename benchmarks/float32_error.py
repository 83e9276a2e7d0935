"""How far the float32 analysis path is from float64 on the same float32 activations (METRICS.md §3).

For each kind of data and each view, activations are drawn in float32 and measured twice with
:func:`engine.similarity.layer_distance`: with ``precision="float32"`` (float32 moments and Grams,
float64 decompositions) and with ``precision="float64"`` on the very same float32 values. The
difference is the error the float32 path adds. Every case runs with 1 and with 2 torch threads
(BLAS reduction order changes with the thread count) over several seeds, and the table prints the
median, 90th percentile and maximum absolute error per kind of data and view, in the metric's unit
(radians for PWSM, squared distance for Procrustes, 1 − CKA for CKA).

    python benchmarks/float32_error.py            # about a minute on 2 cores
    python benchmarks/float32_error.py --seeds 3   # fewer draws
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine.similarity import layer_distance  # noqa: E402
from engine.similarity.metrics import DegenerateWhiteningWarning  # noqa: E402

VIEWS = ("positions", "pooled", "flat", "filter", "filter-map")
METRICS = ("pwsm:0", "pwsm:0.5", "procrustes", "cka")


def relu_pair(rng, n, c, h, w, mix=0.6):
    a = rng.normal(size=(n, c, h, w))
    b = np.sqrt(1 - mix**2) * a + mix * rng.normal(size=(n, c, h, w))
    return np.maximum(a + 0.2, 0), np.maximum(b + 0.2, 0)


def spread(rng, a, b, decades):
    """Column (channel) scales log-uniform over 10^±decades, the same for both models."""
    scale = 10.0 ** rng.uniform(-decades, decades, size=(1, a.shape[1], 1, 1))
    return a * scale, b * scale


def low_rank(rng, n, c, h, w, rank=3):
    basis = rng.normal(size=(rank, c))
    z = rng.normal(size=(n, h, w, rank))
    a = (z @ basis).transpose(0, 3, 1, 2)
    b = ((z + 0.3 * rng.normal(size=z.shape)) @ basis).transpose(0, 3, 1, 2)
    return a, b


CASES = {
    "random ReLU": lambda rng: relu_pair(rng, 64, 16, 6, 6),
    "large offset 1e3": lambda rng: tuple(x + 1e3 for x in relu_pair(rng, 64, 16, 6, 6)),
    "low rank 3": lambda rng: low_rank(rng, 64, 16, 6, 6),
    "near-identical": lambda rng: relu_pair(rng, 64, 16, 6, 6, mix=1e-3),
    "spread 1e±2": lambda rng: spread(rng, *relu_pair(rng, 64, 16, 6, 6), 2),
    "spread 1e±4": lambda rng: spread(rng, *relu_pair(rng, 64, 16, 6, 6), 4),
    "n·h·w = c+1 (positions)": lambda rng: relu_pair(rng, 17, 16, 1, 1),
    "tiny maps 2×2": lambda rng: relu_pair(rng, 32, 8, 2, 2),
}


def errors(a32: np.ndarray, b32: np.ndarray, view: str, device: str = "cpu") -> dict[str, float]:
    metrics = [m for m in METRICS if not (m == "pwsm:0" and view != "positions")]
    a32, b32 = torch.from_numpy(a32).to(device), torch.from_numpy(b32).to(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateWhiteningWarning)
        try:
            fast = layer_distance(a32, b32, metrics, view=view,
                                  precision="float32")
            exact = layer_distance(a32, b32, metrics, view=view,
                                   precision="float64")
        except ValueError:  # α = 0 refused in the degenerate regime
            metrics = [m for m in metrics if m != "pwsm:0"]
            fast = layer_distance(a32, b32, metrics, view=view,
                                  precision="float32")
            exact = layer_distance(a32, b32, metrics, view=view,
                                   precision="float64")
    out = {}
    for label, value in exact.values.items():
        if value is not None and fast.values[label] is not None:
            out[label] = abs(fast.values[label] - value)
    for label, vector in exact.per_filter.items():  # filter views: the worst single filter
        diff = np.abs(fast.per_filter[label] - vector)
        if np.isfinite(diff).any():
            out[f"{label} per filter"] = float(np.nanmax(diff))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--device", default="cpu", help="cpu or cuda: where both paths run")
    args = parser.parse_args()
    threads_before = torch.get_num_threads()
    table: dict[tuple[str, str], list[float]] = {}
    worst_label: dict[tuple[str, str], str] = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for case, make in CASES.items():
            for seed in range(args.seeds):
                a, b = make(np.random.default_rng(seed))
                a32, b32 = np.float32(a), np.float32(b)
                for view in VIEWS:
                    for label, err in errors(a32, b32, view, args.device).items():
                        key = (case, view)
                        table.setdefault(key, []).append(err)
                        if err >= max(table[key]):
                            worst_label[key] = label
    torch.set_num_threads(threads_before)
    print(f"float32 path − float64 path on the same float32 activations ({args.device}); "
          f"{args.seeds} seeds × threads 1, 2")
    print(f"{'data':26s} {'view':11s} {'median':>9s} {'p90':>9s} {'max':>9s}  worst measure")
    overall = []
    for (case, view), errs in table.items():
        e = np.asarray(errs)
        overall += errs
        print(f"{case:26s} {view:11s} {np.median(e):9.2e} {np.quantile(e, 0.9):9.2e} {e.max():9.2e}  "
              f"{worst_label[(case, view)]}")
    print(f"all cases: median {np.median(overall):.2e}, max {max(overall):.2e}")


if __name__ == "__main__":
    main()
