"""Input statistics of every dataset given: scale, offset, per-channel figures.

Checks compare these (unnormalized input, preprocessing mismatch between training and evaluation).
"""
from __future__ import annotations

import numpy as np

from . import BUDGETS, register

#: Statistics are computed on at most this many images per dataset (a fixed, evenly spaced subset):
#: 2,000 images give percentiles to well under 1% of the range and cost ~50 ms.
MAX_STAT_IMAGES = 2000


def image_statistics(images: np.ndarray) -> dict:
    """Scale and offset figures of N x H x W x C images."""
    if len(images) > MAX_STAT_IMAGES:
        idx = np.linspace(0, len(images) - 1, MAX_STAT_IMAGES).astype(int)
        images = images[idx]
    finite = images[np.isfinite(images)]
    if finite.size == 0:
        return {"finite": False}
    per_channel = images.reshape(-1, images.shape[-1])
    per_channel = np.where(np.isfinite(per_channel), per_channel, np.nan)
    p_lo, p_hi = np.percentile(finite, [0.1, 99.9])
    return {
        "finite": True,
        "min": float(finite.min()), "max": float(finite.max()),
        "mean": float(finite.mean()), "std": float(finite.std()),
        "p0.1": float(p_lo), "p99.9": float(p_hi),
        "channel_mean": [float(v) for v in np.nanmean(per_channel, axis=0)],
        "channel_std": [float(v) for v in np.nanstd(per_channel, axis=0)],
        "shape": list(images.shape[1:]),
        "dtype": str(images.dtype),
    }


@register("datastats", budgets=BUDGETS)
def datastats(ev, ctx) -> None:
    stats = {}
    for ds in [ev.train, ev.val, *ev.evaluation, ev.reference]:
        if ds is not None:
            stats[ds.name] = image_statistics(ds.images)
    ev.probes["datastats"] = stats
    ev.figures["input_statistics"] = stats
