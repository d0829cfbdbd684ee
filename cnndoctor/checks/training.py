"""Training findings: what the probes saw when a copy of the model trained.

Reads ``ev.probes["train" | "overfit_batch" | "lr_range" | "seeds" | "init"]`` (filled by
``cnndoctor/probes/training.py``) and judges. Every threshold below was calibrated on the
reference cases (``cnndoctor.cases``): the healthy variants, over several seeds and both
frameworks, must pass every check here, and the broken ones must show what CASES.md says.
The measured figures are in ``docs/calibration.md``-style comments next to each constant.
"""
from __future__ import annotations

import math

from .. import graph as g
from ..frameworks.torch.schedules import rate_words, torch_rate_fix
from . import Finding, Fix, Passed, Skipped, register, snippet

# ---------------------------------------------------------------------------------------------
# Thresholds

#: no-learning: the mean loss of the last tenth of the probe's steps differs from the first
#: tenth's by less than this share. Case 2 (double softmax on 0-255 inputs, SGD 1e-3): 3e-4 over
#: 100 epochs (CASES.md); healthy reference cases drop by 20-95 % within the quick probe.
NO_LEARNING_LOSS_CHANGE = 0.01
#: layer names listed in the title of an all-frozen no-learning finding (the rest are counted)
FROZEN_LAYERS_SHOWN = 4
#: ... or the loss froze halfway (the second half moves by less than that share too) while the
#: model stays at chance: training accuracy within CHANCE_MARGIN of the majority-class share.
#: Case 2 (seed 0 of the report's setup) falls in a few steps to 0.8133 and sits there.
CHANCE_MARGIN = 0.05
#: ... or the weights barely moved (relative change of the weights over the whole probe run)
#: while the model stays at chance: the loss of a model at chance still wiggles with each batch
#: (2% between the first and last tenth at batch 32), the weights do not. The zoo's 17 clean
#: models move theirs by 13-128% in the quick probe; with the learning rate / 1000 they move by
#: 0.02-0.13% (docs/benchmarks.md). 1% lies an order of magnitude from both.
NO_LEARNING_WEIGHT_CHANGE = 0.01
#: A loss that starts below this share of ln(C) belongs to a model that has already learned the
#: task (case 5's trained model starts the probe at 0.068 = 3% of ln 10 with 99% training
#: accuracy): its loss cannot fall by much, so a flat loss is not "no learning".
ALREADY_LEARNED_SHARE = 0.1
#: ... and it takes at least this many steps to say so.
MIN_STEPS = 20
#: loss-plateau: the final loss within this share of ln(C), and never below (1 - this share) of
#: it during the run: the model predicts the uniform distribution (chance level).
PLATEAU_BAND = 0.05
#: dead-relu on hidden layers: share of units never active over the recorded window. A healthy
#: ReLU layer keeps a few percent dead at most (healthy reference cases: 0-12 %); warning from
#: 50 %, error from 90 % (the layer barely passes anything on).
DEAD_WARN = 0.5
DEAD_ERROR = 0.9
#: dead-relu at initialisation (probe init_coverage, forward only on fresh weights): a ReLU layer
#: whose units all output 0 on this share of the images or more, averaged over the draws. Those
#: images reach the next layer as zeros and cannot be told apart. Case 2's two 2x2 filters: 17%
#: (Keras) and 27% (torch) over 8 draws; every healthy case and zoo model: 0% (docs/benchmarks.md).
NARROW_SILENT_SHARE = 0.05
#: ... seen on at least this many draws (one draw is one random initialisation).
NARROW_MIN_DRAWS = 2
#: The widening the fix suggests: units x this factor (the answer to case 2's report: 2 -> 6
#: filters, with padding='same').
WIDEN_FACTOR = 3
#: vanishing-gradient: RMS gradient of the first weighted layer below this share of the last
#: one's. Healthy reference cases stay within 0.05-5x (measured); 1e-3 is three decades below.
VANISHING_RATIO = 1e-3
#: ... or every gradient is this small relative to its weights (nothing can move at any sane
#: learning rate: update ratios of ~1e-3 per step need gradients near the weights' scale).
VANISHING_ABSOLUTE = 1e-7
#: exploding-gradient: the total gradient norm grows by this factor from the first recorded
#: steps to the last ones (healthy cases: gradients shrink or grow less than 10x).
EXPLODING_GROWTH = 100.0
#: ... while the loss does not fall: the mean loss of the last fifth of the run stays above this
#: share of the first fifth's. A model escaping its initial plateau can grow its gradient norm
#: 100x while learning (healthy case 3's GAP head: 0.26 -> 26 as its loss drops), which is not
#: an explosion; an explosion throws the weights about so that the loss stops improving.
EXPLODING_LOSS_SHARE = 0.9
#: lr range test: a sweep is conclusive when the smoothed loss falls by at least this share
#: somewhere (else the test says nothing about the learning rate).
LR_RANGE_MIN_FALL = 0.05
#: lr-too-low: the user's learning rate is this many times below the rate where the range test's
#: loss falls fastest, and the short run's loss fell by less than LR_LOW_MAX_PROGRESS.
LR_LOW_FACTOR = 100.0
LR_LOW_MAX_PROGRESS = 0.2
#: lr-too-high: the user's rate is at or above the rate where the range test diverged (error),
#: or above the rate of the lowest loss while the short run did not improve (warning).
#: cannot-overfit-batch: accuracy on the 16-sample batch after the test (Karpathy's recipe
#: expects a perfect fit; every healthy reference case fits it within 30 Adam steps).
OVERFIT_MIN_ACCURACY = 1.0
#: seed-instability: standard deviation of validation accuracy across seeds (in accuracy units),
#: and the p-value of the chi-square test against binomial sampling noise. Measured at "standard"
#: (5 seeds x 150 steps), 3 diagnosis seeds each: healthy case 1 0.011-0.018 (p 0.03-0.4),
#: broken case 1 0.047-0.175 (p < 1e-7). CASES.md: a fixed model's spread stays within 2 points.
SEED_STD_WARN = 0.03
SEED_STD_ERROR = 0.10
SEED_P_MAX = 0.001
#: overfitting: training minus validation accuracy at the end of the run, growing by at least
#: OVERFIT_GAP_GROWTH since the first epoch.
OVERFIT_GAP = 0.15
OVERFIT_GAP_GROWTH = 0.05
#: ... counting only epochs that trained on at least this share of the samples of a full one.
OVERFIT_FULL_EPOCH = 0.9

