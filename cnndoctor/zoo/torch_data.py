"""A torch ``Dataset`` with its augmentation written by hand in ``__getitem__``, as people write
one when torchvision is not at hand (it cannot be imported beside the CPU torch here).

The augmentations keep every class of the zoo's data what it is: a half turn (both axes flipped
together: a single-axis flip would turn a bar's diagonal into the anti-diagonal, another class)
and a shift of up to ``SHIFT`` pixels (zero padding, then a random crop: torchvision's
``RandomCrop(size, padding)``). They draw from torch's global generator, as such code does.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

#: pixels an image may move each way: 2 of 16, CIFAR recipes' ``RandomCrop(32, padding=4)`` scaled
SHIFT = 2
#: chance of the half turn (torchvision's flips default to 0.5)
TURN_P = 0.5


class AugmentedImages(Dataset):
    """``(image, label)`` pairs from channels-first image tensors, augmented on every read."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.targets = images, labels

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        x = self.images[i]
        if torch.rand(()) < TURN_P:
            x = x.flip(-1).flip(-2)
        h, w = x.shape[-2:]
        padded = F.pad(x, (SHIFT, SHIFT, SHIFT, SHIFT))
        top, left = (int(v) for v in torch.randint(0, 2 * SHIFT + 1, (2,)))
        return padded[..., top:top + h, left:left + w], self.targets[i]

    def with_data(self, images: torch.Tensor, labels: torch.Tensor) -> "AugmentedImages":
        """The same pipeline over other arrays (what a mutation of the data changes)."""
        return AugmentedImages(images, labels)
