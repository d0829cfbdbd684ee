"""Evaluation findings: the path from a trained model to the numbers the user sees.

- ``preprocessing-mismatch``: evaluation inputs scaled, shifted, channel-swapped or laid out
  differently from the training inputs.
- ``prediction-collapse``: predictions concentrated on a few classes the labels do not favour.
- ``train-eval-discrepancy``: the same (or equivalent) samples score far worse through the
  evaluation path than through training.
- ``eval-mode-not-set`` and ``missing-zero-grad`` (PyTorch, seen by ``cnndoctor run``).
- ``script-error``: a script run by ``cnndoctor run`` raised; the cause when it is known.

Evidence comes from the ``evaluation`` probe and, under ``cnndoctor run``, from what the session
captured (``ev.probes["captured"]``).
"""
from __future__ import annotations

from . import Finding, Fix, Passed, Skipped, register, snippet

# ---- preprocessing-mismatch ------------------------------------------------------------------
# Ratio of input ranges (1st-99th percentile) from which evaluation inputs are on another scale:
# a factor 4 is beyond any augmentation or split difference we measured (train/validation splits
# of MNIST, CIFAR-like and the grid case differ by < 1.2x); 255 is the 0-255 vs [0, 1] bug of
# CASES.md case 4.
SCALE_RATIO_ERROR = 4.0
# A smaller but real difference (e.g. mean/std normalisation applied in one path only).
SCALE_RATIO_WARNING = 1.5
# Mean offset, in training standard deviations after the scale is accounted for: 2 std moves most
# inputs outside the range the first layer saw in training (e.g. [0, 1] vs [-1, 1] is 3.5 std on
# MNIST); 0.5 std is the largest offset we measured between honest splits of the same data
# (0.05 on MNIST), with margin.
OFFSET_ERROR = 2.0
OFFSET_WARNING = 0.5
# How close the ratio of maxima must be to a whole number to name it as the divisor in the fix
# (the largest pixel of a sample is rarely exactly the top of the range: MNIST's is 255, 5% is
# what a sample without a saturated pixel loses).
DIVISOR_TOLERANCE = 0.1
# Below this many evaluation values per channel the statistics are not compared.
MIN_EVAL_SAMPLES = 2

# ---- prediction-collapse -------------------------------------------------------------------
# The k most predicted classes (k = 2, or 1 for up to 3 classes) must receive at least this share
# of the predictions ...
COLLAPSE_MIN_SHARE = 0.5
# ... and this much more than their share of the labels. The seed report of case 4 (CIFAR-100):
# 2 classes receive most predictions of a balanced 100-class set (label share 0.02). A healthy
# model's top-2 share exceeds the labels' by a few points (measured on our case 4 fixed: < 0.05).
COLLAPSE_MIN_EXCESS = 0.4
# Fewer predictions than this say nothing about concentration.
COLLAPSE_MIN_SAMPLES = 20

# ---- train-eval-discrepancy -------------------------------------------------------------------
# Accuracy drop, training path vs evaluation path, that is an error: 20 points is far beyond
# sampling noise for 100+ samples (2 standard errors at 50% accuracy and 100 samples ~ 10 points)
# and beyond the train/validation gap of the healthy reference cases (< 10 points).
DISCREPANCY_MIN_GAP = 0.2
# A smaller drop worth a warning (e.g. batch-norm statistics, resizing, JPEG differences).
DISCREPANCY_WARNING_GAP = 0.1
# Samples needed before accuracies are compared.
DISCREPANCY_MIN_SAMPLES = 20

# ---- eval-mode-not-set -----------------------------------------------------------------------
# Predictions that change for more than this share of samples between train and eval mode make
# the finding an error (dropout 0.5 on a small CNN changes ~10-30% of MNIST predictions).
EVAL_MODE_ERROR_DISAGREEMENT = 0.05

# ---- missing-zero-grad -----------------------------------------------------------------------
# Share of inspected optimizer steps whose next backward pass found the previous gradients
# still there. A loop that never resets gets 1.0; gradient accumulation done on purpose resets
# after each step and gets 0.
STALE_SHARE_ERROR = 0.5
# Steps inspected before anything is said.
MIN_GRAD_CHECKS = 2
# Gradient-norm windows (first / last steps) compared for the evidence.
NORM_WINDOW = 5


