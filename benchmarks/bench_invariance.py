"""What shared invariance (STIR, engine/analyses/invariance.py) costs, per layer and per epoch.

1. Inversion through the source, per hooked layer: seconds per step over the probe set (every step is a
   forward pass up to the layer and a backward pass to the pixels), measured over ``--steps`` steps and
   given for 500 steps (Merlin et al.'s setting; the cost is linear in the steps). Paid once per run:
   the inversions are cached.
2. Per epoch (the live part): one forward pass of the tuned model over the probe images and one over
   each layer's inversions, plus the n × n Grams — against the baseline measured in the same run: one
   plain forward pass of the model over the probe images.

    python benchmarks/bench_invariance.py [--model resnet18] [--image-size 64] [--n 144] [--steps 10]

Defaults are the demo's probe set (144 images of 64 px, ResNet-18's paper layers).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine.analyses.invariance import (InversionSettings, gram_cka, invert, layer_grams,  # noqa: E402
                                        layer_outputs)
from engine.models import build_model, select_layers  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--n", type=int, default=144)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    model, _ = build_model(args.model, "none", 10, 0, args.image_size)
    model.eval()
    layers = [layer.name for layer in select_layers(args.model, model, None, args.image_size)]
    pixels = torch.rand(args.n, 3, args.image_size, args.image_size, generator=torch.Generator().manual_seed(1))
    print(f"{args.model}, {args.n} probe images of {args.image_size} px, {torch.get_num_threads()} threads, "
          f"layers {', '.join(layers)}")

    def probe_pass() -> float:
        start = time.perf_counter()
        with torch.no_grad():
            for i in range(0, len(pixels), 32):
                layer_outputs(model, pixels[i:i + 32], layers)
        return time.perf_counter() - start

    baseline = statistics.median(probe_pass() for _ in range(3))
    print(f"baseline: one forward pass over the probe images (up to the last hooked layer): {baseline:.2f} s")
    inverted = {}
    for layer in layers:
        start = time.perf_counter()
        found = []
        for i in range(0, len(pixels), 32):
            images, _ = invert(model, layer, pixels[i:i + 32], InversionSettings(steps=args.steps),
                               torch.Generator().manual_seed(0))
            found.append(images)
        inverted[layer] = torch.cat(found)
        per_step = (time.perf_counter() - start) / (args.steps + 1)
        print(f"inversion through {layer:10s}: {per_step:.2f} s a step ({per_step / baseline:.1f}× the baseline); "
              f"500 steps: {500 * per_step / 60:.1f} min")
    start = time.perf_counter()
    clean = layer_grams(model, pixels, layers)
    values = {layer: gram_cka(clean[layer], layer_grams(model, inverted[layer], [layer])[layer]) for layer in layers}
    epoch = time.perf_counter() - start
    print(f"per epoch (STIR of every layer): {epoch:.2f} s, {epoch / baseline:.1f}× the baseline probe pass "
          f"(values after {args.steps} steps: " + ", ".join(f"{k} {v:.3f}" for k, v in values.items()) + ")")


if __name__ == "__main__":
    main()
