"""UMAP of a layer's probe features, the source and each epoch on one map (ANALYSES.md §8; seed:
finetuning-methods-readme.md, whose notebook draws pretrained features with UMAP).

For a hooked layer ℓ, the run's probe images x₁ … x_n (classes y_i) and a model θᵗ (t = 0: source)

    f_iᵗ = mean over positions of A_ℓ(θᵗ; x_i)        (``pooled``: the run's `pooled` view)
    f_iᵗ = the class token of A_ℓ(θᵗ; x_i)             (``cls``: layers that have one, ViTs)

UMAP (McInnes, Healy & Melville 2018; the maintained ``umap-learn``) is **fitted on the source
features {f_i⁰} only**; every epoch's features are then placed with that fitted map
(``UMAP.transform``), so all epochs share the source's axes and a point that moves is an image whose
features moved relative to the source's neighbourhoods. (A map fitted per epoch would have its own
arbitrary axes, and nothing could be compared across epochs.) ``transform`` places a point by its
nearest *source* neighbours, so features that leave the source's manifold are drawn at its nearest
edge, not beyond it: the map shows movement among source neighbourhoods, not how far.

Numbers beside the picture, per epoch t (u_iᵗ: image i's place in the map):

* ``shift`` = median_i ‖u_iᵗ − u_i⁰‖ / r₀ with r₀ the RMS distance of the source points from their
  centroid: how far images moved, in units of the source map's size (0 at t = 0). u⁰ is the source
  placed by ``transform`` like every epoch (not the fitted embedding, which ``transform`` would not
  reproduce: a layer that moved by 10⁻⁹ would show a move of about 0.3 against it). ``transform``
  itself depends on the order of the points it places, so the result records its noise floor,
  ``shift_floor``: the shift of the source placed again in a shuffled order (about 0.1 on 120
  clustered points) — moves below it are UMAP's, not the network's;
* ``neighbours_map`` and ``neighbours_features``: leave-one-out k-nearest-neighbour (k = 5, majority,
  ties to the nearest) class accuracy in the 2-D map and in the feature space itself (Euclidean, or
  cosine with ``--metric cosine``). UMAP can make or hide clusters: the second says whether what the
  picture shows is in the features.

Fitting is deterministic for a seed (``random_state`` makes umap-learn single-threaded); the first
fit in a process also compiles umap-learn's numba kernels (~15 s on a laptop-class CPU).
Written to ``RUN/analyses/umap-<layer>[-cls].json`` with ``display: "scatter"``: the TUI draws it in
the filter view (`u`) and among the post-hoc results, `ftdyn figures` as a row of panels.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.analyses import refuse_while_written, result_path, write_result
from engine.capture import capture
from engine.errors import FtdynError
from engine.record import SCHEMA_VERSION
from engine.posthoc.shown import umap_shown
from engine.events import Event, quiet
from engine.checkpoints import available_checkpoints, require_checkpoints
from engine.run_config import hooked_layers, saved_config
from engine.run_inputs import model_state, open_run
from engine.untrusted import safe_file_name

FEATURES = ("pooled", "cls")
METRICS = ("euclidean", "cosine")
NEIGHBOUR_VOTE = 5  # k of the k-NN class agreement
MIN_IMAGES = 8  # below this a 2-D map of neighbourhoods says nothing


@torch.no_grad()
def probe_features(model: torch.nn.Module, probe_batches, layer: str, layout, features: str,
                   device: torch.device) -> np.ndarray:
    """(n, c) float64: every probe image's pooled map (or class token) at ``layer``."""
    model.eval()
    rows = []
    for images, _ in probe_batches:
        with capture(model, {layer: layout}) as out:
            model(images.to(device))
        maps = out[(layer, "cls")] if features == "cls" else out[layer]
        rows.append(maps.double().mean((2, 3)).cpu())
    return torch.cat(rows).numpy()


def neighbour_agreement(points: np.ndarray, labels: np.ndarray, metric: str = "euclidean",
                        k: int = NEIGHBOUR_VOTE) -> float:
    """Leave-one-out k-NN class accuracy: the share of images whose k nearest others (majority vote,
    ties to the class of the nearest among the tied) have the image's class."""
    x = np.asarray(points, dtype=np.float64)
    if metric == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)
    squared = (x * x).sum(1)
    distances = squared[:, None] + squared[None, :] - 2.0 * x @ x.T
    np.fill_diagonal(distances, np.inf)
    k = min(k, len(x) - 1)
    nearest = np.argsort(distances, axis=1, kind="stable")[:, :k]
    hits = 0
    for i, order in enumerate(nearest):
        votes = labels[order]
        counts = np.bincount(votes)
        tied = np.flatnonzero(counts == counts.max())
        winner = next(v for v in votes if v in tied)  # the nearest among the tied classes
        hits += int(winner == labels[i])
    return hits / len(x)


def map_shift(source: np.ndarray, placed: np.ndarray) -> float:
    """Median displacement of the images from their source places, over the source map's RMS radius."""
    radius = np.sqrt(((source - source.mean(0)) ** 2).sum(1).mean())
    return float(np.median(np.linalg.norm(placed - source, axis=1)) / max(radius, 1e-300))


DEFAULT_NEIGHBOURS = 15


def fit_map(source: np.ndarray, neighbours: int, min_dist: float, metric: str, seed: int):
    """The UMAP fitted on the source features (deterministic for ``seed``)."""
    import umap

    with warnings.catch_warnings():
        # umap-learn says that random_state disables parallelism: that is the point
        warnings.filterwarnings("ignore", message=".*n_jobs.*")
        return umap.UMAP(n_neighbors=neighbours, min_dist=min_dist, n_components=2,
                         metric=metric, random_state=seed).fit(source)


