"""Robustness probes: how the real-world (reference) samples differ from the training data, and
which everyday changes to an image the model cannot tolerate.

A model that validates well can fail on real inputs because they differ from the training images
in ways a person ignores: a gray, uneven paper background, lower contrast, thicker strokes, a digit
that is not centred (reference case 5). Three probes, in this order:

- ``domain_shift``: measures image properties (background level and unevenness, contrast, ink
  polarity, stroke width, object size and centring, noise, sharpness, color) on the training and
  the reference images, with an effect size per property; the accuracy on labelled reference
  samples against validation; and which perturbations of the training images make them look most
  like the reference samples.
- ``perturbation_sweep``: accuracy on validation images under perturbations (inversion,
  background, contrast, brightness, noise, blur, shift, scale, rotation, stroke width, color), each
  at a few strengths a person would still read without trouble.
- ``robustness_fix`` (when verification is asked for): retrains fresh copies of the model with and
  without the augmentations the evidence points to, over several seeds, and measures the accuracy
  on the reference samples before and after.

All image work happens on canonical N x H x W x C images rescaled to [0, 1] by the training
data's own value range (``value_range``), so the same code serves 0-255, 0-1 and standardized
inputs; results are converted back before anything is fed to the model.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage

from . import register

# ---------------------------------------------------------------------------------------------
# Sizes and thresholds

#: Images per dataset for property statistics: percentiles of 1,000 values are stable to ~1% of
#: the spread, and measuring costs well under a second.
PROPERTY_SAMPLES = 1000
#: Validation images in the perturbation sweep, per budget: at 500 images the standard error of
#: an accuracy near 90% is ~1.3 points, far below the drops we report (>= 20 points).
SWEEP_SAMPLES = {"quick": 200, "standard": 500, "thorough": 1000}
#: Training images perturbed in the search for the perturbation that makes the training data look
#: like the reference (properties only, no model): 300 is enough for medians and spreads.
MATCH_SAMPLES = 150
#: The greedy search composes at most this many perturbations ...
MATCH_STEPS = 6
#: ... and stops when a step brings the properties closer by less than this, in training spreads
#: summed over properties (half a spread on one property: a medium effect, as ``SHIFT_EFFECT``).
MATCH_MIN_GAIN = 0.5
#: A property differs when the typical reference image lies at least this many training standard
#: deviations away from the nearest training images (Cohen's "medium" effect, 0.5). Calibrated:
#: held-out MNIST digits against MNIST training digits stay below 0.1 on every property, case 5's
#: photographed digits exceed 0.6 on background level and 5 on contrast (tests/test_robustness.py).
SHIFT_EFFECT = 0.5
#: An effect this large (Cohen's "large" effect is 0.8; we ask for more, as no labels confirm it)
#: makes an unlabelled reference set an error on its own.
SHIFT_EFFECT_ERROR = 2.0
#: Beyond this many spreads a property is simply "outside the training data": the distance used
#: to match perturbations to the reference counts each property at most this much.
EFFECT_CAP = 3.0
#: After the first step, the matching search only tries the perturbations that did best alone.
MATCH_CANDIDATES = 5
#: Accuracy on labelled reference samples this far below validation accuracy (and outside twice
#: the combined binomial standard error) is a failure the domain shift explains: the report of
#: case 5 saw 98% -> 76%, a 22-point drop; we flag from 10 points.
ACCURACY_DROP = 0.10
#: The sweep needs a model that has learned something: clean accuracy must beat the majority-class
#: rate by this much, else robustness is not the question yet.
MIN_LEARNED_MARGIN = 0.15
#: Retraining for verification: seeds, and limits that keep it to a few minutes on a CPU.
VERIFY_SEEDS = 3
VERIFY_MAX_TRAIN = 6000  # training images per run (an evenly spread subset)
VERIFY_EPOCHS = 3  # when the user's epoch count is unknown
VERIFY_MAX_EPOCHS = 5
#: An augmentation is applied to each image with this probability: half the batch stays clean,
#: so clean accuracy does not suffer (the usual default of augmentation libraries, 0.5).
AUGMENT_PROBABILITY = 0.5

# ---------------------------------------------------------------------------------------------
# Value range: training data -> [0, 1] and back


def value_range(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (low, high) of the training images: 0.1 and 99.9 percentiles of a subset.

    Values near the usual ends (0, 1, 255) are snapped to them, so that 0-255 and 0-1 data map
    exactly. For standardized data ((x - mean) / std) the ends are the standardized 0 and 1.
    """
    sub = _subset(images, 2000)
    flat = np.nan_to_num(sub.reshape(-1, sub.shape[-1]).astype(np.float64))
    lo = np.percentile(flat, 0.1, axis=0)
    hi = np.percentile(flat, 99.9, axis=0)
    for ends in ((0.0, 1.0), (0.0, 255.0), (-1.0, 1.0)):
        span = ends[1] - ends[0]
        lo = np.where(np.abs(lo - ends[0]) < 0.05 * span, ends[0], lo)
        hi = np.where(np.abs(hi - ends[1]) < 0.05 * span, ends[1], hi)
    hi = np.where(hi - lo > 1e-6, hi, lo + 1.0)
    return lo.astype(np.float32), hi.astype(np.float32)


def to_unit(images: np.ndarray, vr) -> np.ndarray:
    lo, hi = vr
    return ((images - lo) / (hi - lo)).astype(np.float32)


def from_unit(u: np.ndarray, vr) -> np.ndarray:
    lo, hi = vr
    return (lo + np.clip(u, 0.0, 1.0) * (hi - lo)).astype(np.float32)


def _subset(images: np.ndarray, n: int, labels=None):
    """An evenly spread subset of at most n rows (deterministic)."""
    if len(images) <= n:
        return images if labels is None else (images, labels)
    idx = np.linspace(0, len(images) - 1, n).astype(int)
    return images[idx] if labels is None else (images[idx], labels[idx])


