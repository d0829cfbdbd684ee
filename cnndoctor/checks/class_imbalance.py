"""class-imbalance: some classes are much rarer than others."""
from __future__ import annotations

import numpy as np

from . import Finding, Fix, Passed, register, snippet

CODE = "class-imbalance"
# Largest-to-smallest class ratio from which plain training tends to neglect the rare classes.
# He & Garcia ("Learning from Imbalanced Data", IEEE TKDE 2009) call ratios of 100:1 and more
# "severe"; at 10:1 a model predicting only the common classes already scores >90% on a binary
# task, so that is where we start warning.
RATIO_WARNING = 10.0
RATIO_ERROR = 100.0


@register(CODE, "data", needs=("labels",),
          explains=("prediction-collapse",))
def check(ev):
    y = ev.train.labels
    if y.dtype.kind not in "iu" or (y < 0).any():
        return []
    n_classes = max(int(y.max()) + 1, ev.num_classes or 0)
    counts = np.bincount(y, minlength=n_classes)
    present = counts[counts > 0]
    ratio = float(present.max() / present.min())
    figures = {"counts": counts.tolist(), "ratio": ratio, "classes_present": int(len(present)),
               "classes": n_classes}
    if ratio < RATIO_WARNING:
        return [Passed(CODE, f"largest/smallest class ratio {ratio:.2f} "
                             f"({present.max()} vs {present.min()} images)", figures)]
    rare = np.argsort(counts + (counts == 0) * counts.max() * 10)[:3]
    return [Finding(
        code=CODE, area="data", severity="error" if ratio >= RATIO_ERROR else "warning",
        title=f"class sizes differ {ratio:.0f}-fold ({present.max()} vs {present.min()} images)",
        explanation=(f"The commonest class has {ratio:.0f} times as many training images as the "
                     f"rarest. A model can score well by mostly predicting the common classes, "
                     f"and the rare ones get too few gradient steps to be learned."),
        evidence={**figures, "rarest_classes": rare.tolist()},
        fix=Fix(summary="weight the loss by inverse class frequency, or resample",
                code=snippet(ev,
                             keras="w = len(y) / (n_classes * np.bincount(y))\n"
                                   "model.fit(x, y, class_weight=dict(enumerate(w)), ...)",
                             torch="w = len(y) / (n_classes * torch.bincount(y))\n"
                                   "loss_fn = nn.CrossEntropyLoss(weight=w.float())")))]
