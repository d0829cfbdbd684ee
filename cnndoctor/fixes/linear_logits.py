"""activation-before-softmax: the logits go into the softmax as they are, with no ReLU/tanh."""
from __future__ import annotations

from .. import graph as g
from . import CannotApply, Trial, register


@register("linear-logits", treats=("activation-before-softmax",),
          summary="remove the activation applied to the logits before the softmax")
def linear_logits(trial: Trial, finding, ev) -> Trial:
    name = finding.evidence.get("activation_layer")
    layer = ev.graph.by_name(name) if name else None
    if layer is None:
        raise CannotApply("the layer that applies the activation is not known")
    ops = trial.ops()
    if layer.kind == g.WEIGHTED and trial.framework == "keras":
        model = ops.set_activation(trial.model, name, "linear")
    elif trial.framework == "keras":
        model = ops.remove_layer(trial.model, name)
    else:
        model = ops.remove(trial.model, name, "relu")
    return trial.change(model=model, params={"layer": name, "activation": layer.activation})
