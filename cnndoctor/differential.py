"""Differential diagnosis: when a training symptom has no cause in the report, test hypotheses.

A symptom (the loss does not fall, turns NaN, gradients vanish or explode, one batch cannot be
fitted) that no finding present explains is put to cheap interventions, each a short training
of a copy from the same seed: the learning rate divided by 10, 100 and 1000, or multiplied by
10; hidden sigmoid / tanh activations swapped for ReLU. The first that recovers training
(held-out accuracy up by RECOVERY_GAIN, a finite loss that falls) is the answer; the checks in
``cnndoctor/checks/differential.py`` name it (``lr-too-high``, ``lr-too-low``, ...) with the
figures. The probe gathers; those checks judge.
"""
from __future__ import annotations

import math
import time

from . import graph as g
from . import runtime as rt
from .ranking import causes_of

#: The symptoms that trigger the interventions (issue 11). Dead ReLU units (half of a layer or
#: more: a healthy layer keeps 0-12% dead) come from a learning rate that throws the weights too
#: far as often as from a cause the static checks see (the dead-relu check's own explanation);
#: they are never a root cause themselves, so they do not explain the other symptoms away either.
SYMPTOMS = ("no-learning", "loss-plateau", "cannot-overfit-batch", "vanishing-gradient",
            "exploding-gradient", "nan-loss", "dead-relu")
#: Steps of each intervention run, and a time limit per run (a safety net for slow models).
#: 150 steps at quick: SGD at learning rate 20 on the MNIST subset, divided by 100, reaches
#: ~85% held-out accuracy in that many steps (tests/test_verify.py), 80 steps proved too few
#: for lr / 10 candidates to show their effect beside the baseline.
STEPS = {"quick": 150, "standard": 300, "thorough": 600}
SECONDS = {"quick": 8.0, "standard": 30.0, "thorough": 120.0}
#: All interventions together stop being started past this (quick stays quick on slow models).
TOTAL_SECONDS = {"quick": 30.0, "standard": 120.0, "thorough": 480.0}
#: Training images per run (a seeded subset), like the training probe's budget.
MAX_TRAIN = {"quick": 1024, "standard": 2048, "thorough": 5000}
#: An intervention "recovers training" when held-out accuracy rises by at least this much over
#: the same run as the user has it (10 points: far above the 1-2 point seed noise of our cases).
RECOVERY_GAIN = 0.10
#: Learning-rate factors tried (up only for symptoms a too-low rate can cause), ordered by how
#: close the rate comes to the optimizer's usual one (TYPICAL_LR).
LR_DOWN = (0.1, 0.01, 0.001)
LR_UP = (10.0, 100.0, 1000.0)
#: Where each optimizer family usually trains a small CNN (the frameworks' defaults: Adam,
#: RMSprop, Nadam 1e-3; Adadelta 1.0 as in Keras 2's examples; SGD 0.01-0.1, Karpathy's and
#: fastai's usual range): the candidate rates are tried nearest to it first.
TYPICAL_LR = {"sgd": 0.05, "adadelta": 1.0, "adagrad": 0.01}
TYPICAL_LR_DEFAULT = 1e-3
#: Symptoms for which a higher learning rate is a hypothesis (a too-low rate cannot make NaN).
LR_UP_FOR = ("no-learning", "loss-plateau", "vanishing-gradient", "cannot-overfit-batch")
SATURATING = ("sigmoid", "tanh", "hard_sigmoid", "softsign")


def unexplained(findings) -> list:
    """Symptoms of severity error or warning that no finding present explains."""
    present = {f.code for f in findings}
    out = []
    for f in findings:
        if f.evidence.get("trainable_weights") == 0:
            continue  # every weight frozen: no learning rate can move them
        if f.code in SYMPTOMS and f.severity in ("error", "warning"):
            if not [c for c in causes_of(f.code) if c in present and c != f.code
                    and c not in SYMPTOMS]:
                out.append(f)
    return out


def typical_lr(ev) -> float:
    opt = ev.optimizer if ev.optimizer is not None else getattr(ev.model, "optimizer", None)
    name = type(opt).__name__.lower() if opt is not None and not isinstance(opt, str) \
        else str(opt or "").lower()
    return next((v for k, v in TYPICAL_LR.items() if k in name), TYPICAL_LR_DEFAULT)