AREA = "training"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _g(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def _rel_change(first: float | None, last: float | None) -> float | None:
    if first is None or last is None:
        return None
    return abs(first - last) / max(abs(first), 1e-12)


# ---------------------------------------------------------------------------------------------
# nan-loss


@register("nan-loss", AREA, needs=("probe:train",))
def check_nan(ev):
    tr = ev.probes["train"]
    step = tr.get("nonfinite_step")
    grad_step = tr.get("nonfinite_grad_step")
    weights_ok = tr.get("weight_change", {}).get("finite", True)
    if step is None and grad_step is None and weights_ok:
        return [Passed("nan-loss", f"loss, gradients and weights stayed finite over "
                                   f"{tr['steps']} probe steps", {"steps": tr["steps"]})]
    where = (f"the loss became {_g(tr['history']['loss'][step])} at step {step + 1}"
             if step is not None else
             f"gradients became infinite/NaN at step {grad_step + 1}" if grad_step is not None
             else "weights became NaN/infinite")
    return [Finding(
        code="nan-loss", area=AREA, severity="error",
        title=f"training produces NaN or infinite values: {where}",
        explanation=("Once a NaN or infinity enters the weights, every later prediction is NaN and "
                     "training cannot recover. Usual causes: a learning rate so high that the "
                     "weights blow up, inputs far from unit scale, log of zero in a loss fed "
                     "probabilities that reach 0."),
        evidence={"nonfinite_loss_step": step, "nonfinite_gradient_step": grad_step,
                  "weights_finite": weights_ok, "loss_first": tr.get("loss_first"),
                  "loss_max": tr.get("loss_max"), "optimizer": tr.get("optimizer")},
        fix=Fix("lower the learning rate (see the range test), normalize the inputs, and "
                "clip gradients",
                snippet(ev, keras="optimizer = keras.optimizers.Adam(1e-3, clipnorm=1.0)",
                        torch="torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  "
                              "# before optimizer.step()")))]


# ---------------------------------------------------------------------------------------------
# no-learning and loss-plateau


def _cut_short(probe: dict, what: str) -> str:
    """A sentence when a probe was stopped by its time limit before its planned steps, else ""."""
    if probe.get("stopped") != "time" and not probe.get("cut_short"):
        return ""
    planned = probe.get("steps_planned") or probe.get("max_steps")
    of = f" of the {planned} planned" if planned else ""
    return (f" The {what} stopped after {probe.get('steps')}{of} steps at the time limit of the "
            f"budget (the model is slow to train here), so this only says what those steps showed "
            f"(information, not a problem found): run with a larger budget (--budget standard) "
            f"to let it finish.")


def _frozen_finding(ev, counts: dict):
    layers = counts["frozen_layers"]
    names = ", ".join(list(layers)[:FROZEN_LAYERS_SHOWN]) + (
        f" and {len(layers) - FROZEN_LAYERS_SHOWN} more" if len(layers) > FROZEN_LAYERS_SHOWN
        else "")
    return Finding(
        code="no-learning", area=AREA, severity="error",
        title=(f"the model cannot learn: all {counts['frozen']:,} of its weights are frozen "
               f"({len(layers)} layers: {names})"),
        explanation=("Every weight is marked as not trainable, so training computes the loss but "
                     "changes nothing: the loss stays where it starts to the last digit and the "
                     "accuracy stays at chance. Freezing is meant for a pretrained backbone, with "
                     "a head left trainable; here nothing was left trainable."),
        evidence={"trainable_weights": 0, "frozen_weights": counts["frozen"],
                  "frozen_per_layer": layers},
        fix=Fix("unfreeze the layers that must learn (at least the classifier head) and compile "
                "/ build the optimizer again",
                snippet(ev, keras="model.trainable = True  # or: layer.trainable = True on the "
                                  "head\nmodel.compile(optimizer=..., loss=...)",
                        torch="for p in model.parameters():  # or only the head's\n"
                              "    p.requires_grad_(True)\n"
                              "optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)")))


@register("no-learning", AREA, needs=("probe:trainable",))
def check_no_learning(ev):
    counts = ev.probes["trainable"]
    if counts.get("trainable") == 0 and counts.get("frozen"):
        return [_frozen_finding(ev, counts)]
    tr = ev.probes.get("train")
    if tr is None or tr.get("skipped"):
        return [Skipped("no-learning", tr["skipped"] if tr else
                        f"the train probe did not run at budget '{ev.budget}'")]
    if tr["steps"] < MIN_STEPS or tr.get("nonfinite_step") is not None:
        return [Skipped("no-learning", f"the probe ran {tr['steps']} finite steps; "
                                       f"{MIN_STEPS} are needed")]
    change = _rel_change(tr["loss_first"], tr["loss_last"])
    late = _rel_change(tr.get("loss_mid"), tr["loss_last"])
    wc = tr.get("weight_change", {})
    acc, majority = tr.get("train_acc_eval"), tr.get("majority_share")
    at_chance = acc is not None and majority is not None and acc <= majority + CHANCE_MARGIN
    figures = {"loss_first": tr["loss_first"], "loss_last": tr["loss_last"],
               "loss_relative_change": change, "loss_change_second_half": late,
               "weight_relative_change": wc.get("relative"),
               "weight_max_abs_change": wc.get("max_abs"), "steps": tr["steps"],
               "train_accuracy": acc, "majority_class_share": majority,
               "optimizer": tr.get("optimizer")}
    flat = change is not None and change < NO_LEARNING_LOSS_CHANGE
    ln_c = tr.get("ln_c")
    if flat and ln_c and tr["loss_first"] < ALREADY_LEARNED_SHARE * ln_c and not at_chance \
            and not (counts.get("trainable") == 0):
        flat = False  # a trained model has little loss left to lose: a flat loss is expected
        figures["already_learned"] = True
    frozen = late is not None and late < NO_LEARNING_LOSS_CHANGE and at_chance
    still = (wc.get("relative") is not None and wc["relative"] < NO_LEARNING_WEIGHT_CHANGE
             and at_chance)
    if counts.get("frozen"):
        figures.update(frozen_weights=counts["frozen"], trainable_weights=counts["trainable"])
    if not (flat or frozen or still):
        part = (f"; {counts['frozen']:,} frozen weights stay as they are, "
                f"{counts['trainable']:,} train" if counts.get("frozen") else "")
        return [Passed("no-learning", f"the loss moved from {_g(tr['loss_first'])} to "
                                      f"{_g(tr['loss_last'])} ({_pct(change)}) over "
                                      f"{tr['steps']} steps" + part, figures)]
    per_layer = wc.get("per_layer") or {}
    how = (f"loss {_g(tr['loss_first'])} -> {_g(tr['loss_last'])} over {tr['steps']} steps" if flat
           else f"loss frozen at {_g(tr['loss_last'])} from halfway, accuracy {_pct(acc)} "
                f"(chance)" if frozen
           else f"accuracy {_pct(acc)} (chance) after {tr['steps']} steps")
    cut = _cut_short(tr, "probe run")
    return [Finding(
        code="no-learning", area=AREA, severity="info" if cut else "error",
        title=(f"the model does not learn: {how}, weights changed by "
               f"{_pct(wc.get('relative'))}"),
        explanation=("Training a copy with your loss, optimizer and batch size left the loss where "
                     "it started, and the weights barely moved. Gradients are not reaching the "
                     "weights, or they are too small for the learning rate: look at the causes "
                     "listed above (a softmax applied twice, inputs in 0-255, dead units, a "
                     "learning rate far too small)." + cut),
        evidence={**figures, "weight_change_per_layer": per_layer,
                  "loss_curve": "figures.loss_curve"},
        fix=Fix("fix the root cause ranked above; then confirm that the loss falls in the first "
                "epoch", snippet(ev, keras="model.fit(x, y, epochs=1)  # loss must fall",
                                 torch="# print the loss every few steps: it must fall")))]


@register("loss-plateau", AREA, needs=("probe:train",))
def check_plateau(ev):
    tr = ev.probes["train"]
    ln_c = tr.get("ln_c")
    if ln_c is None or tr["steps"] < MIN_STEPS or tr.get("loss_last") is None:
        return [Skipped("loss-plateau", "needs a finite probe run of a classifier with 2+ classes")]
    last, low = tr["loss_last"], tr.get("loss_min")
    near = abs(last - ln_c) / ln_c <= PLATEAU_BAND
    never_below = low is not None and low >= (1 - PLATEAU_BAND) * ln_c
    figures = {"loss_last": last, "loss_min": low, "ln_c": ln_c, "steps": tr["steps"],
               "band": PLATEAU_BAND}
    if not (near and never_below):
        return [Passed("loss-plateau", f"the loss left the chance level ln(C) = {ln_c:.3g}: "
                                       f"lowest {_g(low)}, last {_g(last)}", figures)]
    cut = _cut_short(tr, "probe run")
    return [Finding(
        code="loss-plateau", area=AREA, severity="info" if cut else "error",
        title=f"the loss stays at chance level: {_g(last)} vs ln({tr['num_classes']}) = {ln_c:.3g}",
        explanation=(f"A loss of ln(C) = {ln_c:.3g} is what a model gets by predicting every class "
                     f"with the same probability. The loss never went below "
                     f"{100 * (1 - PLATEAU_BAND):.0f}% of that in {tr['steps']} steps: the model "
                     f"has learnt nothing about the images." + cut),
        evidence=figures,
        fix=Fix("fix the root cause ranked above (softmax/loss pairing, input scale, dead units, "
                "learning rate)", "")),
    ]


# ---------------------------------------------------------------------------------------------
# dead-relu


@register("dead-relu", AREA, needs=("probe:train",),
          explains=("no-learning", "loss-plateau", "cannot-overfit-batch", "seed-instability",
                    "prediction-collapse",))
def check_dead_relu(ev):
    tr = ev.probes["train"]
    layers = tr.get("relu") or []
    narrow = _narrow_layers(ev)
    if not layers and not narrow:
        return [Skipped("dead-relu", "no ReLU was seen during the probe run")]
    if narrow and not _dead_in_training(tr, layers):
        return [_narrow_finding(ev, narrow, layers)]
    logits = tr.get("logits_relu")
    bad = []
    for entry in layers:
        is_logits = logits is not None and entry["layer"].split("#")[0] == logits
        dead, share = entry["dead_units"], entry["dead_share"]
        if is_logits and dead >= 1:
            bad.append((entry, "error", True))
        elif not is_logits and share >= DEAD_ERROR:
            bad.append((entry, "error", False))
        elif not is_logits and share >= DEAD_WARN:
            bad.append((entry, "warning", False))
    summary = {e["layer"]: {"dead_units": e["dead_units"], "units": e["units"],
                            "dead_share": round(e["dead_share"], 4),
                            "active_share": round(e["active_share"], 4)} for e in layers}
    if not bad:
        worst = max(layers, key=lambda e: e["dead_share"])
        cov = ev.probes.get("init_coverage") or {}
        also = (f"; on {cov['draws']} fresh initialisations no image left a layer silent"
                if cov.get("draws") and cov.get("layers") else "")
        return [Passed("dead-relu", f"{len(layers)} ReLU layer(s): at most {_pct(worst['dead_share'])}"
                                    f" of units dead ({worst['layer']}) over the last "
                                    f"{worst['window_batches']} recorded batches{also}", summary)]
    severity = "error" if any(s == "error" for _, s, _ in bad) else "warning"
    parts = []
    for e, _, is_logits in bad:
        what = "output units (classes)" if is_logits else "units"
        parts.append(f"{e['layer']}: {e['dead_units']} of {e['units']} {what} dead")
    any_logits = any(is_logits for _, _, is_logits in bad)
    explanation = ("A ReLU unit that outputs 0 for every input gets no gradient, so it never "
                   "comes back: the layer has lost that capacity for good. ")
    if any_logits:
        explanation += ("Here it happens on the logits: each dead output unit is a class whose "
                        "score is stuck at 0, so the model can only ever predict the surviving "
                        "classes, and which classes die depends on the random initialisation. ")
    explanation += ("Dead units come from a ReLU where none belongs (on the logits), inputs far "
                    "from unit scale, or a learning rate that throws the weights too far.")
    return [Finding(
        code="dead-relu", area=AREA, severity=severity,
        title="dead ReLU units: " + "; ".join(parts),
        explanation=explanation,
        evidence={"layers": summary,
                  "dead_layers": [{"layer": e["layer"], "dead_units": e["dead_units"],
                                   "units": e["units"], "dead_share": e["dead_share"],
                                   "dead_unit_indices": e["dead_unit_indices"],
                                   "logits_layer": is_logits,
                                   "window_batches": e["window_batches"]}
                                  for e, _, is_logits in bad],
                  "window": "never active on any sample of the last recorded batches",
                  "steps": tr["steps"],
                  **({"narrow_layers": narrow} if narrow else {})},
        fix=Fix(("remove the ReLU from the logits (softmax needs linear logits)" if any_logits
                 else "normalize the inputs, lower the learning rate, or use He initialisation "
                      "/ LeakyReLU"),
                snippet(ev, keras=("keras.layers.Dense(n_classes)  # no activation before the "
                                   "softmax" if any_logits else
                                   "keras.layers.LeakyReLU(negative_slope=0.01)  # or normalize"),
                        torch=("return self.fc(x)  # linear logits, no F.relu" if any_logits else
                               "nn.LeakyReLU(0.01)  # or normalize the inputs"))))]


def _dead_in_training(tr: dict, layers: list[dict]) -> bool:
    """Whether the training window shows dead units the main dead-relu finding reports."""
    logits = tr.get("logits_relu")
    for e in layers:
        if logits is not None and e["layer"].split("#")[0] == logits:
            if e["dead_units"] >= 1:
                return True
        elif e["dead_share"] >= DEAD_WARN:
            return True
    return False


def _feeding_layer(graph, name: str):
    """The weighted layer whose outputs the ReLU ``name`` acts on (itself for a fused one)."""
    layer = graph.by_name(name.split("#")[0]) if graph is not None else None
    if layer is None:
        return None
    if layer.kind == g.WEIGHTED:
        return layer
    prev = graph.producer(layer, skip=g.PASS_THROUGH | {g.NORM})
    return prev if prev is not None and prev.kind == g.WEIGHTED else None


def _narrow_layers(ev) -> list[dict]:
    """ReLU layers that leave images with no active unit on fresh weights (init_coverage)."""
    cov = ev.probes.get("init_coverage") or {}
    out = []
    for e in cov.get("layers") or []:
        if e["silent_share"] < NARROW_SILENT_SHARE or e["draws_with_silent_images"] < NARROW_MIN_DRAWS:
            continue
        weighted = _feeding_layer(ev.graph, e["layer"])
        units = (weighted.units if weighted is not None else None) or e.get("units")
        out.append({"layer": e["layer"], "units": units,
                    "weighted_layer": weighted.name if weighted is not None else None,
                    "weighted_label": weighted.label if weighted is not None else e["layer"],
                    "op": weighted.op if weighted is not None else None,
                    "kernel_size": list(weighted.kernel_size or []) if weighted is not None
                    else None,
                    "silent_share": round(e["silent_share"], 4),
                    "silent_shares": e["silent_shares"], "draws": cov["draws"],
                    "draws_with_silent_images": e["draws_with_silent_images"],
                    "draws_all_silent": e["all_silent_draws"], "samples": cov["samples"],
                    "suggested_units": int(units * WIDEN_FACTOR) if units else None})
    return sorted(out, key=lambda e: -e["silent_share"])


def _narrow_finding(ev, narrow: list[dict], layers: list[dict]) -> Finding:
    top = narrow[0]
    where = top["weighted_label"]
    unit_word = "filters" if top["op"] == "conv" else "units"
    size = f" with {top['units']} {unit_word}" if top["units"] else ""
    title = (f"dead ReLU units at initialisation: {where}{size} leaves "
             f"{_pct(top['silent_share'])} of the images with no active unit "
             f"({top['draws']} fresh initialisations)")
    explanation = (
        f"On fresh weights every unit of {where} outputs 0 for some images: those images reach "
        f"the next layer as zeros, so the model cannot tell them apart and no gradient comes "
        f"back from them. Over {top['draws']} random initialisations, on average "
        f"{_pct(top['silent_share'])} of {top['samples']} training images had no active unit; "
        f"{top['draws_with_silent_images']} of the {top['draws']} draws left at least one image "
        f"silent")
    if top["draws_all_silent"]:
        explanation += (f", and on {top['draws_all_silent']} every unit was dead on every image "
                        f"(nothing trains then, whatever the learning rate)")
    explanation += (". A layer this narrow trains or not depending on the draw of its initial "
                    "weights: more units let every image through.")
    more = top["suggested_units"] or (top["units"] or 1) * WIDEN_FACTOR
    conv = top["op"] == "conv"
    summary = (f"give {where} more {unit_word}: {more} instead of {top['units']}"
               + (" with padding='same'" if conv else ""))
    k = top["kernel_size"] or [3, 3]
    return Finding(
        code="dead-relu", area=AREA, severity="warning", title=title, explanation=explanation,
        evidence={"narrow_layers": narrow,
                  "layers": {e["layer"]: {"dead_units": e["dead_units"], "units": e["units"],
                                          "dead_share": round(e["dead_share"], 4)}
                             for e in layers},
                  "window": "fresh initialisations, forward pass only"},
        fix=Fix(summary, snippet(
            ev,
            keras=(f"keras.layers.Conv2D({more}, {tuple(k)}, padding='same')" if conv
                   else f"keras.layers.Dense({more}, activation='relu')"),
            torch=(f"nn.Conv2d(in_channels, {more}, kernel_size={tuple(k)}, padding='same')"
                   if conv else f"nn.Linear(in_features, {more})"))))


# ---------------------------------------------------------------------------------------------
# vanishing / exploding gradients


def _weighted_grads(ev, tr):
    """Gradient rows of layers with weights, in execution order when the graph knows it."""
    rows = [r for r in tr.get("gradients") or [] if r.get("grad_rms_median") is not None]
    order = {layer.name: i for i, layer in enumerate(ev.graph.layers)}
    rows.sort(key=lambda r: order.get(r["layer"], len(order)))
    return rows


# Gradients that vanish before the first layers keep the model from fitting even one batch (the
# saturating deep stack of the zoo: cannot-overfit-batch beside it on every model).
@register("vanishing-gradient", AREA, needs=("probe:train",),
          explains=("no-learning", "loss-plateau", "cannot-overfit-batch",))
def check_vanishing(ev):
    tr = ev.probes["train"]
    rows = _weighted_grads(ev, tr)
    if len(rows) < 1:
        return [Skipped("vanishing-gradient", "no gradient was recorded")]
    first, last = rows[0], rows[-1]
    ratio = (first["grad_rms_median"] / last["grad_rms_median"]
             if last["grad_rms_median"] else None)
    rel = [(r["grad_norm_median"] or 0.0) / (r["weight_norm"] or 1e-12) for r in rows]
    figures = {"first_layer": first["layer"], "last_layer": last["layer"],
               "first_grad_rms": first["grad_rms_median"], "last_grad_rms": last["grad_rms_median"],
               "first_to_last_ratio": ratio, "max_grad_to_weight": max(rel) if rel else None,
               "per_layer": {r["layer"]: r["grad_rms_median"] for r in rows}}
    everywhere = rel and max(rel) < VANISHING_ABSOLUTE
    early = len(rows) >= 2 and ratio is not None and ratio < VANISHING_RATIO
    all_dead = [e["layer"] for e in tr.get("relu_all", tr.get("relu")) or [] if e["units"] and
                e["dead_units"] == e["units"]]
    if (everywhere or early) and all_dead:
        return [Skipped("vanishing-gradient",
                        f"gradients are blocked by ReLU layers whose units are all dead "
                        f"({', '.join(all_dead)}): see dead-relu")]
    if not (everywhere or early):
        return [Passed("vanishing-gradient",
                       f"gradient RMS of the first weighted layer is {_g(ratio)}x the last one's",
                       figures)]
    if everywhere and max(rel) == 0:
        title = "gradients are exactly zero in every layer: nothing can learn"
    elif everywhere:
        title = (f"gradients vanish everywhere: at most {_g(max(rel))} of the weights' norm "
                 f"in every layer")
    else:
        title = (f"gradients vanish before the early layers: {first['layer']} gets "
                 f"{_g(ratio)}x the gradient of {last['layer']}")
    return [Finding(
        code="vanishing-gradient", area=AREA, severity="error",
        title=title,
        explanation=("The gradients that reach the weights are so small that no learning rate "
                     "could move them usefully: saturated activations (a softmax fed huge "
                     "values, sigmoids/tanh pinned at their limits), a softmax applied twice, or "
                     "dead units block the signal on its way back."),
        evidence=figures,
        fix=Fix("fix the saturating step (normalize inputs, linear logits into the loss); "
                "use ReLU and He initialisation, batch normalization or residual connections",
                snippet(ev, keras="keras.layers.BatchNormalization()  # after conv layers",
                        torch="nn.BatchNorm2d(channels)  # after conv layers")))]


@register("exploding-gradient", AREA, needs=("probe:train",),
          explains=("nan-loss",))
def check_exploding(ev):
    tr = ev.probes["train"]
    norms = [v for v in tr.get("total_grad_norm") or []]
    if len(norms) < 4:
        return [Skipped("exploding-gradient", "too few recorded steps")]
    k = max(1, len(norms) // 5)
    head = [v for v in norms[:k] if math.isfinite(v)]
    tail = norms[-k:]
    start = float(sum(head) / len(head)) if head else None
    end_inf = any(not math.isfinite(v) for v in tail)
    end = float(sum(v for v in tail if math.isfinite(v)) / max(1, sum(
        1 for v in tail if math.isfinite(v)))) if not end_inf else float("inf")
    growth = (end / start) if start else None
    losses = [v for v in (tr.get("history") or {}).get("loss") or [] if math.isfinite(v)]
    m = max(1, len(losses) // 5)
    loss_start = sum(losses[:m]) / m if losses else None
    loss_end = sum(losses[-m:]) / m if losses else None
    loss_falls = (loss_start is not None and loss_end is not None
                  and loss_end < EXPLODING_LOSS_SHARE * loss_start)
    figures = {"grad_norm_start": start, "grad_norm_end": end if math.isfinite(end) else None,
               "growth": growth if growth is not None and math.isfinite(growth) else None,
               "nonfinite_gradient": end_inf or tr.get("nonfinite_grad_step") is not None,
               "loss_start": loss_start, "loss_end": loss_end, "recorded_steps": len(norms)}
    if not end_inf and (growth is None or growth < EXPLODING_GROWTH or loss_falls):
        note = (f", while the loss fell {_g(loss_start)} -> {_g(loss_end)} (learning, not "
                f"diverging)" if growth is not None and growth >= EXPLODING_GROWTH else "")
        return [Passed("exploding-gradient", f"total gradient norm {_g(start)} -> {_g(end)} "
                                             f"over {tr['steps']} steps{note}", figures)]
    return [Finding(
        code="exploding-gradient", area=AREA, severity="error",
        title=(f"gradients explode: total norm {_g(start)} -> "
               f"{'infinite' if end_inf else _g(end)} during the probe"),
        explanation=("The gradient norm keeps growing from step to step; each update throws the "
                     "weights further, until the loss diverges or becomes NaN. Usual causes: a "
                     "learning rate too high for this model, unnormalized inputs, or gradients "
                     "that are never reset between steps."),
        evidence=figures,
        fix=Fix("lower the learning rate and clip gradients",
                snippet(ev, keras="keras.optimizers.Adam(1e-3, clipnorm=1.0)",
                        torch="torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)")))]


# ---------------------------------------------------------------------------------------------
# learning rate


def _lr_figures(lr):
    return {k: lr.get(k) for k in ("user_lr", "best_lr", "steepest_lr", "diverged_lr",
                                   "suggested_lr", "loss_start", "loss_best", "fell_share",
                                   "optimizer", "steps")}


def _range_usable(ev, code):
    lr = ev.probes["lr_range"]
    if lr.get("user_lr") is None:
        return None, Skipped(code, "the optimizer's learning rate could not be read")
    if not lr.get("conclusive") or (lr.get("fell_share") or 0) < LR_RANGE_MIN_FALL:
        return None, Skipped(code, f"the learning-rate range test was inconclusive: the loss "
                                   f"fell by {_pct(lr.get('fell_share'))} at best")
    return lr, None


@register("lr-too-high", AREA, needs=("probe:lr_range",),
          explains=("dead-relu", "no-learning", "loss-plateau", "vanishing-gradient",
                    "exploding-gradient", "nan-loss", "cannot-overfit-batch", "seed-instability",))
def check_lr_high(ev):
    lr, skip = _range_usable(ev, "lr-too-high")
    if skip:
        return [skip]
    user, diverged, best = lr["user_lr"], lr.get("diverged_lr"), lr["best_lr"]
    figures = _lr_figures(lr)
    tr = ev.probes.get("train") or {}
    progress = _rel_change(tr.get("loss_first"), tr.get("loss_last")) if not tr.get(
        "skipped") else None
    worsened = (tr.get("nonfinite_step") is not None or (
        tr.get("loss_last") is not None and tr.get("loss_first") is not None
        and tr["loss_last"] > tr["loss_first"]))
    if diverged is not None and user >= diverged:
        severity = "error"
    elif user > best and worsened:
        severity = "warning"
    else:
        return [Passed("lr-too-high", f"learning rate {user:.3g} is below where the range test's "
                                      f"loss stops falling ({best:.3g})", figures)]
    return [Finding(
        code="lr-too-high", area=AREA, severity=severity,
        title=(f"{rate_words(ev.schedule)} {user:.3g} is too high: the range test's loss "
               + (f"diverges from {diverged:.3g}" if severity == "error" else
                  f"stops falling at {best:.3g}")),
        explanation=("In a learning-rate range test (the rate is raised step by step while the "
                     "loss is watched), the loss falls up to a point and then blows up. Your rate "
                     "is past that point: updates overshoot and training is unstable or "
                     "diverges."),
        evidence={**figures, "probe_loss_change": progress},
        fix=Fix(f"use a learning rate near {lr['suggested_lr']:.2g}",
                snippet(ev, keras=f"keras.optimizers.Adam(learning_rate={lr['suggested_lr']:.2g})",
                        torch=torch_rate_fix(lr["suggested_lr"], ev.schedule,
                                             f"torch.optim.Adam(model.parameters(), "
                                             f"lr={lr['suggested_lr']:.2g})"))))]


@register("lr-too-low", AREA, needs=("probe:lr_range",),
          explains=("no-learning", "loss-plateau", "vanishing-gradient", "cannot-overfit-batch",))
def check_lr_low(ev):
    lr, skip = _range_usable(ev, "lr-too-low")
    if skip:
        return [skip]
    user, steep = lr["user_lr"], lr.get("steepest_lr")
    figures = _lr_figures(lr)
    tr = ev.probes.get("train") or {}
    progress = None
    if not tr.get("skipped") and tr.get("loss_first"):
        progress = (tr["loss_first"] - tr["loss_last"]) / abs(tr["loss_first"])
    figures["probe_loss_drop"] = progress
    slow = progress is not None and progress < LR_LOW_MAX_PROGRESS
    if steep is None or user * LR_LOW_FACTOR > steep or not slow:
        return [Passed("lr-too-low", f"learning rate {user:.3g} vs the range test's steepest "
                                     f"descent at {_g(steep)}; the probe's loss fell by "
                                     f"{_pct(progress)}", figures)]
    return [Finding(
        code="lr-too-low", area=AREA, severity="warning",
        title=(f"{rate_words(ev.schedule)} {user:.3g} is {steep / user:.0f}x below where the "
               f"loss falls "
               f"fastest ({steep:.2g})"),
        explanation=("The range test shows the loss falling fastest at a much higher rate, and "
                     "in the short run at your rate the loss barely moved: training will take "
                     "far longer than it needs to, or seem stuck."),
        evidence=figures,
        fix=Fix(f"raise the learning rate to about {lr['suggested_lr']:.2g}",
                snippet(ev, keras=f"optimizer.learning_rate = {lr['suggested_lr']:.2g}",
                        torch=torch_rate_fix(lr["suggested_lr"], ev.schedule))))]


# ---------------------------------------------------------------------------------------------
# overfit one batch


@register("cannot-overfit-batch", AREA, needs=("probe:overfit_batch",))
def check_overfit_batch(ev):
    ob = ev.probes["overfit_batch"]
    acc = ob.get("accuracy")
    figures = {k: ob.get(k) for k in ("samples", "classes", "steps", "max_steps", "optimizer",
                                      "accuracy", "loss_first", "loss_last")}
    figures["attempts"] = [{k: a.get(k) for k in ("optimizer", "steps", "accuracy", "loss_first",
                                                   "loss_last")} for a in ob.get("attempts", [])]
    if acc is not None and acc >= OVERFIT_MIN_ACCURACY and not ob.get("nonfinite"):
        return [Passed("cannot-overfit-batch", f"fitted a batch of {ob['samples']} samples "
                                               f"({ob['classes']} classes) in {ob['steps']} "
                                               f"steps", figures)]
    cut = _cut_short(ob, "test")
    return [Finding(
        code="cannot-overfit-batch", area=AREA, severity="info" if cut else "error",
        title=(f"the model cannot fit even one batch of {ob['samples']} samples: at best "
               f"{_pct(acc)} right after {ob['steps']} steps of {ob['optimizer']}"),
        explanation=("Any model that can learn at all should memorize a handful of examples "
                     "quickly. This one cannot, even with a standard optimizer and learning "
                     "rate: something in the model, the loss or the labels blocks learning "
                     "(see the causes ranked above)." + cut),
        evidence=figures,
        fix=Fix("fix the model/loss bug ranked above; this test must then reach 100%", ""))]


# ---------------------------------------------------------------------------------------------
# seeds


@register("seed-instability", AREA, needs=("probe:seeds",))
def check_seeds(ev):
    s = ev.probes["seeds"]
    std, p = s.get("std"), s.get("p_value")
    if std is None:
        return [Skipped("seed-instability", "fewer than two seed runs finished")]
    accs = [r["val_acc"] for r in s["runs"] if r["val_acc"] is not None]
    figures = {"val_acc": accs, "mean": s["mean"], "std": std, "std_ci95": s["std_ci95"],
               "mean_ci95": s["mean_ci95"], "min": s["min"], "max": s["max"],
               "sampling_std": s["sampling_std"], "std_ratio": s["std_ratio"], "p_value": p,
               "runs": s["k"], "steps_per_run": s["steps"], "val_samples": s["val_samples"],
               "classes_never_predicted": [r.get("classes_never_predicted") for r in s["runs"]]}
    if std < SEED_STD_WARN or p is None or p >= SEED_P_MAX:
        return [Passed("seed-instability",
                       f"validation accuracy over {s['k']} seeds: {_pct(s['mean'])} "
                       f"+/- {100 * std:.1f} points (sampling noise alone: "
                       f"{100 * s['sampling_std']:.1f})", figures)]
    severity = "error" if std >= SEED_STD_ERROR else "warning"
    never = [r.get("classes_never_predicted") for r in s["runs"]]
    extra = ""
    if any(n for n in never if n):
        extra = (f" In these runs {', '.join(str(n) for n in never)} of the classes were never "
                 f"predicted.")
    return [Finding(
        code="seed-instability", area=AREA, severity=severity,
        title=(f"accuracy depends on the random seed: {_pct(s['min'])} to {_pct(s['max'])} over "
               f"{s['k']} seeds (std {100 * std:.1f} points vs {100 * s['sampling_std']:.1f} "
               f"from sampling noise)"),
        explanation=(f"{s['k']} copies trained identically except for the initial weights reach "
                     f"validation accuracies with a standard deviation of {100 * std:.1f} points "
                     f"(95% interval {100 * s['std_ci95'][0]:.1f}-{100 * s['std_ci95'][1]:.1f}); "
                     f"measuring accuracy on {s['val_samples']} samples explains only "
                     f"{100 * s['sampling_std']:.1f} (chi-square test p = {p:.2g}). Whether the "
                     f"model works is decided by luck at initialisation, usually because units "
                     f"die early or the model is only barely able to learn the task." + extra),
        evidence=figures,
        fix=Fix("fix the cause ranked above; a healthy model's accuracy varies by a point or two "
                "across seeds", ""))]


# ---------------------------------------------------------------------------------------------
# overfitting


@register("overfitting", AREA, needs=("probe:train",))
def check_overfitting(ev):
    tr = ev.probes["train"]
    hist = tr["history"]
    accs, vals = hist.get("acc") or [], hist.get("val_acc") or []
    if tr.get("note") and "measured on the training samples" in tr["note"]:
        return [Skipped("overfitting", "no validation data and too few samples to hold out")]
    sizes = hist.get("epoch_samples") or [None] * len(accs)
    full = max((n for n in sizes if n), default=0)
    # Only epochs that ran (almost) in full: a run cut short by its step budget ends with a
    # partial epoch whose accuracy comes from a handful of samples.
    pairs = [(a, v) for a, v, n in zip(accs, vals, sizes) if a is not None and v is not None
             and (n is None or n >= OVERFIT_FULL_EPOCH * full)]
    if not pairs:
        return [Skipped("overfitting", "no accuracy was measured during the probe")]
    gaps = [a - v for a, v in pairs]
    figures = {"train_acc": [a for a, _ in pairs], "val_acc": [v for _, v in pairs],
               "gap": gaps, "epochs": len(pairs)}
    refreshed = tr.get("val_acc_bn_refreshed")
    if refreshed is not None and refreshed > pairs[-1][1]:
        # batch norm's running statistics trailed the weights: the gap is judged with them
        # re-estimated (probe_train)
        gaps[-1] = pairs[-1][0] - refreshed
        pairs[-1] = (pairs[-1][0], refreshed)
        figures["val_acc_bn_refreshed"] = refreshed
    growing = len(gaps) >= 2 and gaps[-1] - gaps[0] >= OVERFIT_GAP_GROWTH
    if gaps[-1] < OVERFIT_GAP or not growing:
        return [Passed("overfitting", f"training vs validation accuracy after the probe: "
                                      f"{_pct(pairs[-1][0])} vs {_pct(pairs[-1][1])}", figures)]
    return [Finding(
        code="overfitting", area=AREA, severity="warning",
        title=(f"overfitting: training accuracy {_pct(pairs[-1][0])} vs validation "
               f"{_pct(pairs[-1][1])}, gap growing"),
        explanation=("The model keeps getting better on the training samples while validation "
                     "accuracy stays behind, and the gap grows epoch after epoch: it memorizes "
                     "the training set instead of learning what generalizes."),
        evidence=figures,
        fix=Fix("more data or augmentation, dropout/weight decay, a smaller model, early "
                "stopping",
                snippet(ev, keras="keras.callbacks.EarlyStopping(patience=3, "
                                  "restore_best_weights=True)",
                        torch="torch.optim.AdamW(model.parameters(), weight_decay=1e-2)")))]
