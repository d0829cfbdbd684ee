"""eval-mode-not-set: evaluation with ``model.eval()`` (dropout off, batch norm on its running
statistics). Measured on the user's trained weights: nothing is retrained."""
from __future__ import annotations

from . import Trial, register


@register("eval-mode", treats=("eval-mode-not-set",), summary="model.eval() before evaluating",
          reproduces={"eval_mode": False, "retrain": False})
def eval_mode(trial: Trial, finding, ev) -> Trial:
    return trial.change(eval_mode=True, params={"call": "model.eval()"})
