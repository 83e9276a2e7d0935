"""What jackknife intervals cost (ANALYSES.md §6): analysis time and memory with intervals on / off.

1. The demo's analysis: resnet18 at 64 px, 144 probe images, the demo's measures (pwsm, procrustes,
   cka on positions and procrustes on filter-map), every default layer, through the real epoch-part
   runner. A source and a perturbed copy stand in for the fine-tuned model; the source side is cached
   after a first pass, as in a run. Runs alternate off / on and the medians are compared.
2. One large layer: a ResNet-50 layer4 output (2048 channels, 7×7) for n = 512 probe images on the
   `positions` view, each configuration in a fresh process: wall time and peak memory above the
   process's start, with G = 1 (off) and with the G a run would choose (groups_within_memory).

    python benchmarks/bench_intervals.py                 # both
    python benchmarks/bench_intervals.py --skip-large    # the demo's analysis only (about a minute)
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from engine.intervals import DEFAULT_GROUPS  # noqa: E402


def demo_analysis(repeats: int, groups: int) -> None:
    import torch

    from engine.analyses.distance import FeatureDistance
    from engine.analyses.runner import EpochAnalyses
    from engine.capture import parse_measures
    from engine.demo import SECOND, DemoSettings
    from engine.intervals import settings_for
    from engine.models import architecture, select_layers

    settings = DemoSettings()
    torch.manual_seed(0)
    source = architecture(settings.model, num_classes=settings.target_classes).eval()
    tuned = copy.deepcopy(source)
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(0.02 * p.std().nan_to_num(0.0) * torch.randn_like(p))
    layers = select_layers(settings.model, source, None, settings.image_size)
    layouts = {layer.name: layer.layout for layer in layers}
    measures = parse_measures(["pwsm", "procrustes", "cka", SECOND], "positions", 0.5)
    images = torch.rand(settings.probe_size, 3, settings.image_size, settings.image_size)
    batches = [(images[i:i + 64], None) for i in range(0, len(images), 64)]
    runners = {}
    for name, intervals in (("off", None), ("on", settings_for(groups, 0.9))):
        part = FeatureDistance([layer.name for layer in layers], measures, intervals=intervals)
        runners[name] = EpochAnalyses(source, layouts, [part])
        runners[name].run(tuned, batches, torch.device("cpu"))  # first pass: fills the source cache
    seconds = {"off": [], "on": []}
    for _ in range(repeats):
        for name in ("off", "on"):
            start = time.perf_counter()
            runners[name].run(tuned, batches, torch.device("cpu"))
            seconds[name].append(time.perf_counter() - start)
    off, on = statistics.median(seconds["off"]), statistics.median(seconds["on"])
    print(f"demo analysis ({settings.model}, {settings.image_size} px, {settings.probe_size} probe images, "
          f"{len(layers)} layers, {len(measures)} measures), median of {repeats}:")
    print(f"  intervals off {off:.2f} s   on (G={groups}) {on:.2f} s   ratio on/off {on / off:.2f}  (goal ≤ 2)")


class PeakMemory:
    """The process's resident memory above what it held when built, sampled every 5 ms (the peak
    resident size the kernel keeps includes what importing torch touched, so it cannot be used)."""

    def __init__(self):
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.start = self.rss()
        self.peak = self.start
        self.running = True
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    def rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.rss())
            time.sleep(0.005)

    def stop(self) -> int:
        self.running = False
        self.thread.join()
        return max(self.peak, self.rss()) - self.start


def large_layer(groups: int, n: int, c: int, hw: int, storage: str) -> dict:
    """Runs inside the child process. ``storage`` 'float64' forces float64 per-group moments (to
    measure what float32 groups change in the replicates)."""
    import torch

    import engine.similarity.views as views
    from engine.similarity import LayerAccumulator

    if storage == "float64":
        views.group_storage = lambda groups, channels: "float64"

    generator = torch.Generator().manual_seed(0)
    sampler = PeakMemory()
    start = time.perf_counter()
    accumulator = LayerAccumulator("positions", ["pwsm", "procrustes", "cka"], groups=groups)
    for first in range(0, n, 64):
        a = torch.randn(min(64, n - first), c, hw, hw, generator=generator).relu_()
        b = (a + 0.3 * torch.randn(a.shape, generator=generator)).relu_()
        accumulator.update(a, b)
        del a, b
    fed = time.perf_counter() - start
    result = accumulator.result()
    peak = sampler.stop()
    return {"groups": groups, "storage": storage, "seconds": time.perf_counter() - start, "fed_s": fed,
            "peak_mib": peak / 2**20, "values": result.values, "replicates": result.replicates}


def large(n: int, c: int, hw: int) -> None:
    from engine.intervals import estimate, group_storage, groups_within_memory, settings_for

    chosen = groups_within_memory(10, c)
    print(f"large layer: positions view, n = {n}, c = {c}, {hw}×{hw} (a ResNet-50 layer4), fresh process each:")
    rows = []
    for groups, storage in ((1, "auto"), (chosen, "auto"), (chosen, "float64")):
        out = subprocess.run([sys.executable, __file__, "--child", str(groups), str(n), str(c), str(hw), storage],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    t = settings_for(chosen, 0.9).t
    for row in rows:
        kind = "" if row["groups"] == 1 else (f", {group_storage(chosen, c)} groups" if row["storage"] == "auto"
                                              else ", float64 groups (forced)")
        print(f"  G = {row['groups']:>2}{kind}: {row['seconds']:.1f} s (streaming {row['fed_s']:.1f} s), "
              f"peak memory +{row['peak_mib']:.0f} MiB, pwsm {row['values']['pwsm:0.5']:.6f}")
        for label, reps in row["replicates"].items():
            found = estimate(row["values"][label], reps, t)
            print(f"      {label}: ± {found.half_width:.2e} (90 %)")
    off, on, exact = rows
    worst = max(abs(a - b) for label in on["replicates"]
                for a, b in zip(on["replicates"][label], exact["replicates"][label]))
    spread = min(estimate(on["values"][label], reps, t).se for label, reps in on["replicates"].items())
    print(f"  ratio on/off: time {on['seconds'] / off['seconds']:.2f}, memory {on['peak_mib'] / max(off['peak_mib'], 1):.2f}"
          f" (goal: the layer's peak under 1 GiB)")
    print(f"  float32 groups against float64 groups: replicates differ by at most {worst:.1e} "
          f"({worst / spread:.1e} of the smallest SE)")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(large_layer(*map(int, sys.argv[2:6]), sys.argv[6])))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--groups", type=int, default=DEFAULT_GROUPS, help="G of the demo's analysis")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--channels", type=int, default=2048)
    parser.add_argument("--size", type=int, default=7)
    args = parser.parse_args()
    demo_analysis(args.repeats, args.groups)
    if not args.skip_large:
        large(args.n, args.channels, args.size)


if __name__ == "__main__":
    main()
