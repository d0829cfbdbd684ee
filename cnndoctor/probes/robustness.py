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

import numpy as np
from scipy import ndimage

from . import BUDGETS, register
from ..executor import Job, get_last_notes, run_jobs
from ..augment import (INK_FRACTION, INK_QUANTILE, MIN_CONTRAST, PERTURBATIONS, Augment,
                       Normalize, _border_stats, apply, applicable, from_unit, layout_of, to_unit,
                       value_range)

# ---------------------------------------------------------------------------------------------
# Sizes and thresholds

#: Images per dataset for property statistics: percentiles of 1,000 values are stable to ~1% of
#: the spread, and measuring costs well under a second.
PROPERTY_SAMPLES = 1000
#: Validation images in the perturbation sweep, per budget: at 500 images the standard error of
#: an accuracy near 90% is ~1.3 points, far below the drops we report (>= 20 points).
SWEEP_SAMPLES = {"quick": 200, "standard": 500, "thorough": 1000}
#: At quick, without reference samples, the sweep runs only when an evaluation scores this much
#: below the validation accuracy: 2 binomial standard deviations of an accuracy near 85% measured
#: on 200 images (2.5 points each), so that sampling noise alone does not start it.
EVAL_BELOW_VALIDATION = 0.05
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

# ---------------------------------------------------------------------------------------------
# Value range: training data -> [0, 1] and back


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
    Property("contrast", "of the value range", 0.1,  # 10%: a contrast change one notices
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
_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)


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
                    steps: int = MATCH_STEPS, exclude=()) -> dict:
    """Which perturbations of the training images make them look most like the reference.

    Greedy: at each step try every perturbation at every level on top of those chosen so far and
    keep the one that lowers ``match_distance`` most; stop when the gain is small. ``scales``:
    the training spread of each property (from ``compare_properties``).
    """
    names = [n for n in PERTURBATIONS if n not in exclude
             and applicable(n, train_u) is None and PERTURBATIONS[n].properties]
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


@register("domain_shift", BUDGETS)  # "static" too: properties and a forward pass are cheap
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
    if ctx.budget != "static":  # the search takes seconds: not at the static budget
        ctx.say("robustness: searching the perturbations that make training images look like them")
        scales = {k: c["scale"] for k, c in comparison.items()}
        result["closest"] = match_reference(_subset(train_u, MATCH_SAMPLES), ref_props, scales,
                                            rng_seed=ctx.seed)
    steps = normalize_steps(comparison, differing)
    if steps:
        ctx.say("robustness: normalizing both like MNIST and comparing again")
        result["normalize"] = _normalized_comparison(ev, steps, vr, train_u, ref_u, ctx)
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
        if result.get("closest", {}).get("path"):
            result["simulated"] = _simulate(ev, result["closest"]["path"], vr)
        norm_info = result.get("normalize")
        if norm_info and norm_info.get("closest") is not None:
            norm = Normalize.fit(ev.train.images, norm_info["steps"], value_range=vr,
                                 layout=layout_of(ev.train))
            norm_info["simulated"] = _simulate(ev, norm_info["closest"]["path"], vr, norm)
    ev.probes["domain_shift"] = result
    ev.figures["domain_shift"] = {
        "properties": {k: {"train": c["train"], "reference": c["reference"],
                           "effect": c["effect"]} for k, c in comparison.items()},
        "accuracy": result.get("accuracy")}


# Normalization (``augment.Normalize``) fits images of one object on a plain background. The
# training images qualify when their typical background is flat and clean: unevenness and noise
# at most the floors of those properties (the smallest differences that matter, see PROPERTIES).
PLAIN_UNEVENNESS = PROPERTIES["background unevenness"].floor
PLAIN_NOISE = 2 * PROPERTIES["noise"].floor
#: What each normalization step makes equal between training and real images ...
NORMALIZE_PROPERTIES = {
    "intensity": ("background level", "background unevenness", "contrast", "bright object share",
                  "noise", "mean brightness", "colorfulness", "red share", "blue share"),
    "geometry": ("object size", "off-centre"),
}
#: ... and the perturbations it therefore makes unnecessary to augment for.
NORMALIZE_PERTURBATIONS = {
    "intensity": ("inversion", "background", "contrast", "brightness", "noise", "color"),
    "geometry": ("shift", "scale"),
}


