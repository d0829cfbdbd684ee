"""Findings of the differential diagnosis (``cnndoctor/differential.py``): the intervention that
recovered an unexplained training symptom, named as its cause with the figures.

* the learning rate divided by 10-1000 recovers training: ``lr-too-high``;
* the learning rate multiplied by 10 recovers it: ``lr-too-low``;
* ReLU in place of saturating activations recovers it: ``vanishing-gradient`` (the cause is the
  saturating stack), with the swap as the fix.
"""
from __future__ import annotations

from ..frameworks.torch.schedules import rate_words, torch_rate_fix
from . import Finding, Fix, Passed, register, snippet

AREA = "training"


def _figures(d: dict) -> dict:
    r, b = d["recovered"], d["baseline"]
    return {"user_lr": d["user_lr"], "symptoms": d["symptoms"],
            "accuracy_as_trained": b["accuracy"], "loss_as_trained": [b["loss_first"],
                                                                      b["loss_last"]],
            "loss_finite_as_trained": b["finite"],
            "intervention": r["intervention"], "accuracy_with_intervention": r["accuracy"],
            "recovered_loss": [r["loss_first"], r["loss_last"]], "steps": d["steps"],
            "measured_on": d["measured_on"],
            "tried": [t.get("intervention") for t in d["tried"]]}


def _lr_finding(ev, d: dict, code: str) -> list:
    r = d["recovered"]
    user, new = d["user_lr"], float(r["value"])
    figures = {**_figures(d), "suggested_lr": new}
    b = d["baseline"]
    as_trained = ("the loss became NaN" if not b["finite"] else
                  f"held-out accuracy {b['accuracy']:.0%}")
    higher = code == "lr-too-high"
    return [Finding(
        code=code, area=AREA, severity="error",
        title=(f"{rate_words(ev.schedule)} {user:.3g} is too {'high' if higher else 'low'}: "
               f"at {new:.3g} "
               f"the same model trains ({as_trained} -> {r['accuracy']:.0%} in "
               f"{d['steps']} steps)"),
        explanation=(f"{', '.join(d['symptoms'])} had no other cause in this report, so copies "
                     f"of the model were trained from the same seed with only the learning "
                     f"rate changed. At {new:.3g} instead of {user:.3g} the loss fell from "
                     f"{r['loss_first']:.3g} to {r['loss_last']:.3g} and held-out accuracy "
                     f"reached {r['accuracy']:.0%}: "
                     + ("your rate makes every update overshoot, so the weights blow up or the "
                        "units die." if higher else
                        "your rate moves the weights too little to learn in a useful time.")),
        evidence=figures,
        fix=Fix(f"use a learning rate of about {new:.2g}",
                snippet(ev, keras=f"optimizer.learning_rate = {new:.2g}   # or in the "
                                  f"optimizer's constructor",
                        torch=torch_rate_fix(new, ev.schedule))))]


@register("lr-too-high", AREA, needs=("probe:differential",))
def lr_too_high(ev):
    d = ev.probes["differential"]
    r = d.get("recovered")
    if r and r["kind"] == "lr" and r["value"] < (d["user_lr"] or 0):
        return _lr_finding(ev, d, "lr-too-high")
    return []


@register("lr-too-low", AREA, needs=("probe:differential",))
def lr_too_low(ev):
    d = ev.probes["differential"]
    r = d.get("recovered")
    if r and r["kind"] == "lr" and r["value"] > (d["user_lr"] or 0):
        return _lr_finding(ev, d, "lr-too-low")
    return []


@register("vanishing-gradient", AREA, needs=("probe:differential",))
def saturating_stack(ev):
    d = ev.probes["differential"]
    r = d.get("recovered")
    if not r or r["kind"] != "relu":
        return []
    layers = r["value"]
    return [Finding(
        code="vanishing-gradient", area=AREA, severity="error",
        title=(f"saturating activations in {len(layers)} layer(s) stop the gradients: with ReLU "
               f"the same model trains ({d['baseline']['accuracy']:.0%} -> "
               f"{r['accuracy']:.0%} in {d['steps']} steps)"),
        explanation=("Sigmoid and tanh flatten out away from zero, so each one multiplies the "
                     "gradient by less than 1 and a stack of them lets almost nothing reach the "
                     "first layers. A copy with ReLU in their place learned."),
        evidence={**_figures(d), "layers": layers},
        fix=Fix("use ReLU (or batch normalization before the activation) in the hidden layers",
                snippet(ev, keras="keras.layers.Dense(n, activation='relu')",
                        torch="nn.ReLU()  # in place of nn.Sigmoid() / nn.Tanh()")))]
