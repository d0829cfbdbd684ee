"""excessive-dropout: dropout that leaves too little signal."""
from __future__ import annotations

from .. import graph as g
from . import Finding, Fix, Passed, register, snippet

CODE = "excessive-dropout"
# Srivastava et al. 2014 (JMLR, "Dropout") found retention p = 0.5 optimal for hidden units and
# recommend p >= 0.8 for inputs; above a 0.5 drop rate accuracy falls off quickly. 0.5 is also
# the largest rate in the Keras examples. Rates above it warn; rates from 0.8 leave a fifth of the
# signal or less and are errors.
HIGH_RATE = 0.5
EXTREME_RATE = 0.8
# A layer this narrow loses most of its information at rate 0.5 (expected 8 of 16 units alive).
SMALL_LAYER_UNITS = 16


def _width(layer):
    if layer.input_shape and len(layer.input_shape) == 1:
        return layer.input_shape[0]
    return None


@register(CODE, "model")
def check(ev):
    graph = ev.graph
    drops = [layer for layer in graph.layers if layer.kind == g.DROPOUT and layer.rate]
    if not drops:
        return [Passed(CODE, "no dropout", {"max_rate": 0.0})]
    weighted = graph.weighted
    last_weighted = graph.layers.index(weighted[-1]) if weighted else -1
    out = []
    for layer in drops:
        idx = graph.layers.index(layer)
        width = _width(layer)
        problem = None
        if layer.rate >= EXTREME_RATE:
            problem = ("error", f"drops {layer.rate:.0%} of its inputs: too little signal is left "
                                f"for the next layer to learn from")
        elif idx > last_weighted >= 0 and layer.rate > 0:
            problem = ("warning", f"applied to the model's outputs (after the last weighted "
                                  f"layer): it randomly zeroes logits or probabilities")
        elif layer.rate > HIGH_RATE:
            problem = ("warning", f"drops {layer.rate:.0%} of its inputs, more than the 50% "
                                  f"that works best for hidden layers")
        elif width is not None and width <= SMALL_LAYER_UNITS and layer.rate >= HIGH_RATE:
            problem = ("warning", f"drops {layer.rate:.0%} of only {width} units: most of the "
                                  f"information is gone on every step")
        if problem:
            sev, why = problem
            out.append(Finding(
                code=CODE, area="model", severity=sev,
                title=f"dropout {layer.label} (rate {layer.rate}) {why.split(':')[0]}",
                explanation=f"Dropout {layer.label} {why}. Training becomes a noisy struggle and "
                            f"the model underfits. Use a rate of 0.5 or less on hidden layers "
                            f"and none on the output.",
                evidence={"layer": layer.name, "rate": layer.rate, "units": width,
                          "after_last_weighted_layer": idx > last_weighted},
                fix=Fix(summary=f"lower the rate of {layer.label} to at most {HIGH_RATE}",
                        code=snippet(ev, keras=f"keras.layers.Dropout({HIGH_RATE})",
                                     torch=f"nn.Dropout(p={HIGH_RATE})"))))
    if out:
        return out
    top = max(drops, key=lambda layer: layer.rate)
    return [Passed(CODE, f"largest dropout rate {top.rate} ({top.name})",
                   {"max_rate": top.rate, "layer": top.name})]
