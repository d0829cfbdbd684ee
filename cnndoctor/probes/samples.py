"""A few images and a histogram of pixel values per dataset, for the report's pictures.

Gathers only (no judgement): ``ev.figures["sample_images"]`` holds small thumbnails of the first
images of each dataset (training, validation, evaluation, reference) as base64 uint8 bytes, and
``ev.figures["input_histograms"]`` the histogram of their pixel values, each dataset over its own
range so that a 0-1 training set beside a 0-255 evaluation set shows both scales.
"""
from __future__ import annotations

import base64

import numpy as np

from . import BUDGETS, register

#: Thumbnails per dataset: enough to see what the images look like, small enough for the report
#: (6 images of at most 32 x 32 x 3 bytes are under 25 KB of base64 per dataset).
SAMPLE_IMAGES = 6
#: Longest side of a thumbnail in pixels; larger images are subsampled by a whole stride.
THUMB_SIDE = 32
#: Bins of the pixel-value histogram (matplotlib's default is 10; 30 shows the shape of an
#: 8-bit or a 0-1 distribution without empty comb teeth on a few hundred images).
HIST_BINS = 30
#: Images read for the histogram: a few hundred give a stable shape and take milliseconds.
HIST_IMAGES = 256


def thumbnails(images: np.ndarray, n: int = SAMPLE_IMAGES, side: int = THUMB_SIDE) -> dict:
    """The first ``n`` N x H x W x C images, subsampled to ``side`` and scaled to 0-255 bytes over
    their own finite range (as matplotlib's imshow would), with that range."""
    picked = np.asarray(images[:n], dtype=np.float64)
    h, w = picked.shape[1:3]
    stride = max(1, int(np.ceil(max(h, w) / side)))
    picked = picked[:, ::stride, ::stride, :]
    if picked.shape[-1] not in (1, 3):  # RGBA or odd channel counts: show the first channel
        picked = picked[..., :1]
    finite = picked[np.isfinite(picked)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    scaled = np.nan_to_num((picked - lo) / (hi - lo if hi > lo else 1.0), nan=0.0)
    data = np.clip(np.round(scaled * 255), 0, 255).astype(np.uint8)
    return {"shape": list(data.shape), "range": [lo, hi],
            "uint8_base64": base64.b64encode(data.tobytes()).decode("ascii")}


def histogram(images: np.ndarray, bins: int = HIST_BINS) -> dict:
    values = np.asarray(images[:HIST_IMAGES], dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"edges": [], "counts": []}
    lo, hi = float(values.min()), float(values.max())
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi if hi > lo else lo + 1.0))
    return {"edges": edges.tolist(), "counts": counts.tolist()}


@register("samples", budgets=BUDGETS)
def samples(ev, ctx) -> None:
    images, hists = {}, {}
    for ds in [ev.train, ev.val, *ev.evaluation, ev.reference]:
        if ds is None or len(ds) == 0 or ds.images.ndim != 4:
            continue
        entry = thumbnails(ds.images)
        if ds.labels is not None:
            entry["labels"] = [int(v) for v in ds.labels[:SAMPLE_IMAGES]]
        images[ds.name] = entry
        hists[ds.name] = histogram(ds.images)
    ev.figures["sample_images"] = images
    ev.figures["input_histograms"] = hists
