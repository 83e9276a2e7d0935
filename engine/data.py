"""Image-folder datasets, the seeded train/held-out split and the stratified probe set.

Layouts accepted for ``--data ROOT``:
* ``ROOT/train/<class>/*`` with ``ROOT/val/<class>/*`` (or ``ROOT/test/<class>/*``);
* ``ROOT/<class>/*``, split into train and held-out by a seeded, per-class ``val_fraction``.

Unreadable files (not an image, truncated, corrupt) are skipped and counted — a scan that decodes
every file before training (Pillow's ``verify`` alone passes a truncated JPEG, whose entropy-coded
data it never reads) — and listed in the run directory, so one bad file never stops a long run
half-way and none is silently used. A class folder left with no readable image is refused, as
torchvision's ImageFolder does: an output the network can never be taught is a data-preparation error.
"""

from __future__ import annotations

import os
import random
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms

from engine.errors import FtdynError
from engine.shuffle import BlockShuffle, Shuffle
from engine.zoos import IMAGENET_MEAN, IMAGENET_STD  # torchvision's networks' normalisation (re-exported)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass
class Split:
    samples: list[tuple[Path, int]]
    root: Path

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]


@dataclass
class ImageData:
    classes: list[str]
    train: Split
    held_out: Split
    held_out_name: str  # "val", "test" or "val-fraction"
    skipped: list[str] = field(default_factory=list)


class ImageList(Dataset):
    """(image, label) pairs from a list of files, decoded as RGB."""

    def __init__(self, samples: list[tuple[Path, int]], transform: Callable):
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        try:
            with Image.open(path) as image:
                return self.transform(image.convert("RGB")), label
        except (OSError, ValueError, SyntaxError) as exc:  # what Pillow raises for a damaged file
            raise UnreadableImage(f"image '{path}' cannot be decoded ({type(exc).__name__}: {exc})") from None


class UnreadableImage(FtdynError):
    """An image that passed the scan but cannot be decoded now (it changed during the run). Raised in a
    DataLoader worker, it reaches the main process with the worker's traceback folded into its text:
    :meth:`one_line` recovers the sentence."""

    def one_line(self) -> str:
        found = re.findall(r"image '.*' cannot be decoded \(.*\)", str(self))
        what = found[-1] if found else "an image cannot be decoded"
        return f"{what}; it changed after the scan: replace or remove it, then continue with --resume"


def image_transform(image_size: int, augment: bool, shuffle: Shuffle | None = None,
                    normalisation: tuple[tuple[float, ...], tuple[float, ...]] = (IMAGENET_MEAN, IMAGENET_STD)
                    ) -> Callable:
    """Training augmentation is a mild random resized crop and flip; evaluation resizes to a
    square as the authors did (aspect not kept, no crop), then the model's normalisation (mean,
    std: ImageNet's for torchvision's networks), then the block shuffle when one is asked for
    (ANALYSES.md §4: after normalisation)."""
    resize = [transforms.RandomResizedCrop(image_size, scale=(0.6, 1.0), antialias=True),
              transforms.RandomHorizontalFlip()] if augment else [transforms.Resize((image_size, image_size), antialias=True)]
    shuffled = [BlockShuffle(shuffle, image_size)] if shuffle is not None else []
    return transforms.Compose(resize + [transforms.ToTensor(), transforms.Normalize(*normalisation)] + shuffled)


def pixel_transform(image_size: int) -> Callable:
    """The evaluation resize without normalisation, as an RGB PIL image: what visualisations show."""
    return transforms.Resize((image_size, image_size), antialias=True)


def class_folders(root: Path) -> list[Path]:
    """The class sub-folders of ``root`` (links to folders included), refused in one line where two of
    them are one folder: a class linked to another would be a second class with the same images."""
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    seen: dict[tuple[int, int], Path] = {}
    for folder in folders:
        info = folder.stat()
        first = seen.setdefault((info.st_dev, info.st_ino), folder)
        if first is not folder:
            link = next((p for p in (folder, first) if p.is_symlink()), folder)
            raise FtdynError(f"class folders '{first.name}' and '{folder.name}' in '{root}' are the same folder "
                             f"('{link.name}' is a link): each class needs its own images; remove the link")
    return folders


def is_readable_image(path: Path) -> bool:
    """True when the whole file decodes. JPEGs are decoded at reduced scale (``draft``), which still
    reads every byte of their data — a truncated one fails — at a fraction of a full decode's cost."""
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return False
    try:
        with Image.open(path) as image:
            image.draft("RGB", (64, 64))
            image.load()
        return True
    except Exception:  # Pillow raises many types for bad files
        return False


# Decoding releases the GIL: threads check files in parallel (and overlap a network file system's waits).
SCAN_THREADS, SCAN_CHUNK = min(8, os.cpu_count() or 1), 1024


