"""The probe set a training loop hands the monitor: a tensor of images, a pair (images, labels), a
map-style Dataset or a DataLoader (read once and kept, in order: a probe set is small), as one dataset
of (image, label) pairs; and its images as pictures for the filter visualisations."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from engine.errors import FtdynError


class Unlabelled(Dataset):
    """Images without labels, as (image, -1) pairs: the probe pass reads images only."""

    def __init__(self, images):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index], -1


def probe_dataset(probe) -> tuple[Dataset, bool]:
    """The probe set as a map-style dataset of (image, label) pairs, and whether it has labels."""
    if isinstance(probe, DataLoader):  # passed once and kept, in order: a probe set is small
        batches = list(probe)
        if not batches:
            raise FtdynError("the probe DataLoader gave no images")
        if isinstance(batches[0], (tuple, list)):
            probe = (torch.cat([b[0] for b in batches]), torch.cat([torch.as_tensor(b[1]) for b in batches]))
        else:
            probe = torch.cat(batches)
    if isinstance(probe, torch.Tensor):
        dataset, labelled = Unlabelled(probe), False
    elif isinstance(probe, (tuple, list)) and len(probe) == 2 and isinstance(probe[0], torch.Tensor):
        images, labels = probe[0], torch.as_tensor(probe[1])
        if len(labels) != len(images):
            raise FtdynError(f"the probe has {len(images)} images but {len(labels)} labels")
        dataset, labelled = TensorDataset(images, labels), True
    elif isinstance(probe, Dataset) and hasattr(probe, "__len__"):
        if len(probe) == 0:
            raise FtdynError("the probe set has no images")
        first = probe[0]
        labelled = isinstance(first, (tuple, list)) and len(first) >= 2
        dataset = probe if labelled else Unlabelled(probe)
    else:
        raise FtdynError(f"the probe must be a tensor of images, a pair (images, labels), a Dataset or a "
                         f"DataLoader, not {type(probe).__name__}")
    if len(dataset) == 0:
        raise FtdynError("the probe set has no images")
    return dataset, labelled


def probe_image_size(dataset: Dataset) -> int:
    image = dataset[0][0]
    if not isinstance(image, torch.Tensor) or image.dim() != 3:
        raise FtdynError(f"probe images must be tensors (channels, height, width), not "
                         f"{tuple(getattr(image, 'shape', ())) or type(image).__name__}")
    if image.shape[1] != image.shape[2]:
        raise FtdynError(f"probe images are {image.shape[1]}×{image.shape[2]}; the monitor takes square images "
                         f"(resize or crop them)")
    return int(image.shape[1])


def display_pixels(dataset: Dataset) -> np.ndarray:
    """The probe images as pictures (n, s, s, 3) uint8: each image's values stretched to 0–255 (the
    loop's normalisation is not known here)."""
    pictures = []
    for index in range(len(dataset)):
        image = dataset[index][0].detach().float().cpu()
        image = image.expand(3, *image.shape[1:]) if image.shape[0] == 1 else image[:3]
        low, high = image.min(), image.max()
        scaled = (image - low) / (high - low) if high > low else torch.zeros_like(image)
        pictures.append((scaled.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    return np.stack(pictures)
