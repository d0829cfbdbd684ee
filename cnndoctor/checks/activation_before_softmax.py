"""activation-before-softmax: a nonlinearity squashes the logits right before the softmax."""
from __future__ import annotations

from .. import graph as g
from . import Finding, Fix, Passed, register, snippet

CODE = "activation-before-softmax"


def _culprits(ev):
    """(activation step, softmax step or the loss) pairs."""
    graph = ev.graph
    pairs = []
    for layer in graph.layers:
        if layer.kind == g.SOFTMAX:
            p = graph.producer(layer)
            if p is not None and p.nonlinear and p.kind in (g.ACTIVATION, g.WEIGHTED):
                pairs.append((p, layer.name))
    # The loss applies the softmax itself: the model's last step must then be linear.
    loss = graph.loss
    last = graph.output_layer
    if loss is not None and loss.expects == g.EXPECTS_LOGITS and last is not None \
            and loss.family in (g.CATEGORICAL, g.SPARSE) and last.nonlinear \
            and last.kind in (g.ACTIVATION, g.WEIGHTED) and last.activation != "sigmoid":
        pairs.append((last, f"the softmax inside the loss ({loss.source})"))
    return pairs


@register(CODE, "model",
          explains=("dead-relu", "no-learning", "vanishing-gradient", "cannot-overfit-batch",
                    "seed-instability", "prediction-collapse",))
def check(ev):
    pairs = _culprits(ev)
    if not pairs:
        n = sum(1 for layer in ev.graph.layers if layer.kind == g.SOFTMAX)
        return [Passed(CODE, f"no nonlinearity between the logits and the softmax "
                             f"({n} softmax step(s) in the model)", {"softmax_steps": n})]
    out = []
    for act, softmax in pairs:
        fused = act.kind == g.WEIGHTED
        where = (f"{act.label} ({act.source}, activation='{act.activation}')" if fused
                 else f"{act.label} ({act.source})")
        keras_fix = (f"keras.layers.{act.source}({act.units}"
                     f"{', ...' if act.op == 'conv' else ''})  # was activation='{act.activation}'"
                     if fused else f"# delete the layer {act.name!r} "
                                   f"(keras.layers.Activation('{act.activation}'))")
        torch_fix = (f"# in forward(): return the last layer's output as it is, e.g.\n"
                     f"#   return self.fc(x)        # not {act.activation}(self.fc(x))"
                     if not fused else f"# remove the {act.activation} after {act.label}")
        out.append(Finding(
            code=CODE, area="model", severity="error",
            title=f"{act.activation} applied to the logits right before {softmax}",
            explanation=(
                f"The logits pass through {act.activation} before the softmax. A ReLU clamps "
                f"every negative logit to 0 and passes no gradient back through it, so a class "
                f"whose logit goes negative can never recover: whole output units die, and "
                f"which ones die depends on the random initialisation. A sigmoid or tanh squeezes "
                f"all logits into a narrow range, so the softmax can never become confident. "
                f"Feed the raw (linear) logits to the softmax.")
            if act.activation == "relu" else
            (f"The logits pass through {act.activation} before the softmax. That squeezes them "
             f"into a narrow range (or clamps them), so the softmax cannot express confident "
             f"predictions and gradients are weakened. Feed the raw (linear) logits to the "
             f"softmax."),
            evidence={"activation_layer": act.name, "activation": act.activation,
                      "fused_into_weighted_layer": fused, "softmax": softmax,
                      "logit_units": act.units or _units(act)},
            fix=Fix(summary=f"make the logits linear: remove {act.activation} from {act.label}",
                    code=snippet(ev, keras=keras_fix, torch=torch_fix))))
    return out


def _units(layer):
    return layer.output_shape[-1] if layer.output_shape else None
