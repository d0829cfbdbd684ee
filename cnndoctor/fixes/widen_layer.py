"""dead-relu at initialisation: a layer too narrow for its inputs given more units.

The finding's ``narrow_layers`` (probe ``init_coverage``) name the ReLU layer whose units all
output 0 for some images on fresh weights, and the weighted layer feeding it. That layer gets
``WIDEN_FACTOR`` times its units, with ``padding='same'`` for a convolution (so that the border
pixels reach every filter: the answer to case 2's report, 2 -> 6 filters with padding 'same').
"""
from __future__ import annotations

from .. import graph as g
from .. import runtime as rt
from ..checks.training import WIDEN_FACTOR
from . import CannotApply, Trial, register

#: Steps that may sit between the widened layer and the next weighted one and only pass its
#: outputs on (their sizes do not depend on the number of channels).
_PASSING = (g.ACTIVATION, g.SHAPE, g.DROPOUT, g.POOL)


def _downstream(graph, layer) -> list[str]:
    """Batch norms and the next weighted layer reading ``layer``'s outputs (torch needs them
    rebuilt for the new size); CannotApply where branches join or split on the way."""
    names, current = [], layer
    while True:
        after = graph.successors(current)
        if not after:
            return names
        if len(after) > 1 or after[0].kind == g.MERGE:
            raise CannotApply(f"{layer.label}'s outputs feed a branch or a join; widen it by hand")
        current = after[0]
        if current.kind == g.NORM:
            names.append(current.name)
        elif current.kind == g.WEIGHTED:
            return names + [current.name]
        elif current.kind == g.GLOBAL_POOL or current.kind in _PASSING:
            continue
        else:
            raise CannotApply(f"{current.label} follows {layer.label}; widen it by hand")


@register("widen-layer", treats=("dead-relu",),
          summary="more units in a layer too narrow for its inputs (padding 'same' for a "
                  "convolution)")
def widen_layer(trial: Trial, finding, ev) -> Trial:
    narrow = finding.evidence.get("narrow_layers") or []
    if not narrow:
        raise CannotApply("the units died during training, not at initialisation: normalize the "
                          "inputs or lower the learning rate (see the causes ranked above)")
    name = narrow[0].get("weighted_layer")
    layer = ev.graph.by_name(name) if name else None
    if layer is None or layer.op not in ("conv", "dense") or not layer.units:
        raise CannotApply("the layer before the silent ReLU is not a convolution or a dense "
                          "layer with a known size; widen it by hand")
    units = int(layer.units) * WIDEN_FACTOR
    same = layer.op == "conv"
    downstream = _downstream(ev.graph, layer) if trial.framework == "torch" else []
    model = trial.ops().widen(trial.model, name, units, same_padding=same,
                              downstream=downstream, example=rt.take(trial.x_train, [0]))
    return trial.change(model=model, params={"layer": name, "units_before": int(layer.units),
                                             "units": units,
                                             **({"padding": "same"} if same else {})})
