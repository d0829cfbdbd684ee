"""preprocessing-mismatch / train-eval-discrepancy / prediction-collapse: the evaluation inputs
given the training preprocessing (the per-channel map x * a + b that takes their statistics to
the training ones; a whole divisor such as 255 when that is what it is). Measured on the user's
trained weights through their evaluation inputs: nothing is retrained."""
from __future__ import annotations

import numpy as np

from . import CannotApply, Trial, register


class Affine:
    """Per-channel x * scale + shift along the channel axis of ``layout`` (picklable)."""

    def __init__(self, scale, shift, layout: str):
        self.scale = np.asarray(scale, dtype=np.float32)
        self.shift = np.asarray(shift, dtype=np.float32)
        self.layout = layout

    def __call__(self, x):
        x = np.asarray(x, dtype=np.float32)
        shape = [1] * x.ndim
        axis = 1 if self.layout == "channels_first" and x.ndim == 4 else x.ndim - 1
        if x.ndim >= 2 and x.shape[axis] == self.scale.size:
            shape[axis] = self.scale.size
            return x * self.scale.reshape(shape) + self.shift.reshape(shape)
        return x * float(self.scale.mean()) + float(self.shift.mean())

    def __repr__(self):
        return f"x * {np.round(self.scale, 4).tolist()} + {np.round(self.shift, 4).tolist()}"


def _affine(ev) -> dict | None:
    """The evaluation probe's per-channel map from the evaluation inputs to the training ones."""
    for r in (ev.probes.get("evaluation") or {}).get("datasets", []):
        affine = (r.get("comparison") or {}).get("affine")
        if affine:
            return affine
    return None


@register("evaluation-preprocessing",
          treats=("preprocessing-mismatch", "train-eval-discrepancy", "prediction-collapse"),
          summary="the training preprocessing applied at evaluation",
          reproduces={"retrain": False, "target": "evaluation"})
def evaluation_preprocessing(trial: Trial, finding, ev) -> Trial:
    affine = finding.evidence.get("affine_to_training") or _affine(ev)
    if not affine or not ev.evaluation or trial.x_target is None or trial.target != "evaluation":
        raise CannotApply("no preprocessing difference between training and evaluation "
                          "inputs was measured")
    layout = ev.evaluation[0].layout
    fn = Affine(affine["scale"], affine["shift"], layout)
    return trial.change(eval_transform=fn, params={"evaluation inputs": repr(fn)})
