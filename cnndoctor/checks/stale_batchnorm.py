"""stale-batchnorm: batch norm's running statistics have not caught up with the weights, so the
model predicts far worse in inference mode than its weights allow.

Judged from the batchnorm probe: the same held-out images predicted by the model as given and by
a copy whose statistics were re-estimated on training images. Only the statistics differ, so a
gain that chance cannot explain (an exact McNemar test on the images that change) is theirs.
"""
from __future__ import annotations

import math

from . import Finding, Fix, Passed, register, snippet

CODE = "stale-batchnorm"
#: Held-out images below which the comparison says too little to judge.
MIN_SAMPLES = 30
#: Two-sided p-value of the exact McNemar test (images fixed vs broken by re-estimation) below
#: which the change is not chance; 1% because this check runs on every model with batch norm.
MAX_P_VALUE = 0.01
#: Accuracy the stored statistics cost, in points, from which it is a warning: a healthy trained
#: Conv-BN model re-estimated on training images moves by -2 to +1 point (the healthy seeds and
#: zoo benchmarks, docs/benchmarks.md), so 5 points is outside what a healthy model shows.
WARNING_GAIN = 0.05
#: The re-estimated copy must get this share of the way from chance to 100% before the weights
#: count as trained: an untrained model's statistics are "stale" too, but it has learned nothing
#: they could spoil (the clean zoo's untrained torch-onecycle, seed 1: 5.0% -> 10.3% on 10
#: classes, p = 0.007, was a warning without it). A quarter: 32.5% on 10 classes, 62.5% on 2.
LEARNED_SHARE = 0.25
#: From this loss it is an error: a fifth of the held-out images are lost to the statistics alone
#: (examples/keras_bn_few_steps.py: 7% as given after 160 steps of momentum 0.99).
ERROR_GAIN = 0.20


def mcnemar_p(fixed: int, broken: int) -> float:
    """Two-sided exact McNemar p-value: how likely a split this uneven is by chance."""
    n = fixed + broken
    if n == 0:
        return 1.0
    k = min(fixed, broken)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


@register(CODE, "training", needs=("probe:batchnorm",),
          explains=("prediction-collapse", "train-eval-discrepancy"))
def check(ev):
    d = ev.probes["batchnorm"]
    before, after = d["accuracy_as_given"], d["accuracy_reestimated"]
    gain = after - before
    p = mcnemar_p(d["fixed"], d["broken"])
    evidence = {"batchnorm_layers": d["layers"], "measured_on": d["measured_on"],
                "samples": d["samples"], "accuracy_as_given": round(before, 4),
                "accuracy_reestimated": round(after, 4), "gain": round(gain, 4),
                "images_fixed": d["fixed"], "images_broken": d["broken"],
                "p_value": round(p, 6), "reestimated_on_training_images": d["reestimated_on"],
                "classes_predicted_as_given": d["classes_predicted_as_given"]}
    chance = max(1.0 / max(d["classes"], 2), d.get("majority_share", 0.0))
    learned = after >= chance + LEARNED_SHARE * (1 - chance)
    evidence["chance"] = round(chance, 4)
    if (d["samples"] < MIN_SAMPLES or gain < WARNING_GAIN or p >= MAX_P_VALUE or not learned
            or not d["finite"]):
        return [Passed(CODE, f"{d['layers']} batch-norm layer(s): accuracy {before:.1%} as given, "
                             f"{after:.1%} with statistics re-estimated on training images "
                             f"(on {d['measured_on']})", evidence)]
    severity = "error" if gain >= ERROR_GAIN else "warning"
    keras_fix = ("# a short training: let the running statistics follow the weights faster\n"
                 "keras.layers.BatchNormalization(momentum=0.9)\n"
                 "# or, after training, set them to those of the training images:\n"
                 "for layer in model.layers:\n"
                 "    if isinstance(layer, keras.layers.BatchNormalization):\n"
                 "        layer.momentum = 0.0\n"
                 "model(x_train[:512], training=True)   # then restore the momentum")
    torch_fix = ("for m in model.modules():\n"
                 "    if isinstance(m, nn.modules.batchnorm._BatchNorm):\n"
                 "        m.reset_running_stats(); m.momentum = None  # a plain average\n"
                 "model.train()\n"
                 "with torch.no_grad():\n"
                 "    for xb, _ in train_loader:\n"
                 "        model(xb)\n"
                 "model.eval()")
    return [Finding(
        code=CODE, area="training", severity=severity,
        title=(f"batch norm's running statistics are stale: accuracy {before:.0%} with them, "
               f"{after:.0%} with statistics re-estimated on training images"),
        explanation=(
            f"Batch norm trains on the statistics of each batch but predicts with running "
            f"averages that trail them (Keras keeps 99% of the old average at every step, torch "
            f"90%). A copy of this model whose {d['layers']} batch-norm layer(s) were given the "
            f"statistics of {d['reestimated_on']} training images, with the same weights, "
            f"predicts {d['samples']} images of {d['measured_on']} at {after:.1%} instead of "
            f"{before:.1%} ({d['fixed']} images right that were wrong, {d['broken']} the other "
            f"way; p = {p:.2g}). The weights have learned; the stored statistics are still "
            f"those of the first steps. Train longer, lower the momentum's memory "
            f"(momentum=0.9 in Keras) or re-estimate the statistics after training."),
        evidence=evidence,
        fix=Fix(summary="re-estimate batch norm's statistics on training images after "
                        "training (or BatchNormalization(momentum=0.9) for a short training)",
                code=snippet(ev, keras=keras_fix, torch=torch_fix)))]