def to_model_layout(images: np.ndarray, like) -> np.ndarray:
    """Canonical N x H x W x C images in the layout of ``like.x`` (a Dataset): NCHW, NHW, ..."""
    x = np.asarray(like.x) if not hasattr(like.x, "detach") else like.x.detach().cpu().numpy()
    shape = x.shape[1:]
    if images.shape[1:] == shape:
        return images
    if len(shape) == 3 and shape == (images.shape[3], images.shape[1], images.shape[2]):
        return np.ascontiguousarray(np.transpose(images, (0, 3, 1, 2)))
    return np.ascontiguousarray(images.reshape(len(images), *shape))


def from_model_layout(x: np.ndarray, like) -> np.ndarray:
    """The inverse of ``to_model_layout``: N x H x W x C."""
    target = like.images.shape[1:]
    if x.shape[1:] == target:
        return x
    if x.ndim == 4 and x.shape[1:] == (target[2], target[0], target[1]):
        return np.transpose(x, (0, 2, 3, 1))
    return x.reshape(len(x), *target)


# ---------------------------------------------------------------------------------------------
# Image properties


@dataclass(frozen=True)
class Property:
    name: str
    unit: str  # how the value reads: "of the value range", "pixels", "of the image size", ...
    floor: float  # the smallest spread that counts: differences below it are not meaningful
    meaning: str  # one line for the report


# Floors: the smallest difference that matters for each property, so that a training set with no
# spread at all (MNIST's background is exactly 0) does not turn tiny differences into huge
# effects. Intensities: 5% of the value range (13 levels of 8 bits, a barely visible step).
PROPERTIES = {p.name: p for p in [
    Property("background level", "of the value range", 0.05,
             "median of the 2-pixel border (0 = darkest training value, 1 = brightest)"),
    Property("background unevenness", "of the value range", 0.05,
             "spread between the medians of the four border strips (lighting gradients)"),
    Property("contrast", "of the value range", 0.05,
             "difference between the object (ink) and the background"),
    Property("bright object share", "share of images", 0.25,  # a polarity flip is 0 -> 1
             "1 when the object is brighter than its background, 0 when darker (polarity)"),
    Property("stroke width", "pixels", 0.5,  # half a pixel: the resolution of the estimate
             "2 x object area / object outline"),
    Property("object size", "of the image size", 0.05,  # MNIST's box: 20/28 = 0.71 +- 0.05
             "extent of the object (2nd-98th percentile of its mass), larger side"),
    Property("off-centre", "of the image size", 0.03,  # one pixel in 28 is 0.036
             "distance of the object's centre of mass from the image centre"),
    Property("noise", "of the value range", 0.01,  # 2.5 levels of 8 bits: invisible
             "pixel noise (robust estimate, Immerkaer 1996)"),
    Property("edge sharpness", "share of the contrast per pixel", 0.05,
             "steepest edges relative to the contrast (blur lowers it)"),
    Property("mean brightness", "of the value range", 0.05, "mean over all pixels"),
    Property("colorfulness", "of the value range", 0.02,  # a cast of 2% is barely visible
             "mean spread across the channels (0 for gray images)"),
    Property("red share", "of the channel sum", 0.02, "red channel / sum of channels"),
    Property("blue share", "of the channel sum", 0.02, "blue channel / sum of channels"),
]}
RING = 2 / 28  # border ring width as a share of the image side (2 pixels at MNIST's 28)
INK_QUANTILE = 0.98  # the ink level: this quantile of |pixel - background| per image
INK_FRACTION = 0.5  # a pixel is ink when it is at least this share of the contrast away
MIN_CONTRAST = 0.02  # below this the image is flat: no object to measure
_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)


def _border_stats(gray: np.ndarray):
    n, h, w = gray.shape
    r = max(1, int(round(RING * min(h, w))))
    strips = [gray[:, :r, :].reshape(n, -1), gray[:, -r:, :].reshape(n, -1),
              gray[:, :, :r].reshape(n, -1), gray[:, :, -r:].reshape(n, -1)]
    ring = np.concatenate(strips, axis=1)
    sides = np.stack([np.median(s, axis=1) for s in strips], axis=1)
    return np.median(ring, axis=1), sides.max(axis=1) - sides.min(axis=1)


