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
    x = x - x.mean(axis=0)
    std = x.std(axis=0)
    return x / np.where(std > 0, std, 1.0)


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
