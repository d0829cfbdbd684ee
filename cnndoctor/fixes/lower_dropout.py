"""excessive-dropout: the dropout rate lowered to a usual value."""
from __future__ import annotations

from . import CannotApply, Trial, register

#: The rate the fix sets: the commonest rate in published CNNs (VGG, AlexNet use 0.5 before large
#: dense layers; 0.2-0.3 is the usual choice on small layers), and the check's own warning line.
FIXED_RATE = 0.2


@register("lower-dropout", treats=("excessive-dropout",),
          summary=f"dropout rate {FIXED_RATE}")
def lower_dropout(trial: Trial, finding, ev) -> Trial:
    name = finding.evidence.get("layer")
    if not name:
        raise CannotApply("the dropout layer is not known")
    model = trial.ops().set_dropout(trial.model, {name: FIXED_RATE})
    return trial.change(model=model, params={"layer": name, "rate": FIXED_RATE,
                                             "was": finding.evidence.get("rate")})