def _datasets(ev) -> list[dict]:
    return (ev.probes.get("evaluation") or {}).get("datasets") or []


def _fmt_list(values, digits: int = 3) -> str:
    return "[" + ", ".join(f"{v:.{digits}g}" for v in values) + "]"


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


# ------------------------------------------------------------------------------------------------
@register("preprocessing-mismatch", "data", needs=("evaluation", "probe:evaluation"),
          explains=("prediction-collapse", "train-eval-discrepancy",))
def preprocessing_mismatch(ev):
    out = []
    for r in _datasets(ev):
        if r.get("samples", 0) < MIN_EVAL_SAMPLES:
            out.append(Skipped("preprocessing-mismatch",
                               f"only {r.get('samples', 0)} evaluation image(s) captured"))
            continue
        comp = r.get("comparison") or {}
        t, e = r["training_stats"], r["evaluation_stats"]
        problems, severity = [], None
        evidence = {
            "evaluation_source": r["source"],
            "training": {"range": [min(t["min"]), max(t["max"])], "mean": t["mean"],
                         "std": t["std"], "dtype": r.get("training_dtype")},
            "evaluation": {"range": [min(e["min"]), max(e["max"])], "mean": e["mean"],
                           "std": e["std"], "dtype": r.get("evaluation_dtype")},
            "scale_ratio": comp.get("scale_ratio"),
            "offset_std": comp.get("offset_std"),
            "samples": r["samples"],
        }
        scale = comp.get("scale_ratio")
        if scale:
            big = max(scale, 1 / scale)
            if big >= SCALE_RATIO_ERROR:
                severity = "error"
                problems.append(f"the evaluation inputs are {big:.3g}x "
                                f"{'larger' if scale > 1 else 'smaller'} in range")
            elif big >= SCALE_RATIO_WARNING:
                severity = severity or "warning"
                problems.append(f"the evaluation inputs' range differs {big:.2g}x")
        off = comp.get("offset_std")
        if off is not None and off >= OFFSET_WARNING:
            if off >= OFFSET_ERROR:
                severity = "error"
            else:
                severity = severity or "warning"
            problems.append(f"their mean is shifted by {off:.2g} training standard deviations")
        if comp.get("channels_reversed"):
            severity = severity or "warning"
            problems.append("their color channels line up with training only in reverse "
                            "order (RGB vs BGR)")
        if r.get("layout") != r.get("training_layout"):
            severity = "error"
            problems.append(f"they are laid out {r['layout']} where training was "
                            f"{r['training_layout']}")
            evidence["layout"] = {"training": r["training_layout"], "evaluation": r["layout"]}
        if comp.get("channels_differ") or r.get("shape_differs"):
            severity = "error"
            problems.append("their shape differs from the training images")
            evidence["shapes"] = r.get("shape_differs")
        if not problems:
            out.append(Passed(
                "preprocessing-mismatch",
                f"evaluation inputs ({r['source']}) match training: range "
                f"{min(e['min']):.3g}...{max(e['max']):.3g} vs {min(t['min']):.3g}..."
                f"{max(t['max']):.3g}, scale ratio {scale or 1:.3g}, offset {off or 0:.2g} std",
                evidence))
            continue
        verified = None
        fixed = r.get("accuracy_with_training_statistics")
        if fixed is not None and r.get("accuracy") is not None:
            verified = {"accuracy_as_fed": r["accuracy"],
                        "accuracy_with_training_statistics": fixed,
                        "samples": (r.get("confusion_matrix") or {}).get("samples"),
                        "how": "the evaluation inputs mapped to the training statistics "
                               "(per channel x * a + b) and predicted again"}
        a = comp.get("affine") or {}
        factor = _divisor(t, e)
        keras_fix = (f"x_eval = x_eval.astype('float32') / {factor}   # exactly as in training"
                     if factor else
                     "x_eval = preprocess(x_eval)   # the same function as in training\n"
                     "# better: put the preprocessing in the model (keras.layers.Rescaling / "
                     "Normalization) so that no path can skip it")
        torch_fix = (f"x_eval = x_eval.float() / {factor}   # exactly as in training"
                     if factor else
                     "x_eval = transform(x_eval)   # the same transforms as the training "
                     "Dataset\n# and permute to (N, C, H, W) if the layout differs")
        if factor:
            keras_fix += ("\n# or put it in the model so that no path can skip it:\n"
                          f"# keras.Sequential([keras.layers.Rescaling(1 / {factor}), ...])")
        out.append(Finding(
            code="preprocessing-mismatch", area="data", severity=severity or "warning",
            title=(f"inputs at evaluation differ from training: {problems[0]}"
                   + (f" ({len(problems) - 1} more)" if len(problems) > 1 else "")),
            explanation=(
                f"The model learned on inputs spanning {min(t['min']):.3g}...{max(t['max']):.3g} "
                f"(mean {t['overall_mean']:.3g}, std {t['overall_std']:.3g}), but "
                f"{r['source']} fed it inputs spanning {min(e['min']):.3g}...{max(e['max']):.3g} "
                f"(mean {e['overall_mean']:.3g}, std {e['overall_std']:.3g}): "
                + "; ".join(problems) + ". A network only knows the input distribution it was "
                "trained on: scaled or shifted inputs push every activation far from what it "
                "learned, the softmax saturates, and the predictions collapse onto a few classes "
                "whatever the image shows."),
            evidence={**evidence, "affine_to_training": a,
                      **({"with_training_preprocessing": verified} if verified else {})},
            fix=Fix(summary=("apply exactly the training preprocessing at evaluation"
                             + (f" (divide by {factor})" if factor else "")),
                    code=snippet(ev, keras=keras_fix, torch=torch_fix))))
    return out


