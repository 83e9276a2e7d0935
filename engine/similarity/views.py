"""Views: how a layer's paired activations (n, c, h, w) become representation matrices (METRICS.md §1),
and the layer-level entry point :func:`layer_distance`.

| view         | samples (rows)    | features (columns) | values per layer                       |
|--------------|-------------------|--------------------|----------------------------------------|
| `positions`  | n·h·w             | c                  | 1, streamed as c×c moments             |
| `pooled`     | n                 | c (spatial mean)   | 1, streamed as c×c moments             |
| `flat`       | n                 | c·h·w              | 1, from the n×n Gram                   |
| `filter`     | n                 | h·w of one filter  | c, layer value = mean over live filters|
| `filter-map` | w (image columns) | h (image rows)     | c per image, averaged over images      |
| `cls`        | n                 | d                  | 1: a ViT layer's class token (fed as an (n, d, 1, 1) map) |

`filter-map` reproduces the authors' Procrustes code: each single h×w map is a matrix whose image
rows are the features and whose columns are the samples, each row centred over its columns (Ding
et al.'s layout), i.e. our column-centred convention applied to the transposed map.

Dead or constant filters (METRICS.md §4): for the whole-layer views a channel constant over the
probe set in either model is counted (it is a null direction, harmless to the metric); for the
filter views a filter whose centred matrix vanishes in either model has no distance: it is
excluded from the layer mean, counted, and NaN in the per-filter vector. No NaN reaches a layer
value: a layer with no live filter has value None.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from engine.intervals import group_storage, jackknife_se
from engine.similarity.batched import (
    DEFAULT_CHUNK_BYTES,
    SourceSpectrumCache,
    batched_metric_values,
    filter_chunk_size,
)
from engine.similarity.metrics import (
    DEFAULT_ALPHA,
    DegenerateWhiteningWarning,
    Metric,
    PairedSpectra,
    as_tensor,
    check_whitening,
    compute_dtype_for,
    centred,
    constant_column_floor,
    metric_values,
    needs_whitening,
    resolve_dual,
    parse_metrics,
    spectrum_from_gram,
)
from engine.similarity.debiased import DEBIASED, debiased_from_grams
from engine.similarity.spectral import REPLICATE_EIGH_ERROR, dual_cross
from engine.similarity.parallel import cpu_workers, run_in_parallel
from engine.similarity.streaming import MomentAccumulator, pooled_rows, positions_rows

VIEWS = ("positions", "pooled", "flat", "filter", "filter-map", "cls")
FILTER_VIEWS = ("filter", "filter-map")
DEFAULT_VIEW = "positions"
GROUP_DTYPES = {"float64": torch.float64, "float32": torch.float32}
PARALLEL_MIN_FEATURES = 64  # replicates of narrower layers are decomposed in the calling thread
# A filter is dead when its centred sum of squares is below this fraction of the layer's largest:
# roundoff of a constant input, nothing a metric could resolve.
DEAD_RELATIVE_TOLERANCE = {torch.float64: 1e-20, torch.float32: 1e-10}


@dataclass
class LayerDistance:
    """One layer's distances for one view: the value per metric label, per-filter vectors for
    filter views (NaN marks a dead filter), and how many filters were dead."""

    view: str
    values: dict[str, float | None]
    dead_filters: int
    n_filters: int
    per_filter: dict[str, np.ndarray] = field(default_factory=dict)
    # the jackknife's replicates (engine.intervals): label → the value with each image group left out
    replicates: dict[str, list[float | None]] = field(default_factory=dict)

    def add_replicate(self, values: dict[str, float | None]) -> None:
        for label, value in values.items():
            self.replicates.setdefault(label, []).append(value)


def check_view(view: str) -> str:
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; choose from {', '.join(VIEWS)}")
    return view


def view_shape(view: str, n: int, c: int, h: int, w: int) -> tuple[int, int]:
    """(samples, features) of one representation matrix of ``view``."""
    return {
        "positions": (n * h * w, c),
        "pooled": (n, c),
        "flat": (n, c * h * w),
        "filter": (n, h * w),
        "filter-map": (w, h),
        "cls": (n, c),
    }[check_view(view)]


def check_metrics_for_view(metrics: Sequence[Metric], view: str, shape: tuple[int, int, int, int]) -> None:
    """Refuse PWSM α = 0 up front when the view's matrices are in the degenerate regime."""
    rows, features = view_shape(view, *shape)
    for metric in metrics:
        if metric.name == "pwsm":
            check_whitening(metric.alpha, rows, features, where=f"view '{view}'")