def image_properties(u: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image properties of N x H x W x C images scaled to [0, 1]: name -> (N,) values."""
    n, h, w, c = u.shape
    planes = np.nan_to_num(np.moveaxis(u.astype(np.float32), 3, 0))  # C x N x H x W: fast sums
    gray = planes.mean(axis=0)
    bg, uneven = _border_stats(gray)
    dev = gray - bg[:, None, None]
    absdev = np.abs(dev)
    contrast = np.quantile(absdev.reshape(n, -1), INK_QUANTILE, axis=1)
    flat = contrast < MIN_CONTRAST
    ink = absdev > (INK_FRACTION * np.maximum(contrast, MIN_CONTRAST))[:, None, None]
    area = ink.sum(axis=(1, 2)).astype(np.float64)
    signed = np.where(ink, dev, 0.0).sum(axis=(1, 2))
    bright = (signed > 0).astype(np.float64)
    edges = (np.abs(np.diff(ink, axis=1)).sum(axis=(1, 2))
             + np.abs(np.diff(ink, axis=2)).sum(axis=(1, 2))).astype(np.float64)
    stroke = np.where(edges > 0, 2.0 * area / np.maximum(edges, 1), 0.0)
    mass = np.where(ink, absdev, 0.0)
    total = mass.sum(axis=(1, 2)) + 1e-9
    rows, cols = mass.sum(axis=2) / total[:, None], mass.sum(axis=1) / total[:, None]

    def extent(p):
        cdf = np.cumsum(p, axis=1)
        lo = (cdf < 0.02).sum(axis=1)
        hi = (cdf < 0.98).sum(axis=1)
        return (hi - lo + 1) / p.shape[1]

    size = np.maximum(extent(rows), extent(cols))
    cy = (rows * np.arange(h)).sum(axis=1) - (h - 1) / 2
    cx = (cols * np.arange(w)).sum(axis=1) - (w - 1) / 2
    offcentre = np.hypot(cy / h, cx / w)
    residual = np.abs(ndimage.convolve(gray, _IMMERKAER[None], mode="nearest"))
    noise = np.median(residual.reshape(n, -1), axis=1) / 0.6745 / 6.0
    smooth = ndimage.gaussian_filter(gray, (0, 0.5, 0.5))
    grad = np.maximum(np.abs(np.diff(smooth, axis=1))[:, :, :-1],
                      np.abs(np.diff(smooth, axis=2))[:, :-1, :])
    sharp = np.quantile(grad.reshape(n, -1), 0.99, axis=1) / np.maximum(contrast, MIN_CONTRAST)
    props = {
        "background level": bg,
        "background unevenness": uneven,
        "contrast": contrast,
        "bright object share": bright,
        "stroke width": stroke,
        "object size": size,
        "off-centre": offcentre,
        "noise": noise,
        "edge sharpness": sharp,
        "mean brightness": gray.mean(axis=(1, 2)),
    }
    for name in ("stroke width", "object size", "off-centre", "edge sharpness", "bright object share"):
        props[name] = np.where(flat, np.nan, props[name])  # no object: nothing to measure
    if c == 3:
        props["colorfulness"] = np.sqrt(((planes - gray) ** 2).mean(axis=0)).mean(axis=(1, 2))
        means = planes.mean(axis=(2, 3))
        total_c = means.sum(axis=0) + 1e-6
        props["red share"] = means[0] / total_c
        props["blue share"] = means[2] / total_c
    return {k: v.astype(np.float64) for k, v in props.items()}


def _summary(values: np.ndarray) -> dict:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return {"n": 0}
    q = np.percentile(v, [5, 50, 95])
    return {"n": int(v.size), "mean": float(v.mean()), "std": float(v.std()),
            "median": float(q[1]), "p5": float(q[0]), "p95": float(q[2])}


def compare_property(train: np.ndarray, ref: np.ndarray, floor: float) -> dict:
    """How far the reference values lie from the training distribution, in training spreads.

    For each reference value: the distance to the nearest of the training distribution's 1st..99th
    percentiles (0 inside the bulk of the training values, even when they form several groups, as
    MNIST plus its inverted copy does), divided by the training standard deviation (at least
    ``floor``). ``effect`` is the median over reference images; ``outside`` the share of
    reference images farther than ``SHIFT_EFFECT`` spreads.
    """
    t = train[np.isfinite(train)]
    r = ref[np.isfinite(ref)]
    if t.size < 5 or r.size < 1:
        return {"effect": 0.0, "outside": 0.0, "scale": floor, "train": _summary(train),
                "reference": _summary(ref)}
    d = _coverage_gaps(t, r)
    scale = max(float(t.std()), floor)
    z = d / scale
    return {"effect": float(np.median(z)), "outside": float(np.mean(z > SHIFT_EFFECT)),
            "scale": scale, "train": _summary(train), "reference": _summary(ref),
            "direction": "higher" if np.median(r) > np.median(t) else "lower"}


def compare_properties(train_props: dict, ref_props: dict) -> dict[str, dict]:
    out = {}
    for name, prop in PROPERTIES.items():
        if name in train_props and name in ref_props:
            out[name] = compare_property(train_props[name], ref_props[name], prop.floor)
            out[name]["unit"] = prop.unit
            out[name]["meaning"] = prop.meaning
            out[name]["differs"] = out[name]["effect"] >= SHIFT_EFFECT
    return out


def shift_distance(comparison: dict[str, dict], names=None) -> float:
    """One number for "how different": the sum of the effects, each capped at ``EFFECT_CAP``
    so that one far-off property (contrast 10 spreads away) does not hide all the others."""
    return float(sum(min(c["effect"], EFFECT_CAP) for k, c in comparison.items()
                     if names is None or k in names))


# ---------------------------------------------------------------------------------------------
# Perturbations: functions of (u, levels, rng) -> u on N x H x W x C images in [0, 1].
# ``levels`` has one strength per image, so that the same functions serve as augmentations.


def _background(u: np.ndarray) -> np.ndarray:
    return _border_stats(u.mean(axis=3))[0]


def _upsample(grid: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear upsampling of N x gh x gw grids to N x h x w (corners aligned)."""
    n, gh, gw = grid.shape
    ys, xs = np.linspace(0, gh - 1, h), np.linspace(0, gw - 1, w)
    y0, x0 = np.minimum(ys.astype(int), gh - 2), np.minimum(xs.astype(int), gw - 2)
    fy, fx = (ys - y0)[None, :, None], (xs - x0)[None, None, :]
    a, b = grid[:, y0][:, :, x0], grid[:, y0][:, :, x0 + 1]
    c, d = grid[:, y0 + 1][:, :, x0], grid[:, y0 + 1][:, :, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def _smooth_field(rng, n: int, h: int, w: int) -> np.ndarray:
    """Smooth random fields in [-1, 1]: a lighting ramp plus low-frequency blotches."""
    angle = rng.uniform(0, 2 * np.pi, size=(n, 1, 1))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = np.cos(angle) * (xx / max(w - 1, 1) - 0.5) + np.sin(angle) * (yy / max(h - 1, 1) - 0.5)
    blotch = _upsample(rng.normal(size=(n, 4, 4)), h, w)
    return np.clip(1.2 * ramp + 0.25 * blotch, -1.0, 1.0).astype(np.float32)


def _warp(u: np.ndarray, mats: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Affine warp of every image: output pixel p samples input at mats[i] @ p + offsets[i].

    Bilinear, border values repeated outside (the background continues), vectorized over the
    batch.
    """
    n, h, w, c = u.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    sy = mats[:, 0, 0, None, None] * yy + mats[:, 0, 1, None, None] * xx + offsets[:, 0, None, None]
    sx = mats[:, 1, 0, None, None] * yy + mats[:, 1, 1, None, None] * xx + offsets[:, 1, None, None]
    sy, sx = np.clip(sy, 0, h - 1), np.clip(sx, 0, w - 1)
    y0, x0 = np.minimum(sy.astype(int), h - 2 if h > 1 else 0), np.minimum(sx.astype(int),
                                                                          w - 2 if w > 1 else 0)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (sy - y0)[..., None], (sx - x0)[..., None]
    i = np.arange(n)[:, None, None]
    top = u[i, y0, x0] * (1 - fx) + u[i, y0, x1] * fx
    bottom = u[i, y1, x0] * (1 - fx) + u[i, y1, x1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


def _about_centre(mats: np.ndarray, h: int, w: int) -> np.ndarray:
    c = np.array([(h - 1) / 2, (w - 1) / 2])
    return c[None, :] - mats @ c


def p_inversion(u, levels, rng):
    lv = levels[:, None, None, None]
    return u * (1 - lv) + (1.0 - u) * lv


def p_background(u, levels, rng):
    """Replace the background by gray, uneven "paper": ``level`` of the way to mid-gray, with a
    lighting gradient of the same order; the object keeps its value."""
    n, h, w, c = u.shape
    gray = u.mean(axis=3)
    bg = _background(u)
    contrast = np.quantile(np.abs(gray - bg[:, None, None]).reshape(n, -1), INK_QUANTILE, axis=1)
    ink = np.clip(np.abs(gray - bg[:, None, None]) / np.maximum(contrast, MIN_CONTRAST)[:, None, None],
                  0, 1)
    lv = levels[:, None, None]
    toward = (0.5 - bg)[:, None, None]
    target = bg[:, None, None] + lv * toward + 0.25 * lv * _smooth_field(rng, n, h, w)
    shift = (target - bg[:, None, None]) * (1 - ink)
    return np.clip(u + shift[..., None], 0, 1)


def p_contrast(u, levels, rng):
    """Scale the deviations from the image mean: ``level`` is the share of contrast kept."""
    mean = u.mean(axis=(1, 2), keepdims=True)
    return mean + (u - mean) * levels[:, None, None, None]


def p_brightness(u, levels, rng):
    """Add ``level`` to dark images and subtract it from bright ones (where there is room)."""
    sign = np.where(u.mean(axis=(1, 2, 3)) < 0.5, 1.0, -1.0)
    return np.clip(u + (sign * levels)[:, None, None, None], 0, 1)


def p_noise(u, levels, rng):
    return np.clip(u + rng.normal(size=u.shape).astype(np.float32) * levels[:, None, None, None], 0, 1)


def p_blur(u, levels, rng):
    """Gaussian blur; ``level`` is sigma in pixels at a 28-pixel image (scaled with the size).
    Strengths are rounded to 0.25 px so that images sharing one are filtered together."""
    out = u.copy()
    k = u.shape[1] / 28.0
    q = np.round(np.asarray(levels) * 4) / 4
    for s in np.unique(q[q > 0]):
        m = q == s
        out[m] = ndimage.gaussian_filter(u[m], (0, s * k, s * k, 0), mode="nearest")
    return out


def p_shift(u, levels, rng):
    """Translate by ``level`` x image size in a random direction (border values fill in)."""
    n, h, w, _ = u.shape
    angle = rng.uniform(0, 2 * np.pi, size=n)
    offsets = -levels[:, None] * np.stack([h * np.sin(angle), w * np.cos(angle)], axis=1)
    return _warp(u, np.repeat(np.eye(2)[None], n, axis=0), offsets)


def p_scale(u, levels, rng):
    """Zoom about the centre by ``level`` (0.75 = smaller object, 1.5 = larger)."""
    n, h, w, _ = u.shape
    mats = np.eye(2)[None] / np.asarray(levels, dtype=np.float64)[:, None, None]
    return _warp(u, mats, _about_centre(mats, h, w))


def p_rotation(u, levels, rng):
    """Rotate about the centre by ``level`` degrees, clockwise or counter-clockwise at random."""
    n, h, w, _ = u.shape
    a = np.deg2rad(np.asarray(levels, dtype=np.float64) * rng.choice([-1.0, 1.0], size=n))
    mats = np.stack([np.stack([np.cos(a), -np.sin(a)], 1), np.stack([np.sin(a), np.cos(a)], 1)], 1)
    return _warp(u, mats, _about_centre(mats, h, w))


def p_stroke(u, levels, rng):
    """Thicker (+1, +2 pixels) or thinner (-1) strokes: grey dilation/erosion of the object."""
    out = u.copy()
    bright = _objects_are_bright(u)
    lv = np.rint(levels).astype(int)
    for k in np.unique(lv[lv != 0]):
        size = (1, 2 * abs(k) + 1, 2 * abs(k) + 1, 1)
        grow = (k > 0) == bright  # thicker bright ink = dilation; thicker dark ink = erosion
        for mask, op in ((grow & (lv == k), ndimage.maximum_filter),
                         (~grow & (lv == k), ndimage.minimum_filter)):
            if mask.any():
                out[mask] = op(u[mask], size=size)
    return out


def _objects_are_bright(u: np.ndarray) -> np.ndarray:
    gray = u.mean(axis=3)
    dev = gray - _background(u)[:, None, None]
    contrast = np.quantile(np.abs(dev).reshape(len(u), -1), INK_QUANTILE, axis=1)
    ink = np.abs(dev) > INK_FRACTION * np.maximum(contrast, MIN_CONTRAST)[:, None, None]
    return np.where(ink, dev, 0).sum(axis=(1, 2)) >= 0


def p_color(u, levels, rng):
    """1: a warm color cast (blue x0.85, green x0.93); 2: channels swapped (RGB -> GBR);
    3: grayscale (channel mean)."""
    out = u.copy()
    lv = np.rint(levels).astype(int)
    cast = lv == 1
    out[cast] = u[cast] * np.array([1.0, 0.93, 0.85], dtype=np.float32)
    swap = lv == 2
    out[swap] = u[swap][..., [1, 2, 0]]
    gray = lv == 3
    out[gray] = u[gray].mean(axis=3, keepdims=True)
    return out


@dataclass(frozen=True)
class Perturbation:
    name: str
    fn: Callable
    levels: tuple  # strengths tried by the sweep, mildest first
    describe: Callable[[float], str]  # level -> words
    properties: tuple  # the image properties it changes (links the sweep with domain-shift)
    neutral: float = 0.0
    needs_color: bool = False
    fine: tuple = ()  # extra, milder strengths tried when matching the reference samples


PERTURBATIONS = {p.name: p for p in [
    Perturbation("inversion", p_inversion, (1.0,), lambda v: "colors inverted",
                 ("bright object share", "background level", "mean brightness")),
    Perturbation("background", p_background, (0.3, 0.6, 0.9),
                 lambda v: f"gray uneven background ({v:.0%} of the way to mid-gray)",
                 ("background level", "background unevenness", "contrast", "mean brightness"),
                 fine=(0.15, 0.45, 0.75)),
    Perturbation("contrast", p_contrast, (0.6, 0.4, 0.25),
                 lambda v: f"contrast x{v:.2f}", ("contrast", "background level",
                                                   "mean brightness", "edge sharpness"),
                 neutral=1.0, fine=(0.8, 0.5, 0.3)),
    Perturbation("brightness", p_brightness, (0.1, 0.2, 0.3),
                 lambda v: f"brightness {v:+.0%} of the range", ("background level",
                                                                  "mean brightness", "contrast"),
                 fine=(0.05, 0.15)),
    Perturbation("noise", p_noise, (0.05, 0.1, 0.2), lambda v: f"noise sigma {v:.2f}",
                 ("noise",), fine=(0.015, 0.03)),
    Perturbation("blur", p_blur, (0.75, 1.25, 2.0),
                 lambda v: f"blur sigma {v:.2f} px (at 28 px)", ("edge sharpness", "stroke width"),
                 fine=(0.5, 1.0)),
    Perturbation("shift", p_shift, (0.1, 0.15, 0.2), lambda v: f"shifted by {v:.0%} of the size",
                 ("off-centre",), fine=(0.05,)),
    Perturbation("scale", p_scale, (0.75, 1.25, 1.5), lambda v: f"scaled x{v:.2f}",
                 ("object size", "stroke width"), neutral=1.0, fine=(0.9, 1.1)),
    Perturbation("rotation", p_rotation, (10.0, 20.0, 30.0), lambda v: f"rotated {v:.0f} degrees",
                 ()),
    Perturbation("stroke", p_stroke, (-1.0, 1.0, 2.0),
                 lambda v: f"strokes {'thinner' if v < 0 else 'thicker'} by {abs(v):.0f} px",
                 ("stroke width",)),
    Perturbation("color", p_color, (1.0, 2.0, 3.0),
                 lambda v: {1: "warm color cast", 2: "color channels swapped",
                            3: "grayscale"}[int(round(v))],
                 ("colorfulness", "red share", "blue share"), needs_color=True),
]}


def apply(u: np.ndarray, name: str, level: float, rng: np.random.Generator) -> np.ndarray:
    """Perturb every image of ``u`` (N x H x W x C in [0, 1]) by ``name`` at ``level``."""
    p = PERTURBATIONS[name]
    return np.clip(p.fn(u, np.full(len(u), float(level), dtype=np.float32), rng), 0, 1).astype(
        np.float32)


def applicable(name: str, images: np.ndarray) -> str | None:
    """Why a perturbation does not apply to these images, or None."""
    p = PERTURBATIONS[name]
    if p.needs_color:
        if images.shape[-1] != 3:
            return "the images have no color channels"
    if images.shape[1] < 8 or images.shape[2] < 8:
        return "the images are too small for it"
    return None


# ---------------------------------------------------------------------------------------------
# Augmentation: random strengths up to a maximum, for training


def _sample_levels(p: Perturbation, maximum: float, n: int, rng) -> np.ndarray:
    if p.name == "scale":
        z = max(maximum, 1 / maximum)
        return np.exp(rng.uniform(-np.log(z), np.log(z), size=n))
    if p.name == "stroke":
        lo, hi = min(0.0, maximum, -1.0), max(0.0, maximum)
        return rng.integers(int(lo), int(hi) + 1, size=n).astype(np.float32)
    if p.name == "color":
        return rng.integers(1, int(round(maximum)) + 1, size=n).astype(np.float32)
    if p.name == "inversion":
        return np.ones(n, dtype=np.float32)
    if p.name == "contrast":  # share kept: from the maximum reduction to none
        return rng.uniform(maximum, 1.0, size=n)
    return rng.uniform(0.0, maximum, size=n)


class Augment:
    """A numpy augmentation for training batches: ``augment(x_batch, rng) -> x_batch``.

    ``plan`` maps perturbation names to the strongest level to draw (see ``PERTURBATIONS``);
    each is applied to each image with probability ``p``, at a random strength up to that level.
    Works on batches in the model's own layout and value range (``layout``: "channels_last",
    "channels_first" or "none" for N x H x W; ``value_range``: per-channel (low, high)).
    """

    def __init__(self, plan: dict[str, float], value_range=((0.0,), (1.0,)),
                 layout: str = "channels_last", p: float = AUGMENT_PROBABILITY):
        self.plan = dict(plan)
        self.lo = np.asarray(value_range[0], dtype=np.float32)
        self.hi = np.asarray(value_range[1], dtype=np.float32)
        self.layout = layout
        self.p = p

    def __call__(self, x: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        rng = rng if rng is not None else np.random.default_rng()
        x = np.asarray(x, dtype=np.float32)
        img = x
        if self.layout == "channels_first":
            img = np.transpose(x, (0, 2, 3, 1))
        elif self.layout == "none" or x.ndim == 3:
            img = x[..., None]
        u = (img - self.lo) / (self.hi - self.lo)
        n = len(u)
        # ordered as a camera sees: geometry, then stroke, lighting, optics, sensor
        for name in sorted(self.plan, key=list(PERTURBATIONS).index):
            pert = PERTURBATIONS[name]
            chosen = rng.random(n) < self.p
            if not chosen.any():
                continue
            levels = _sample_levels(pert, self.plan[name], int(chosen.sum()), rng).astype(np.float32)
            u[chosen] = np.clip(pert.fn(u[chosen], levels, rng), 0, 1)
        out = self.lo + u * (self.hi - self.lo)
        if self.layout == "channels_first":
            out = np.transpose(out, (0, 3, 1, 2))
        elif self.layout == "none" or x.ndim == 3:
            out = out[..., 0]
        return np.ascontiguousarray(out, dtype=np.float32)

    def __repr__(self) -> str:
        plan = ", ".join(f"{k!r}: {v:g}" for k, v in self.plan.items())
        return (f"Augment({{{plan}}}, value_range=({_fmt_list(self.lo)}, {_fmt_list(self.hi)}), "
                f"layout={self.layout!r})")


def _fmt_list(a) -> str:
    vals = [float(v) for v in np.atleast_1d(a)]
    if len(set(vals)) == 1:
        return f"({vals[0]:g},)"
    return "(" + ", ".join(f"{v:g}" for v in vals) + ")"


def layout_of(ds) -> str:
    """"channels_last", "channels_first" or "none" for a Dataset's ``x``."""
    shape = tuple(np.shape(ds.x))[1:]
    if len(shape) == 2:
        return "none"
    if len(shape) == 3 and shape != tuple(ds.images.shape[1:]) and shape[0] == ds.images.shape[3]:
        return "channels_first"
    return "channels_last"


# ---------------------------------------------------------------------------------------------
# Model helpers


def _probabilities(ev, x) -> np.ndarray:
    from .. import runtime

    return runtime.output_probabilities(runtime.predict(ev.model, x), ev.graph.output_activation)


def _accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    if probs.ndim == 1 or probs.shape[-1] == 1:
        pred = (probs.reshape(-1) > 0.5).astype(np.int64)
    else:
        pred = probs.argmax(axis=1)
    return float(np.mean(pred == labels))


def _mean_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    """Cross-entropy of the true class (what the user's categorical loss reports)."""
    if probs.ndim == 1 or probs.shape[-1] == 1:
        p = probs.reshape(-1)
        p = np.where(labels == 1, p, 1 - p)
    else:
        ok = (labels >= 0) & (labels < probs.shape[1])
        p = np.where(ok, probs[np.arange(len(labels)), np.clip(labels, 0, probs.shape[1] - 1)], 0)
    return float(-np.log(np.clip(p, 1e-7, 1.0)).mean())


def _labelled_eval_set(ev):
    """(Dataset, name) the sweep and the accuracy comparison use: validation, else training."""
    if ev.val is not None and ev.val.labels is not None:
        return ev.val, "validation"
    return ev.train, "training"


# ---------------------------------------------------------------------------------------------
# Probe: domain shift


def _coverage_gaps(train: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """For each reference value: the distance to the nearest of the training values' 1st..99th
    percentiles (0 inside the bulk of the training values, even when they form several groups)."""
    t = train[np.isfinite(train)]
    r = ref[np.isfinite(ref)]
    if t.size < 5 or r.size == 0:
        return np.zeros(0)
    grid = np.percentile(t, np.arange(1, 100))
    pos = np.clip(np.searchsorted(grid, r), 1, len(grid) - 1)
    d = np.minimum(np.abs(r - grid[pos - 1]), np.abs(r - grid[pos]))
    return np.where((r >= grid[0]) & (r <= grid[-1]) & (d < 1e-12), 0.0, d)


def match_distance(props: dict, ref_props: dict, scales: dict) -> float:
    """How unlike the reference a set of images is: per property, the mean gap from a reference
    image to the nearest training images, in units of the *original* training spread, each image
    capped at ``EFFECT_CAP``, summed over properties. The unit must stay fixed: measured in the
    perturbed images' own spread, a perturbation that only adds variance would look closer."""
    total = 0.0
    for name, scale in scales.items():
        gaps = _coverage_gaps(props[name], ref_props[name])
        if gaps.size:
            total += float(np.mean(np.minimum(gaps / scale, EFFECT_CAP)))
    return total


def match_reference(train_u: np.ndarray, ref_props: dict, scales: dict, rng_seed: int = 0,
                    steps: int = MATCH_STEPS) -> dict:
    """Which perturbations of the training images make them look most like the reference.

    Greedy: at each step try every perturbation at every level on top of those chosen so far and
    keep the one that lowers ``match_distance`` most; stop when the gain is small. ``scales``:
    the training spread of each property (from ``compare_properties``).
    """
    names = [n for n in PERTURBATIONS
             if applicable(n, train_u) is None and PERTURBATIONS[n].properties]
    start = match_distance(image_properties(train_u), ref_props, scales)
    current, current_d, path, singles = train_u, start, [], []
    for step in range(steps):
        best = None
        for name in names:
            if any(name == s["perturbation"] for s in path):
                continue
            pert = PERTURBATIONS[name]
            for level in pert.levels + pert.fine:
                cand = apply(current, name, level, np.random.default_rng([rng_seed, step]))
                d = match_distance(image_properties(cand), ref_props, scales)
                if step == 0:
                    singles.append({"perturbation": name, "level": level,
                                    "describe": PERTURBATIONS[name].describe(level),
                                    "distance": d})
                if best is None or d < best[0]:
                    best = (d, name, level, cand)
        if step == 0:
            order = sorted(singles, key=lambda r: r["distance"])
            names = list(dict.fromkeys(r["perturbation"] for r in order))[:MATCH_CANDIDATES]
        if best is None or current_d - best[0] < MATCH_MIN_GAIN:
            break
        d, name, level, cand = best
        path.append({"perturbation": name, "level": level,
                     "describe": PERTURBATIONS[name].describe(level), "distance": d})
        current, current_d = cand, d
    singles.sort(key=lambda s: s["distance"])
    seen, ranked = set(), []  # the best level of each perturbation, best first
    for s in singles:
        if s["perturbation"] not in seen:
            seen.add(s["perturbation"])
            ranked.append(s)
    return {"distance_before": start, "distance_after": current_d, "path": path,
            "single": ranked}


@register("domain_shift")
def domain_shift(ev, ctx) -> None:
    if ev.reference is None or ev.train is None:
        ev.probes["domain_shift"] = {"skipped": "no reference (real-world) samples were given"}
        return
    ctx.say("robustness: comparing the reference samples with the training images")
    vr = value_range(ev.train.images)
    train_u = to_unit(_subset(ev.train.images, PROPERTY_SAMPLES), vr)
    ref_u = to_unit(_subset(ev.reference.images, PROPERTY_SAMPLES), vr)
    train_props = image_properties(train_u)
    ref_props = image_properties(ref_u)
    comparison = compare_properties(train_props, ref_props)
    differing = sorted((k for k, c in comparison.items() if c["differs"]),
                       key=lambda k: -comparison[k]["effect"])
    result = {
        "value_range": [vr[0].tolist(), vr[1].tolist()],
        "n_train": len(train_u), "n_reference": len(ref_u),
        "properties": comparison,
        "differing": differing,
        "distance": shift_distance(comparison),
    }
    ctx.say("robustness: searching the perturbation that makes training images look like them")
    scales = {k: c["scale"] for k, c in comparison.items()}
    result["closest"] = match_reference(_subset(train_u, MATCH_SAMPLES), ref_props, scales,
                                        rng_seed=ctx.seed)
    # accuracy on the reference samples against validation
    eval_ds, eval_name = _labelled_eval_set(ev)
    try:
        ref_probs = _probabilities(ev, ev.reference.x)
        ev_x, ev_y = _subset_xy(eval_ds, SWEEP_SAMPLES["thorough"] * 2)
        val_probs = _probabilities(ev, ev_x)
    except Exception as exc:  # the model cannot run on them: the report says why
        result["accuracy"] = {"skipped": f"the model could not be run on the reference samples: "
                                         f"{type(exc).__name__}: {exc}"}
    else:
        acc = {"compared_with": eval_name, "n_compared": int(len(ev_y)),
               "n_reference": len(ev.reference),
               "compared_accuracy": _accuracy(val_probs, ev_y),
               "compared_loss": _mean_loss(val_probs, ev_y)}
        pred = ref_probs.argmax(axis=1) if ref_probs.ndim == 2 and ref_probs.shape[1] > 1 else None
        if pred is not None:
            counts = np.bincount(pred, minlength=ref_probs.shape[1])
            acc["reference_predicted_counts"] = counts.tolist()
        if ev.reference.labels is not None:
            y = ev.reference.labels
            acc["reference_accuracy"] = _accuracy(ref_probs, y)
            acc["reference_loss"] = _mean_loss(ref_probs, y)
            if pred is not None:
                per_class = {}
                for c in np.unique(y):
                    per_class[int(c)] = float(np.mean(pred[y == c] == c))
                acc["reference_per_class"] = per_class
        result["accuracy"] = acc
    ev.probes["domain_shift"] = result
    ev.figures["domain_shift"] = {
        "properties": {k: {"train": c["train"], "reference": c["reference"],
                           "effect": c["effect"]} for k, c in comparison.items()},
        "accuracy": result.get("accuracy")}


def _subset_xy(ds, n):
    idx = np.arange(len(ds))
    if len(idx) > n:
        idx = np.linspace(0, len(ds) - 1, n).astype(int)
    x = ds.x[idx] if not hasattr(ds.x, "detach") else ds.x[idx]
    return x, ds.labels[idx]


# ---------------------------------------------------------------------------------------------
# Probe: perturbation sweep


@register("perturbation_sweep")
def perturbation_sweep(ev, ctx) -> None:
    ds, name = _labelled_eval_set(ev)
    if ds is None or ds.labels is None:
        ev.probes["perturbation_sweep"] = {"skipped": "no labelled validation data was given"}
        return
    n = SWEEP_SAMPLES.get(ctx.budget, SWEEP_SAMPLES["standard"])
    images, labels = _subset(ds.images, n, ds.labels)
    vr = value_range(ev.train.images if ev.train is not None else ds.images)
    u = to_unit(images, vr)
    start = time.perf_counter()
    clean = _accuracy(_probabilities(ev, to_model_layout(images, ds)), labels)
    majority = float(np.bincount(labels).max() / len(labels))
    result = {"data": name, "n": int(len(labels)), "clean_accuracy": clean,
              "majority_rate": majority, "perturbations": {}, "not_applicable": {}}
    if clean < majority + MIN_LEARNED_MARGIN:
        ev.probes["perturbation_sweep"] = {
            "skipped": f"the model's {name} accuracy ({clean:.0%}) is close to the majority-class "
                       f"rate ({majority:.0%}): it has not learned the task yet, so robustness "
                       f"cannot be measured (fix training first)", **result}
        return
    ctx.say(f"robustness: perturbation sweep on {len(labels)} {name} images")
    for i, (pname, pert) in enumerate(PERTURBATIONS.items()):
        why = applicable(pname, images)
        if why:
            result["not_applicable"][pname] = why
            continue
        rows = []
        for level in pert.levels:
            rng = np.random.default_rng([ctx.seed, i, int(abs(level) * 100)])
            pu = apply(u, pname, level, rng)
            acc = _accuracy(_probabilities(ev, to_model_layout(from_unit(pu, vr), ds)), labels)
            rows.append({"level": level, "describe": pert.describe(level), "accuracy": acc,
                         "drop": clean - acc})
        worst = max(rows, key=lambda r: r["drop"])
        result["perturbations"][pname] = {"levels": rows, "worst": worst,
                                          "properties": list(pert.properties)}
    result["seconds"] = time.perf_counter() - start
    ev.probes["perturbation_sweep"] = result
    ev.figures["perturbation_sweep"] = {
        k: [{"level": r["level"], "accuracy": r["accuracy"]} for r in v["levels"]]
        for k, v in result["perturbations"].items()}


# ---------------------------------------------------------------------------------------------
# Which augmentations the evidence points to

#: Accuracy falls "sharply" under a perturbation (a fragile-to finding, and a reason to augment
#: for it) when it loses at least this much against clean images. Measured on MNIST models
#: trained here: tolerated perturbations cost under 10 points; 20 points is twice that margin.
FRAGILE_DROP = 0.2


def suggest_augmentations(shift: dict | None, sweep: dict | None) -> dict:
    """The augmentation plan {perturbation: strongest level} and why each one is in it.

    With reference samples: the perturbations on the path that makes the training images look
    like them, plus those the model is fragile to that change a property in which the reference
    differs. Without: those the model is fragile to.
    """
    plan: dict[str, float] = {}
    reasons: dict[str, str] = {}
    shift = shift if shift and not shift.get("skipped") else None
    sweep = sweep if sweep and not sweep.get("skipped") else None
    differing = set(shift["differing"]) if shift else set()
    if shift:
        for step in shift["closest"]["path"]:
            plan[step["perturbation"]] = step["level"]
            reasons[step["perturbation"]] = (f"makes the training images look like the "
                                             f"reference samples ({step['describe']})")
    if sweep:
        for name, res in sweep["perturbations"].items():
            worst = res["worst"]
            if worst["drop"] < FRAGILE_DROP or name in plan:
                continue
            touched = set(PERTURBATIONS[name].properties) & differing
            if shift is None or touched:
                plan[name] = strongest_level(name, res)
                reasons[name] = (f"accuracy falls by {worst['drop']:.0%} under {worst['describe']}"
                                 + (f" and the reference differs in {', '.join(sorted(touched))}"
                                    if touched else ""))
    return {"plan": plan, "reasons": reasons}


def strongest_level(name: str, res: dict) -> float:
    """The strongest level the sweep tried (scale: farthest from 1; contrast: least kept)."""
    levels = [r["level"] for r in res["levels"]]
    if name == "scale":
        return max(levels, key=lambda v: max(v, 1 / v))
    if name == "contrast":
        return min(levels)
    return max(levels, key=abs)


# ---------------------------------------------------------------------------------------------
# Probe: verification by retraining


def _mean_spread(values) -> dict:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "spread": None, "values": []}
    return {"mean": float(v.mean()), "spread": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "values": [float(x) for x in v]}


def verify_augmentations(ev, plan: dict[str, float], *, seeds=None, epochs=None,
                         max_train=VERIFY_MAX_TRAIN, progress=None) -> dict:
    """Retrain fresh copies of ``ev.model`` with and without ``Augment(plan)``; accuracy on the
    reference samples (or, unlabelled, on validation images perturbed like the reference) and on
    validation, per seed, and their mean and spread."""
    from .. import runtime

    train = ev.train
    vr = value_range(train.images)
    augment = Augment(plan, value_range=(vr[0].tolist(), vr[1].tolist()), layout=layout_of(train))
    x_train, y_train = _subset_xy(train, max_train)
    y_fit = train.y[np.linspace(0, len(train) - 1, len(x_train)).astype(int)] \
        if len(x_train) < len(train) and train.y is not None else train.y
    if y_fit is None or len(y_fit) != len(x_train):
        y_fit = y_train
    eval_ds, eval_name = _labelled_eval_set(ev)
    xv, yv = _subset_xy(eval_ds, 2000)
    target = "reference samples"
    if ev.reference is not None and ev.reference.labels is not None:
        xr, yr = ev.reference.x, ev.reference.labels
    else:  # no labels: the validation images made to look like the reference stand in
        path = (ev.probes.get("domain_shift") or {}).get("closest", {}).get("path", [])
        vimg = from_model_layout(np.asarray(xv, dtype=np.float32), eval_ds)
        u = to_unit(vimg, vr)
        rng = np.random.default_rng(0)
        for step in path:
            u = apply(u, step["perturbation"], step["level"], rng)
        xr, yr = to_model_layout(from_unit(u, vr), eval_ds), yv
        target = (f"{eval_name} images perturbed like the reference ("
                  + ", ".join(s["describe"] for s in path) + ")") if path else eval_name
    epochs = int(min(VERIFY_MAX_EPOCHS, epochs or getattr(ev, "epochs", None) or VERIFY_EPOCHS))
    seeds = list(seeds) if seeds is not None else [i for i in range(VERIFY_SEEDS)]
    runs = []
    start = time.perf_counter()
    for seed in seeds:
        row = {"seed": seed}
        for label, aug in (("before", None), ("after", augment)):
            if progress:
                progress(f"robustness: retraining seed {seed} {'with' if aug else 'without'} "
                         f"the augmentations")
            model = runtime.clone(ev.model, seed=seed, reinit=True)
            hist = runtime.fit(model, x_train, y_fit, loss=ev.loss if ev.framework == "torch"
                               else None, optimizer=ev.optimizer if ev.framework == "torch"
                               else None, epochs=epochs, batch_size=ev.batch_size or 32,
                               seed=seed, augment=aug)
            probs_r = runtime.output_probabilities(runtime.predict(model, xr),
                                                   ev.graph.output_activation)
            probs_v = runtime.output_probabilities(runtime.predict(model, xv),
                                                   ev.graph.output_activation)
            row[label] = {"target_accuracy": _accuracy(probs_r, yr),
                          "validation_accuracy": _accuracy(probs_v, yv),
                          "stopped": hist.get("stopped")}
        runs.append(row)
    before = _mean_spread(r["before"]["target_accuracy"] for r in runs)
    after = _mean_spread(r["after"]["target_accuracy"] for r in runs)
    return {
        "augmentations": dict(plan),
        "augment": repr(augment),
        "measured_on": target,
        "seeds": seeds, "epochs": epochs, "train_images": int(len(x_train)),
        "before": before, "after": after,
        "validation_before": _mean_spread(r["before"]["validation_accuracy"] for r in runs),
        "validation_after": _mean_spread(r["after"]["validation_accuracy"] for r in runs),
        "gain": (after["mean"] - before["mean"]) if after["mean"] is not None else None,
        "runs": runs,
        "seconds": time.perf_counter() - start,
    }


@register("robustness_fix")
def robustness_fix(ev, ctx) -> None:
    if not (getattr(ctx, "verify", False) or ctx.budget == "thorough"):
        ev.probes["robustness_fix"] = {"skipped": "fix verification was not requested "
                                                  "(verify=True or budget 'thorough')"}
        return
    suggestion = suggest_augmentations(ev.probes.get("domain_shift"),
                                       ev.probes.get("perturbation_sweep"))
    if not suggestion["plan"]:
        ev.probes["robustness_fix"] = {"skipped": "no augmentation is called for"}
        return
    if ev.train is None or ev.train.labels is None:
        ev.probes["robustness_fix"] = {"skipped": "no labelled training data to retrain on"}
        return
    result = verify_augmentations(ev, suggestion["plan"], seeds=[ctx.seed + i for i in
                                                                 range(VERIFY_SEEDS)],
                                  progress=ctx.say)
    result["reasons"] = suggestion["reasons"]
    ev.probes["robustness_fix"] = result


__all__ = ["image_properties", "compare_properties", "PERTURBATIONS", "PROPERTIES", "Augment",
           "apply", "value_range", "to_unit", "from_unit", "match_reference",
           "suggest_augmentations", "verify_augmentations", "layout_of"]
