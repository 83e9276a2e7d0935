"""Do the jackknife intervals cover? Coverage, width and bias of every measure on the streaming views,
by simulation against population values known in closed form (METRICS.md, "Intervals that cover").

The process. Each probe image i has a latent u_i ~ N(0, I_k) shared by its h·w positions, and each
position its own e_ip ~ N(0, I_k):  z_ip = √ρ u_i + √(1 − ρ) e_ip  (cov z = I, positions of one
image correlated by ρ). The two models' activations are linear in z with their own noise:

    x_ip = z_ip A + σ ε_ip,    y_ip = z_ip B + σ ε'_ip        (A, B: k × c)

so the population second moments are known exactly:
  positions (rows: image × position):  Σxx = AᵀA + σ²I,  Σyy = BᵀB + σ²I,  Σxy = AᵀB;
  pooled (rows: images, each map's spatial mean):  with q = ρ + (1 − ρ)/(h·w),
                                        Σxx = q AᵀA + σ²/(h·w) I, and likewise.
Every measure depends on the data only through centred second moments, homogeneously, so its
population value is the measure of any data whose moments are those: D = [Lᵀ; −Lᵀ] with
Σ_joint = L Lᵀ has zero column means and DᵀD = 2 Σ_joint.

Each draw measures n probe images through the engine's own LayerAccumulator with G jackknife groups
and takes two intervals at the level: the plug-in value ± t·SE (what runs recorded before) and the
jackknife bias-corrected value G·d − (G − 1)·mean d₍g₎ ± t·SE (what they record now).

    python benchmarks/bench_coverage.py                 # the full grid (about 10 minutes)
    python benchmarks/bench_coverage.py --draws 200     # quicker, coarser
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from engine.intervals import bias_corrected, jackknife_se, settings_for  # noqa: E402
from engine.similarity import LayerAccumulator, layer_distance  # noqa: E402

MEASURES = ("pwsm:0.5", "procrustes", "cka", "pwsm:0", "cka-debiased")  # cka before cka-debiased
VIEWS = ("positions", "pooled")


class Process:
    """The generating process of one grid cell (see the module docstring)."""

    def __init__(self, channels: int, side: int, rho: float = 0.5, sigma: float = 0.7, seed: int = 0):
        rng = np.random.default_rng(seed)
        k = channels
        self.c, self.side, self.rho, self.sigma = channels, side, rho, sigma
        self.A = rng.normal(size=(k, channels)) / np.sqrt(k)
        mix = np.linalg.qr(rng.normal(size=(k, k)))[0]  # B: A rotated part-way, with its own part
        self.B = 0.8 * self.A @ (0.7 * np.eye(channels) + 0.3 * mix[:channels, :channels]) \
            + 0.5 * rng.normal(size=(k, channels)) / np.sqrt(k)

    def moments(self, view: str) -> np.ndarray:
        """The population joint covariance of (x, y) rows under ``view``."""
        positions = self.side * self.side
        q, noise = (1.0, self.sigma ** 2) if view == "positions" else \
            (self.rho + (1 - self.rho) / positions, self.sigma ** 2 / positions)
        joint = np.hstack([self.A, self.B])
        return q * joint.T @ joint + noise * np.eye(2 * self.c)

    def population(self, view: str, measures) -> dict[str, float]:
        L = np.linalg.cholesky(self.moments(view))
        D = np.vstack([L.T, -L.T])  # zero column means, DᵀD = 2 Σ_joint
        x, y = D[:, :self.c], D[:, self.c:]
        # the population's whitening is not degenerate: enough rows stand for it (repeating D keeps
        # its moments' proportions and lets pwsm:0's sample-size check pass)
        x, y = np.tile(x, (64, 1)), np.tile(y, (64, 1))
        plain = [m for m in measures if m != "cka-debiased"]
        values = layer_distance(torch.from_numpy(x), torch.from_numpy(y), plain).values
        # debiased CKA estimates the same population value as CKA (its correction vanishes as n grows)
        return {m: values["cka" if m == "cka-debiased" else m] for m in measures} if "cka" in plain else values

    def draw(self, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, c, h, w) activations of the two models for n images."""
        k, positions = self.A.shape[0], self.side * self.side
        u = rng.normal(size=(n, 1, k))
        z = np.sqrt(self.rho) * u + np.sqrt(1 - self.rho) * rng.normal(size=(n, positions, k))
        x = z @ self.A + self.sigma * rng.normal(size=(n, positions, self.c))
        y = z @ self.B + self.sigma * rng.normal(size=(n, positions, self.c))
        shape = lambda a: torch.from_numpy(a.transpose(0, 2, 1).reshape(n, self.c, self.side, self.side).copy())
        return shape(x), shape(y)


