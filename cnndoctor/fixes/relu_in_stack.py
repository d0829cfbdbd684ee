"""missing-nonlinearity: a ReLU after each weighted layer that has none, so the stack is no
longer one linear map."""
from __future__ import annotations

from . import CannotApply, Trial, register


@register("relu-in-stack", treats=("missing-nonlinearity",),
          summary="a ReLU after every convolution / dense layer of the linear stack")
def relu_in_stack(trial: Trial, finding, ev) -> Trial:
    names = list(finding.evidence.get("layers_without_activation") or [])
    if not names:
        raise CannotApply("the layers without an activation are not known")
    return trial.change(model=trial.ops().add_activation(trial.model, names, "relu"),
                        params={"layers": names, "activation": "relu"})
