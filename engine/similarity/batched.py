"""Many paired matrices at once — the one fast path behind every batched entry point.

A batch X (b, m, p), Y (b, m, p') is cut into chunks that fit a memory budget; on a CPU the chunks
are spread over torch's threads (batched eigh/SVD run one matrix at a time on one core in torch's
CPU backend, and release the GIL). Each chunk is decomposed once (dual or primal, whichever is
smaller: :func:`engine.similarity.metrics.choose_form`) and every metric asked for comes from that
one decomposition (:func:`engine.similarity.metrics.metric_values`). The `filter` and `filter-map`
views and the public functions (:mod:`engine.similarity.distances`) all end here.
"""

from __future__ import annotations

import torch

from engine.similarity.debiased import debiased_from_centred
from engine.similarity.metrics import (
    centred,
    choose_form,
    compute_dtype_for,
    metric_values,
    needs_whitening,
    pair_spectra,
    unwhitened_values,
)
from engine.similarity.parallel import cpu_workers, run_in_parallel
from engine.similarity.spectral import SideSpectrum

# Memory budget for one chunk of batched work (float64 Grams and their eigenvectors).
DEFAULT_CHUNK_BYTES = 256 * 2**20


class SourceSpectrumCache:
    """Decompositions of the source model's side, reused every epoch (the source never changes).

    Keyed by the caller's layer key, the view and the filter chunk; only dual-form (per-filter Gram)
    spectra are kept, since the primal form needs the raw source matrix anyway.
    """

    def __init__(self):
        self._store: dict[tuple, SideSpectrum] = {}

    def get(self, key: tuple) -> SideSpectrum | None:
        return self._store.get(key)

    def put(self, key: tuple, spectrum: SideSpectrum) -> None:
        self._store[key] = spectrum

    def __len__(self) -> int:
        return len(self._store)


def filter_chunk_size(n_items: int, rows: int, features: int, chunk_bytes: int) -> int:
    """How many per-filter problems fit the memory budget at once."""
    side = min(rows, features)
    per_item = 8 * (4 * side * side + 2 * rows * features)
    return max(1, min(n_items, chunk_bytes // max(1, per_item)))


def batched_metric_values(x: torch.Tensor, y: torch.Tensor, metrics, whitening_scale: str,
                          precision: str | None, chunk: int, cache: SourceSpectrumCache | None = None,
                          cache_key: tuple | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Metrics for a batch of paired matrices x, y (b, m, p), chunk by chunk.

    Returns {label: (b,)} values plus both sides' centred sums of squares (b,) for dead detection.
    The source side's dual spectra are taken from / stored in ``cache`` when one is given.
    """
    b, m, p = x.shape
    form = choose_form(m, p, y.shape[-1])
    workers = cpu_workers(x.device)
    chunk = max(1, min(chunk, -(-b // workers)))
    ranges = [(start, min(b, start + chunk)) for start in range(0, b, chunk)]

    direct = not needs_whitening(metrics) and max(p, y.shape[-1]) <= m

    def one_chunk(bounds: tuple[int, int]):
        start, stop = bounds
        if direct:  # nothing to whiten: no decomposition of either side
            return unwhitened_values(x[start:stop], y[start:stop], metrics, precision)
        key = None if cache is None or form != "dual" else (cache_key, start, stop)
        source = cache.get(key) if key is not None else None
        pair = pair_spectra(x[start:stop], y[start:stop], precision, form, source)
        if key is not None and source is None:
            cache.put(key, pair.x)
        dtype = compute_dtype_for(x.device, precision)
        debiased = lambda: debiased_from_centred(centred(x[start:stop], dtype).to(torch.float64),  # noqa: E731
                                                 centred(y[start:stop], dtype).to(torch.float64))
        return (metric_values(pair, metrics, whitening_scale, debiased), pair.x.total_variance,
                pair.y.total_variance)

    results = run_in_parallel(one_chunk, ranges, workers)
    values = {mt.label: torch.cat([r[0][mt.label] for r in results]) for mt in metrics}
    return values, torch.cat([r[1] for r in results]), torch.cat([r[2] for r in results])