def coverage(process: Process, view: str, n: int, measures, draws: int, groups: int = 10, level: float = 0.9,
             seed: int = 1) -> dict[str, dict[str, float]]:
    """Per measure: coverage of the plug-in and of the bias-corrected interval, mean half-width,
    and the mean error of each estimate against the population value."""
    settings = settings_for(groups, level)
    truth = process.population(view, measures)
    rng = np.random.default_rng(seed)
    found = {m: {"plug": [], "corrected": [], "half": []} for m in measures}
    for _ in range(draws):
        a, b = process.draw(n, rng)
        accumulator = LayerAccumulator(view, list(measures), groups=groups)
        accumulator.update(a, b)
        result = accumulator.result()
        for m in measures:
            d, reps = result.values[m], result.replicates.get(m)
            if d is None or reps is None or any(r is None for r in reps):
                continue
            se = jackknife_se(reps)
            found[m]["plug"].append(d)
            found[m]["corrected"].append(bias_corrected(d, reps))
            found[m]["half"].append(settings.t * se)
    table = {}
    for m in measures:
        plug, corrected, half = (np.array(found[m][k]) for k in ("plug", "corrected", "half"))
        if not len(plug):
            continue
        table[m] = {"truth": truth[m], "draws": len(plug),
                    "cover_plug": float(np.mean(np.abs(plug - truth[m]) <= half)),
                    "cover_corrected": float(np.mean(np.abs(corrected - truth[m]) <= half)),
                    "half_width": float(np.mean(half)),
                    "bias_plug": float(np.mean(plug) - truth[m]), "bias_corrected": float(np.mean(corrected) - truth[m])}
    return table


GRID = [  # (channels, side, n): channels per row and images, as in ISSUE 37's table
    (24, 4, 64), (24, 4, 128), (24, 4, 256), (24, 4, 512), (32, 3, 96), (32, 3, 192),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=400)
    parser.add_argument("--groups", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"90 % intervals, G = {args.groups}, {args.draws} draws per cell; coverage plug-in → bias-corrected "
          f"(binomial 99 % band for 0.90 at {args.draws} draws: ±{2.58 * np.sqrt(0.09 / args.draws):.3f})")
    print(f"{'view':9} {'c':>3} {'h·w':>4} {'n':>4}  {'measure':12} {'truth':>8} {'cover':>13} {'half-width':>10} "
          f"{'bias plug-in':>12} {'bias corr.':>10}")
    for view in VIEWS:
        for channels, side, n in GRID:
            process = Process(channels, side, seed=channels)
            started = time.perf_counter()
            table = coverage(process, view, n, MEASURES, args.draws, args.groups)
            for m, row in table.items():
                print(f"{view:9} {channels:>3} {side * side:>4} {n:>4}  {m:12} {row['truth']:8.4f} "
                      f"{row['cover_plug']:5.3f} → {row['cover_corrected']:5.3f} {row['half_width']:10.4f} "
                      f"{row['bias_plug']:+12.4f} {row['bias_corrected']:+10.4f}")
            print(f"  ({time.perf_counter() - started:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