def _saturating_layers(graph) -> list[str]:
    last = graph.output_layer
    return [layer.name for layer in graph.layers
            if layer is not last and (layer.activation or "") in SATURATING
            and layer.kind in (g.WEIGHTED, g.ACTIVATION)]


def _summ(run: dict) -> dict:
    curve = [v for v in run["curve"] if v is not None]
    return {"accuracy": run["score"], "finite": run["finite"] and len(curve) == len(run["curve"]),
            "loss_first": curve[0] if curve else None, "loss_last": curve[-1] if curve else None,
            "steps": run["steps"], "stopped": run["stopped"]}


def _recovered(base: dict, new: dict) -> bool:
    if not new["finite"] or new["loss_last"] is None or new["loss_first"] is None:
        return False
    return (new["accuracy"] - base["accuracy"] >= RECOVERY_GAIN
            and new["loss_last"] < new["loss_first"])


def investigate(ev, ctx, findings):
    """Run the interventions for unexplained symptoms; returns the second-pass check results
    (findings, passed, skipped) or None when nothing needed investigating."""
    from .checks import run_checks
    from .verify import base_trial, run_trial

    symptoms = unexplained(findings)
    if not symptoms or ev.train is None or ev.train.labels is None or ev.model is None:
        return None
    budget = ctx.budget if ctx.budget in STEPS else "quick"
    start = time.perf_counter()
    codes = [f.code for f in symptoms]
    ctx.say(f"differential diagnosis of {', '.join(codes)}: trying the cheap interventions")
    trial = base_trial(ev, budget)
    n = min(len(trial.x_train), MAX_TRAIN[budget])
    trial = trial.change(x_train=trial.x_train[:n], y_train=trial.y_train[:n])
    steps, secs = STEPS[budget], SECONDS[budget]
    user_lr = rt.user_lr(ev.model, ev.optimizer, ev.schedule)
    base = _summ(run_trial(trial, ctx.seed, steps, secs))
    tried = []
    plan = []
    if user_lr:
        factors = list(LR_DOWN) + (list(LR_UP) if set(codes) & set(LR_UP_FOR) else [])
        # nearest to the rate this optimizer usually works at first: the likeliest hypothesis
        typical = typical_lr(ev)
        factors.sort(key=lambda f: abs(math.log10(user_lr * f / typical)))
        plan += [("lr", user_lr * f) for f in factors]
    sat = _saturating_layers(ev.graph)
    if sat:
        plan.append(("relu", sat))
    recovered = None
    for kind, value in plan:
        if time.perf_counter() - start > TOTAL_SECONDS[budget]:
            tried.append({"intervention": "the rest", "skipped": "out of the budget's time"})
            break
        if kind == "lr":
            t, name = trial.change(lr=float(value)), f"learning rate {value:.3g}"
        else:
            try:
                model = trial.model
                for layer in value:
                    model = _relu_for(model, layer, ev.framework)
            except Exception as exc:  # the surgery does not fit this model: not a hypothesis
                tried.append({"intervention": "ReLU for " + ", ".join(value),
                              "skipped": str(exc)})
                continue
            t, name = trial.change(model=model), "ReLU instead of " + ", ".join(value)
        res = _summ(run_trial(t, ctx.seed, steps, secs))
        res.update({"intervention": name, "kind": kind,
                    "value": value if kind == "lr" else list(value),
                    "recovered": _recovered(base, res)})
        tried.append(res)
        if res["recovered"]:
            recovered = res
            break
    ev.probes["differential"] = {
        "symptoms": codes, "user_lr": user_lr, "baseline": base, "tried": tried,
        "recovered": recovered, "steps": steps, "train_images": n,
        "measured_on": trial.target_name, "seconds": time.perf_counter() - start}
    ev.figures["differential"] = ev.probes["differential"]
    return run_checks(ev, needing="probe:differential")


def _relu_for(model, layer: str, framework: str):
    from .frameworks.keras import surgery as keras_surgery
    from .frameworks.torch import surgery as torch_surgery

    if framework == "keras":
        return keras_surgery.set_activation(model, layer, "relu")
    from torch import nn

    return torch_surgery.replace(model, layer, lambda old: nn.ReLU())