def _divisor(t: dict, e: dict) -> int | None:
    """The whole factor (255, 16, ...) by which evaluation inputs exceed the training ones."""
    t_hi, e_hi = max(t["max"]), max(e["max"])
    if t_hi <= 0 or e_hi <= 0:
        return None
    ratio = e_hi / t_hi
    if abs(ratio / 255 - 1) < DIVISOR_TOLERANCE:  # 8-bit pixels: the commonest case
        return 255
    whole = round(ratio)
    if whole >= 2 and abs(ratio / whole - 1) < DIVISOR_TOLERANCE:
        return int(whole)
    return None


# ------------------------------------------------------------------------------------------------
@register("prediction-collapse", "evaluation", needs=("evaluation", "probe:evaluation"))
def prediction_collapse(ev):
    out = []
    for r in _datasets(ev):
        s = r.get("spread")
        if not s or s["samples"] < COLLAPSE_MIN_SAMPLES:
            out.append(Skipped("prediction-collapse",
                               f"too few predictions to judge ({(s or {}).get('samples', 0)})"))
            continue
        label_share = s.get("label_share_of_top")
        evidence = {
            "evaluation_source": r["source"],
            "samples": s["samples"],
            "top_classes": s["top_classes"],
            "prediction_share_of_top": s["top_share"],
            "label_share_of_top": label_share,
            "classes_predicted": s["classes_predicted"],
            "effective_classes_predicted": s["effective_classes_predicted"],
            "effective_classes_in_labels": s.get("effective_classes_in_labels"),
            "classes": s["classes"],
            "compared_with": s.get("reference"),
            "thresholds": {"min_share": COLLAPSE_MIN_SHARE, "min_excess": COLLAPSE_MIN_EXCESS},
        }
        excess = s["top_share"] - (label_share or 0.0)
        k = s["k"]
        top = ", ".join(str(c) for c in s["top_classes"])
        against = "labels" if s.get("reference") == "evaluation labels" else \
            (s.get("reference") or "labels")
        if s["top_share"] < COLLAPSE_MIN_SHARE or excess < COLLAPSE_MIN_EXCESS:
            out.append(Passed(
                "prediction-collapse",
                f"the {k} most predicted class(es) ({top}) get {_pct(s['top_share'])} of "
                f"predictions vs {_pct(label_share)} of the labels ({s['classes_predicted']} "
                f"classes predicted)", evidence))
            continue
        out.append(Finding(
            code="prediction-collapse", area="evaluation", severity="error",
            title=(f"{_pct(s['top_share'])} of predictions go to {k} class"
                   f"{'es' if k > 1 else ''} ({top}) that hold {_pct(label_share)} of the "
                   f"{against}"),
            explanation=(
                f"On {s['samples']} inputs from {r['source']}, the model predicts only "
                f"{s['classes_predicted']} of {s['classes']} classes (about "
                f"{s['effective_classes_predicted']:.1f} used evenly, against "
                f"{(s.get('effective_classes_in_labels') or 0):.1f} in the labels). The data "
                f"is not what makes these classes common: the model's outputs are pushed to the "
                f"same few classes whatever the input, which happens when inputs reach it on "
                f"another scale than in training, or when output units are dead."),
            evidence=evidence,
            fix=Fix(summary="fix the cause ranked above (most often the evaluation "
                            "preprocessing); then check the confusion matrix again",
                    code=snippet(ev, keras="cm = confusion_matrix(y_true, model.predict("
                                           "preprocess(x)).argmax(1))",
                                 torch="model.eval()\nwith torch.no_grad():\n    pred = "
                                       "model(transform(x)).argmax(1)"))))
    return out


