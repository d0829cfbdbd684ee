"""Cheap image features shared by data checks (probes of label signal, nuisance properties)."""
from __future__ import annotations

import numpy as np

#: Images are average-pooled to at most this many cells per side: 8 x 8 keeps digit shapes
#: recognisable (sklearn's digits are 8 x 8) while making a probe fast.
POOLED_SIDE = 8


def pooled_features(images: np.ndarray) -> np.ndarray:
    """N x (s*s*C) standardized features from N x H x W x C images by block averaging."""
    n, h, w, c = images.shape
    sh, sw = max(1, h // POOLED_SIDE), max(1, w // POOLED_SIDE)
    hh, ww = (h // sh) * sh, (w // sw) * sw
    x = np.nan_to_num(images[:, :hh, :ww, :].astype(np.float32))
    x = x.reshape(n, hh // sh, sh, ww // sw, sw, c).mean(axis=(2, 4)).reshape(n, -1)
    return _standardize(x)


#: Orientation bins of the gradient histogram: 8 bins of 22.5 degrees tell a slanted line from
#: horizontal or vertical texture, as in the cells of a HOG descriptor.
ORIENTATION_BINS = 8
#: Percentiles of gradient magnitude (where the strongest edges are) and of each channel's
#: intensity (how dark the darkest and how bright the brightest pixels are).
MAGNITUDE_PERCENTILES = (50, 90, 99, 100)
INTENSITY_PERCENTILES = (1, 50, 99)
#: Larger images are block-averaged to at most this many pixels per side first; 64 keeps a
#: one-pixel line of a 320 x 180 frame visible and the percentiles of 2,000 images under a second.
STATISTICS_SIDE = 64


def _standardize(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=0)
    std = x.std(axis=0)
    return x / np.where(std > 0, std, 1.0)


def global_statistics(images: np.ndarray) -> np.ndarray:
    """N x k standardized features that do not depend on *where* things are in the image.

    Pooled pixels (``pooled_features``) find a class when it sits in the same place in every image;
    a thin object anywhere on a busy background (a lane marking at any position and slant) is
    averaged away. These features keep it: the histogram of gradient orientations weighted by
    gradient magnitude, percentiles of the magnitude, and intensity percentiles per channel.
    """
    n, h, w, c = images.shape
    x = np.nan_to_num(images.astype(np.float32))
    step = max(1, -(-max(h, w) // STATISTICS_SIDE))
    if step > 1:
        hh, ww = (h // step) * step, (w // step) * step
        x = x[:, :hh, :ww, :].reshape(n, hh // step, step, ww // step, step, c).mean(axis=(2, 4))
    gray = x.mean(axis=3)
    gy = np.zeros_like(gray)
    gx = np.zeros_like(gray)
    gy[:, 1:-1, :] = (gray[:, 2:, :] - gray[:, :-2, :]) / 2
    gx[:, :, 1:-1] = (gray[:, :, 2:] - gray[:, :, :-2]) / 2
    magnitude = np.hypot(gx, gy).reshape(n, -1)
    angle = np.arctan2(gy, gx).reshape(n, -1) % np.pi
    bins = np.minimum((angle / np.pi * ORIENTATION_BINS).astype(np.int64), ORIENTATION_BINS - 1)
    hist = np.stack([(magnitude * (bins == b)).sum(axis=1) for b in range(ORIENTATION_BINS)], 1)
    hist /= np.maximum(magnitude.sum(axis=1, keepdims=True), 1e-12)
    parts = [hist, np.percentile(magnitude, MAGNITUDE_PERCENTILES, axis=1).T]
    flat = x.reshape(n, -1, c)
    parts += [np.percentile(flat[:, :, ch], INTENSITY_PERCENTILES, axis=1).T for ch in range(c)]
    return _standardize(np.concatenate(parts, axis=1).astype(np.float32))


def nuisance_properties(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image properties a person ignores when naming the class: N x k arrays."""
    n, h, w, c = images.shape
    flat = np.nan_to_num(images.reshape(n, -1, c).astype(np.float32))
    gray = flat.mean(axis=2)
    border = np.concatenate([images[:, 0, :, :].reshape(n, -1), images[:, -1, :, :].reshape(n, -1),
                             images[:, :, 0, :].reshape(n, -1), images[:, :, -1, :].reshape(n, -1)],
                            axis=1)
    props = {
        "brightness": gray.mean(axis=1, keepdims=True),
        "background level": np.median(np.nan_to_num(border), axis=1, keepdims=True),
        "contrast": gray.std(axis=1, keepdims=True),
    }
    if c == 3:
        channel_means = flat.mean(axis=1)
        total = channel_means.sum(axis=1, keepdims=True)
        props["dominant color channel"] = channel_means / np.where(total > 0, total, 1.0)
    return props