def normalize_steps(comparison: dict, differing: list[str]) -> tuple[str, ...]:
    """The ``Normalize`` steps that apply: none unless the training images are objects on a
    plain background; then those whose properties differ."""
    unevenness = comparison.get("background unevenness", {}).get("train", {}).get("median")
    noise = comparison.get("noise", {}).get("train", {}).get("median")
    if unevenness is None or noise is None or unevenness > PLAIN_UNEVENNESS or noise > PLAIN_NOISE:
        return ()
    return tuple(step for step, props in NORMALIZE_PROPERTIES.items()
                 if set(props) & set(differing))


def _normalized_comparison(ev, steps, vr, train_u, ref_u, ctx) -> dict:
    """Normalize training and reference images alike, compare again, and measure the user's own
    model on the normalized reference samples (no retraining)."""
    norm = Normalize.fit(ev.train.images, steps, value_range=vr, layout=layout_of(ev.train))
    nt, nr = norm.unit(train_u), norm.unit(ref_u)
    nr_props = image_properties(nr)
    comparison = compare_properties(image_properties(nt), nr_props)
    differing = sorted((k for k, c in comparison.items() if c["differs"]),
                       key=lambda k: -comparison[k]["effect"])
    out = {"steps": list(steps), "normalize": repr(norm), "polarity": norm.polarity,
           "object_size": norm.object_size, "properties": comparison, "differing": differing}
    if ctx.budget != "static":
        handled = {p for step in steps for p in NORMALIZE_PERTURBATIONS[step]}
        scales = {k: c["scale"] for k, c in comparison.items()}
        out["closest"] = match_reference(_subset(nt, MATCH_SAMPLES), nr_props, scales,
                                         rng_seed=ctx.seed, exclude=handled)
    if ev.reference.labels is not None:
        try:
            x_ref = norm(np.asarray(ev.reference.x, dtype=np.float32))
            out["user_model_reference_accuracy"] = _accuracy(_probabilities(ev, x_ref),
                                                             ev.reference.labels)
            eval_ds, eval_name = _labelled_eval_set(ev)
            xv, yv = _subset_xy(eval_ds, 1000)
            out["user_model_compared_accuracy"] = _accuracy(
                _probabilities(ev, norm(np.asarray(xv, dtype=np.float32))), yv)
            out["compared_with"] = eval_name
        except Exception as exc:  # the model cannot run on them: say why, keep the rest
            out["user_model_skipped"] = f"{type(exc).__name__}: {exc}"
    return out


def _simulate(ev, path: list[dict], vr, norm: Normalize | None = None) -> dict:
    """The model's accuracy on validation images changed along ``path`` (the perturbations that
    make training images look like the reference): do the measured differences alone explain
    the failure? With ``norm``: on normalized images, after normalizing."""
    eval_ds, eval_name = _labelled_eval_set(ev)
    images, labels = _subset(eval_ds.images, SWEEP_SAMPLES["standard"], eval_ds.labels)
    u = to_unit(images, vr)
    if norm is not None:
        u = norm.unit(u)
    clean = _accuracy(_probabilities(ev, to_model_layout(from_unit(u, vr), eval_ds)), labels)
    rng = np.random.default_rng(0)
    for step in path:
        u = apply(u, step["perturbation"], step["level"], rng)
    changed = _accuracy(_probabilities(ev, to_model_layout(from_unit(u, vr), eval_ds)), labels)
    return {"data": eval_name, "n": int(len(labels)), "clean_accuracy": clean,
            "accuracy": changed, "drop": clean - changed,
            "path": [step["describe"] for step in path]}


def _subset_xy(ds, n):
    idx = np.arange(len(ds))
    if len(idx) > n:
        idx = np.linspace(0, len(ds) - 1, n).astype(int)
    x = ds.x[idx] if not hasattr(ds.x, "detach") else ds.x[idx]
    return x, ds.labels[idx]


# ---------------------------------------------------------------------------------------------
# Probe: perturbation sweep


def _evaluation_below_validation(ev) -> bool:
    """An evaluation dataset whose accuracy (the evaluation probe's) lies EVAL_BELOW_VALIDATION
    or more under the validation accuracy measured beside it."""
    for r in (ev.probes.get("evaluation") or {}).get("datasets") or []:
        acc, val = r.get("accuracy"), r.get("validation_accuracy")
        if acc is not None and val is not None and acc <= val - EVAL_BELOW_VALIDATION:
            return True
    return False