# ------------------------------------------------------------------------------------------------
@register("train-eval-discrepancy", "evaluation", needs=("evaluation", "probe:evaluation"))
def train_eval_discrepancy(ev):
    out = []
    for r in _datasets(ev):
        acc = r.get("accuracy")
        if acc is None:
            out.append(Skipped("train-eval-discrepancy",
                               f"{r['source']}: no labels, and no evaluation image matched a "
                               f"training or validation image"))
            continue
        n = (r.get("confusion_matrix") or {}).get("samples") or r.get("samples", 0)
        if n < DISCREPANCY_MIN_SAMPLES:
            out.append(Skipped("train-eval-discrepancy",
                               f"only {n} labelled evaluation samples"))
            continue
        same = r.get("same_samples") or {}
        hist = r.get("history_accuracy") or {}
        if same.get("accuracy_training_path") is not None and \
                same.get("accuracy_evaluation_path") is not None:
            ref, ref_what = same["accuracy_training_path"], (
                f"the same {same['samples']} images as fed in training")
            acc_cmp = same["accuracy_evaluation_path"]
        elif r.get("validation_accuracy") is not None:
            ref, ref_what, acc_cmp = r["validation_accuracy"], "the validation data as fed in " \
                                                              "training", acc
        elif hist.get("validation") is not None:
            ref, ref_what, acc_cmp = hist["validation"], "validation accuracy reported by " \
                                                         "training", acc
        else:
            out.append(Skipped("train-eval-discrepancy",
                               "no training-path accuracy to compare with (no validation data "
                               "and no evaluation image matched a training image)"))
            continue
        gap = ref - acc_cmp
        evidence = {
            "evaluation_source": r["source"],
            "accuracy_evaluation_path": acc_cmp,
            "accuracy_training_path": ref,
            "training_path": ref_what,
            "gap": gap,
            "samples": n,
            "labels_from": r.get("labels_from"),
            "validation_accuracy_in_training": hist.get("validation"),
            "accuracy_with_training_statistics": r.get("accuracy_with_training_statistics"),
            "thresholds": {"error_gap": DISCREPANCY_MIN_GAP,
                           "warning_gap": DISCREPANCY_WARNING_GAP},
        }
        if gap < DISCREPANCY_WARNING_GAP:
            out.append(Passed("train-eval-discrepancy",
                              f"evaluation accuracy {_pct(acc_cmp)} vs {_pct(ref)} on "
                              f"{ref_what}", evidence))
            continue
        fixed = r.get("accuracy_with_training_statistics")
        out.append(Finding(
            code="train-eval-discrepancy", area="evaluation",
            severity="error" if gap >= DISCREPANCY_MIN_GAP else "warning",
            title=(f"accuracy {_pct(acc_cmp)} through the evaluation path vs {_pct(ref)} on "
                   f"{ref_what}"),
            explanation=(
                f"The trained model is good: it scores {_pct(ref)} on {ref_what}. Through "
                f"{r['source']} it scores {_pct(acc_cmp)} ({r.get('labels_from') or 'labels'}). "
                f"The weights are the same, so the difference is in what the evaluation code "
                f"does before or around the model: preprocessing, layout, model mode."
                + (f" With the inputs mapped to the training statistics it scores "
                   f"{_pct(fixed)} again." if fixed is not None else "")),
            evidence=evidence,
            fix=Fix(summary="make the evaluation path identical to training: the same "
                            "preprocessing function, the same layout, model.eval() in PyTorch",
                    code=snippet(ev, keras="x_eval = preprocess(x_eval)   # shared with "
                                           "training\nmodel.evaluate(x_eval, y_eval)",
                                 torch="model.eval()\nwith torch.no_grad():\n    out = model("
                                       "transform(x_eval))"))))
    return out


