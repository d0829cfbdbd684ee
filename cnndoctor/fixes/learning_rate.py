"""lr-too-high / lr-too-low: the learning rate the range test or the differential diagnosis
found to work, with the user's optimizer otherwise unchanged."""
from __future__ import annotations

from . import CannotApply, Trial, register


@register("learning-rate", treats=("lr-too-high", "lr-too-low"),
          summary="the learning rate at which the loss was seen to fall")
def learning_rate(trial: Trial, finding, ev) -> Trial:
    lr = finding.evidence.get("suggested_lr")
    if not lr:
        raise CannotApply("no working learning rate was measured")
    return trial.change(lr=float(lr), params={"lr": float(lr),
                                              "was": finding.evidence.get("user_lr")})
