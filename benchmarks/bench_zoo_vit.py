"""Per-epoch analysis cost of a ViT from each zoo beside torchvision's ViT-B/16, at the same settings.

The same architecture three times — torchvision's `vit_b_16`, timm's `vit_base_patch16_224` and a
Hugging Face `ViTConfig()` (ViT-Base/16; saved as a config-only folder, built `--weights none`) — each
measured by the monitor on the same probe images against a randomly perturbed copy of itself: every
encoder block hooked (the default), the default measures and intervals. The cost is the record's
`analysis_s` of epoch 1 (epoch 0, the source, decomposes the source side once and is not compared).

    ratio = analysis_s(zoo model) / analysis_s(torchvision vit_b_16)

    python benchmarks/bench_zoo_vit.py                       # 224 px, 64 probe images, CPU
    python benchmarks/bench_zoo_vit.py --probe 256 --device cuda
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch  # noqa: E402
import transformers  # noqa: E402

from engine import Monitor  # noqa: E402
from engine.models import build_model  # noqa: E402
from engine.record import read_run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--probe", type=int, default=64, help="probe images")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    probe = torch.randn(args.probe, 3, args.image_size, args.image_size)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "hf-vit-base"
        transformers.ViTConfig(image_size=args.image_size).save_pretrained(folder)  # ViT-Base/16, config only
        for name in ("vit_b_16", "timm:vit_base_patch16_224", f"hf:{folder}"):
            torch.manual_seed(0)
            model, _ = build_model(name, "none", 10, 0, args.image_size)
            model = model.to(args.device).eval()
            moved = copy.deepcopy(model)
            with torch.no_grad():
                for p in moved.parameters():
                    p.add_(0.01 * torch.randn_like(p))
            run_dir = Path(tmp) / name.replace(":", "-").replace("/", "_")
            start = time.perf_counter()
            with Monitor(run_dir, model, probe, model_name=name, vis=False, device=args.device) as monitor:
                monitor.epoch(moved, 1)
            wall = time.perf_counter() - start
            epochs = read_run(run_dir).epochs
            rows.append((name.split(":")[0] if ":" in name else "torchvision", name if ":" not in name or
                         name.startswith("timm") else "hf:ViTConfig() (ViT-Base/16)", len(epochs[1]["layers"]),
                         epochs[0]["timing"]["analysis_s"], epochs[1]["timing"]["analysis_s"], wall))
    baseline = rows[0][4]
    print(f"image={args.image_size}px probe={args.probe} device={args.device} measures=default (pwsm:0.5, procrustes, "
          f"cka on positions) intervals=default")
    print(f"{'zoo':12s} {'model':32s} {'layers':>6s} {'epoch 0 s':>10s} {'epoch 1 s':>10s} {'ratio':>6s}")
    for zoo, name, layers, first, second, _ in rows:
        print(f"{zoo:12s} {name:32s} {layers:6d} {first:10.2f} {second:10.2f} {second / baseline:6.3f}")


if __name__ == "__main__":
    main()