# ------------------------------------------------------------------------------------------------
def _torch_capture(ev) -> dict | None:
    captured = ev.probes.get("captured") or {}
    return captured.get("torch")


@register("eval-mode-not-set", "training",
          explains=("prediction-collapse", "train-eval-discrepancy",))
def eval_mode_not_set(ev):
    if ev.framework != "torch":
        return []
    info = _torch_capture(ev)
    if not info:
        return [Skipped("eval-mode-not-set", "needs the evaluation loop itself: run the script "
                                             "with `cnndoctor run`")]
    calls = info.get("eval_calls") or 0
    bad = info.get("eval_calls_in_training_mode") or 0
    layers = (info.get("dropout_modules") or []) + (info.get("norm_modules") or [])
    if not calls:
        return [Skipped("eval-mode-not-set", "no evaluation forward pass (without gradients or "
                                             "in eval mode) was seen")]
    if not bad or not layers:
        why = ("the model has no dropout or batch norm" if bad else
               f"{calls} evaluation call(s), all in eval mode")
        return [Passed("eval-mode-not-set", why, {"eval_calls": calls, "in_training_mode": bad})]
    effect = (ev.probes.get("evaluation") or {}).get("eval_mode") or {}
    agreement = effect.get("agreement")
    disagreement = None if agreement is None else 1 - agreement
    severity = "error" if disagreement is None or disagreement > EVAL_MODE_ERROR_DISAGREEMENT \
        else "warning"
    evidence = {"evaluation_calls": calls, "in_training_mode": bad,
                "dropout_modules": info.get("dropout_modules"),
                "batchnorm_modules": info.get("norm_modules"),
                "where": info.get("eval_sources")}
    for k in ("samples", "agreement", "accuracy_training_mode", "accuracy_eval_mode"):
        if effect.get(k) is not None:
            evidence[k] = effect[k]
    measured = ""
    if agreement is not None:
        measured = (f" Measured on {effect.get('samples')} of those inputs: "
                    f"{_pct(disagreement)} of the predictions change once the model is in eval "
                    f"mode")
        if effect.get("accuracy_eval_mode") is not None:
            measured += (f" (accuracy {_pct(effect.get('accuracy_training_mode'))} as run vs "
                         f"{_pct(effect['accuracy_eval_mode'])} in eval mode)")
        measured += "."
    return [Finding(
        code="eval-mode-not-set", area="training", severity=severity,
        title=(f"{bad} of {calls} evaluation forward passes ran in training mode with "
               f"{', '.join(layers[:3])}{' ...' if len(layers) > 3 else ''} active"),
        explanation=(
            "model.eval() was not called before evaluating: dropout still drops units at random "
            "and batch norm uses (and updates) the statistics of each evaluation batch, so the "
            "predictions are noisy and lower than the model can do." + measured),
        evidence=evidence,
        fix=Fix(summary="call model.eval() before evaluating (and model.train() before "
                        "training again)",
                code="model.eval()\nwith torch.no_grad():\n    outputs = model(x)\n"
                     "model.train()"))]


