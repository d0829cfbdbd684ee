"""channel-layout: the images transposed to the layout the model takes."""
from __future__ import annotations

import numpy as np

from . import CannotApply, Trial, register


class Transpose:
    def __init__(self, axes):
        self.axes = tuple(axes)

    def __call__(self, x):
        x = np.asarray(x)
        return np.ascontiguousarray(np.transpose(x, self.axes)) if x.ndim == 4 else x

    def __repr__(self):
        return f"np.transpose(x, {self.axes})"


@register("channel-layout", treats=("channel-layout",),
          summary="images transposed to the model's layout")
def channel_layout(trial: Trial, finding, ev) -> Trial:
    data, model = finding.evidence.get("data_layout"), finding.evidence.get("model_layout")
    if data == model or not data or not model:
        raise CannotApply("the layouts are not known")
    axes = (0, 2, 3, 1) if model == "channels_last" else (0, 3, 1, 2)
    fn = Transpose(axes)
    return trial.change(transform=fn, params={"inputs": repr(fn)})
