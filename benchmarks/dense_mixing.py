"""Exactness under dense mixing of channels (issue 35): whitened measures against 50-digit arithmetic
when each side's channels are mixed by a dense invertible matrix of a given condition number — the
case of redundant filters, wide layers at modest probe sizes and token dimensions that move together.
PWSM at α = 0 is invariant to any invertible map of either side's channels, so its value on X·A, Y·B
must equal its value on X, Y; at 0 < α < 1 the 50-digit reference on the mixed data is the truth.

The sibling of column_spread.py (diagonal scalings); both one-shot (`distances`, the data at hand)
and streamed (`layer_distance` through the `positions` view's accumulator) entry points.

    python benchmarks/dense_mixing.py [--seeds 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
import similarity_reference as ref  # noqa: E402
from engine.similarity import distances, layer_distance  # noqa: E402

CONDITIONS = (1e0, 1e2, 1e4, 1e6, 1e8, 1e10, 1e12)
ALPHAS = (0.0, 0.5)


def mixing(rng: np.random.Generator, p: int, condition: float) -> np.ndarray:
    """A dense p×p matrix with singular values spread log-evenly over [1/condition, 1]."""
    u = np.linalg.qr(rng.normal(size=(p, p)))[0]
    v = np.linalg.qr(rng.normal(size=(p, p)))[0]
    return u @ np.diag(np.logspace(0, -np.log10(condition), p)) @ v.T


def errors(m: int, p: int, condition: float, seeds: int) -> dict[str, float]:
    """Worst |engine − 50-digit reference| over seeds and α, one-shot and streamed."""
    worst = {"one-shot": 0.0, "streamed": 0.0}
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        X, Y = ref.random_pair(rng, m, p)
        Xm, Ym = X @ mixing(rng, p, condition), Y @ mixing(rng, p, condition)
        labels = [f"pwsm:{alpha:g}" for alpha in ALPHAS]
        one_shot = distances(Xm, Ym, labels)
        streamed = layer_distance(torch.from_numpy(Xm[:, :, None, None]), torch.from_numpy(Ym[:, :, None, None]),
                                  labels, view="positions").values
        for alpha, label in zip(ALPHAS, labels):
            exact = ref.exact_pwsm(Xm, Ym, alpha)
            worst["one-shot"] = max(worst["one-shot"], abs(float(one_shot[label]) - exact))
            worst["streamed"] = max(worst["streamed"], abs(float(streamed[label]) - exact))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    shapes = {"200×12": (200, 12), "60×24": (60, 24)}
    print("worst |pwsm − 50-digit reference| over α ∈ {0, 0.5}, dense mixing of both sides' channels")
    print(f"{'condition':>10s} " + " ".join(f"{name + ' ' + kind:>20s}" for name in shapes
                                           for kind in ("one-shot", "streamed")))
    for condition in CONDITIONS:
        row = []
        for m, p in shapes.values():
            found = errors(m, p, condition, args.seeds)
            row += [found["one-shot"], found["streamed"]]
        print(f"{condition:10.0e} " + " ".join(f"{v:20.1e}" for v in row), flush=True)


if __name__ == "__main__":
    main()
