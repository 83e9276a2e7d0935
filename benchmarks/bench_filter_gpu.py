"""The paper's per-filter view on a GPU: the per-matrix route against the batched route, side by side,
and two peer libraries' CKA on the same features.

For ResNet-50's paper layers at n = 512 (or any classifier's default layers, --model): every default
measure (pwsm:0.5, procrustes, cka) on the `filter` view. The batched route (engine.similarity.eigen
"auto": cuSOLVER's batched symmetric solver, nuclear norms by the bracketed one-sided Gram with
Jordan–Wielandt where the bracket is wide) runs on every filter, twice (the first call fills the
source-side cache, the second is what each later epoch costs). The previous per-matrix route
("looped": torch's eigh/SVD one matrix at a time) runs on the first --old-filters filters of each
layer, twice likewise; its per-epoch time is scaled to all filters (its cost is per matrix), and its
per-filter values are compared with the batched route's on those filters.

Peers (installed in the benchmark's environment only): cka-pytorch's ``hsic1`` and torch-cka's
``CKA._HSIC`` on the Grams of the flattened features, over the whole probe set in one batch, beside
our ``cka-debiased`` on the `flat` view (the same unbiased estimator) and ``cka``.

No weights are downloaded: the network is randomly initialised and the "tuned" model is the source
with every parameter moved by 2 % of its spread (the cost depends on shapes, not on what was learned).

    python benchmarks/bench_filter_gpu.py                                  # ResNet-50, n = 512, 224 px
    python benchmarks/bench_filter_gpu.py --model vit_b_16 --n 256
    python benchmarks/bench_filter_gpu.py --device cpu --n 24 --image-size 64 --old-filters 4   # smoke test
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import engine.similarity.singular as singular  # noqa: E402
import engine.similarity.spectral as spectral  # noqa: E402
from bench_gpu_analysis import probe_batches, source_and_tuned, synchronise  # noqa: E402
from engine.capture import as_feature_map  # noqa: E402
from engine.similarity import SourceSpectrumCache, eigen, layer_distance  # noqa: E402

METRICS = ("pwsm", "procrustes", "cka")


class Counts:
    """How many matrices took each fallback in the batched route."""

    def __init__(self):
        self.nuclear = self.gram_wide = self.cpu_svd = 0
        gram, svd = singular.nuclear_gram, spectral.singular_decomposition

        def counted_gram(a):
            estimate, held = gram(a)
            self.nuclear += len(held)
            self.gram_wide += int((~held).sum())
            return estimate, held

        def counted_svd(a):
            self.cpu_svd += a.shape[0]
            return svd(a)

        singular.nuclear_gram = counted_gram
        spectral.singular_decomposition = counted_svd


def capture(model, layers, batches, layouts):
    """Each hooked layer's probe activations as (n, c, h, w) maps (token layouts as ftdyn's capture
    lays them out), kept on the device."""
    found, handles = {name: [] for name in layers}, []
    modules = dict(model.named_modules())
    for name in layers:
        handles.append(modules[name].register_forward_hook(
            lambda module, inputs, output, name=name: found[name].append(
                as_feature_map(output, layouts[name]).detach())))
    with torch.no_grad():
        for images, _ in batches:
            model(images)
    for handle in handles:
        handle.remove()
    return {name: torch.cat(parts) for name, parts in found.items()}


def timed(device, fn):
    synchronise(device)
    start = time.perf_counter()
    result = fn()
    synchronise(device)
    return result, time.perf_counter() - start


def peers(device, a, b):
    """(label, 1 − CKA, seconds) of each peer on the flattened features, in float32 (as hooked
    activations come) and, where the peer takes it, float64; a row saying so where a peer is not
    installed."""
    rows = []
    for dtype in (torch.float32, torch.float64):
        x, y = a.flatten(1).to(dtype), b.flatten(1).to(dtype)
        gram_x, gram_y = x @ x.T, y @ y.T
        bits = "float32" if dtype == torch.float32 else "float64"
        try:
            from cka_pytorch.hsic import hsic1

            def cka_pytorch():
                kx, ky = gram_x[None], gram_y[None]
                return (hsic1(kx, ky) / (hsic1(kx, kx) * hsic1(ky, ky)).sqrt()).item()

            value, seconds = timed(device, cka_pytorch)
            rows.append((f"cka-pytorch 1.1.3 hsic1, {bits}", 1.0 - value, seconds))
        except ImportError:
            rows.append(("cka-pytorch", None, None))
        if dtype == torch.float64:
            continue  # torch-cka builds its ones vector in float32: float64 Grams are refused
        try:
            from torch_cka import CKA

            def torch_cka():
                me = SimpleNamespace(device=device)
                xy = CKA._HSIC(me, gram_x, gram_y)
                return xy / np.sqrt(CKA._HSIC(me, gram_x, gram_x) * CKA._HSIC(me, gram_y, gram_y))

            value, seconds = timed(device, torch_cka)
            rows.append((f"torch-cka 0.21 _HSIC, {bits}", 1.0 - value, seconds))
        except ImportError:
            rows.append(("torch-cka", None, None))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--old-filters", type=int, default=64, help="filters per layer timed on the per-matrix route")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}; torch {torch.__version__}; {args.model}, n = {args.n}, {args.image_size} px; "
          f"batched solver: {eigen.solver_applies(device, torch.float64, 64, 2)}")
    source, tuned, layers, layouts = source_and_tuned(args.model, args.image_size, device)
    batches = probe_batches(args.n, args.image_size, args.batch, device)
    features_a = capture(source, layers, batches, layouts)
    features_b = capture(tuned, layers, batches, layouts)
    counts = Counts()
    print(f"{'layer':10s} {'shape':>18s} {'batched s':>9s} {'per-matrix s':>12s} "
          f"{'speed-up':>8s} {'max |Δ|':>8s} {'Gram wide':>10s} {'CPU SVDs':>8s}")
    totals = {"batched": 0.0, "looped": 0.0}
    for layer in layers:
        a, b = features_a[layer], features_b[layer]
        k = min(args.old_filters, a.shape[1])
        cache = SourceSpectrumCache()
        with eigen.route("auto"):
            timed(device, lambda: layer_distance(a, b, METRICS, view="filter", cache=cache, cache_key=layer))
            wide_before = (counts.nuclear, counts.gram_wide, counts.cpu_svd)
            new, new_s = timed(device, lambda: layer_distance(a, b, METRICS, view="filter", cache=cache, cache_key=layer))
        epoch_counts = [now - then for now, then in zip((counts.nuclear, counts.gram_wide, counts.cpu_svd), wide_before)]
        old_cache = SourceSpectrumCache()
        with eigen.route("looped"):
            subset_a, subset_b = a[:, :k].contiguous(), b[:, :k].contiguous()
            timed(device, lambda: layer_distance(subset_a, subset_b, METRICS, view="filter", cache=old_cache, cache_key=layer))
            old, old_s = timed(device, lambda: layer_distance(subset_a, subset_b, METRICS, view="filter",
                                                                cache=old_cache, cache_key=layer))
        old_epoch = old_s * a.shape[1] / k
        worst = max(float(np.nanmax(np.abs(new.per_filter[label][:k] - old.per_filter[label]))) for label in old.per_filter)
        totals["batched"] += new_s
        totals["looped"] += old_epoch
        print(f"{layer:10s} {str(tuple(a.shape)):>18s} {new_s:9.2f} {old_epoch:12.1f} "
              f"{old_epoch / new_s:8.1f} {worst:8.1e} {epoch_counts[1]:>4d}/{epoch_counts[0]:<5d} {epoch_counts[2]:8d}",
              flush=True)
    print(f"filter view, every layer, per epoch: batched {totals['batched']:.2f} s, per-matrix "
          f"{totals['looped']:.1f} s (scaled from {args.old_filters} filters a layer): "
          f"{totals['looped'] / totals['batched']:.1f}× (goal ≤ 2 s)")
    print("peers on the same features (flattened, whole probe set in one batch); distance = 1 − CKA:")
    for layer in layers:
        a, b = features_a[layer], features_b[layer]
        debiased, debiased_s = timed(device, lambda: layer_distance(a, b, ("cka-debiased",), view="flat"))
        biased, biased_s = timed(device, lambda: layer_distance(a, b, ("cka",), view="flat"))
        ours = [("ftdyn cka-debiased@flat (float64)", debiased.values["cka-debiased"], debiased_s),
                ("ftdyn cka@flat (float64, biased)", biased.values["cka"], biased_s)]
        for label, value, seconds in ours + peers(device, a, b):
            shown = "not installed" if value is None else f"{value:.10f}  {seconds * 1e3:8.1f} ms"
            print(f"  {layer:10s} {label:36s} {shown}")


if __name__ == "__main__":
    main()
