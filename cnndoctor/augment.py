"""Image transforms shared by the robustness probes and the fixes they suggest.

- Perturbations (``PERTURBATIONS``): changes a person ignores (inversion, gray uneven background,
  contrast, brightness, noise, blur, shift, scale, rotation, stroke width, color), each a function
  of images in [0, 1] and one strength per image. The sweep applies them at fixed strengths; the
  augmentation draws random strengths.
- ``Augment``: a numpy augmentation for training batches, ``augment(x_batch, rng) -> x_batch``,
  in the model's own layout and value range. This is what cnndoctor verifies and what its fix
  code asks the user to train with.
- ``Normalize``: preprocessing for images of one object on a plain background (digits, letters,
  symbols): background removed, polarity and contrast made as in training, the object cropped,
  scaled and centred as MNIST does. Applied to training and real inputs alike.

Everything works on canonical N x H x W x C arrays mapped to [0, 1] by the training data's value
range (``value_range``), so 0-255, 0-1 and standardized data are handled alike.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage

RING = 2 / 28  # border ring width as a share of the image side (2 pixels at MNIST's 28)
INK_QUANTILE = 0.98  # the ink level: this quantile of |pixel - background| per image
INK_FRACTION = 0.5  # a pixel is ink when it is at least this share of the contrast away
MIN_CONTRAST = 0.02  # below this the image is flat: no object to measure
#: An augmentation is applied to each image with this probability: half the batch stays clean,
#: so clean accuracy does not suffer (the usual default of augmentation libraries, 0.5).
AUGMENT_PROBABILITY = 0.5


# ---------------------------------------------------------------------------------------------
# Value range: data -> [0, 1] and back


def _subset(images: np.ndarray, n: int):
    """An evenly spread subset of at most n rows (deterministic)."""
    if len(images) <= n:
        return images
    return images[np.linspace(0, len(images) - 1, n).astype(int)]


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


def _border_stats(gray: np.ndarray):
    n, h, w = gray.shape
    r = max(1, int(round(RING * min(h, w))))
    strips = [gray[:, :r, :].reshape(n, -1), gray[:, -r:, :].reshape(n, -1),
              gray[:, :, :r].reshape(n, -1), gray[:, :, -r:].reshape(n, -1)]
    ring = np.concatenate(strips, axis=1)
    sides = np.stack([np.median(s, axis=1) for s in strips], axis=1)
    return np.median(ring, axis=1), sides.max(axis=1) - sides.min(axis=1)


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
        u = (_to_canonical(x, self.layout) - self.lo) / (self.hi - self.lo)
        n = len(u)
        # ordered as a camera sees: geometry, then stroke, lighting, optics, sensor
        for name in sorted(self.plan, key=list(PERTURBATIONS).index):
            pert = PERTURBATIONS[name]
            chosen = rng.random(n) < self.p
            if not chosen.any():
                continue
            levels = _sample_levels(pert, self.plan[name], int(chosen.sum()), rng).astype(np.float32)
            u[chosen] = np.clip(pert.fn(u[chosen], levels, rng), 0, 1)
        return _from_canonical(self.lo + u * (self.hi - self.lo),
                               "none" if x.ndim == 3 else self.layout)

    def __repr__(self) -> str:
        plan = ", ".join(f"{k!r}: {v:g}" for k, v in self.plan.items())
        return (f"Augment({{{plan}}}, value_range=({_fmt_list(self.lo)}, {_fmt_list(self.hi)}), "
                f"layout={self.layout!r})")


def _fmt_list(a) -> str:
    vals = [float(v) for v in np.atleast_1d(a)]
    if len(set(vals)) == 1:
        return f"({vals[0]:g},)"
    return "(" + ", ".join(f"{v:g}" for v in vals) + ")"


def _to_canonical(x: np.ndarray, layout: str) -> np.ndarray:
    if layout == "channels_first":
        return np.transpose(x, (0, 2, 3, 1))
    if layout == "none" or x.ndim == 3:
        return x[..., None]
    return x


def _from_canonical(img: np.ndarray, layout: str) -> np.ndarray:
    if layout == "channels_first":
        img = np.transpose(img, (0, 3, 1, 2))
    elif layout == "none":
        img = img[..., 0]
    return np.ascontiguousarray(img, dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# Normalization: make images of one object on a plain background look like the training images

#: Ink below this share of the object's contrast is set to the background after stretching: it
#: removes paper texture, noise and leftover shading (MNIST's own backgrounds are exactly 0).
NORMALIZE_FLOOR = 0.15
#: Pixels above this share of the contrast belong to the object when cropping it (MNIST's digits
#: were cut by their bounding box before scaling; half-strength edges are part of the stroke).
CROP_LEVEL = 0.3


def _plane_background(gray: np.ndarray) -> np.ndarray:
    """Least-squares plane through the border pixels of each image: uneven lighting."""
    n, h, w = gray.shape
    r = max(1, int(round(RING * min(h, w))))
    ring = np.zeros((h, w), dtype=bool)
    ring[:r], ring[-r:], ring[:, :r], ring[:, -r:] = True, True, True, True
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    yy, xx = yy / h - 0.5, xx / w - 0.5
    design = np.stack([np.ones(ring.sum()), yy[ring], xx[ring]], axis=1)
    coef = np.linalg.lstsq(design, gray[:, ring].T.astype(np.float64), rcond=None)[0]
    return (coef[0][:, None, None] + coef[1][:, None, None] * yy + coef[2][:, None, None] * xx)


def _bbox_side(v: np.ndarray) -> np.ndarray:
    """Larger side of the box around pixels above ``CROP_LEVEL``, as a share of the image side."""
    n, h, w = v.shape
    mask = v > CROP_LEVEL
    rows, cols = mask.any(axis=2), mask.any(axis=1)
    height = np.where(rows.any(1), h - rows[:, ::-1].argmax(1) - rows.argmax(1), 0)
    width = np.where(cols.any(1), w - cols[:, ::-1].argmax(1) - cols.argmax(1), 0)
    return np.maximum(height / h, width / w)


class Normalize:
    """Preprocessing for images of one object on a plain background (digits, letters, symbols).

    ``normalize(x) -> x`` in the model's layout and value range, for training data and real
    inputs alike. Steps (``steps``):

    - "intensity": remove uneven lighting (a plane fitted to the border), put the object in the
      training polarity (``polarity`` "bright": light on dark, as MNIST; "dark"), stretch its
      contrast to the full range, and clear faint background texture and noise; the result is
      gray, copied to every channel.
    - "geometry": crop the object, scale its larger side to ``object_size`` of the image and put
      its centre of mass in the middle (how MNIST's digits were made: 20 px in 28).

    ``Normalize.fit(train_images, ...)`` reads the polarity and the object size from the
    training images.
    """

    def __init__(self, steps=("intensity", "geometry"), polarity: str = "bright",
                 object_size: float = 20 / 28, value_range=((0.0,), (1.0,)),
                 layout: str = "channels_last"):
        self.steps = tuple(steps)
        self.polarity = polarity
        self.object_size = float(object_size)
        self.lo = np.asarray(value_range[0], dtype=np.float32)
        self.hi = np.asarray(value_range[1], dtype=np.float32)
        self.layout = layout

    @classmethod
    def fit(cls, images: np.ndarray, steps=("intensity", "geometry"),
            value_range=None, layout: str = "channels_last") -> "Normalize":
        """Learn the polarity and object size from canonical N x H x W x C training images."""
        vr = value_range if value_range is not None else globals()["value_range"](images)
        u = to_unit(_subset(images, 1000), vr)
        bright = _objects_are_bright(u)
        norm = cls(("intensity",), "bright", value_range=((0.0,), (1.0,)))
        side = _bbox_side(norm._intensity(u))
        return cls(steps, "bright" if bright.mean() >= 0.5 else "dark",
                   float(np.median(side)) if np.any(side > 0) else 20 / 28,
                   value_range=(np.asarray(vr[0]).tolist(), np.asarray(vr[1]).tolist()),
                   layout=layout)

    def _intensity(self, u: np.ndarray) -> np.ndarray:
        """Object strength in [0, 1] per pixel (N x H x W), background 0."""
        n = len(u)
        gray = u.mean(axis=3)
        dev = gray - _plane_background(gray)
        v = np.where(_objects_are_bright(u)[:, None, None], dev, -dev)
        top = np.quantile(v.reshape(n, -1), INK_QUANTILE, axis=1)
        v = v / np.maximum(top, MIN_CONTRAST)[:, None, None]
        return np.clip((v - NORMALIZE_FLOOR) / (1 - NORMALIZE_FLOOR), 0.0, 1.0)

    def _geometry(self, v: np.ndarray) -> np.ndarray:
        n, h, w = v.shape
        out = np.zeros_like(v)
        target = self.object_size * min(h, w)
        for i in range(n):
            ys, xs = np.nonzero(v[i] > CROP_LEVEL)
            if len(ys) == 0:
                out[i] = v[i]
                continue
            crop = v[i, ys.min():ys.max() + 1, xs.min():xs.max() + 1]
            zoomed = np.clip(ndimage.zoom(crop, target / max(crop.shape), order=1), 0, 1)
            if zoomed.sum() <= 0:
                out[i] = v[i]
                continue
            cy, cx = ndimage.center_of_mass(zoomed)
            oy, ox = int(round((h - 1) / 2 - cy)), int(round((w - 1) / 2 - cx))
            zh, zw = zoomed.shape
            y0, x0, y1, x1 = max(0, oy), max(0, ox), min(h, oy + zh), min(w, ox + zw)
            if y1 > y0 and x1 > x0:
                out[i, y0:y1, x0:x1] = zoomed[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
        return out

    def unit(self, u: np.ndarray) -> np.ndarray:
        """The transform on canonical images in [0, 1]."""
        c = u.shape[3]
        if "intensity" in self.steps:
            v = self._intensity(u)
            if "geometry" in self.steps:
                v = self._geometry(v)
            if self.polarity == "dark":
                v = 1.0 - v
            return np.repeat(v[..., None], c, axis=3).astype(np.float32)
        if "geometry" in self.steps:  # geometry alone: per channel, around the background
            bg = _background(u)[:, None, None, None]
            bright = _objects_are_bright(u)[:, None, None, None]
            dev = np.where(bright, u - bg, bg - u).mean(axis=3)
            top = np.maximum(np.quantile(dev.reshape(len(u), -1), INK_QUANTILE, axis=1),
                             MIN_CONTRAST)[:, None, None]
            moved = self._geometry(np.clip(dev / top, 0, 1)) * top
            return np.clip(np.where(bright, bg + moved[..., None], bg - moved[..., None]),
                           0, 1).astype(np.float32)
        return u

    def __call__(self, x: np.ndarray, rng=None) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        layout = "none" if x.ndim == 3 else self.layout
        u = (_to_canonical(x, layout) - self.lo) / (self.hi - self.lo)
        return _from_canonical(self.lo + self.unit(u) * (self.hi - self.lo), layout)

    def __repr__(self) -> str:
        return (f"Normalize(steps={self.steps!r}, polarity={self.polarity!r}, "
                f"object_size={self.object_size:.3f}, value_range=({_fmt_list(self.lo)}, "
                f"{_fmt_list(self.hi)}), layout={self.layout!r})")


def layout_of(ds) -> str:
    """"channels_last", "channels_first" or "none" for a Dataset's ``x``."""
    shape = tuple(np.shape(ds.x))[1:]
    if len(shape) == 2:
        return "none"
    if len(shape) == 3 and shape != tuple(ds.images.shape[1:]) and shape[0] == ds.images.shape[3]:
        return "channels_first"
    return "channels_last"


