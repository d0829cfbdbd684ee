"""domain-shift / fragile-to-<perturbation>: training with the augmentations (and the input
normalization) that the robustness probe points at, measured on the reference samples.

The probe (``probes.robustness.suggest_fix``) names what to change; this fix retrains fresh
copies over seeds without and with it (``probes.robustness.verify_fix``), so it verifies itself
rather than through the generic trial.
"""
from __future__ import annotations

from . import CannotApply, Trial, register


def _plan(ev):
    from ..probes.robustness import suggest_fix

    suggestion = suggest_fix(ev.probes.get("domain_shift"), ev.probes.get("perturbation_sweep"))
    if not suggestion["plan"] and not suggestion["normalize"]:
        raise CannotApply("the robustness probe points at no augmentation or preprocessing")
    return suggestion


def verify_augmentation(ev, finding, *, seeds, progress=None, executor=None) -> dict:
    from ..probes.robustness import verify_fix

    if ev.train is None or ev.train.labels is None:
        raise CannotApply("no labelled training data to retrain on")
    cached = ev.probes.get("robustness_fix")
    if not cached or cached.get("skipped") or cached.get("seeds") != list(seeds):
        suggestion = _plan(ev)
        cached = verify_fix(ev, suggestion["plan"], suggestion["normalize"], seeds=list(seeds),
                            progress=progress)
        cached["reasons"] = suggestion["reasons"]
        ev.probes["robustness_fix"] = cached
    return {"before": cached["before"]["values"], "after": cached["after"]["values"],
            "metric": "accuracy", "measured_on": cached["measured_on"],
            "params": {"augmentations": cached["augmentations"],
                       "normalize": cached["normalize_steps"]},
            "extra": {"validation_before": cached["validation_before"],
                      "validation_after": cached["validation_after"],
                      "epochs": cached["epochs"], "train_images": cached["train_images"],
                      "seconds": cached["seconds"]}}


@register("augment-for-robustness", treats=("domain-shift", "fragile-to-*"),
          summary="train with the augmentations the robustness probe points at",
          verify=verify_augmentation)
def augmentation(trial: Trial, finding, ev) -> Trial:
    from ..augment import Augment, Normalize, layout_of, value_range

    suggestion = _plan(ev)
    vr = value_range(ev.train.images)
    layout = layout_of(ev.train)
    aug = Augment(suggestion["plan"], value_range=(vr[0].tolist(), vr[1].tolist()),
                  layout=layout) if suggestion["plan"] else None
    changes = {"augment": aug}
    if suggestion["normalize"]:
        changes["transform"] = Normalize.fit(ev.train.images, suggestion["normalize"],
                                             value_range=vr, layout=layout)
    return trial.change(**changes, params={"augmentations": suggestion["plan"],
                                           "normalize": suggestion["normalize"]})
