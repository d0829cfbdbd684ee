"""stale-batchnorm: batch norm's running statistics set to those of training images, on a copy
of the user's trained weights. Nothing is retrained: only the statistics change, so what the
copy gains on held-out images is what the stale statistics cost."""
from __future__ import annotations

from . import Trial, register


@register("reestimate-batchnorm", treats=("stale-batchnorm",),
          summary="batch norm's running statistics re-estimated on training images",
          reproduces={"retrain": False})
def reestimate_batchnorm(trial: Trial, finding, ev) -> Trial:
    from ..verify import BN_SAMPLES

    return trial.change(reestimate_batchnorm=True,
                        params={"training images": min(len(trial.y_train), BN_SAMPLES)})
