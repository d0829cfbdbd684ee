"""missing-zero-grad: gradients reset before every backward pass."""
from __future__ import annotations

from . import Trial, register


@register("zero-grad", treats=("missing-zero-grad",),
          summary="optimizer.zero_grad() before each loss.backward()",
          reproduces={"reset_grads": False})
def zero_grad(trial: Trial, finding, ev) -> Trial:
    return trial.change(reset_grads=True, params={"call": "optimizer.zero_grad()"})
