"""spurious-correlation: a nuisance property of the images predicts the label."""
from __future__ import annotations

import numpy as np

from . import Finding, Fix, Passed, Skipped, register, snippet
from ..features import nuisance_properties

CODE = "spurious-correlation"
# At most this many images (evenly spread) are used: enough for a stable 3-fold estimate.
MAX_IMAGES = 3000
MIN_IMAGES = 40
# Strength of association between a nuisance property and the label, as bias-corrected Cramer's V
# (Bergsma 2013) over the property cut into quantile bins (colour: the dominant channel).
# Measured on the real MNIST subset: brightness and contrast (ink amount, which follows the digit's
# shape) reach V ~0.2 and the colour of randomly coloured MNIST (CASES.md case 1) V ~0.0; colour
# tied to the label (channel = digit mod 3) gives V ~1.0. Half-way to a deterministic link is a
# shortcut a network will take; from 0.8 the property nearly determines the label.
V_WARNING = 0.5
V_ERROR = 0.8
BINS = 10  # quantile bins for a scalar property


def _cramers_v(codes: np.ndarray, labels: np.ndarray) -> float:
    table = np.zeros((codes.max() + 1, labels.max() + 1))
    np.add.at(table, (codes, labels), 1)
    table = table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0]
    n = table.sum()
    r, k = table.shape
    if r < 2 or k < 2:
        return 0.0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / n
    chi2 = float(((table - expected) ** 2 / expected).sum())
    phi2 = max(0.0, chi2 / n - (k - 1) * (r - 1) / (n - 1))
    rc, kc = r - (r - 1) ** 2 / (n - 1), k - (k - 1) ** 2 / (n - 1)
    denom = min(kc - 1, rc - 1)
    return float(np.sqrt(phi2 / denom)) if denom > 0 else 0.0


def _codes(name: str, values: np.ndarray) -> np.ndarray:
    if values.shape[1] > 1:  # channel shares: which channel dominates
        return np.argmax(values, axis=1)
    edges = np.unique(np.quantile(values[:, 0], np.linspace(0, 1, BINS + 1)[1:-1]))
    return np.searchsorted(edges, values[:, 0], side="right")


def property_predictiveness(images, labels) -> dict[str, dict]:
    """For each nuisance property: Cramer's V with the label, and the accuracy of predicting the
    label from the property alone (the commonest label per bin)."""
    chance = float(np.bincount(labels).max() / len(labels))
    out = {}
    for name, values in nuisance_properties(images).items():
        codes = _codes(name, values)
        table = np.zeros((codes.max() + 1, labels.max() + 1))
        np.add.at(table, (codes, labels), 1)
        accuracy = float(table.max(axis=1).sum() / len(labels))
        out[name] = {"cramers_v": _cramers_v(codes, labels), "accuracy": accuracy,
                     "chance": chance}
    return out


@register(CODE, "data", needs=("labels",),
          explains=("fragile-to-*",))
def check(ev):
    y = ev.train.labels
    if y.dtype.kind not in "iu":
        return []
    idx = np.arange(len(y))
    if len(y) > MAX_IMAGES:
        idx = np.linspace(0, len(y) - 1, MAX_IMAGES).astype(int)
    counts = np.bincount(y[idx])
    if len(idx) < MIN_IMAGES or counts[counts > 0].min() < 3:
        return [Skipped(CODE, f"too few images per class to test image properties "
                              f"({len(idx)} images)")]
    measured = property_predictiveness(ev.train.images[idx], y[idx])
    ev.figures["nuisance_properties"] = measured
    flagged = {k: v for k, v in measured.items() if v["cramers_v"] >= V_WARNING}
    summary = ", ".join(f"{k} V={v['cramers_v']:.2f} ({v['accuracy']:.1%} alone)"
                        for k, v in measured.items())
    chance = next(iter(measured.values()))["chance"]
    if not flagged:
        return [Passed(CODE, f"no image property alone predicts the label: {summary} "
                             f"(chance {chance:.1%})", measured)]
    out = []
    for name, m in flagged.items():
        out.append(Finding(
            code=CODE, area="data",
            severity="error" if m["cramers_v"] >= V_ERROR else "warning",
            title=f"the {name} alone predicts the label ({m['accuracy']:.0%} vs {chance:.0%} "
                  f"chance)",
            explanation=(f"Each image's {name} is strongly tied to its label (Cramer's V "
                         f"{m['cramers_v']:.2f}, where 0 is no link and 1 a fixed one); from the "
                         f"{name} alone the label is right {m['accuracy']:.0%} of the time "
                         f"(chance: {chance:.0%}). A "
                         f"network takes such a shortcut instead of learning the object, and "
                         f"fails on images where the {name} differs. Break the link in the "
                         f"training data (balance or randomise the {name} across classes) or "
                         f"augment it away."),
            evidence={"property": name, **m, "all_properties": measured},
            fix=Fix(summary=f"randomise the {name} across classes (augmentation)",
                    code=snippet(ev,
                                 keras="augment = keras.Sequential([keras.layers.RandomContrast("
                                       "0.5), keras.layers.RandomBrightness(0.3)])",
                                 torch="transforms.ColorJitter(brightness=0.3, contrast=0.5, "
                                       "hue=0.5)"))))
    return out
