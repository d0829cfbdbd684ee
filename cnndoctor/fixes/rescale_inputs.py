"""unnormalized-input: every input the model is given scaled to unit range (divided by 255 for
8-bit pixels, otherwise standardised with the training mean and standard deviation)."""
from __future__ import annotations

import numpy as np

from . import Trial, register

#: Inputs whose maximum is above this are taken as 8-bit pixels and divided by 255 (the check's
#: own rule for naming the divisor, cnndoctor/checks/unnormalized_input.py).
PIXEL_MAX = 200.0


class Scale:
    """x * factor + offset, picklable (verification may run in worker processes)."""

    def __init__(self, factor: float, offset: float = 0.0):
        self.factor, self.offset = float(factor), float(offset)

    def __call__(self, x):
        return (np.asarray(x, dtype=np.float32) * self.factor + self.offset).astype(np.float32)

    def __repr__(self):
        return f"x * {self.factor:.4g} + {self.offset:.4g}"


@register("rescale-inputs", treats=("unnormalized-input",),
          summary="inputs scaled to unit range")
def rescale_inputs(trial: Trial, finding, ev) -> Trial:
    e = finding.evidence
    if (e.get("max") or 0) > PIXEL_MAX:
        scale, how = Scale(1 / 255.0), "x / 255"
    else:
        std = float(e.get("std") or 1.0) or 1.0
        scale = Scale(1 / std, -float(e.get("mean") or 0.0) / std)
        how = f"(x - {e.get('mean'):.3g}) / {std:.3g}"
    return trial.change(transform=_then(trial.transform, scale), params={"inputs": how})


def _then(first, second):
    if first is None:
        return second
    return Chain(first, second)


class Chain:
    def __init__(self, *fns):
        self.fns = fns

    def __call__(self, x):
        for fn in self.fns:
            x = fn(x)
        return x