@register("missing-zero-grad", "training",
          explains=("exploding-gradient",))
def missing_zero_grad(ev):
    if ev.framework != "torch":
        return []
    info = _torch_capture(ev)
    if not info:
        return [Skipped("missing-zero-grad", "needs the training loop itself: run the script "
                                             "with `cnndoctor run`")]
    checks_, stale = info.get("grad_checks") or 0, info.get("stale_grad_steps") or 0
    steps, zero = info.get("optimizer_steps") or 0, info.get("zero_grad_calls") or 0
    if checks_ < MIN_GRAD_CHECKS:
        return [Skipped("missing-zero-grad", f"only {steps} optimizer step(s) seen")]
    norms = info.get("grad_norms") or []
    evidence = {"optimizer": info.get("optimizer"), "optimizer_steps": steps,
                "zero_grad_calls": zero, "steps_inspected": checks_,
                "steps_with_stale_gradients": stale,
                "parameter_inspected": info.get("sentinel_parameter")}
    if len(norms) >= 2 * NORM_WINDOW:
        first = sum(norms[:NORM_WINDOW]) / NORM_WINDOW
        last = sum(norms[-NORM_WINDOW:]) / NORM_WINDOW
        evidence["grad_norm_first_steps"] = first
        evidence["grad_norm_last_steps"] = last
    share = stale / checks_
    if share < STALE_SHARE_ERROR:
        return [Passed("missing-zero-grad",
                       f"gradients were reset after {checks_ - stale} of {checks_} optimizer "
                       f"steps inspected", evidence)]
    growth = ""
    if "grad_norm_last_steps" in evidence:
        growth = (f" The gradient norm of {info.get('sentinel_parameter')} went from "
                  f"{evidence['grad_norm_first_steps']:.3g} (first steps) to "
                  f"{evidence['grad_norm_last_steps']:.3g} (last steps).")
    return [Finding(
        code="missing-zero-grad", area="training", severity="error",
        title=(f"gradients are never reset: {stale} of {checks_} optimizer steps started from "
               f"the previous step's gradients ({zero} zero_grad() calls in {steps} steps)"),
        explanation=(
            "loss.backward() adds to the .grad of every parameter; without "
            "optimizer.zero_grad() between steps, each update uses the sum of all gradients so "
            "far, so the steps grow and point in stale directions: training oscillates or "
            "diverges instead of converging." + growth),
        evidence=evidence,
        fix=Fix(summary="call optimizer.zero_grad() once per step, before loss.backward()",
                code="for x, y in loader:\n    optimizer.zero_grad()\n    loss = loss_fn(model(x),"
                     " y)\n    loss.backward()\n    optimizer.step()"))]


# ------------------------------------------------------------------------------------------------
@register("script-error", "training")
def script_error(ev):
    captured = ev.probes.get("captured") or {}
    if not captured.get("session"):
        return []
    out = []
    for err in captured.get("errors") or []:
        expl = err.get("explanation") or {}
        during = err.get("during")
        area = "evaluation" if during in ("model.predict", "model.evaluate") else "training"
        where = f" at {err['where']}" if err.get("where") else ""
        line = f" ({err['line']})" if err.get("line") else ""
        cause = expl.get("cause")
        out.append(Finding(
            code="script-error", area=area, severity="error",
            title=f"{err['script']} raised {err['type']}{where}: "
                  f"{(cause or err['message']).splitlines()[0][:160]}",
            explanation=(
                (f"{cause[0].upper() + cause[1:]}. " if cause else "")
                + f"The script stopped{where}{line}"
                + (f" inside {during}" if during else "")
                + f" with {err['type']}: {err['message'].splitlines()[0][:300]}. "
                + "What ran before the error was still diagnosed."),
            evidence={k: err.get(k) for k in ("script", "type", "message", "where", "line",
                                              "during", "traceback")},
            fix=Fix(summary=expl.get("fix") or "see the traceback above; the findings below "
                                               "were measured on what ran before it",
                    code="")))
    return out
