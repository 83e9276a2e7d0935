"""What decoding every image before training costs (issue: truncated JPEGs passed Pillow's verify()).

A generated folder of JPEGs at ImageNet-like sizes (≈ 500 × 375), a few of them truncated. Three scans
of the same files, measured in the same run:

* baseline — ``Image.verify()`` on one thread: what the scan did before; it passes truncated JPEGs;
* full decode on one thread — ``Image.load()`` at full size;
* the scan ftdyn runs — ``engine.data.scan_split``: reduced-scale JPEG decode (``draft``), which still
  reads every byte of the data, on ``SCAN_THREADS`` threads.

Printed: seconds, images per second, the ratio to the baseline, and how many truncated files each
caught. A warm file cache is used for all three (the first, untimed pass reads the files).

    python benchmarks/bench_scan.py [--images 2000]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from engine.data import SCAN_THREADS, scan_split  # noqa: E402


def write_folder(root: Path, images: int, truncated: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(images):
        folder = root / f"class{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        w, h = int(rng.integers(400, 600)), int(rng.integers(300, 450))
        base = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)  # smooth, photo-like content
        picture = Image.fromarray(base).resize((w, h), Image.BILINEAR)
        path = folder / f"{i:05d}.jpg"
        picture.save(path, quality=90)
        paths.append(path)
    for path in random.Random(seed).sample(paths, truncated):
        data = path.read_bytes()
        path.write_bytes(data[: len(data) * 2 // 3])
    return paths


def count_failures(paths: list[Path], check: str) -> int:
    """How many files fail ``Image.verify()`` (check 'verify') or a full-size decode ('load')."""
    bad = 0
    for path in paths:
        try:
            with Image.open(path) as image:
                getattr(image, check)()
        except Exception:  # noqa: BLE001
            bad += 1
    return bad


def ftdyn_scan(root: Path) -> int:
    skipped: list[str] = []
    scan_split(root, sorted(p.name for p in root.iterdir()), skipped)
    return len(skipped)


def timed(function, *args) -> tuple[float, int]:
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--truncated", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        paths = write_folder(root, args.images, args.truncated)
        count_failures(paths, "verify")  # warm the file cache
        rows = [("verify() (before; baseline)", *timed(count_failures, paths, "verify")),
                ("full decode, 1 thread", *timed(count_failures, paths, "load")),
                (f"ftdyn scan: draft decode, {SCAN_THREADS} threads", *timed(ftdyn_scan, root))]
        base = rows[0][1]
        print(f"{args.images} JPEGs (≈ 500 × 375), {args.truncated} truncated")
        print(f"{'scan':44s} {'seconds':>8s} {'images/s':>9s} {'× baseline':>11s} {'caught':>7s}")
        for name, seconds, caught in rows:
            print(f"{name:44s} {seconds:8.2f} {args.images / seconds:9.0f} {seconds / base:11.1f} "
                  f"{caught:>4d}/{args.truncated}")


if __name__ == "__main__":
    main()
