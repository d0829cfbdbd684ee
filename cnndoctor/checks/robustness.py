"""domain-shift and fragile-to-<perturbation>: why a model that validates well fails on real inputs.

``domain-shift`` reads the ``domain_shift`` probe: the image properties in which the reference
(real-world) samples differ from the training images, with train vs reference figures and an
effect size, and the accuracy on labelled reference samples against validation.
``fragile-to-<perturbation>`` reads the ``perturbation_sweep`` probe: perturbations a person would
ignore that cost the model much accuracy. Both share one fix, the augmentations the evidence
points to (``probes.robustness.suggest_fix``: a normalization and/or augmentations), verified by retraining in ``cnndoctor/fixes/augmentation.py``
when the user asks for verification.
"""
from __future__ import annotations

import math

from . import Finding, Fix, Passed, Skipped, register
from ..augment import PERTURBATIONS, Augment, Normalize, layout_of, value_range
from ..probes.robustness import (ACCURACY_DROP, FRAGILE_DROP, SHIFT_EFFECT, SHIFT_EFFECT_ERROR,
                                 strongest_level, suggest_fix)

SHIFT = "domain-shift"
#: Cramer's V between the dominant color channel and the label from which the color of the
#: training images is a shortcut (the ``spurious-correlation`` check's warning level).
COLOR_SHORTCUT_V = 0.5


