"""Does a mutant actually hurt? DeepCrime's *killed* mutant, measured with one training.

A mutation that leaves the model as good as the clean one (the learning rate x100 on a
batch-norm model under Adam that still trains to the clean accuracy) is not a bug a diagnosis
must find: DeepCrime (Humbatova, Jahangirova and Tonella, ISSTA 2021) counts a mutant only when
it is *killed*, when its accuracy is significantly worse than the original model's. Theirs is a
statistical test over 20 trainings of each; ours is one training of each, the user's own (the
setup's epochs, batch size, loss, optimizer and scheduler), and a margin past the noise of one
training (``KILL_MARGIN``).

What "worse" is depends on where the bug lives (``Operator.harm``):

- ``"accuracy"`` (the model, the optimizer, the training data): the mutant's balanced accuracy
  on its validation set (the user's validation pipeline) against the clean model's. Balanced, so
  that a class the bug starves (class imbalance) counts as much as the others. A setup that
  cannot train at all (shapes the model does not take, labels past its outputs) is killed.
- ``"evaluation"`` (the evaluation inputs): the clean model's balanced accuracy on the
  evaluation inputs the user feeds it against the same on its validation set.
- ``"leakage"`` (validation images copied from training): the validation accuracy the user
  reads against the accuracy on the validation images the model never saw; the bug's harm is
  that figure overstating what the model does on new images.
"""
from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from .. import runtime as rt
from ..cases import Setup

#: A mutant is killed when its measured accuracy is this far (absolute) below the clean model's
#: (or, for leakage, the user's figure this far above the truth). One training of each on the
#: zoo's 320-360 validation images: the binomial standard error of one accuracy near 85% is
#: 1.9 points, 2.7 for a difference of two; the spread between three seeds of the clean zoo's
#: balanced accuracy measured this way is 0 (the batch-norm models, all at 100%) to 5.3 points
#: (torch-frozen-backbone, 84.3-89.6%; docs/benchmarks.md). 10 points is past both with room.
KILL_MARGIN = 0.10
#: training images the batch-norm statistics are re-estimated on before measuring (as the
#: training probe does, probes/training.py INIT_SAMPLES)
BN_SAMPLES = 512
#: safety net on one measuring training (the zoo's longest, torch-resnet18, takes ~20 s on the
#: shared 2-core machine)
KILL_SECONDS = 180.0


def _arrays(data) -> tuple[Any, Any]:
    """(x, y) of a pair or of a map-style Dataset (read once: one draw of its augmentation)."""
    if isinstance(data, tuple):
        return data
    import torch

    items = [data[i] for i in range(len(data))]
    return torch.stack([torch.as_tensor(x) for x, _ in items]), \
        torch.as_tensor(np.asarray([int(y) for _, y in items]))


def balanced_accuracy(outputs: np.ndarray, labels: Any) -> float | None:
    """Mean over the classes present of the share of their images predicted right."""
    y = rt.integer_labels(labels)
    if y is None or len(y) == 0 or outputs.ndim != 2 or not np.isfinite(outputs).all():
        return 0.0 if y is not None and len(y) else None
    pred = outputs.argmax(axis=1)
    return float(np.mean([(pred[y == c] == c).mean() for c in np.unique(y)]))


def train_like_the_user(setup: Setup, seed: int = 0) -> dict:
    """A copy of the setup's model trained as the user trains it; returns
    ``{"model", "steps", "stopped", "seconds"}`` or ``{"failed": reason}``."""
    from ..frameworks.torch.schedules import replay

    start = time.perf_counter()
    try:
        x, y = _arrays(setup.train)
        model = rt.clone(setup.model)
        hist = rt.fit(model, x, y, loss=setup.loss, optimizer=setup.optimizer,
                      epochs=setup.epochs, batch_size=setup.batch_size, seed=seed,
                      max_seconds=KILL_SECONDS, user_schedule=replay(setup.scheduler))
        # After ~200 steps batch norm's running statistics still trail the weights (Keras'
        # momentum 0.99 keeps 13% of the initial ones): the clean Keras batch-norm models read
        # 45-93% over three seeds with them, the same weights read near their best once the
        # statistics are re-estimated. The measurement is of what the weights learned.
        if hist["stopped"] != "nonfinite":
            rt.reestimate_batchnorm(model, rt.take(x, np.arange(min(len(y), BN_SAMPLES))))
    except Exception as exc:  # the mutant cannot even be trained: the bug stops training
        return {"failed": f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}",
                "seconds": time.perf_counter() - start}
    return {"model": model, "steps": hist["steps"], "stopped": hist["stopped"],
            "seconds": time.perf_counter() - start}


def _score(model, data) -> float | None:
    x, y = _arrays(data)
    try:
        return balanced_accuracy(rt.predict(model, x), y)
    except Exception:  # inputs the trained model does not take
        return 0.0


def _plain_accuracy(model, x, y) -> float | None:
    out = rt.predict(model, x)
    return rt.accuracy(out, y) if np.isfinite(out).all() else 0.0


def measure(setup: Setup, harm: str = "accuracy", seed: int = 0, *,
            clean: Setup | None = None) -> dict:
    """The figure the kill criterion compares for ``setup`` (clean or mutated):
    ``{"score": ..., "seconds": ..., "failed"?: ...}``.

    ``harm="accuracy"``: balanced accuracy on the setup's validation set after the user's
    training. ``"evaluation"``: the same on the setup's evaluation inputs. ``"leakage"``: the
    validation accuracy (``score``) and the accuracy on the validation images that are still
    those of the ``clean`` setup (``unseen``: the ones not copied from training).
    """
    run = train_like_the_user(setup, seed)
    if "failed" in run:
        return {"score": None, "failed": run["failed"], "seconds": run["seconds"]}
    model = run["model"]
    out = {"seconds": run["seconds"], "steps": run["steps"], "stopped": run["stopped"]}
    if harm == "evaluation" and setup.evaluate is not None:
        out["score"] = _score(model, setup.evaluate)
    elif harm == "leakage" and clean is not None:
        xv, yv = _arrays(setup.val)
        xc = rt.to_numpy(_arrays(clean.val)[0])
        same = (rt.to_numpy(xv).reshape(len(xc), -1) == xc.reshape(len(xc), -1)).all(axis=1)
        out["score"] = _plain_accuracy(model, xv, yv)
        out["unseen"] = _plain_accuracy(model, rt.take(xv, np.flatnonzero(same)),
                                        rt.to_numpy(yv)[same])
    else:
        out["score"] = _score(model, setup.val)
    return out


def verdict(op_harm: str, clean: dict, mutant: dict) -> tuple[bool, str]:
    """(killed, why) from the clean model's and the mutant's ``measure``."""
    if mutant.get("failed"):
        return True, f"training fails: {mutant['failed']}"
    if mutant.get("stopped") == "nonfinite":
        return True, "the training loss turns non-finite"
    c = clean.get("score")
    m = mutant.get("score")
    if op_harm == "leakage":
        seen, unseen = m or 0.0, mutant.get("unseen") or 0.0
        killed = seen - unseen > KILL_MARGIN
        return killed, f"validation accuracy {seen:.1%} read, {unseen:.1%} on unseen images"
    if c is None or m is None or (isinstance(m, float) and math.isnan(m)):
        return False, "not measured"
    killed = c - m > KILL_MARGIN
    return killed, f"balanced accuracy {m:.1%} against {c:.1%} clean ({m - c:+.1%})"
