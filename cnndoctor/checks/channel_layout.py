"""channel-layout: channels-first data fed to a channels-last model, or the reverse."""
from __future__ import annotations

import numpy as np

from . import Finding, Fix, Passed, register, snippet

CODE = "channel-layout"


@register(CODE, "data", needs=("train",),
          explains=("train-eval-discrepancy",))
def check(ev):
    model_format = ev.graph.data_format
    out = []
    for ds in [ev.train, ev.val, *ev.evaluation, ev.reference]:
        if ds is None:
            continue
        shape = tuple(np.shape(ds.x))[1:]
        declared = ev.graph.input_shape
        mismatch = ds.layout != model_format
        if declared and len(declared) == len(shape) and tuple(declared) != shape \
                and sorted(d for d in declared if d) == sorted(shape):
            mismatch = True
        if mismatch:
            out.append(Finding(
                code=CODE, area="data", severity="error",
                title=f"the {ds.name} images look {ds.layout.replace('_', ' ')} but the model is "
                      f"{model_format.replace('_', ' ')}",
                explanation=(
                    f"The {ds.name} images have shape {shape} per sample, whose channel axis "
                    f"(size 1, 3 or 4) is on the {'first' if ds.layout == 'channels_first' else 'last'}"
                    f" side, while the model takes {model_format.replace('_', ' ')} input"
                    f"{f' {tuple(declared)}' if declared else ''}. Either it fails on the "
                    f"shapes, or it silently treats rows as channels and learns nonsense."),
                evidence={"dataset": ds.name, "sample_shape": list(shape),
                          "model_input_shape": list(declared) if declared else None,
                          "data_layout": ds.layout, "model_layout": model_format},
                fix=Fix(summary="move the channel axis",
                        code=snippet(ev, keras="x = np.transpose(x, (0, 2, 3, 1))  # NCHW -> NHWC",
                                     torch="x = x.permute(0, 3, 1, 2)  # NHWC -> NCHW"))))
    if out:
        return out
    return [Passed(CODE, f"data and model are both {model_format.replace('_', ' ')}",
                   {"layout": model_format})]
