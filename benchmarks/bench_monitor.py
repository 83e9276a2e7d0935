"""The monitor's cost per epoch in a user's own loop beside `ftdyn run`'s, on the same work.

`ftdyn run` fine-tunes on generated images and records, per epoch, the seconds it spent measuring
every hooked layer against the source on the probe set (`analysis_s`) and drawing the filter images
(`vis_s`). The same epochs are then replayed through a plain loop: each epoch's checkpoint is loaded
into the model and handed to `Monitor.epoch` with the same probe images, layers, measures,
intervals and visualisation settings. What is compared, per epoch ≥ 1:

    ftdyn run   = analysis_s + vis_s                       (its own record)
    monitor     = wall-clock seconds of monitor.epoch(…)   (measuring, drawing, appending the record)
    ratio       = monitor / ftdyn run                      (1.0: the monitor costs what the trainer's
                                                            measuring costs; both run the same code)

The monitor reads its probe images from memory (a tensor), `ftdyn run` through its DataLoader from
the image files; the probe batch is the same (min(batch size, 64)).

    python benchmarks/bench_monitor.py                     # resnet18, 64 px, probe 256, 3 epochs
    python benchmarks/bench_monitor.py --model resnet50 --image-size 224 --device cuda
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch  # noqa: E402

from engine import Monitor  # noqa: E402
from engine.record import read_run  # noqa: E402
from engine.run_config import RunConfig  # noqa: E402
from engine.run_inputs import model_state, open_run  # noqa: E402
from engine.synthetic import write_shapes_folder  # noqa: E402
from engine.training import run_training  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--train-images", type=int, default=1000)
    parser.add_argument("--probe-size", type=int, default=256, help="the run's default")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    classes = 8
    per_class = (args.train_images + args.probe_size) // classes + 1
    val_fraction = (args.probe_size + classes) / (per_class * classes)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        write_shapes_folder(data, classes=classes, per_class=per_class, size=args.image_size, seed=0,
                            val_fraction=val_fraction)
        config = RunConfig(model=args.model, data=str(data), out=str(Path(tmp) / "run"), weights="none",
                           epochs=args.epochs, batch_size=args.batch_size, image_size=args.image_size,
                           probe_size=args.probe_size, device=args.device, workers=0, save_every_epoch=True)
        run_training(config)
        trainer_run = read_run(config.out)

        inputs = open_run(config.out)
        images = torch.stack([inputs.probe[i][0] for i in range(len(inputs.probe))])
        labels = torch.tensor([inputs.probe[i][1] for i in range(len(inputs.probe))])
        model, seconds = inputs.model, {}
        with Monitor(Path(tmp) / "monitored", model, (images, labels), model_name=args.model,
                     probe_batch_size=min(args.batch_size, 64), classes=inputs.data.classes,
                     epochs=args.epochs, device=inputs.device) as monitor:
            monitor.epoch(model, 0)  # the source, as `ftdyn run` records it before training (not compared)
            for epoch in range(1, args.epochs + 1):
                model.load_state_dict(model_state(config.out, epoch, inputs.device))
                start = time.perf_counter()
                monitor.epoch(model, epoch)
                seconds[epoch] = time.perf_counter() - start
        monitored = {r["epoch"]: r for r in read_run(Path(tmp) / "monitored").epochs}

    print(f"model={args.model} image={args.image_size}px probe={len(images)} layers={len(trainer_run.config['layers'])} "
          f"measures={','.join(m['label'] for m in trainer_run.config['measures'])} device={trainer_run.config['device']} "
          f"intervals={trainer_run.config['run'].get('intervals')} vis=on")
    print(f"{'epoch':>5s} {'run analysis s':>15s} {'run vis s':>10s} {'monitor s':>10s} "
          f"{'(its analysis s)':>17s} {'ratio':>6s}")
    ratios = []
    for record in trainer_run.epochs:
        if record["epoch"] == 0:
            continue
        timing, epoch = record["timing"], record["epoch"]
        trainer_cost = timing["analysis_s"] + timing["vis_s"]
        ratios.append(seconds[epoch] / trainer_cost)
        print(f"{epoch:5d} {timing['analysis_s']:15.2f} {timing['vis_s']:10.2f} {seconds[epoch]:10.2f} "
              f"{monitored[epoch]['timing']['analysis_s']:17.2f} {ratios[-1]:6.3f}")
    print(f"monitor / ftdyn run, mean over epochs ≥ 1: {sum(ratios) / len(ratios):.3f}")


if __name__ == "__main__":
    main()
