"""Block-shuffled inputs (ANALYSES.md §4; Neyshabur, Sedghi, Zhang 2020, §3.1).

Cut each normalised S×S image into (S/b)² blocks of b×b pixels and permute the blocks with one fixed
permutation π drawn from a seed — the same π for every image, training, held-out and probe alike:

    shuffled[:, I·b:(I+1)·b, J·b:(J+1)·b] = image[:, π(I,J)ᵣ·b:…, π(I,J)_c·b:…]

b must divide S; b = S is the identity; ``pixel`` permutes all C·H·W values. Shuffling destroys the
spatial structure features are reused for and keeps the low-level statistics of the pixels, so
comparing pretrained-then-trained (P-T) with randomly-initialised-then-trained (RI-T) runs across b
separates the two parts of what transfers.

The permutation's seed is not the run's seed: the runs of a sweep (P-T and RI-T, two training seeds
each) must all face the same shuffled task for their accuracies and barriers to be comparable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

PIXEL = "pixel"


@dataclass(frozen=True)
class Shuffle:
    """``block``: the block side b in pixels, or ``PIXEL``; ``seed`` draws the permutation."""

    block: int | str
    seed: int = 0

    @property
    def label(self) -> str:
        return PIXEL if self.block == PIXEL else f"{self.block}px"

    def to_json(self) -> dict:
        return {"block": self.block, "seed": self.seed}


def parse_shuffle(text: str | None, image_size: int, seed: int = 0) -> Shuffle | None:
    """'8' → 8×8 blocks; 'pixel'; 'none' or None → no shuffling. One-line error otherwise."""
    if text is None or str(text).strip().lower() in ("", "none"):
        return None
    text = str(text).strip().lower()
    if text == PIXEL:
        return Shuffle(PIXEL, seed)
    try:
        block = int(text)
    except ValueError:
        raise ValueError(f"--shuffle-blocks takes a block size in pixels, 'pixel' or 'none', not {text!r}") from None
    if block < 1 or image_size % block:
        divisors = [d for d in range(1, image_size + 1) if image_size % d == 0]
        raise ValueError(f"block size {block} does not divide the image size {image_size}; "
                         f"choose one of {', '.join(map(str, divisors))} or 'pixel'")
    return Shuffle(block, seed)


def permutation(shuffle: Shuffle, image_size: int, channels: int = 3) -> torch.Tensor:
    """π as an index tensor: over the (S/b)² blocks, or over the C·S·S values for ``pixel``."""
    count = channels * image_size * image_size if shuffle.block == PIXEL else (image_size // shuffle.block) ** 2
    return torch.randperm(count, generator=torch.Generator().manual_seed(shuffle.seed))


class BlockShuffle:
    """The transform: a (C, S, S) tensor (or an (S, S, C) uint8 array, for what visualisations show)
    with its blocks permuted by π."""

    def __init__(self, shuffle: Shuffle, image_size: int, channels: int = 3):
        self.shuffle = shuffle
        self.size = image_size
        self.order = permutation(shuffle, image_size, channels)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        c, h, w = image.shape
        if (h, w) != (self.size, self.size):
            raise ValueError(f"block shuffling expects {self.size}×{self.size} images, got {h}×{w}")
        if self.shuffle.block == PIXEL:
            return image.reshape(-1)[self.order].reshape(c, h, w)
        b, k = self.shuffle.block, self.size // self.shuffle.block
        blocks = image.reshape(c, k, b, k, b).permute(1, 3, 0, 2, 4).reshape(k * k, c, b, b)
        return blocks[self.order].reshape(k, k, c, b, b).permute(2, 0, 3, 1, 4).reshape(c, h, w)

    def pixels(self, image: np.ndarray) -> np.ndarray:
        """The same π on an (S, S, C) image as displayed, so a picture shows what the network saw."""
        shuffled = self(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))))
        return shuffled.permute(1, 2, 0).numpy()
