"""Similarity-engine benchmark: ftdyn's batched/streaming layer distances against the naive way,
through both entry points: `layer_distance(…, view="filter")` and the public batched function
`distances(X, Y, metrics)` on the same per-filter matrices X, Y of shape (filters, images, positions).

The naive baseline is what netrep-style code does: one matrix at a time in numpy float64, an explicit
whitening matrix per side and α (eigen-decomposition of the p×p XᵀX), then an SVD of φ(X)ᵀφ(Y).
Both compute the same numbers — PWSM at α ∈ {0.25, 0.5, 1}, Procrustes and CKA — and the table
prints seconds, the speed-up ratio and the largest absolute difference.

The naive per-filter baseline at 56×56 takes about a minute per filter on 2 cores, so for the
`filter` view it is timed on the first k filters and scaled to the whole layer (the work per filter
is identical); the column 'naive filters' says how many were timed.

    python benchmarks/bench_similarity.py             # the full table (about 10 minutes on 2 cores)
    python benchmarks/bench_similarity.py --quick     # small sizes, seconds
    python benchmarks/bench_similarity.py --device cuda
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine.similarity import SourceSpectrumCache, distances, layer_distance  # noqa: E402

ALPHAS = (0.25, 0.5, 1.0)
METRICS = tuple(f"pwsm:{a:g}" for a in ALPHAS) + ("procrustes", "cka")


def naive_whiten(x: np.ndarray, alpha: float) -> np.ndarray:
    """φ_α(X) with S = XᵀX / (mean eigenvalue); null directions carry no weight."""
    s = x.T @ x
    s = s / (np.trace(s) / x.shape[1])
    lam, v = np.linalg.eigh(s)
    live = lam > 1e-10 * lam.max()
    d = np.where(live, alpha + (1 - alpha) / np.sqrt(np.where(live, lam, 1.0)), 0.0)
    return x @ (v * d) @ v.T


def naive_metrics(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    x = x - x.mean(0)
    y = y - y.mean(0)
    out = {}
    for alpha in ALPHAS:
        fx, fy = naive_whiten(x, alpha), naive_whiten(y, alpha)
        nuclear = np.linalg.svd(fx.T @ fy, compute_uv=False).sum()
        out[f"pwsm:{alpha:g}"] = float(np.arccos(np.clip(nuclear / np.linalg.norm(fx) / np.linalg.norm(fy), -1, 1)))
    xn, yn = x / np.linalg.norm(x), y / np.linalg.norm(y)
    out["procrustes"] = float(2 - 2 * np.linalg.svd(xn.T @ yn, compute_uv=False).sum())
    out["cka"] = float(1 - np.linalg.norm(x.T @ y) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))
    return out


def layer_pair(n: int, c: int, hw: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """ReLU activations with spatial structure: a source layer and a perturbed 'fine-tuned' one."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, c, hw, hw)).astype(np.float32)
    base += np.roll(base, 1, axis=2) + np.roll(base, 1, axis=3)  # neighbouring positions correlate
    tuned = 0.8 * base + 0.6 * rng.normal(size=base.shape).astype(np.float32)
    return np.maximum(base, 0), np.maximum(tuned + 0.1, 0)


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def synchronise(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def bench_filter(n: int, c: int, hw: int, device: str, baseline_filters: int) -> dict:
    a, b = layer_pair(n, c, hw, seed=hw)
    ta, tb = torch.from_numpy(a).to(device), torch.from_numpy(b).to(device)
    layer_distance(ta[:, :2], tb[:, :2], METRICS, view="filter")  # warm-up (lazy init, kernels)
    synchronise(device)

    cache = SourceSpectrumCache()

    def ours():
        result = layer_distance(ta, tb, METRICS, view="filter", cache=cache, cache_key="bench")
        synchronise(device)
        return result

    result, seconds = timed(ours)  # first epoch: both sides decomposed
    _, epoch_seconds = timed(ours)  # every later epoch: the source side comes from the cache

    def public():  # the public function on (filters, images, positions): no cache, one decomposition
        x = ta.permute(1, 0, 2, 3).reshape(c, n, hw * hw)
        y = tb.permute(1, 0, 2, 3).reshape(c, n, hw * hw)
        values = distances(x, y, METRICS)
        synchronise(device)
        return values

    api, api_seconds = timed(public)
    k = min(c, baseline_filters)
    naive, naive_seconds = timed(lambda: [naive_metrics(a[:, f].reshape(n, -1).astype(np.float64),
                                                        b[:, f].reshape(n, -1).astype(np.float64))
                                          for f in range(k)])
    diff = max(abs(naive[f][label] - result.per_filter[label][f]) for f in range(k) for label in METRICS)
    live = ~np.isnan(result.per_filter[METRICS[0]])
    api_diff = max(float(np.abs(api[label].cpu().numpy()[live] - result.per_filter[label][live]).max())
                   for label in METRICS)
    return dict(case=f"filter  n={n} c={c} {hw}x{hw}", ours=seconds, epoch=epoch_seconds, api=api_seconds,
                baseline=naive_seconds * c / k, k=f"{k}/{c}", diff=max(diff, api_diff))


def bench_positions(n: int, c: int, hw: int, device: str) -> dict:
    a, b = layer_pair(n, c, hw, seed=c + hw)
    ta, tb = torch.from_numpy(a).to(device), torch.from_numpy(b).to(device)
    layer_distance(ta[:4], tb[:4], METRICS, view="positions")
    synchronise(device)

    def ours():
        result = layer_distance(ta, tb, METRICS, view="positions")
        synchronise(device)
        return result

    result, seconds = timed(ours)

    def naive():
        x = a.transpose(0, 2, 3, 1).reshape(-1, c).astype(np.float64)
        y = b.transpose(0, 2, 3, 1).reshape(-1, c).astype(np.float64)
        return naive_metrics(x, y)

    expected, naive_seconds = timed(naive)
    diff = max(abs(expected[label] - result.values[label]) for label in METRICS)
    return dict(case=f"positions n={n} c={c} {hw}x{hw}", ours=seconds, epoch=seconds, api=None,
                baseline=naive_seconds, k="all", diff=diff)


def time_shares(n: int, c: int, hw: int, device: str) -> None:
    """Where a later epoch's time goes in the filter view (dual form: h·w > n): each step of the
    method timed alone on all filters at once, in float64 — the floor the engine cannot go below."""
    a, b = layer_pair(n, c, hw, seed=hw)
    x = torch.from_numpy(b).to(device).permute(1, 0, 2, 3).reshape(c, n, hw * hw).double()
    x = x - x.mean(1, keepdim=True)
    steps = {}
    gram, steps["Gram X Xᵀ (tuned side)"] = timed(lambda: x @ x.transpose(1, 2))
    (lam, u), steps["eigh of the Gram"] = timed(lambda: torch.linalg.eigh(gram))
    cross, steps["cross term Uᵀ U"] = timed(lambda: u.transpose(1, 2) @ u)
    _, one = timed(lambda: torch.linalg.svdvals(cross))
    nuclear = len(ALPHAS)  # one nuclear norm per α; Procrustes shares α = 1
    steps[f"svdvals × {nuclear} (one per α)"] = one * nuclear
    total = sum(steps.values())
    print(f"\nwhere a later epoch's time goes, filter view n={n} c={c} {hw}x{hw} (dual form), {device}:")
    for name, seconds in steps.items():
        print(f"  {name:28s} {seconds:7.3f} s  {100 * seconds / total:5.1f} %")
    print(f"  {'sum':28s} {total:7.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run in seconds")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.quick:
        cases = [lambda: bench_filter(64, 32, 14, args.device, 4), lambda: bench_filter(64, 16, 28, args.device, 2),
                 lambda: bench_positions(64, 64, 14, args.device)]
    else:
        cases = [lambda: bench_filter(256, 256, 14, args.device, 16),
                 lambda: bench_filter(256, 256, 28, args.device, 3),
                 lambda: bench_filter(256, 256, 56, args.device, 1),
                 lambda: bench_positions(512, 256, 28, args.device),
                 lambda: bench_positions(512, 2048, 7, args.device)]
    print(f"device={args.device} torch={torch.__version__} threads={torch.get_num_threads()} "
          f"metrics={','.join(METRICS)}")
    print("'first' = first call (source and tuned sides decomposed); 'epoch' = a later epoch, when the\n"
          "source side's decompositions come from the cache (the same for views that stream); 'api' = the\n"
          "public distances(X, Y, metrics) on the same (filters, images, positions) matrices, no cache.\n"
          "'max |diff|' covers the naive loop and the public function against layer_distance.")
    header = (f"{'case':34s} {'first s':>8s} {'epoch s':>8s} {'api s':>8s} {'naive s':>9s} {'ratio first':>12s} "
              f"{'ratio epoch':>12s} {'ratio api':>10s} {'naive filters':>14s} {'max |diff|':>11s}")
    print(header)
    print("-" * len(header))
    for case in cases:
        row = case()
        api = f"{row['api']:8.3f}" if row["api"] else f"{'-':>8s}"
        api_ratio = f"{row['baseline'] / row['api']:9.1f}x" if row["api"] else f"{'-':>10s}"
        print(f"{row['case']:34s} {row['ours']:8.3f} {row['epoch']:8.3f} {api} {row['baseline']:9.2f} "
              f"{row['baseline'] / row['ours']:11.1f}x {row['baseline'] / row['epoch']:11.1f}x {api_ratio} "
              f"{row['k']:>14s} {row['diff']:11.2e}", flush=True)

    if not args.quick:
        time_shares(256, 256, 28, args.device)


if __name__ == "__main__":
    main()
