"""class-imbalance: every class seen equally often in training (resampling, the data-side
equivalent of class weights in the loss), measured by balanced accuracy."""
from __future__ import annotations

from . import Trial, register


@register("balance-classes", treats=("class-imbalance",),
          summary="rare classes sampled as often as common ones (or class_weight= in fit)")
def balance_classes(trial: Trial, finding, ev) -> Trial:
    return trial.change(balance_classes=True, metric="balanced accuracy",
                        params={"counts": finding.evidence.get("counts")})
