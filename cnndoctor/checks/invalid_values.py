"""invalid-values: NaN or infinite inputs or labels, labels out of range."""
from __future__ import annotations

import numpy as np

from .. import graph as g
from . import Finding, Fix, Passed, register, snippet

CODE = "invalid-values"


def problems(ev) -> list[str]:
    """One plain sentence per problem found in any dataset given."""
    out = []
    units = ev.graph.output_units
    loss = ev.graph.loss
    binary_single = loss is not None and loss.family == g.BINARY and units == 1
    for ds in [ev.train, ev.val, *ev.evaluation, ev.reference]:
        if ds is None:
            continue
        bad = ~np.isfinite(ds.images.reshape(len(ds), -1)).all(axis=1)
        if bad.any():
            out.append(f"{int(bad.sum())} of {len(ds)} {ds.name} images contain NaN or infinite "
                       f"values (first at index {int(np.argmax(bad))}); expected finite numbers")
        if ds.labels is None:
            continue
        y = np.asarray(ds.labels)
        if y.dtype.kind == "f":
            nonint = ~np.isfinite(y) | (y != np.round(y))
            out.append(f"{int(nonint.sum())} {ds.name} labels are not whole class numbers "
                       f"(e.g. {y[np.argmax(nonint)].item()!r}); expected integers 0..C-1 or "
                       f"one-hot rows")
            continue
        if ds.label_format == "onehot":
            raw = np.asarray(ds.y if not hasattr(ds.y, "detach") else ds.y.detach().cpu().numpy())
            if not np.isfinite(raw).all():
                out.append(f"{ds.name} one-hot labels contain NaN or infinite values")
            continue
        if (y < 0).any():
            out.append(f"{int((y < 0).sum())} {ds.name} labels are negative (smallest {y.min()}); "
                       f"expected class numbers 0..C-1")
        limit = 2 if binary_single else units
        if limit and (y >= limit).any():
            out.append(f"{int((y >= limit).sum())} {ds.name} labels are {limit} or more (largest "
                       f"{y.max()}) but the model has {units} output unit(s); expected labels "
                       f"0..{limit - 1}")
    return out


def refusal(ev) -> str | None:
    """The one-line reason ``diagnose`` refuses the data, or None. Integer labels beyond the
    model's output units while the labels themselves are whole classes 0..C-1 are the output
    layer's fault more often than the data's: the message names ``output-size-mismatch`` first."""
    found = problems(ev)
    if not found:
        return None
    message = "invalid-values: " + "; ".join(found)
    units, train = ev.graph.output_units, ev.train
    classes = train.num_classes_in_labels if train is not None else None
    labels = np.asarray(train.labels) if train is not None and train.labels is not None else None
    if units and classes and units < classes and labels is not None and labels.dtype.kind in "iu" \
            and labels.min() >= 0:
        message = (f"output-size-mismatch: the model has {units} output units but the labels "
                   f"name {classes} classes (0..{classes - 1}); give the output layer {classes} "
                   f"units. " + message)
    return message


@register(CODE, "data", needs=("train",),
          explains=("nan-loss",))
def check(ev):
    found = problems(ev)
    if not found:
        n = sum(len(ds) for ds in [ev.train, ev.val, *ev.evaluation, ev.reference] if ds)
        return [Passed(CODE, f"all values finite and labels within the {ev.graph.output_units} "
                             f"outputs ({n} images checked)", {"images_checked": n})]
    return [Finding(
        code=CODE, area="data", severity="error", title=found[0],
        explanation="NaN or infinite inputs make the loss NaN on the first batch that contains "
                    "them, and labels outside 0..C-1 either crash the loss or are silently read "
                    "as another class. Everything measured after that is meaningless.",
        evidence={"problems": found},
        fix=Fix(summary="clean the data before training",
                code=snippet(ev,
                             keras="mask = np.isfinite(x).all(axis=(1, 2, 3))\nx, y = x[mask], y[mask]",
                             torch="mask = torch.isfinite(x).flatten(1).all(1)\nx, y = x[mask], y[mask]")))]
