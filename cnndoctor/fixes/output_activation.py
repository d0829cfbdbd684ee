"""output-activation-mismatch: the last activation made to fit the loss (a softmax over the
classes, or logits into a loss that applies the softmax itself)."""
from __future__ import annotations

from .. import graph as g
from . import CannotApply, Trial, register


@register("output-activation", treats=("output-activation-mismatch",),
          summary="the output activation the loss expects")
def output_activation(trial: Trial, finding, ev) -> Trial:
    out = ev.graph.output_layer
    if out is None:
        raise CannotApply("the output layer is not known")
    loss = ev.graph.loss
    wants = "softmax" if loss is None or loss.expects == g.EXPECTS_PROBABILITIES else "linear"
    if (ev.graph.output_units or 0) == 1:
        wants = "sigmoid"
    if trial.framework == "keras":
        model = trial.ops().set_activation(trial.model, out.name, wants)
        return trial.change(model=model, params={"layer": out.name, "activation": wants})
    from torch import nn

    if out.kind in (g.SOFTMAX, g.LOG_SOFTMAX, g.ACTIVATION):
        model = trial.ops().remove(trial.model, out.name,
                                   "softmax" if out.kind != g.ACTIVATION else "relu")
    else:
        model = trial.model
    return trial.change(model=model, loss=nn.CrossEntropyLoss(),
                        params={"removed": out.label, "loss": "nn.CrossEntropyLoss()"})
