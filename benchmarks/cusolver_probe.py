"""cuSOLVER's batched symmetric solver (engine.similarity.eigen.symmetric_eigh) against torch's
looped ``torch.linalg.eigh`` on the GPU, float64: time per matrix, eigenvalue agreement, residual
‖AV − VΛ‖/‖A‖ and orthogonality ‖VᵀV − I‖ per size — the figures behind eigen.py's sizes.

    python benchmarks/cusolver_probe.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine.similarity import eigen  # noqa: E402


def seconds(fn) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    device = torch.device("cuda")
    print(f"{torch.cuda.get_device_name(device)}; torch {torch.__version__}; batched solver found: "
          f"{eigen.solver_applies(device, torch.float64, 64, 2)}")
    print(f"{'n':>5s} {'batch':>6s} {'batched ms':>10s} {'looped ms':>10s} {'ratio':>6s} {'|Δλ|/|λ|':>9s} "
          f"{'residual':>9s} {'orthogonality':>13s}")
    for n, batch in ((49, 2048), (196, 1024), (512, 256), (1024, 64), (1296, 32), (2048, 16)):
        g = torch.randn(batch, n, n + 8, device=device, dtype=torch.float64)
        a = g @ g.transpose(1, 2)
        eigen.symmetric_eigh(a[:2])
        batched = seconds(lambda: eigen.symmetric_eigh(a))
        looped_count = min(batch, 64)
        looped = seconds(lambda: torch.linalg.eigh(a[:looped_count])) / looped_count
        values, vectors = eigen.symmetric_eigh(a)
        reference = torch.linalg.eigvalsh(a[:4])
        agreement = ((values[:4] - reference).abs().amax() / reference.abs().amax()).item()
        residual = ((a @ vectors - vectors * values.unsqueeze(-2)).norm(dim=(1, 2)) / a.norm(dim=(1, 2))).amax().item()
        eye = torch.eye(n, device=device, dtype=torch.float64)
        orthogonality = (vectors.transpose(1, 2) @ vectors - eye).abs().amax().item()
        print(f"{n:5d} {batch:6d} {1e3 * batched / batch:10.4f} {1e3 * looped:10.3f} {looped * batch / batched:6.1f} "
              f"{agreement:9.1e} {residual:9.1e} {orthogonality:13.1e}", flush=True)


if __name__ == "__main__":
    main()