def replicate_metrics(metrics: Sequence[Metric], view: str, shape: tuple[int, int, int, int]) -> list[Metric]:
    """The metrics a jackknife replicate of ``shape`` (the images left after deleting a group) can take:
    PWSM α = 0 is left out where the fewer rows make full whitening degenerate — that value then has
    no interval, rather than the whole layer failing (the run warns up front)."""
    rows, features = view_shape(view, *shape)
    return [m for m in metrics if not (m.name == "pwsm" and m.alpha == 0.0 and rows - 1 <= features)]


def dead_mask(centred_power: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """True where a filter's centred sum of squares is zero up to roundoff of the layer's scale."""
    largest = centred_power.max() if centred_power.numel() else centred_power.new_tensor(0.0)
    return centred_power <= DEAD_RELATIVE_TOLERANCE[dtype] * largest


def layer_distance(source, tuned, metrics: Sequence[str | Metric] = ("pwsm", "procrustes", "cka"),
                   view: str = DEFAULT_VIEW, alpha: float = DEFAULT_ALPHA, whitening_scale: str = "mean_eig",
                   precision: str | None = None, cache: SourceSpectrumCache | None = None,
                   cache_key: object = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> LayerDistance:
    """Distances between the source's and the tuned model's activations (n, c, h, w) of one layer.

    ``metrics`` are names ('pwsm', 'pwsm:0', 'procrustes', 'cka'); plain 'pwsm' uses ``alpha``.
    ``cache`` (with a ``cache_key`` naming the layer) keeps the source-side decompositions of the
    filter view across calls. ``chunk_bytes`` bounds the memory of batched work.
    """
    a, b = as_tensor(source), as_tensor(tuned)
    b = b.to(a.device)
    if a.ndim == 2:  # fully connected activations: (n, c) → (n, c, 1, 1)
        a, b = a[:, :, None, None], b[:, :, None, None]
    if a.ndim != 4 or a.shape != b.shape:
        raise ValueError(f"expected paired activations of shape (n, c, h, w); got {tuple(a.shape)} and {tuple(b.shape)}")
    accumulator = LayerAccumulator(view, metrics, alpha, whitening_scale, precision, cache, cache_key, chunk_bytes)
    check_metrics_for_view(accumulator.metrics, view, tuple(a.shape))
    step = max(1, int(chunk_bytes // max(1, a[0].numel() * 8 * 2)))
    for start in range(0, a.shape[0], step):
        accumulator.update(a[start:start + step], b[start:start + step])
    return accumulator.result()


class LayerAccumulator:
    """One layer's distances for one view, fed probe batch by probe batch.

    `positions` and `pooled` fold each batch into c×c moments and `filter-map` into per-filter sums
    (both O(c²) or O(c) memory); `filter` and `flat` compare images with each other, so they keep
    the batches (on the device they came from) until :meth:`result`.

    Sharded over processes (``processes``, :mod:`engine.distributed`), each process is fed its own
    contiguous share of the probe images, the first of them image ``first_image`` of the whole set
    (which fixes each image's jackknife group), and :meth:`reduce` brings every share's statistics
    to rank 0: moments and per-filter sums added in float64, kept batches gathered in image order.
    """

    def __init__(self, view: str, metrics: Sequence[str | Metric], alpha: float = DEFAULT_ALPHA,
                 whitening_scale: str = "mean_eig", precision: str | None = None,
                 cache: SourceSpectrumCache | None = None, cache_key: object = None,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES, groups: int = 1, processes=None, first_image: int = 0):
        self.processes = processes
        self.first_image = first_image
        self.view = check_view(view)
        self.metrics = parse_metrics(metrics, alpha)
        self.whitening_scale = whitening_scale
        self.precision = precision
        self.cache, self.cache_key = cache, cache_key
        self.chunk_bytes = chunk_bytes
        self.groups = groups
        self.shape: tuple[int, ...] | None = None
        debiased = any(m.name == DEBIASED for m in self.metrics)
        self.moments = MomentAccumulator(precision, groups, row_terms=debiased, processes=processes,
                                         factor=needs_whitening(self.metrics)) \
            if view in ("positions", "pooled", "cls") else None
        self.kept: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.map_sums: dict[str, torch.Tensor] = {}  # label → (G, c) per-group sums of per-map values
        self.map_counts: dict[str, torch.Tensor] = {}  # label → (G, c) how many maps each sum holds
        self.map_live: torch.Tensor | None = None  # (G, c) per-group counts of live maps
        self.device = torch.device("cpu")

    def update(self, a: torch.Tensor, b: torch.Tensor) -> None:
        if self.shape is not None and a.shape[1:] != self.shape[1:]:
            raise ValueError(f"batch shape {tuple(a.shape)} does not match earlier batches {self.shape}")
        if self.shape is None:
            self.device = a.device
            if self.moments is not None:  # wide layers keep their per-group moments in float32
                self.moments.group_dtype = GROUP_DTYPES[group_storage(self.groups, a.shape[1])]
        seen = self.shape[0] if self.shape else 0
        self.shape = (seen + a.shape[0], *a.shape[1:])
        # probe image i belongs to jackknife group i mod G (engine.intervals): the probe order is fixed
        first = self.first_image + seen
        image_groups = (torch.arange(first, first + a.shape[0], device=a.device) % self.groups) \
            if self.groups > 1 else None
        if self.view == "positions":
            rows = None if image_groups is None else image_groups.repeat_interleave(a.shape[2] * a.shape[3])
            self.moments.update(positions_rows(a), positions_rows(b), rows)
        elif self.view in ("pooled", "cls"):  # cls: the class token arrives as an (n, d, 1, 1) map
            self.moments.update(pooled_rows(a), pooled_rows(b), image_groups)
        elif self.view == "filter-map":
            self.add_filter_maps(a, b, image_groups)
        else:
            self.kept.append((a, b))

    def reduce(self) -> None:
        """Every process's share of the probe images, on rank 0: the statistics of all of them (see
        the class docstring). Every process calls it; only rank 0 may then call :meth:`result`."""
        processes = self.processes
        images = processes.sum(torch.tensor([self.shape[0]], dtype=torch.float64, device=processes.device()))
        self.shape = (int(images.item()), *self.shape[1:])
        if self.moments is not None:
            self.moments.reduce()
        elif self.view == "filter-map":
            for sums in (*self.map_sums.values(), *self.map_counts.values(), self.map_live):
                processes.sum_float64(sums)
        else:  # flat and filter compare images with each other: the images themselves go to rank 0
            shares = processes.gather_objects([(a.cpu(), b.cpu()) for a, b in self.kept])
            self.kept = [(a.to(self.device), b.to(self.device)) for share in shares or [] for a, b in share]

    def result(self) -> LayerDistance:
        """The layer's distances, with the jackknife's replicates when ``groups`` > 1."""
        if self.shape is None:
            raise ValueError("no activations were added")
        check_metrics_for_view(self.metrics, self.view, self.shape)
        dtype = compute_dtype_for(self.device, self.precision)
        if self.moments is not None:
            values = self.moment_values(self.moments.replicates())
            result = LayerDistance(self.view, {label: v[0] for label, v in values.items()},
                                   channel_dead_count(*self.moments.column_variances(), dtype),
                                   self.shape[1], replicates={label: v[1:] for label, v in values.items() if v[1:]})
            if self.view == "positions":  # free from the moments: how far each filter moved, for ranking them
                result.per_filter[CHANNEL_ANGLE] = channel_angles(*self.moments.centred_moments(), dtype).cpu().numpy()
            return result
        if self.view == "filter-map":
            result = self.filter_map_result(None)
            for g in range(self.groups if self.groups > 1 else 0):
                result.add_replicate(self.filter_map_result(g).values)
            return result
        a = torch.cat([k[0] for k in self.kept])
        b = torch.cat([k[1] for k in self.kept])
        result = self.kept_result(a, b, None, self.metrics)
        if self.groups > 1:
            image_groups = torch.arange(a.shape[0], device=a.device) % self.groups
            for g in range(self.groups):
                keep = (image_groups != g).nonzero().flatten()
                usable = replicate_metrics(self.metrics, self.view, (len(keep), *a.shape[1:]))
                values = self.kept_result(a[keep], b[keep], g, usable).values if usable else {}
                result.add_replicate({m.label: values.get(m.label) for m in self.metrics})
        return result

    def kept_result(self, a: torch.Tensor, b: torch.Tensor, left_out: int | None, metrics) -> LayerDistance:
        """`flat` or `filter` on the kept images (one replicate: group ``left_out`` deleted)."""
        dtype = compute_dtype_for(self.device, self.precision)
        if self.view == "flat":
            return flat_layer_distance(a, b, metrics, self.whitening_scale, dtype, self.chunk_bytes)
        key = self.cache_key if left_out is None else (self.cache_key, "left out", left_out)
        return filter_layer_distance(a, b, metrics, self.whitening_scale, self.precision, self.cache,
                                     key, self.chunk_bytes)

    def moment_values(self, leave_outs: list[int | None]) -> dict[str, list[float | None]]:
        """Each metric of each replicate in ``leave_outs`` (None: every row), in that order.
        Replicates of equal size share a batched decomposition, in chunks within the memory budget."""
        out: dict[str, list[float | None]] = {m.label: [None] * len(leave_outs) for m in self.metrics}
        by_rows: dict[int, list[int]] = {}
        for i, g in enumerate(leave_outs):
            by_rows.setdefault(self.moments.rows_without(g), []).append(i)
        c = max(self.shape[1], 1)
        # as many replicates at once as the memory budget holds (a 2048-channel layer: one); a narrow
        # layer's decompositions take less than handing them to threads
        workers = max(1, min(cpu_workers(self.device), int(self.chunk_bytes // (56 * c * c))))
        workers = 1 if c < PARALLEL_MIN_FEATURES else workers
        # one replicate per task on a multi-core CPU (the pool balances them), batched on a GPU
        chunk = 1 if workers > 1 else max(1, int(self.chunk_bytes // (56 * c * c)))
        batches = [indices[start:start + chunk] for indices in by_rows.values()
                   for start in range(0, len(indices), chunk)]

        def one_batch(batch: list[int]) -> dict[str, torch.Tensor]:
            chosen = [leave_outs[i] for i in batch]
            debiased = lambda: torch.tensor([self.moments.debiased_cka(g) for g in chosen],  # noqa: E731
                                            dtype=torch.float64)
            metrics = self.metrics if None in chosen else replicate_metrics(  # a replicate's rows as pooled rows
                self.metrics, "pooled", (self.moments.rows_without(chosen[0]), c, 1, 1))
            if not metrics:
                return {}
            pair = self.moments.paired_spectra(chosen, self.cache, (self.cache_key, self.view))
            return metric_values(pair, metrics, self.whitening_scale, debiased)

        # batched decompositions run one matrix at a time on one core on a CPU: replicates on every core
        for batch, values in zip(batches, run_in_parallel(one_batch, batches, workers if len(batches) > 1 else 1)):
            for label, v in values.items():
                for i, value in zip(batch, v.tolist()):
                    out[label][i] = None if math.isnan(value) else value
        if self.moments.factor is not None and None in leave_outs:
            self.exact_whitening(out, leave_outs)
        return out

    def exact_whitening(self, out: dict[str, list[float | None]], leave_outs: list[int | None]) -> None:
        """The whitened measures of every row from the triangular factor (exact however the channels are
        mixed: engine.similarity.factor) in place of the moments'. The replicates stay the moments':
        an error δ in them moves the bias-corrected estimate by up to (G − 1)·δ, so where the moments'
        value of every row is off the factor's by more than a hundredth of the replicates' standard
        error over G − 1, the moments could not resolve this layer's whitening closely enough for its
        replicates either: those are dropped (no interval, the value shown plug-in) rather than
        recorded wrong (docs/PRECISION.md, "Dense mixing")."""
        whitened = [m for m in self.metrics if m.name == "pwsm" and m.alpha < 1.0]
        with warnings.catch_warnings():  # a small α was warned about once, by the moments' pass
            warnings.simplefilter("ignore", DegenerateWhiteningWarning)
            exact = metric_values(self.moments.factor_spectra(), whitened, self.whitening_scale)
        total = leave_outs.index(None)
        for label, value in exact.items():
            value = None if math.isnan(float(value[0])) else float(value[0])
            from_moments, out[label][total] = out[label][total], value
            replicates = [out[label][i] for i, g in enumerate(leave_outs) if g is not None]
            if not replicates or None in replicates:
                continue
            tolerance = max(REPLICATE_EIGH_ERROR, 0.01 * jackknife_se(replicates) / max(1, len(replicates) - 1))
            if from_moments is None or value is None or abs(from_moments - value) > tolerance:
                for i, g in enumerate(leave_outs):
                    if g is not None:
                        out[label][i] = None

    def filter_map_result(self, left_out: int | None) -> LayerDistance:
        """`filter-map` from the per-group sums, every group or all but ``left_out``."""
        less = lambda t: t.sum(0) - (t[left_out] if left_out is not None else 0)  # noqa: E731
        per_filter = {}
        for label, v in self.map_sums.items():
            counts = less(self.map_counts[label])
            per_filter[label] = torch.where(counts > 0, less(v) / counts.clamp_min(1), torch.full_like(v[0], math.nan))
        return filter_view_result("filter-map", per_filter, less(self.map_live) == 0, self.shape[1])

    def add_filter_maps(self, a: torch.Tensor, b: torch.Tensor, image_groups: torch.Tensor | None) -> None:
        """`filter-map`: each image's h×w map of each filter, in the authors' layout (image rows are
        features, columns samples); sums, per image group, over the images where the map is live in
        both models."""
        n, c, h, w = a.shape
        x = a.transpose(2, 3).reshape(n * c, w, h)
        y = b.transpose(2, 3).reshape(n * c, w, h)
        chunk = filter_chunk_size(n * c, w, h, self.chunk_bytes)
        values, power_x, power_y = batched_metric_values(x, y, self.metrics, self.whitening_scale,
                                                         self.precision, chunk)
        dtype = compute_dtype_for(a.device, self.precision)
        live = ~(dead_mask(power_x, dtype) | dead_mask(power_y, dtype)).reshape(n, c)
        groups = image_groups if image_groups is not None else torch.zeros(n, dtype=torch.long, device=a.device)
        if self.map_live is None:
            self.map_live = torch.zeros(self.groups, c, dtype=torch.long, device=a.device)
        for label, v in values.items():
            v = v.reshape(n, c)
            counted = live & ~torch.isnan(v)  # a live map may still lack one metric's value (debiased CKA: 0/0)
            if label not in self.map_sums:
                self.map_sums[label] = torch.zeros(self.groups, c, dtype=v.dtype, device=a.device)
                self.map_counts[label] = torch.zeros(self.groups, c, dtype=torch.long, device=a.device)
            self.map_sums[label].index_add_(0, groups, torch.where(counted, v, torch.zeros_like(v)))
            self.map_counts[label].index_add_(0, groups, counted.long())
        self.map_live.index_add_(0, groups, live.long())


def channel_dead_count(var_x: torch.Tensor, var_y: torch.Tensor, dtype: torch.dtype) -> int:
    """Channels constant over the probe set in either model."""
    return int((dead_mask(var_x, dtype) | dead_mask(var_y, dtype)).sum())


CHANNEL_ANGLE = "channel-angle"


def channel_angles(sxx: torch.Tensor, syy: torch.Tensor, sxy: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Per filter j, the `positions` view of filter j alone under any of the metrics:

        θ_j = arccos |r_j|,   r_j = (XᵀY)_jj / √((XᵀX)_jj (YᵀY)_jj)     (X, Y centred over every image and position)

    the angle between the filter's source and tuned responses. With one feature, PWSM gives θ_j for every α
    (S is the scalar 1), Procrustes 2 − 2|r_j| and CKA 1 − r_j², so all three rank filters alike. Read from
    the moments the layer's value needs anyway (no extra pass); NaN where the filter is dead on either side."""
    vx, vy = sxx.diagonal().clamp_min(0), syy.diagonal().clamp_min(0)
    r = sxy.diagonal().abs() / (vx * vy).sqrt()
    theta = torch.arccos(r.clamp(max=1.0))
    return torch.where(dead_mask(vx, dtype) | dead_mask(vy, dtype), torch.full_like(theta, float("nan")), theta)


def whole_layer_result(view: str, pair: PairedSpectra, metrics: Sequence[Metric], whitening_scale: str,
                       dead: int, debiased=None) -> LayerDistance:
    values = metric_values(pair, metrics, whitening_scale, debiased)
    n_filters = pair.x.n_features
    result = {label: (None if torch.isnan(v[0]) else float(v[0])) for label, v in values.items()}
    return LayerDistance(view, result, dead, n_filters)


def flat_layer_distance(a: torch.Tensor, b: torch.Tensor, metrics, whitening_scale: str, dtype: torch.dtype,
                        chunk_bytes: int) -> LayerDistance:
    """`flat` view: the n×n Grams built channel-chunk by channel-chunk (no n×c·h·w float64 copy);
    only a side whose Gram cannot resolve its directions (:func:`resolve_dual`) is decomposed again
    from its whole centred data."""
    n, c = a.shape[:2]
    p = a[0].numel()
    step = max(1, int(chunk_bytes // max(1, n * a[0, 0].numel() * 8 * 2)))
    sides = []
    var, grams = {}, {}
    for name, acts in (("x", a), ("y", b)):
        gram = torch.zeros(n, n, dtype=torch.float64, device=a.device)
        var[name] = torch.zeros(c, dtype=torch.float64, device=a.device)
        live_columns = torch.zeros((), dtype=torch.int64, device=a.device)
        for start in range(0, c, step):
            raw = acts[:, start:start + step]
            block = raw.to(dtype)
            block = block - block.mean(0, keepdim=True)
            power = block.pow(2).sum(0).to(torch.float64)  # per column (channel, row, col)
            var[name][start:start + step] = power.sum((1, 2))
            live_columns += (power > constant_column_floor(raw.reshape(n, -1)[None], dtype)[0].reshape(power.shape)).sum()
            flat = block.reshape(n, -1)
            gram += (flat @ flat.T).to(torch.float64)
        grams[name] = gram

        sides.append(resolve_dual(spectrum_from_gram(gram[None], n, p, dtype), n, p,
                                  lambda rows, count=live_columns: count.expand(len(rows)),
                                  lambda rows, acts=acts: centred(acts.reshape(1, n, -1), dtype)[rows]))
    sx, sy = sides
    identical = torch.tensor([torch.equal(a, b)], device=a.device)
    pair = PairedSpectra(sx, sy, dual_cross(sx, sy), n, identical)
    return whole_layer_result("flat", pair, metrics, whitening_scale, channel_dead_count(var["x"], var["y"], dtype),
                              lambda: debiased_from_grams(grams["x"][None], grams["y"][None]))


def filter_layer_distance(a: torch.Tensor, b: torch.Tensor, metrics, whitening_scale: str,
                          precision: str | None, cache: SourceSpectrumCache | None, cache_key: object,
                          chunk_bytes: int) -> LayerDistance:
    """`filter` view: one (n, h·w) matrix per filter, batched; dual form when h·w > n."""
    n, c, h, w = a.shape
    x = a.permute(1, 0, 2, 3).reshape(c, n, h * w)
    y = b.permute(1, 0, 2, 3).reshape(c, n, h * w)
    chunk = filter_chunk_size(c, n, h * w, chunk_bytes)
    # The checksum keeps a changed probe set from ever reusing a stale decomposition.
    checksum = float(a.sum(dtype=torch.float64))
    key = None if cache is None else (cache_key, "filter", tuple(a.shape), checksum, chunk)
    values, power_x, power_y = batched_metric_values(x, y, metrics, whitening_scale, precision, chunk, cache, key)
    dtype = compute_dtype_for(a.device, precision)
    dead = dead_mask(power_x, dtype) | dead_mask(power_y, dtype)
    return filter_view_result("filter", values, dead, c)


def filter_view_result(view: str, per_filter: dict[str, torch.Tensor], dead: torch.Tensor, n_filters: int) -> LayerDistance:
    live = ~dead
    values: dict[str, float | None] = {}
    vectors: dict[str, np.ndarray] = {}
    for label, v in per_filter.items():
        v = torch.where(live, v, torch.full_like(v, float("nan")))
        vectors[label] = v.detach().cpu().numpy().astype(np.float64)
        # a live filter can still have no value under one metric (debiased CKA of a filter that responds
        # to one image only is 0/0): it is left out of that metric's mean, as dead filters are of all
        defined = live & ~torch.isnan(v)
        values[label] = float(v[defined].mean()) if bool(defined.any()) else None
    return LayerDistance(view, values, int(dead.sum()), n_filters, vectors)