@register("perturbation_sweep")
def perturbation_sweep(ev, ctx) -> None:
    if ctx.budget == "quick" and ev.reference is None and not _evaluation_below_validation(ev):
        # At quick the sweep (a third of a script's quick diagnosis on small models) runs only
        # where robustness can matter: real-world samples were given, or an evaluation scores
        # below the validation accuracy.
        ev.probes["perturbation_sweep"] = {
            "skipped": "at budget 'quick' the perturbation sweep runs only with reference "
                       "samples or an evaluation that scores below validation (use --budget "
                       "standard to run it anyway)"}
        return
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
# Which fix the evidence points to

#: Accuracy falls "sharply" under a perturbation (a fragile-to finding, and a reason to augment
#: for it) when it loses at least this much against clean images. Measured on MNIST models
#: trained here: tolerated perturbations cost under 10 points; 20 points is twice that margin.
FRAGILE_DROP = 0.2


def suggest_fix(shift: dict | None, sweep: dict | None) -> dict:
    """The fix: ``normalize`` steps (or None) and an augmentation ``plan`` {perturbation:
    strongest level}, with the reason for each part.

    With reference samples of objects on a plain background: normalize what normalization can
    make equal, then augment for what still differs afterwards (the path that makes normalized
    training images look like the normalized reference, plus what the model is fragile to among
    those properties). Otherwise: augment along the path that makes the training images look like
    the reference, plus the fragilities that touch a property in which the reference differs.
    Without reference samples: augment for every fragility.
    """
    shift = shift if shift and not shift.get("skipped") else None
    sweep = sweep if sweep and not sweep.get("skipped") else None
    plan: dict[str, float] = {}
    reasons: dict[str, str] = {}
    normalize = shift.get("normalize") if shift else None
    handled: set[str] = set()
    if normalize:
        handled = {p for step in normalize["steps"] for p in NORMALIZE_PERTURBATIONS[step]}
        differing = set(normalize["differing"])
        path = normalize.get("closest", {}).get("path", [])
        reasons["normalize"] = (
            "makes " + ", ".join(sorted({p for st in normalize["steps"]
                                         for p in NORMALIZE_PROPERTIES[st]}
                                        & set(shift["differing"])))
            + " of the real images like the training images'")
    else:
        differing = set(shift["differing"]) if shift else set()
        path = shift.get("closest", {}).get("path", []) if shift else []
    for step in path:
        plan[step["perturbation"]] = step["level"]
        reasons[step["perturbation"]] = (f"makes the training images look like the reference "
                                         f"samples ({step['describe']})")
    if sweep:
        for name, res in sweep["perturbations"].items():
            worst = res["worst"]
            if worst["drop"] < FRAGILE_DROP or name in plan or name in handled:
                continue
            touched = set(PERTURBATIONS[name].properties) & differing
            if shift is None or touched:
                plan[name] = strongest_level(name, res)
                reasons[name] = (f"accuracy falls by {worst['drop']:.0%} under {worst['describe']}"
                                 + (f" and the reference differs in {', '.join(sorted(touched))}"
                                    if touched else ""))
    return {"normalize": normalize["steps"] if normalize else None, "plan": plan,
            "reasons": reasons}


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


