"""oversized-layer: the dense layer disguised as a whole-map convolution replaced by a 1x1
convolution and global average pooling (the remedy of CASES.md case 3)."""
from __future__ import annotations

from . import CannotApply, Trial, register


@register("pooled-head", treats=("oversized-layer",),
          summary="a 1x1 convolution and global average pooling in place of the giant layer")
def pooled_head(trial: Trial, finding, ev) -> Trial:
    name = finding.evidence.get("layer")
    layer = ev.graph.by_name(name) if name else None
    if layer is None or layer.op != "conv":
        raise CannotApply("the oversized layer is not a convolution; make it smaller by hand")
    filters = int(layer.units or 1)
    model = trial.ops().pooled_head(trial.model, name, filters)
    return trial.change(model=model, params={"layer": name, "filters": filters,
                                             "kernel_size": list(layer.kernel_size or [])})
