"""Generated image domains that mirror the paper's source and targets (deterministic by seed).

* ``source``  — object classes (shapes) with random surface textures, colours, sizes, poses and
  positions, over cluttered, natural-looking scenes (sky-to-ground gradients, fractal noise, soft
  blobs, distractor strokes). Plays ImageNet.
* ``similar`` — *new* classes of the same kind of objects (shapes the source never had, with the
  same textures) on the same kind of scenes. Plays AwA2 against ImageNet.
* ``task``    — the same imagery, but the label is the scene's *layout* (two objects side by side,
  stacked, a diagonal of three, one large centred object, a scattered crowd, an object in a
  corner), whatever the objects are. A different task on similar data: plays 15-Scene.
* ``white``   — the ``similar`` classes, centred and filling most of a plain white frame, as
  Fruits-360 photographs fruit. The same kind of task as ``similar`` with a completely different
  background: plays Fruits-360.

Written as ImageFolder trees (train/ and val/ of class folders) so runs use the real data path.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from engine.synthetic import draw_shape, polygon

GENERATOR_VERSION = 3  # bump when images change: cached data and source models are keyed on it
SHAPES = ("disc", "square", "triangle", "ring", "cross", "bar", "diamond", "star")
NEW_SHAPES = ("hexagon", "crescent", "arrow", "tee", "ell", "chevron")
TEXTURES = ("solid", "stripes", "checker", "dots")
NEW_SHAPE_POINTS = {
    "hexagon": [(math.cos(k * math.pi / 3), math.sin(k * math.pi / 3)) for k in range(6)],
    "arrow": [(-1.2, -0.3), (0.2, -0.3), (0.2, -0.8), (1.2, 0), (0.2, 0.8), (0.2, 0.3), (-1.2, 0.3)],
    "tee": [(-1.1, -1), (1.1, -1), (1.1, -0.4), (0.3, -0.4), (0.3, 1.1), (-0.3, 1.1), (-0.3, -0.4), (-1.1, -0.4)],
    "ell": [(-0.8, -1.1), (-0.2, -1.1), (-0.2, 0.5), (0.9, 0.5), (0.9, 1.1), (-0.8, 1.1)],
    "chevron": [(-1, -0.9), (0, 0.1), (1, -0.9), (1, -0.1), (0, 0.9), (-1, -0.1)],
}
LAYOUTS = ("side-by-side", "stacked", "diagonal-three", "large-centre", "scattered", "corner")
DOMAINS = ("source", "similar", "task", "white")


@dataclass(frozen=True)
class DomainSpec:
    name: str
    classes: tuple[str, ...]
    render: Callable[[random.Random, str, int], Image.Image]


def fractal_noise(rng: random.Random, size: int) -> np.ndarray:
    """Sum of upsampled random grids at several scales, in [0, 1] — rough natural texture."""
    generator = np.random.default_rng(rng.randrange(2**32))
    total = np.zeros((size, size))
    for cells, weight in ((3, 0.5), (6, 0.25), (12, 0.15), (24, 0.1)):
        grid = generator.random((cells, cells))
        total += weight * np.asarray(Image.fromarray((grid * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)) / 255
    return np.clip(total, 0, 1)


def random_colour(rng: random.Random, lo: int = 0, hi: int = 256) -> tuple[int, int, int]:
    return tuple(rng.randrange(lo, hi) for _ in range(3))


def cluttered_scene(rng: random.Random, size: int) -> Image.Image:
    """A sky-to-ground gradient with fractal texture, soft blobs and a few distractor strokes."""
    top, bottom = np.array(random_colour(rng, 40, 230)), np.array(random_colour(rng, 20, 200))
    horizon = rng.uniform(0.3, 0.7)
    rows = np.linspace(0, 1, size)[:, None, None]
    blend = 1 / (1 + np.exp(-(rows - horizon) * 12))
    scene = (1 - blend) * top + blend * bottom
    noise = fractal_noise(rng, size)[..., None]
    scene = np.clip(scene * (0.6 + 0.8 * noise), 0, 255)
    image = Image.fromarray(scene.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randrange(3, 7)):
        x, y, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(size / 12, size / 4)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=random_colour(rng, 30, 220))
    image = image.filter(ImageFilter.GaussianBlur(size / 24))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randrange(2, 6)):  # twigs, wires, edges: clutter that is not an object
        points = [(rng.uniform(0, size), rng.uniform(0, size)) for _ in range(rng.randrange(2, 4))]
        draw.line(points, fill=random_colour(rng, 0, 256), width=max(1, size // 48))
    return image


def texture(rng: random.Random, kind: str, size: int, colour, second) -> Image.Image:
    """A full-canvas surface pattern, later cut out by the object's shape."""
    image = Image.new("RGB", (size, size), colour)
    draw = ImageDraw.Draw(image)
    period = max(3, int(size * rng.uniform(0.06, 0.1)))
    if kind == "stripes":
        for offset in range(-size, 2 * size, period):
            draw.line([(offset, 0), (offset + size, size)], fill=second, width=max(1, period // 2))
    elif kind == "checker":
        for y in range(0, size, period):
            for x in range(0, size, period):
                if (x // period + y // period) % 2:
                    draw.rectangle((x, y, x + period - 1, y + period - 1), fill=second)
    elif kind == "dots":
        r = max(1, period // 3)
        for y in range(period // 2, size, period):
            for x in range(period // 2, size, period):
                draw.ellipse((x - r, y - r, x + r, y + r), fill=second)
    return image


def draw_any_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, angle: float) -> None:
    if shape == "crescent":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        dx, dy = 0.45 * r * math.cos(angle), 0.45 * r * math.sin(angle)
        draw.ellipse((cx + dx - 0.8 * r, cy + dy - 0.8 * r, cx + dx + 0.8 * r, cy + dy + 0.8 * r), fill=0)
    elif shape in NEW_SHAPE_POINTS:
        draw.polygon(polygon(cx, cy, r, NEW_SHAPE_POINTS[shape], angle), fill=255)
    else:
        draw_shape(draw, shape, cx, cy, r, angle, 255)


def paste_object(canvas: Image.Image, rng: random.Random, shape: str, kind: str, cx: float, cy: float, r: float) -> None:
    size = canvas.size[0]
    mask = Image.new("L", canvas.size, 0)
    draw_any_shape(ImageDraw.Draw(mask), shape, cx, cy, r, rng.uniform(0, 2 * math.pi))
    colour, second = random_colour(rng), random_colour(rng)
    canvas.paste(texture(rng, kind, size, colour, second), (0, 0), mask)


def object_image(rng: random.Random, shape: str, size: int, white: bool = False) -> Image.Image:
    """One object; in a scene anywhere, or — like a Fruits-360 photo — centred and filling most of
    a plain white frame."""
    kind = rng.choice(TEXTURES)  # a nuisance: the class is the shape
    if white:
        canvas = Image.new("RGB", (size, size), (255, 255, 255))
        r = rng.uniform(0.34, 0.42) * size
        cx, cy = (size / 2 + rng.uniform(-0.06, 0.06) * size for _ in range(2))
    else:
        canvas = cluttered_scene(rng, size)
        r = rng.uniform(0.18, 0.32) * size
        cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
    paste_object(canvas, rng, shape, kind, cx, cy, r)
    return canvas


def layout_image(rng: random.Random, layout: str, size: int) -> Image.Image:
    """Objects of any class placed by the layout rule; the label is the layout."""
    canvas = cluttered_scene(rng, size)
    jitter = lambda v: v + rng.uniform(-0.04, 0.04) * size  # noqa: E731
    s = size
    if layout == "side-by-side":
        spots, r = [(0.27 * s, 0.5 * s), (0.73 * s, 0.5 * s)], 0.17 * s
    elif layout == "stacked":
        spots, r = [(0.5 * s, 0.27 * s), (0.5 * s, 0.73 * s)], 0.17 * s
    elif layout == "diagonal-three":
        flip = rng.random() < 0.5
        spots = [(f * s, (1 - f if flip else f) * s) for f in (0.2, 0.5, 0.8)]
        r = 0.12 * s
    elif layout == "large-centre":
        spots, r = [(0.5 * s, 0.5 * s)], 0.36 * s
    elif layout == "scattered":
        spots = [(rng.uniform(0.1, 0.9) * s, rng.uniform(0.1, 0.9) * s) for _ in range(rng.randrange(5, 8))]
        r = 0.07 * s
    else:  # corner
        spots = [((0.2 if rng.random() < 0.5 else 0.8) * s, (0.2 if rng.random() < 0.5 else 0.8) * s)]
        r = 0.15 * s
    for cx, cy in spots:
        paste_object(canvas, rng, rng.choice(SHAPES), rng.choice(TEXTURES),
                     jitter(cx), jitter(cy), r * rng.uniform(0.85, 1.15))
    return canvas


def domain_spec(name: str, classes: int) -> DomainSpec:
    source_labels, new_labels = list(SHAPES), list(NEW_SHAPES)
    available = {"source": len(SHAPES), "similar": len(NEW_SHAPES), "white": len(NEW_SHAPES), "task": len(LAYOUTS)}
    if not 2 <= classes <= available.get(name, 0):
        raise ValueError(f"domain {name!r} has 2…{available.get(name, 0)} classes, not {classes}")
    if name == "source":
        return DomainSpec(name, tuple(source_labels[:classes]), lambda rng, label, size: object_image(rng, label, size))
    if name == "similar":
        return DomainSpec(name, tuple(new_labels[:classes]), lambda rng, label, size: object_image(rng, label, size))
    if name == "white":
        return DomainSpec(name, tuple(new_labels[:classes]),
                          lambda rng, label, size: object_image(rng, label, size, white=True))
    if name == "task":
        return DomainSpec(name, tuple(LAYOUTS[:classes]), layout_image)
    raise ValueError(f"unknown domain {name!r}; choose from {', '.join(DOMAINS)}")


def write_domain(root: str | Path, name: str, classes: int, per_class: int, size: int, seed: int,
                 val_fraction: float = 0.25, progress: Callable[[int, int], None] | None = None) -> Path:
    """Write ``per_class`` images of each class under root/train and root/val; returns root."""
    spec = domain_spec(name, classes)
    root = Path(root)
    n_val = max(1, round(per_class * val_fraction))
    total, done = len(spec.classes) * per_class, 0
    for c, label in enumerate(spec.classes):
        rng = random.Random(f"{seed}:{name}:{label}")
        for i in range(per_class):
            folder = root / ("val" if i < n_val else "train") / label
            folder.mkdir(parents=True, exist_ok=True)
            spec.render(rng, label, size).save(folder / f"{i:04d}.png")
            done += 1
            if progress:
                progress(done, total)
    return root
