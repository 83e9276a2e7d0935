"""Exactness against column spread: the largest |engine − reference| over α, seeds and shapes, per
spread of column scales (columns multiplied by 10^U(−d, d), as dead-ish ReLU channels next to live
ones make them). PWSM is compared with 50-digit arithmetic (tests/similarity_reference.py
`exact_pwsm`), Procrustes and CKA with their float64 references. Run it on two commits to compare.

    python benchmarks/column_spread.py [--seeds 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
import similarity_reference as ref  # noqa: E402
from engine.similarity import cka_distance, procrustes_distance, pwsm_distance  # noqa: E402

SHAPES = {"primal 60×8": (60, 8), "primal 30×24": (30, 24), "dual 12×20": (12, 20)}


def worst_error(m: int, p: int, decades: float, seeds: int) -> float:
    worst = 0.0
    for seed in range(seeds):
        X, Y = ref.spread_pair(np.random.default_rng(seed), m, p, decades)
        for alpha in (0.0, 0.1, 0.5, 1.0):
            if alpha == 0.0 and m - 1 <= p:
                continue
            worst = max(worst, abs(pwsm_distance(X, Y, alpha) - ref.exact_pwsm(X, Y, alpha)))
        worst = max(worst, abs(procrustes_distance(X, Y) - ref.procrustes(X, Y)),
                    abs(cka_distance(X, Y) - ref.cka(X, Y)))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    print(f"{'spread':>8s} " + " ".join(f"{name:>15s}" for name in SHAPES))
    for decades in (0, 1, 2, 3, 4, 5, 6, 8):
        row = [worst_error(m, p, decades, args.seeds) for m, p in SHAPES.values()]
        print(f"{'1e±' + str(decades):>8s} " + " ".join(f"{v:15.1e}" for v in row), flush=True)


if __name__ == "__main__":
    main()
