"""Batch norm's running statistics, measured: the model as given against a copy whose batch-norm
layers were re-estimated on training images, both predicting held-out images in inference mode.

Batch norm trains on each batch's statistics but predicts with running averages that trail them
(momentum 0.99 in Keras: after 160 steps 0.99^160 = 20% of the initial statistics remain). A
model trained briefly can fit its data in training mode and still predict nonsense in inference
mode. Re-estimating the statistics is one forward pass over a few hundred training images, on a
copy: it runs at every budget, and only for models with batch-norm layers.
"""
from __future__ import annotations

import numpy as np

from .. import graph as g
from . import BUDGETS, register

#: Training images the copy's statistics are re-estimated on (the verification's BN_SAMPLES).
REESTIMATE_SAMPLES = 512
#: Held-out images both predict (an evenly spread subset; the evaluation probe's cap).
MAX_MEASURE_IMAGES = 1024


def _subset(n: int, k: int) -> np.ndarray:
    return np.arange(n) if n <= k else np.unique(np.linspace(0, n - 1, k).round().astype(int))


def _held_out(ev):
    """Where to measure: validation, else labelled evaluation inputs, else training images."""
    if ev.val is not None and ev.val.labels is not None and ev.val.images.shape[1:] == \
            ev.train.images.shape[1:]:
        return ev.val.x, ev.val.labels, "validation data"
    for ds in ev.evaluation or []:
        if ds.labels is not None and ds.images.shape[1:] == ev.train.images.shape[1:]:
            return ds.x, ds.labels, "the evaluation inputs"
    return ev.train.x, ev.train.labels, "the training images"


@register("batchnorm", budgets=BUDGETS)
def batchnorm(ev, ctx) -> None:
    from .. import runtime as rt

    norms = [layer for layer in ev.graph.layers if layer.kind == g.NORM]
    if not norms:
        ev.probes["batchnorm"] = {"skipped": "the model has no normalization layers"}
        return
    if ev.train is None or ev.train.labels is None:
        ev.probes["batchnorm"] = {"skipped": "no labelled training data was given"}
        return
    x, labels, where = _held_out(ev)
    idx = _subset(rt.length(x), MAX_MEASURE_IMAGES)
    xm, ym = rt.take(x, idx), np.asarray(labels)[idx]
    copy = rt.clone(ev.model)
    n_train = rt.length(ev.train.x)
    sample = rt.take(ev.train.x, _subset(n_train, REESTIMATE_SAMPLES))
    ctx.say("re-estimating batch norm's running statistics on a copy")
    with rt.preserved_rng():
        layers = rt.reestimate_batchnorm(copy, sample)
    if not layers:
        ev.probes["batchnorm"] = {"skipped": "the model has no batch-norm layers with running "
                                             "statistics"}
        return
    as_given = rt.predict(ev.model, xm)
    reestimated = rt.predict(copy, xm)
    finite = bool(np.isfinite(as_given).all() and np.isfinite(reestimated).all())
    y = rt.integer_labels(ym)
    pred_given = _classes(as_given, ev.graph.output_activation)
    pred_new = _classes(reestimated, ev.graph.output_activation)
    ev.probes["batchnorm"] = {
        "layers": int(layers), "measured_on": where, "samples": int(len(idx)),
        "reestimated_on": int(min(n_train, REESTIMATE_SAMPLES)), "finite": finite,
        "accuracy_as_given": float((pred_given == y).mean()),
        "accuracy_reestimated": float((pred_new == y).mean()),
        # images the re-estimated copy gets right and the model gets wrong, and the reverse
        "fixed": int(((pred_new == y) & (pred_given != y)).sum()),
        "broken": int(((pred_new != y) & (pred_given == y)).sum()),
        "classes_predicted_as_given": int(len(np.unique(pred_given))),
        "classes": int(max(ev.graph.output_units or 0, len(np.unique(y)))),
        # what always answering the commonest class scores on these images
        "majority_share": float(np.bincount(y).max() / len(y)) if len(y) else 0.0,
    }


def _classes(outputs, activation) -> np.ndarray:
    from ..runtime import output_probabilities
    from .evaluation import _classes as classes_of

    return classes_of(output_probabilities(np.asarray(outputs), activation))
