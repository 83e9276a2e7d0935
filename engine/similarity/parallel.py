"""Many independent decompositions spread over the CPU's cores.

torch's CPU backend runs a batched eigh or SVD one matrix at a time on one core; its LAPACK calls
release the GIL, so threads, each held to one core, share a batch's matrices.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch


def cpu_workers(device: torch.device) -> int:
    """Batched eigh/SVD run one matrix at a time on one core in torch's CPU backend, so on CPU the
    chunks are spread over as many threads as torch may use (they release the GIL)."""
    return max(1, torch.get_num_threads()) if device.type == "cpu" else 1


def run_in_parallel(fn, items: list, workers: int) -> list:
    if workers == 1 or len(items) == 1:
        return [fn(item) for item in items]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core per chunk; matmuls would otherwise oversubscribe

    def single_threaded(item):
        # the thread-count setting is per thread for OpenMP: without this a pool thread's BLAS and LAPACK
        # calls use every core, and their sums' order (hence the last bits) depends on the load
        torch.set_num_threads(1)
        return fn(item)

    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(single_threaded, items))
    finally:
        torch.set_num_threads(threads)
