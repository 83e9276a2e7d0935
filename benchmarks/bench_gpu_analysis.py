"""The per-epoch analysis of a real layer set on a GPU: ResNet-50's paper layers (or any classifier's
default layers, --model), n probe images at 224 px, every default measure on `positions` and on the
`filter` view, plus parameter drift.

No weights are downloaded: the network is randomly initialised (the cost of the analysis depends on
shapes, not on what the weights learned) and the "tuned" model is the source with every parameter
moved by 2 % of its spread. Probe images are smooth random fields. For each precision the script
runs two epochs' analyses (the first fills the source-side caches, the second is what every later
epoch costs) and prints the time per part, the peak GPU memory, and float32's difference from
float64 per layer and measure. It first checks that CUDA float64 equals CPU float64 on every view.

    python benchmarks/bench_gpu_analysis.py                 # n = 512, 224 px (an H100: about a minute)
    python benchmarks/bench_gpu_analysis.py --n 64 --image-size 64 --device cpu   # a smoke test
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine.analyses.distance import FeatureDistance  # noqa: E402
from engine.analyses.drift import ParameterDrift  # noqa: E402
from engine.analyses.runner import EpochAnalyses  # noqa: E402
from engine.capture import parse_measures  # noqa: E402
from engine.models import architecture, head_name, select_layers  # noqa: E402
from engine.similarity import layer_distance  # noqa: E402
from engine.strategies import block_groups  # noqa: E402

METRICS = ["pwsm", "procrustes", "cka", "pwsm@filter", "procrustes@filter", "cka@filter"]


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_views_against_cpu(device: torch.device) -> float:
    """CUDA float64 against CPU float64 on every view: the same numbers up to roundoff."""
    rng = np.random.default_rng(0)
    a = np.maximum(rng.normal(size=(40, 12, 7, 6)), 0)
    b = np.maximum(0.7 * a + 0.5 * rng.normal(size=a.shape), 0)
    worst = 0.0
    for view in ("positions", "pooled", "flat", "filter", "filter-map"):
        cpu = layer_distance(a, b, ("pwsm", "procrustes", "cka"), view=view)
        gpu = layer_distance(torch.from_numpy(a).to(device), torch.from_numpy(b).to(device),
                             ("pwsm", "procrustes", "cka"), view=view)
        for label, value in cpu.values.items():
            worst = max(worst, abs(value - gpu.values[label]))
    return worst


def probe_batches(n: int, size: int, batch: int, device: torch.device, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for start in range(0, n, batch):
        k = min(batch, n - start)
        coarse = torch.randn(k, 3, max(2, size // 16), max(2, size // 16), generator=generator)
        images = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
        batches.append((images.to(device), torch.zeros(k, dtype=torch.long, device=device)))
    return batches


def source_and_tuned(model: str, image_size: int, device: torch.device):
    """A randomly initialised model, a copy with every parameter moved by 2 % of its spread, their
    default layers and those layers' layouts (traced on the CPU)."""
    torch.manual_seed(0)
    source = architecture(model, image_size=image_size).eval()
    selected = select_layers(model, source, None, image_size)
    layers = [layer.name for layer in selected]
    layouts = {layer.name: layer.layout for layer in selected}
    source = source.to(device)
    tuned = copy.deepcopy(source)
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(0.02 * p.std().nan_to_num() * torch.randn_like(p))
    return source, tuned, layers, layouts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--metrics", default=",".join(METRICS), help="measures, comma-separated (metric@view)")
    parser.add_argument("--precisions", default="float64,float32")
    parser.add_argument("--model", default="resnet50", help="any torchvision classifier (its default layers)")
    parser.add_argument("--epochs", type=int, default=2, help="analyses per precision (the first fills caches)")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}; torch {torch.__version__}; n = {args.n}, {args.image_size} px, {args.model} default layers")
    print(f"CUDA float64 vs CPU float64, every view: max |difference| {check_views_against_cpu(device):.1e}"
          if device.type == "cuda" else "(CPU run: no CUDA comparison)")

    source, tuned, layers, layouts = source_and_tuned(args.model, args.image_size, device)
    print(f"layers: {', '.join(layers)}")
    batches = probe_batches(args.n, args.image_size, args.batch, device)
    measures = parse_measures(args.metrics.split(","), "positions", 0.5)
    results = {}
    precisions = args.precisions.split(",")
    for precision in precisions:
        parts = [FeatureDistance(layers, measures, precision=precision),
                 ParameterDrift(source, block_groups(args.model, source), layers, head_name(source))]
        runner = EpochAnalyses(source, layouts, parts)
        for epoch in range(1, args.epochs + 1):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            synchronise(device)
            start = time.perf_counter()
            sections, spent = runner.run(tuned, batches, device)
            synchronise(device)
            total = time.perf_counter() - start
            peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
            parts_text = ", ".join(f"{k} {v:.2f} s" for k, v in spent.items())
            print(f"{precision} epoch {epoch} ({'fills the caches' if epoch == 1 else 'every later epoch'}): "
                  f"{total:.2f} s  [{parts_text}]  peak GPU memory {peak:.1f} GiB", flush=True)
        results[precision] = sections["layers"]
    if precisions != ["float64", "float32"]:
        return
    print("float32 − float64 per layer (same activations), max over measures:")
    for layer in layers:
        worst, which = 0.0, ""
        for view, entry in results["float64"][layer].items():
            for metric, value in entry["values"].items():
                other = results["float32"][layer][view]["values"][metric]
                if value is not None and other is not None and abs(other - value) >= worst:
                    worst, which = abs(other - value), f"{metric}@{view}"
        print(f"  {layer:10s} {worst:.2e}  ({which})")


if __name__ == "__main__":
    main()