def _fmt(value: float, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if unit == "pixels":
        return f"{value:.1f} px"
    if unit == "share of images":
        return f"{value:.0%}"
    return f"{value:.2f}"


def _describe_values(summary: dict, unit: str) -> str:
    if not summary.get("n"):
        return "n/a"
    mid, lo, hi = summary["median"], summary["p5"], summary["p95"]
    if abs(hi - lo) < 1e-9:
        return _fmt(mid, unit)
    return f"{_fmt(mid, unit)} ({_fmt(lo, unit)}-{_fmt(hi, unit)})"


def _differing_rows(shift: dict) -> list[dict]:
    rows = []
    for name in shift["differing"]:
        c = shift["properties"][name]
        rows.append({"property": name, "meaning": c["meaning"], "unit": c["unit"],
                     "train": _describe_values(c["train"], c["unit"]),
                     "reference": _describe_values(c["reference"], c["unit"]),
                     "train_median": c["train"]["median"],
                     "reference_median": c["reference"]["median"],
                     "effect": round(c["effect"], 2),
                     "outside_training": round(c["outside"], 3)})
    return rows


def _drop_is_significant(acc: dict) -> tuple[bool, float, float]:
    """(significant, drop, standard error): the drop must exceed ``ACCURACY_DROP`` and twice the
    combined binomial standard error of the two accuracies."""
    a, n_a = acc["compared_accuracy"], acc["n_compared"]
    b, n_b = acc["reference_accuracy"], acc["n_reference"]
    se = math.sqrt(a * (1 - a) / max(n_a, 1) + b * (1 - b) / max(n_b, 1))
    drop = a - b
    return drop >= ACCURACY_DROP and drop > 2 * se, drop, se


def fix_code(ev, plan: dict[str, float], normalize_steps=None, full: bool = True) -> str:
    """The fix as code for the user's framework: the same ``Normalize`` and ``Augment`` the
    verification trained with. ``full=False`` leaves out how to feed them to training."""
    vr = value_range(ev.train.images)
    layout = layout_of(ev.train)
    lines = ["import numpy as np",
             "from cnndoctor.augment import Augment, Normalize  # plain numpy: copy them if you "
             "like"]
    if normalize_steps:
        norm = Normalize.fit(ev.train.images, normalize_steps, value_range=vr, layout=layout)
        lines += [f"normalize = {norm!r}",
                  "x_train, x_val = normalize(x_train), normalize(x_val)",
                  "# ... and every real input before predicting: model.predict(normalize(x))"]
    if plan:
        aug = Augment(plan, value_range=(vr[0].tolist(), vr[1].tolist()), layout=layout)
        lines.append(f"augment = {aug!r}")
    head = "\n".join(lines) + "\n"
    if not plan:
        return head + "model.fit(x_train, y_train, ...)  # as before, on normalized images"
    if not full:
        return head + "# feed training batches through augment(x_batch, rng): see domain-shift"
    if ev.framework == "keras":
        bs = ev.batch_size or 32
        return head + (
            "\n# train on augmented batches (augment(x_batch, rng) -> x_batch)\n"
            f"def batches(x, y, batch_size={bs}, seed=0):\n"
            "    rng = np.random.default_rng(seed)\n"
            "    while True:\n"
            "        idx = rng.permutation(len(x))\n"
            "        for i in range(0, len(x) - batch_size + 1, batch_size):\n"
            "            b = idx[i:i + batch_size]\n"
            "            yield augment(x[b], rng), y[b]\n\n"
            f"model.fit(batches(x_train, y_train), steps_per_epoch=len(x_train) // {bs}, "
            "epochs=epochs, validation_data=(x_val, y_val))")
    return head + (
        "\nrng = np.random.default_rng(0)\n"
        "for xb, yb in train_loader:  # in your training loop, before the forward pass\n"
        "    xb = torch.from_numpy(augment(xb.numpy(), rng))\n"
        "    ...")


def _plan_words(plan: dict[str, float]) -> str:
    return ", ".join(PERTURBATIONS[k].describe(v) for k, v in plan.items())


def _normalize_words(steps) -> str:
    return "; ".join({"intensity": "background, polarity and contrast",
                      "geometry": "object cropped, scaled and centred"}[s] for s in steps)


def _fix_words(plan: dict[str, float], normalize_steps) -> str:
    parts = []
    if normalize_steps:
        parts.append(f"normalize training and real images alike "
                     f"({_normalize_words(normalize_steps)})")
    if plan:
        parts.append(f"augment training with {_plan_words(plan)}")
    return "; ".join(parts)


@register(SHIFT, "data", needs=("train", "reference", "probe:domain_shift"),
          explains=("fragile-to-*",))
def check_domain_shift(ev):
    shift = ev.probes["domain_shift"]
    sweep = ev.probes.get("perturbation_sweep")
    acc = shift.get("accuracy") or {}
    rows = _differing_rows(shift)
    largest = max(shift["properties"].items(), key=lambda kv: kv[1]["effect"])
    evidence = {"differing_properties": rows,
                "thresholds": {"effect": SHIFT_EFFECT, "effect_error": SHIFT_EFFECT_ERROR,
                               "accuracy_drop": ACCURACY_DROP},
                "n_train_measured": shift["n_train"], "n_reference": shift["n_reference"]}
    labelled = "reference_accuracy" in acc
    significant, drop = False, None
    if labelled:
        significant, drop, se = _drop_is_significant(acc)
        evidence["accuracy"] = {
            "reference": acc["reference_accuracy"], acc["compared_with"]: acc["compared_accuracy"],
            "reference_loss": acc["reference_loss"], f"{acc['compared_with']}_loss":
                acc["compared_loss"],
            "loss_ratio": acc["reference_loss"] / max(acc["compared_loss"], 1e-9),
            "drop": drop, "standard_error": se, "n_reference": acc["n_reference"],
            "reference_per_class": acc.get("reference_per_class")}
    closest = shift.get("closest") or {}
    if closest.get("path"):
        evidence["looks_like_training_after"] = [s["describe"] for s in closest["path"]]
        evidence["property_distance"] = {"before": round(closest["distance_before"], 2),
                                         "after": round(closest["distance_after"], 2)}
    if not rows and not significant:
        line = (f"the reference samples match the training images on {len(shift['properties'])} "
                f"properties (largest effect: {largest[0]} {largest[1]['effect']:.2f} < "
                f"{SHIFT_EFFECT})")
        if labelled:
            line += (f"; accuracy {acc['reference_accuracy']:.1%} on them vs "
                     f"{acc['compared_accuracy']:.1%} on {acc['compared_with']}")
        return [Passed(SHIFT, line, {"effects": {k: round(c["effect"], 3) for k, c in
                                                 shift["properties"].items()},
                                     **({"accuracy": evidence["accuracy"]} if labelled else {})})]

    fragile = {}
    if sweep and not sweep.get("skipped"):
        fragile = {k: v["worst"] for k, v in sweep["perturbations"].items()
                   if v["worst"]["drop"] >= FRAGILE_DROP}
    linked = {k: sorted(set(PERTURBATIONS[k].properties) & set(shift["differing"]))
              for k in fragile}
    linked = {k: v for k, v in linked.items() if v}
    if linked:
        evidence["fragile_to_what_differs"] = {
            k: {"properties": v, "accuracy_drop": fragile[k]["drop"], "at": fragile[k]["describe"]}
            for k, v in linked.items()}

    # Does what differs explain the failure? Validation images changed to look like the
    # reference (the matching path) show how much accuracy the measured differences cost.
    simulated = shift.get("simulated")
    if simulated:
        evidence["validation_made_to_look_like_reference"] = simulated
    explains = simulated["drop"] >= ACCURACY_DROP if simulated else None
    if labelled:
        # An error when this alone explains the failure: accuracy falls on the reference samples
        # and the model loses accuracy on images changed only in the properties that differ (or
        # no simulation ran to say otherwise).
        severity = "error" if (significant and rows and explains is not False) else "warning"
    else:
        strong = [r for r in rows if r["effect"] >= SHIFT_EFFECT_ERROR]
        severity = "error" if (strong and explains) else "warning"

    names = [r["property"] for r in rows]
    top = rows[:4]
    figures = "; ".join(f"{r['property']} {r['train']} in training vs {r['reference']}"
                        for r in top)
    if labelled:
        acc_words = (f"accuracy {acc['reference_accuracy']:.0%} on the reference samples vs "
                     f"{acc['compared_accuracy']:.0%} on {acc['compared_with']}")
        title = (f"the reference samples differ from the training images ({', '.join(names[:3])}"
                 f"{', ...' if len(names) > 3 else ''}): {acc_words}" if rows else
                 f"{acc_words}, but no measured image property differs")
    else:
        title = (f"the reference samples differ from the training images in "
                 f"{', '.join(names[:3])}{', ...' if len(names) > 3 else ''}")

    if rows:
        explanation = (
            f"The real-world samples you gave differ from the training images in ways a person "
            f"ignores but the network never saw: {figures} (median, 5th-95th percentile; the "
            f"typical reference image lies {rows[0]['effect']:.1f} training spreads away in "
            f"{rows[0]['property']}). ")
        if labelled:
            explanation += (
                f"On them a model with {acc['compared_accuracy']:.0%} {acc['compared_with']} "
                f"accuracy gets {acc['reference_accuracy']:.0%} (loss "
                f"{evidence['accuracy']['loss_ratio']:.1f}x higher). ")
        if simulated:
            explanation += (
                f"Validation images changed only in these properties ("
                f"{', '.join(simulated['path'])}) score {simulated['accuracy']:.0%} instead of "
                f"{simulated['clean_accuracy']:.0%}"
                + (": the differences measured here explain the failure. " if explains else
                   ": the model tolerates these differences, so the gap lies mostly in the "
                   "content (other writers, other objects) or in the labels. "))
        if linked:
            explanation += ("The perturbation sweep agrees: the model loses "
                            + ", ".join(f"{fragile[k]['drop']:.0%} under {fragile[k]['describe']}"
                                        for k in linked)
                            + " (see the fragile-to findings). ")
        explanation += ("More filters or dropout treat the symptom; training on images that vary "
                        "in these properties (augmentation), or preprocessing the real images to "
                        "look like the training data, treats the cause.")
    else:
        explanation = (
            f"Accuracy on the reference samples is {drop:.0%} lower than on "
            f"{acc['compared_with']}, but none of the {len(shift['properties'])} measured image "
            f"properties differs (largest effect: {largest[0]} {largest[1]['effect']:.2f}). The "
            f"difference lies in the content (other writers, other objects) or in the labels: "
            f"check that the reference labels use the same class order, and collect training "
            f"data like the reference samples.")

    suggestion = suggest_fix(shift, sweep)
    plan, steps = suggestion["plan"], suggestion["normalize"]
    normalized = shift.get("normalize")
    if normalized:
        evidence["after_normalizing"] = {
            "steps": normalized["steps"],
            "still_differing": _differing_rows({"differing": normalized["differing"],
                                                "properties": normalized["properties"]}),
            "user_model_reference_accuracy": normalized.get("user_model_reference_accuracy"),
            "user_model_compared_accuracy": normalized.get("user_model_compared_accuracy")}
        if normalized.get("user_model_reference_accuracy") is not None and labelled:
            explanation += (
                f" Normalizing the real images to look like the training images ("
                f"{_normalize_words(steps)}) already lifts your model, without retraining, from "
                f"{acc['reference_accuracy']:.0%} to "
                f"{normalized['user_model_reference_accuracy']:.0%} on them.")
    if plan or steps:
        summary = _fix_words(plan, steps)
        if plan:
            summary += " (each augmentation at a random strength up to that, on half the images)"
        fix = Fix(summary=summary[0].upper() + summary[1:], code=fix_code(ev, plan, steps))
        evidence["fix_parts"] = {"normalize": steps, "augment": plan,
                                 "why": suggestion["reasons"]}
    else:
        fix = Fix(summary="collect or label training images like the reference samples")
    return [Finding(code=SHIFT, area="data", severity=severity, title=title,
                    explanation=explanation, evidence=evidence, fix=fix)]


def _color_shortcut(ev) -> float | None:
    """Cramer's V of the dominant color channel with the label, as the spurious-correlation check
    measured it (None when it did not run)."""
    measured = (ev.figures.get("nuisance_properties") or {}).get("dominant color channel")
    return None if not measured else float(measured.get("cramers_v", 0.0))


@register("fragile-to-*", "robustness", needs=("probe:perturbation_sweep",))
def check_fragile(ev):
    sweep = ev.probes["perturbation_sweep"]
    shift = ev.probes.get("domain_shift")
    shift = shift if shift and not shift.get("skipped") else None
    clean = sweep["clean_accuracy"]
    out = []
    tolerated = []
    for name, res in sweep["perturbations"].items():
        worst = res["worst"]
        code = f"fragile-to-{name}"
        if worst["drop"] < FRAGILE_DROP:
            tolerated.append(f"{name} (worst {worst['accuracy']:.0%} at {worst['describe']})")
            continue
        # Fragility alone does not explain a failure unless real inputs show the perturbation;
        # domain-shift says whether they do (and is the error when so). With reference samples,
        # or a color shortcut in the data, it is part of a story: a warning. Without either it
        # describes the model (every small CNN is fragile to something), not a bug: info, so
        # that a healthy model is not flagged for what nobody asked it to tolerate.
        severity = "warning" if shift else "info"
        levels = ", ".join(f"{r['accuracy']:.0%} at {r['describe']}" for r in res["levels"])
        evidence = {"clean_accuracy": clean, "data": sweep["data"], "n": sweep["n"],
                    "levels": res["levels"], "worst": worst,
                    "threshold": {"drop": FRAGILE_DROP}}
        explanation = (f"On {sweep['n']} {sweep['data']} images the model is right "
                       f"{clean:.0%} of the time; with {levels}. A person reads these images "
                       f"without noticing the change; the network has only seen images without "
                       f"it. ")
        if shift:
            touched = sorted(set(PERTURBATIONS[name].properties) & set(shift["differing"]))
            if touched:
                rows = {r["property"]: r for r in _differing_rows(shift)}
                evidence["reference_differs_in"] = {
                    k: {"train": rows[k]["train"], "reference": rows[k]["reference"]}
                    for k in touched}
                explanation += ("Your reference samples differ from the training images in "
                                + "; ".join(f"{k} ({rows[k]['train']} vs {rows[k]['reference']})"
                                            for k in touched)
                                + ", which is this perturbation: part of the domain-shift story. ")
        if name == "color":
            v = _color_shortcut(ev)
            if v is not None:
                evidence["color_label_association"] = v
                if v >= COLOR_SHORTCUT_V:
                    explanation += (
                        f"One story with spurious-correlation: the dominant color channel of the "
                        f"training images predicts the label (Cramer's V {v:.2f}), so the network "
                        f"learned color instead of shape, and changing the color takes the "
                        f"shortcut away. Break the color-label link in the data, or randomise "
                        f"color during training. ")
                    evidence["linked_finding"] = "spurious-correlation"
                    severity = "warning"
        plan = {name: strongest_level(name, res)}
        fix_summary = (f"augment with {PERTURBATIONS[name].describe(plan[name])} at random "
                       f"strengths (on half of the images)")
        if name == "inversion":
            fix_summary += ", or invert inputs whose background is bright before predicting"
        out.append(Finding(
            code=code, area="robustness", severity=severity,
            title=(f"accuracy falls from {clean:.0%} to {worst['accuracy']:.0%} under "
                   f"{worst['describe']}"),
            explanation=explanation.strip(), evidence=evidence,
            fix=Fix(summary=fix_summary,
                    code=fix_code(ev, plan, full=not (shift and shift["differing"])))))
    if not out:
        out.append(Passed("fragile-to-*", f"no perturbation costs {FRAGILE_DROP:.0%} of accuracy "
                                          f"(clean {clean:.0%}): " + "; ".join(tolerated),
                          {k: v["worst"] for k, v in sweep["perturbations"].items()}))
    for name, why in sweep.get("not_applicable", {}).items():
        out.append(Skipped(f"fragile-to-{name}", why))
    return out


__all__ = ["check_domain_shift", "check_fragile", "fix_code", "PROPERTIES"]
