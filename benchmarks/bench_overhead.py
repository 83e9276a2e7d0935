"""Training-throughput overhead of the per-epoch feature analysis.

Fine-tunes on generated data in this process and reads the run's own timings: per epoch, the time
spent training (`train_s`) and the time spent measuring every hooked layer against the source
model on the probe set (`analysis_s`; the held-out evaluation is needed with or without it).

    images/s without analysis = train images / train_s
    images/s with analysis    = train images / (train_s + analysis_s)
    ratio                     = with / without          (goal ≥ 0.95 at the default probe size)

Per-filter visualisation (on by default, `--no-vis` turns it off) is timed separately (`vis_s`);
the last column includes it too.

The first measured epoch also pays for decomposing the source side once (epoch 0); later epochs
reuse it, so the steady-state figure is the mean over epochs ≥ 1.

    python benchmarks/bench_overhead.py                    # resnet18, 64 px, 4000 train images
    python benchmarks/bench_overhead.py --model resnet50 --image-size 224 --train-images 20000 --device cuda
    python benchmarks/bench_overhead.py … --autocast bf16 --channels-last --compile    # the GPU options
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine.record import read_run  # noqa: E402
from engine.synthetic import write_shapes_folder  # noqa: E402
from engine.run_config import RunConfig  # noqa: E402
from engine.training import run_training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--train-images", type=int, default=4000)
    parser.add_argument("--probe-size", type=int, default=256, help="the run's default")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--metrics", default="pwsm,procrustes,cka")
    parser.add_argument("--view", default="positions")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--autocast", default="off", choices=["off", "bf16", "fp16"], help="CUDA only")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the training forward")
    parser.add_argument("--data", help="generated image folder to reuse (written there first if missing)")
    parser.add_argument("--stored-size", type=int, help="size of the generated files (default: --image-size); "
                        "the loader resizes them, so many large images cost little to generate")
    args = parser.parse_args()

    classes = 8
    per_class = (args.train_images + args.probe_size) // classes + 1
    val_fraction = (args.probe_size + classes) / (per_class * classes)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else Path(tmp) / "data"
        if not data.exists():
            start = time.perf_counter()
            write_shapes_folder(data, classes=classes, per_class=per_class, size=args.stored_size or args.image_size,
                                seed=0, val_fraction=val_fraction)
            print(f"generated {classes * per_class} images in {time.perf_counter() - start:.0f}s")
        config = RunConfig(model=args.model, data=str(data), out=str(Path(tmp) / "run"), weights="none",
                           epochs=args.epochs, batch_size=args.batch_size, image_size=args.image_size,
                           probe_size=args.probe_size, metrics=args.metrics.split(","), view=args.view,
                           device=args.device, workers=args.workers, autocast=args.autocast,
                           channels_last=args.channels_last, compile=args.compile)
        run_training(config)
        run = read_run(config.out)
    trained = run.config["dataset"]["train_images"]
    print(f"model={args.model} image={args.image_size}px train images={trained} probe={run.config['dataset']['probe_images']} "
          f"layers={len(run.config['layers'])} measures={','.join(m['label'] for m in run.config['measures'])} "
          f"device={run.config['device']} autocast={args.autocast} channels_last={args.channels_last} "
          f"compile={args.compile}")
    print(f"{'epoch':>5s} {'train s':>8s} {'analysis s':>11s} {'vis s':>6s} {'img/s off':>10s} {'img/s on':>9s} "
          f"{'ratio':>6s} {'ratio with vis':>15s}")
    ratios, with_vis = [], []
    for record in run.epochs:
        timing = record["timing"]
        if record["epoch"] == 0:
            print(f"{0:5d} {'-':>8s} {timing['analysis_s']:11.2f} {timing['vis_s']:6.2f}   "
                  f"(epoch 0: source side decomposed once)")
            continue
        off = trained / timing["train_s"]
        on = trained / (timing["train_s"] + timing["analysis_s"])
        ratios.append(on / off)
        with_vis.append(timing["train_s"] / (timing["train_s"] + timing["analysis_s"] + timing["vis_s"]))
        print(f"{record['epoch']:5d} {timing['train_s']:8.2f} {timing['analysis_s']:11.2f} {timing['vis_s']:6.2f} "
              f"{off:10.1f} {on:9.1f} {on / off:6.3f} {with_vis[-1]:15.3f}")
    print(f"mean ratio over epochs ≥ 1: {sum(ratios) / len(ratios):.3f} (goal ≥ 0.95); "
          f"with visualisation: {sum(with_vis) / len(with_vis):.3f}")


if __name__ == "__main__":
    main()