def place(fitted, features: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs.*")
        return np.asarray(fitted.transform(features), dtype=np.float64)


def run_feature_umap(run_dir: str | Path, layer: str, epochs: list[int] | None = None, features: str = "pooled",
                     neighbours: int | None = None, min_dist: float = 0.1, metric: str = "euclidean", seed: int = 0,
                     data: str | None = None, on_event: Event = quiet) -> tuple[dict[str, Any], Path]:
    """Fit the map on the source, place each chosen epoch (default: every saved checkpoint), write
    the result; returns (result, file)."""
    run_dir = Path(run_dir)
    refuse_while_written(run_dir)  # before any work: the result goes into the run directory
    hooked_layers(saved_config(run_dir), [layer])
    if features not in FEATURES:
        raise FtdynError(f"--features takes {' or '.join(FEATURES)}, not '{features}'")
    if metric not in METRICS:
        raise FtdynError(f"--metric takes {' or '.join(METRICS)}, not '{metric}'")
    if (neighbours is not None and neighbours < 2) or not 0.0 <= min_dist <= 1.0:
        raise FtdynError("--neighbours must be at least 2 and --min-dist within [0, 1]")
    checkpoints = available_checkpoints(run_dir)
    wanted = sorted({0, *(epochs if epochs else checkpoints)})
    require_checkpoints(wanted, checkpoints)
    target = result_path(run_dir, f"umap-{safe_file_name(layer)}" + ("-cls" if features == "cls" else ""))
    started = time.perf_counter()
    on_event("phase", name=f"opening {run_dir}")
    inputs = open_run(run_dir, on_event, data=data)
    hooked = inputs.layers[[entry.name for entry in inputs.layers].index(layer)]
    if features == "cls" and not (hooked.layout and hooked.layout.class_token):
        raise FtdynError(f"layer '{layer}' has no class token; use --features pooled")
    labels = np.array([inputs.held_out.samples[i][1] for i in inputs.probe.indices], dtype=np.int64)
    if len(labels) < MIN_IMAGES:
        raise FtdynError(f"the run's probe set has {len(labels)} images; a map needs at least {MIN_IMAGES} "
                         f"(runs take more with --probe-size)")
    if neighbours is None:  # umap-learn's default, where the probe set has that many others
        neighbours = min(DEFAULT_NEIGHBOURS, len(labels) - 1)
    elif neighbours > len(labels) - 1:
        raise FtdynError(f"--neighbours {neighbours} is more than the run's {len(labels)} probe images can give "
                         f"(at most {len(labels) - 1}: each image's neighbours are the others); use --neighbours "
                         f"{len(labels) - 1} or fewer")

    def features_at(epoch: int) -> np.ndarray:
        model = inputs.source
        if epoch:
            inputs.model.load_state_dict(model_state(run_dir, epoch, inputs.device))
            model = inputs.model
        found = probe_features(model, inputs.probe_loader, layer, hooked.layout, features, inputs.device)
        if not np.isfinite(found).all():
            raise FtdynError(f"layer '{layer}' gives non-finite features at epoch {epoch}; no map was written")
        return found

    source = features_at(0)
    on_event("phase", name="fitting UMAP on the source features (the first fit compiles umap-learn's kernels)")
    fitted = fit_map(source.astype(np.float32), neighbours, min_dist, metric, seed)
    # The source is placed like every epoch, by transform: umap-learn would hand back its fitted
    # embedding for the very array it was fitted on (it checks a hash, which the float64 copy does not
    # match), and a moved layer measured against that other placement would show a move of its own.
    source_map = place(fitted, source)
    # transform's optimisation depends on the order of the points it places: the same source features
    # in another order land up to this far away, so smaller moves are UMAP's noise, not the network's
    order = np.random.default_rng(seed).permutation(len(source))
    floor = map_shift(source_map, place(fitted, source[order])[np.argsort(order)])
    points, stats = {}, {}
    for done, epoch in enumerate(wanted, start=1):
        tuned = source if epoch == 0 else features_at(epoch)
        placed = source_map if epoch == 0 else place(fitted, tuned)
        points[str(epoch)] = np.round(placed, 5).tolist()
        stats[str(epoch)] = {"shift": map_shift(source_map, placed),
                             "neighbours_map": neighbour_agreement(placed, labels),
                             "neighbours_features": neighbour_agreement(tuned, labels, metric)}
        on_event("progress", task="umap", done=done, total=len(wanted), info=f"epoch {epoch}")
    result = {
        "schema": SCHEMA_VERSION, "name": "umap", "display": "scatter", "created_at": time.time(),
        "title": f"UMAP of {layer} ({features} features), fitted on the source",
        "layer": layer, "features": features, "epochs": wanted, "points": points,
        "labels": labels.tolist(), "classes": list(inputs.data.classes), "stats": stats, "shift_floor": floor,
        "notes": ([] if len(wanted) > 1 else
                  ["only the source was mapped: the run saved no checkpoint (runs keep every epoch with "
                   "--save-every-epoch)"]),
        "settings": {"neighbours": neighbours, "min_dist": min_dist, "metric": metric,
                     "seed": seed, "probe_images": len(labels), "k": NEIGHBOUR_VOTE, "fitted_on": "source"},
        "seconds": time.perf_counter() - started,
    }
    result["show"] = umap_shown(result)
    write_result(target, result)
    return result, target
