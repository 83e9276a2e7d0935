"""Generated image-folder datasets: deterministic by seed, no downloads.

Each class is a shape (disc, square, triangle, ring, cross, bar…) drawn in a random colour, size,
position and rotation over a textured background, so a CNN has real features to learn. Written as
an ImageFolder tree (``ROOT/train/<class>/*.png`` and ``ROOT/val/<class>/*.png``, or a single
level with ``split=False``) so runs on it use exactly the code path real data uses.

    python -m engine.synthetic DIR [--classes 4] [--per-class 30] [--size 64] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

SHAPES = ("disc", "square", "triangle", "ring", "cross", "bar", "diamond", "star")


def background(rng: random.Random, size: int) -> Image.Image:
    """Smooth random texture: a few blurred blobs of colour over a base tone."""
    base = tuple(rng.randrange(40, 200) for _ in range(3))
    image = Image.new("RGB", (size, size), base)
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y, r = rng.randrange(size), rng.randrange(size), rng.randrange(size // 8, size // 2)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rng.randrange(0, 256) for _ in range(3)))
    return image.filter(ImageFilter.GaussianBlur(size / 10))


def polygon(cx: float, cy: float, radius: float, points: list[tuple[float, float]], angle: float):
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + radius * (x * c - y * s), cy + radius * (x * s + y * c)) for x, y in points]


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, angle: float, colour) -> None:
    if shape == "disc":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif shape == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=colour, width=max(2, int(r / 3)))
    elif shape == "square":
        draw.polygon(polygon(cx, cy, r, [(-1, -1), (1, -1), (1, 1), (-1, 1)], angle), fill=colour)
    elif shape == "diamond":
        draw.polygon(polygon(cx, cy, r, [(0, -1.3), (0.8, 0), (0, 1.3), (-0.8, 0)], angle), fill=colour)
    elif shape == "triangle":
        draw.polygon(polygon(cx, cy, r, [(0, -1.2), (1.1, 0.8), (-1.1, 0.8)], angle), fill=colour)
    elif shape == "bar":
        draw.polygon(polygon(cx, cy, r, [(-1.3, -0.35), (1.3, -0.35), (1.3, 0.35), (-1.3, 0.35)], angle), fill=colour)
    elif shape == "cross":
        for points in ([(-1.2, -0.3), (1.2, -0.3), (1.2, 0.3), (-1.2, 0.3)], [(-0.3, -1.2), (0.3, -1.2), (0.3, 1.2), (-0.3, 1.2)]):
            draw.polygon(polygon(cx, cy, r, points, angle), fill=colour)
    elif shape == "star":
        points = [(math.cos(k * math.pi / 5 - math.pi / 2) * (1.2 if k % 2 == 0 else 0.5),
                   math.sin(k * math.pi / 5 - math.pi / 2) * (1.2 if k % 2 == 0 else 0.5)) for k in range(10)]
        draw.polygon(polygon(cx, cy, r, points, angle), fill=colour)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def shape_image(rng: random.Random, shape: str, size: int) -> Image.Image:
    image = background(rng, size)
    draw = ImageDraw.Draw(image)
    r = rng.uniform(0.15, 0.3) * size
    cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
    draw_shape(draw, shape, cx, cy, r, rng.uniform(0, math.pi), tuple(rng.randrange(0, 256) for _ in range(3)))
    return image


def write_shapes_folder(root: str | Path, classes: int = 4, per_class: int = 30, size: int = 64, seed: int = 0,
                        split: bool = True, val_fraction: float = 0.25) -> Path:
    """Write the dataset; returns ``root``. Same arguments, same bytes."""
    if not 2 <= classes <= len(SHAPES):
        raise ValueError(f"classes must be between 2 and {len(SHAPES)}")
    root = Path(root)
    rng = random.Random(seed)
    n_val = max(1, round(per_class * val_fraction)) if split else 0
    for shape in SHAPES[:classes]:
        for i in range(per_class):
            part = ("val" if i < n_val else "train") if split else ""
            folder = root / part / shape
            folder.mkdir(parents=True, exist_ok=True)
            shape_image(rng, shape, size).save(folder / f"{shape}_{i:04d}.png")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a generated shapes ImageFolder dataset.")
    parser.add_argument("root")
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-split", action="store_true", help="one level of class folders (no train/val)")
    args = parser.parse_args()
    root = write_shapes_folder(args.root, args.classes, args.per_class, args.size, args.seed, not args.no_split)
    print(f"wrote {args.classes} classes × {args.per_class} images to {root}")


if __name__ == "__main__":
    main()