def verify_fix(ev, plan: dict[str, float], normalize_steps=None, *, seeds=None, epochs=None,
               max_train=VERIFY_MAX_TRAIN, progress=None, executor="auto") -> dict:
    """Retrain fresh copies of ``ev.model`` as the user did ("before") and with the fix ("after":
    training and real images normalized by ``normalize_steps``, training batches augmented by
    ``plan``); accuracy on the reference samples (unlabelled: on validation images perturbed like
    the reference) and on validation, per seed, with mean and spread."""
    train = ev.train
    vr = value_range(train.images)
    layout = layout_of(train)
    augment = Augment(plan, value_range=(vr[0].tolist(), vr[1].tolist()), layout=layout) \
        if plan else None
    norm = Normalize.fit(train.images, normalize_steps, value_range=vr, layout=layout) \
        if normalize_steps else None
    x_train, y_train = _subset_xy(train, max_train)
    keep = np.linspace(0, len(train) - 1, len(x_train)).astype(int) \
        if len(x_train) < len(train) else np.arange(len(train))
    y_fit = np.asarray(train.y)[keep] if train.y is not None else y_train
    eval_ds, eval_name = _labelled_eval_set(ev)
    xv, yv = _subset_xy(eval_ds, 2000)
    target = "reference samples"
    if ev.reference is not None and ev.reference.labels is not None:
        xr, yr = ev.reference.x, ev.reference.labels
    else:  # no labels: the validation images made to look like the reference stand in
        path = (ev.probes.get("domain_shift") or {}).get("closest", {}).get("path", [])
        u = to_unit(from_model_layout(np.asarray(xv, dtype=np.float32), eval_ds), vr)
        rng = np.random.default_rng(0)
        for step in path:
            u = apply(u, step["perturbation"], step["level"], rng)
        xr, yr = to_model_layout(from_unit(u, vr), eval_ds), yv
        target = (f"{eval_name} images perturbed like the reference ("
                  + ", ".join(s["describe"] for s in path) + ")") if path else eval_name
    prep = (lambda a: norm(np.asarray(a, dtype=np.float32))) if norm else (lambda a: a)
    fixed_train, fixed_ref, fixed_val = prep(x_train), prep(xr), prep(xv)
    epochs = int(min(VERIFY_MAX_EPOCHS, epochs or getattr(ev, "epochs", None) or VERIFY_EPOCHS))
    seeds = list(seeds) if seeds is not None else list(range(VERIFY_SEEDS))
    start = time.perf_counter()
    torch_setup = ev.framework == "torch"
    common = {"loss": ev.loss if torch_setup else None,
              "optimizer": ev.optimizer if torch_setup else None, "epochs": epochs,
              "batch_size": ev.batch_size or 32,
              "output_activation": ev.graph.output_activation}
    jobs = []
    for seed in seeds:
        for label in ("before", "after"):
            after = label == "after"
            args = (ev.model, fixed_train if after else x_train, y_fit,
                    fixed_ref if after else xr, fixed_val if after else xv, yr, yv)
            jobs.append(Job(verify_run, args,
                            {**common, "seed": seed, "augment": augment if after else None},
                            label=f"robustness: retraining seed {seed} "
                                  f"{'with' if after else 'without'} the fix"))
    if progress:
        progress(f"robustness: retraining {len(seeds)} seeds with and without the fix")
    results = run_jobs(jobs, executor, progress=progress)
    runs = [{"seed": seed, "before": results[2 * i], "after": results[2 * i + 1]}
            for i, seed in enumerate(seeds)]
    before = _mean_spread(r["before"]["target_accuracy"] for r in runs)
    after = _mean_spread(r["after"]["target_accuracy"] for r in runs)
    return {
        "augmentations": dict(plan), "augment": repr(augment) if augment else None,
        "normalize": repr(norm) if norm else None, "normalize_steps": list(normalize_steps or []),
        "measured_on": target,
        "seeds": seeds, "epochs": epochs, "train_images": int(len(x_train)),
        "before": before, "after": after,
        "validation_before": _mean_spread(r["before"]["validation_accuracy"] for r in runs),
        "validation_after": _mean_spread(r["after"]["validation_accuracy"] for r in runs),
        "gain": (after["mean"] - before["mean"]) if after["mean"] is not None else None,
        "runs": runs,
        "seconds": time.perf_counter() - start,
        **({"executor_notes": get_last_notes()} if get_last_notes() else {}),
    }


def verify_run(model, x_fit, y_fit, x_target, x_val, y_target, y_val, *, seed: int, loss,
               optimizer, epochs: int, batch_size: int, augment, output_activation) -> dict:
    """One retraining of the verification (an executor job): a fresh initialisation of
    ``model`` from ``seed`` trained on ``x_fit`` (augmented by ``augment`` when given); its
    accuracy on the target (reference) and validation images. Plain figures only."""
    from .. import runtime

    fresh = runtime.clone(model, seed=seed, reinit=True)
    hist = runtime.fit(fresh, x_fit, y_fit, loss=loss, optimizer=optimizer, epochs=epochs,
                       batch_size=batch_size, seed=seed, augment=augment)

    def acc(x, y):
        return _accuracy(runtime.output_probabilities(runtime.predict(fresh, x),
                                                      output_activation), y)

    return {"target_accuracy": acc(x_target, y_target), "validation_accuracy": acc(x_val, y_val),
            "stopped": hist.get("stopped")}


__all__ = ["image_properties", "compare_properties", "PROPERTIES", "match_reference",
           "suggest_fix", "verify_fix", "normalize_steps"]
