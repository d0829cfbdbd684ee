"""output-size-mismatch: as many output units as there are classes in the labels."""
from __future__ import annotations

from .. import graph as g
from . import CannotApply, Trial, register


@register("output-units", treats=("output-size-mismatch",),
          summary="one output unit per class")
def output_units(trial: Trial, finding, ev) -> Trial:
    classes = finding.evidence.get("classes_in_labels")
    last = ev.graph.weighted[-1] if ev.graph.weighted else None
    if not classes or last is None:
        raise CannotApply("the number of classes or the output layer is not known")
    model = trial.ops().set_units(trial.model, last.name, int(classes))
    return trial.change(model=model, params={"layer": last.name, "units": int(classes)})
