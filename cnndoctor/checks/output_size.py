"""output-size-mismatch: the number of output units differs from the number of classes."""
from __future__ import annotations

from .. import graph as g
from . import Finding, Fix, Passed, register, snippet

CODE = "output-size-mismatch"


# A wrong unit count also makes the output activation wrong for the loss (a softmax over the
# one unit left of four always gives 1.0): giving the layer one unit per class mends both.
@register(CODE, "model", needs=("labels",),
          explains=("cannot-overfit-batch", "output-activation-mismatch",))
def check(ev):
    units = ev.graph.output_units
    classes = ev.train.num_classes_in_labels
    loss = ev.graph.loss
    if units is None or classes is None:
        return []
    if loss is not None and loss.family == g.BINARY and units == 1 and classes <= 2:
        return [Passed(CODE, "one sigmoid unit for two classes", {"units": 1, "classes": classes})]
    if units == classes:
        return [Passed(CODE, f"{units} output units for {classes} classes",
                       {"units": units, "classes": classes})]
    fewer = units < classes
    fix_keras = f"keras.layers.Dense({classes})  # one unit per class (was {units})"
    fix_torch = f"nn.Linear(in_features, {classes})  # one output per class (was {units})"
    return [Finding(
        code=CODE, area="model", severity="error" if fewer or ev.train.label_format == "onehot"
        else "warning",
        title=f"{units} output units for {classes} classes in the labels",
        explanation=(
            f"The model has {units} output units but the labels name {classes} classes. "
            + ("Labels beyond the last unit cannot be predicted at all (and many losses fail or "
               "silently read out of range)." if fewer else
               "The extra units are never the right answer; if the labels are a subset of a "
               "larger problem this is fine, otherwise the class count is wrong somewhere.")),
        evidence={"output_units": units, "classes_in_labels": classes,
                  "label_format": ev.train.label_format,
                  "largest_label": int(ev.train.labels.max())},
        fix=Fix(summary=f"give the output layer {classes} units",
                code=snippet(ev, keras=fix_keras, torch=fix_torch)))]