def scan_split(root: Path, classes: list[str], skipped: list[str],
               progress: Callable[[int, int], None] | None = None) -> Split:
    candidates = []
    for label, name in enumerate(classes):
        folder = root / name
        if folder.is_dir():
            candidates += [(p, label) for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".")]
    samples = []
    with ThreadPoolExecutor(SCAN_THREADS) as pool:
        for start in range(0, len(candidates), SCAN_CHUNK):  # bounded: a million files queue no million futures
            chunk = candidates[start:start + SCAN_CHUNK]
            for i, ((path, label), ok) in enumerate(zip(chunk, pool.map(is_readable_image, [p for p, _ in chunk])),
                                                    start + 1):
                if ok:
                    samples.append((path, label))
                else:
                    skipped.append(str(path))
                if progress:
                    progress(i, len(candidates))
    present = {label for _, label in samples}
    empty = [name for label, name in enumerate(classes) if (root / name).is_dir() and label not in present]
    if empty:
        raise FtdynError(f"class folder{'s' if len(empty) > 1 else ''} {', '.join(repr(n) for n in empty[:5])} in "
                         f"'{root}' hold{'' if len(empty) > 1 else 's'} no readable images; add images or remove the "
                         f"folder (a class with no images cannot be learned or measured)")
    return Split(samples, root)


def scanned_folders(root: str | Path) -> list[Path]:
    """The folders whose class sub-folders the scan reads: ``train/`` and ``val/`` (or ``test/``) where
    both exist, else ``root`` itself."""
    root = Path(root).expanduser()
    held_out = next((root / name for name in ("val", "test") if (root / name).is_dir()), None)
    return [root / "train", held_out] if (root / "train").is_dir() and held_out is not None else [root]


def load_image_data(root: str | Path, val_fraction: float = 0.2, seed: int = 0,
                    progress: Callable[[int, int], None] | None = None) -> ImageData:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FtdynError(f"data folder '{root}' does not exist; pass --data DIR holding one sub-folder per class "
                         f"(or train/ and val/ folders of class sub-folders)")
    held_out_dir = next((root / name for name in ("val", "test") if (root / name).is_dir()), None)
    skipped: list[str] = []
    if (root / "train").is_dir() and held_out_dir is not None:
        classes = [p.name for p in class_folders(root / "train")]
        check_classes(classes, root / "train")
        train = scan_split(root / "train", classes, skipped, progress)
        held_out = scan_split(held_out_dir, classes, skipped, progress)
        extra = sorted({p.name for p in class_folders(held_out_dir)} - set(classes))
        if extra:
            raise FtdynError(f"{held_out_dir} has classes missing from {root / 'train'}: {', '.join(extra[:5])}")
        data = ImageData(classes, train, held_out, held_out_dir.name, skipped)
    else:
        if (root / "train").is_dir():
            raise FtdynError(f"'{root}' has train/ but no val/ or test/ folder; add one, or point --data at a "
                             f"single folder of class sub-folders to split it with --val-fraction")
        if not 0.0 < val_fraction < 1.0:
            raise FtdynError(f"--val-fraction must be between 0 and 1 (got {val_fraction})")
        classes = [p.name for p in class_folders(root)]
        check_classes(classes, root)
        everything = scan_split(root, classes, skipped, progress)
        train, held_out = split_by_class(everything, val_fraction, seed)
        if everything.samples and not held_out.samples:
            raise FtdynError(f"the --val-fraction split of '{root}' left no held-out images: every class has a "
                             f"single image, and a class gives one to the held-out split only from two; add "
                             f"images, or a val/ folder beside a train/ folder")
        data = ImageData(classes, train, held_out, "val-fraction", skipped)
    for split, name in ((data.train, "training"), (data.held_out, "held-out")):
        if not split.samples:
            raise FtdynError(f"no readable images in the {name} split under '{root}' "
                             f"({len(skipped)} unreadable files skipped)")
    return data


def check_classes(classes: list[str], folder: Path) -> None:
    if not classes:
        raise FtdynError(f"'{folder}' has no class sub-folders; put each class's images in its own folder "
                         f"(ROOT/cat/*.jpg, ROOT/dog/*.jpg)")
    if len(classes) < 2:
        raise FtdynError(f"'{folder}' holds a single class ('{classes[0]}'); classification needs at least two")


def split_by_class(split: Split, val_fraction: float, seed: int) -> tuple[Split, Split]:
    """Seeded per-class split: each class contributes round(val_fraction · size) held-out images (≥ 1)."""
    rng = random.Random(seed)
    train, held_out = [], []
    by_class: dict[int, list[tuple[Path, int]]] = {}
    for sample in split.samples:
        by_class.setdefault(sample[1], []).append(sample)
    for label in sorted(by_class):
        items = by_class[label][:]
        rng.shuffle(items)
        k = max(1, round(val_fraction * len(items))) if len(items) > 1 else 0
        held_out += items[:k]
        train += items[k:]
    return Split(sorted(train, key=str), split.root), Split(sorted(held_out, key=str), split.root)


def probe_indices(targets: list[int], probe_size: int, seed: int) -> list[int]:
    """Indices of a class-stratified probe set: classes take turns, each in a seeded order, so every
    class is represented as evenly as its size allows. Fixed for the whole run."""
    rng = random.Random(seed)
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(targets):
        by_class.setdefault(label, []).append(index)
    queues = []
    for label in sorted(by_class):
        indices = by_class[label][:]
        rng.shuffle(indices)
        queues.append(indices)
    chosen: list[int] = []
    while len(chosen) < probe_size and any(queues):
        for queue in queues:
            if queue and len(chosen) < probe_size:
                chosen.append(queue.pop())
    return sorted(chosen)


def seeded_generator(seed: int) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator
