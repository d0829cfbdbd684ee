"""How the model's output meets the loss: double-softmax, missing-softmax,
output-activation-mismatch."""
from __future__ import annotations

from .. import graph as g
from . import Finding, Fix, Passed, register, snippet


def _fix_double(ev, out_layer, loss):
    if ev.framework == "keras":
        return ("# either keep the softmax and let the loss take probabilities:\n"
                f"model.compile(loss=keras.losses.{_keras_loss_class(loss)}(from_logits=False), "
                "...)\n# or drop the final softmax and keep from_logits=True")
    return (f"# drop the final softmax ({out_layer}) and return the logits:\n"
            "#   return self.fc(x)          # nn.CrossEntropyLoss applies log-softmax itself\n"
            "# and apply torch.softmax(logits, 1) only when you need probabilities")


def _keras_loss_class(loss):
    from ..frameworks.keras.losses import class_name

    return class_name(loss) or "CategoricalCrossentropy"


@register("double-softmax", "model", needs=("loss",),
          explains=("dead-relu", "no-learning", "loss-plateau", "vanishing-gradient", "lr-too-low",
                    "cannot-overfit-batch", "prediction-collapse",))
def double_softmax(ev):
    graph, loss = ev.graph, ev.graph.loss
    out = graph.output_activation
    last = graph.output_layer
    if loss.expects == g.EXPECTS_LOGITS and (out == "softmax" or
                                             (out == "sigmoid" and loss.family == g.BINARY)):
        what = "softmax" if out == "softmax" else "sigmoid"
        return [Finding(
            code="double-softmax", area="model", severity="error",
            title=f"the model outputs {what} probabilities and the loss applies {what} again",
            explanation=(
                f"{loss.source} expects raw logits and applies {what} itself, but the model "
                f"already ends with {what} ({last.label}). The loss squashes values that are "
                f"already between 0 and 1 a second time: the predicted distribution can never "
                f"get far from uniform, the loss cannot fall much below its starting value, and "
                f"the gradients reaching the network are tiny. Training stalls."),
            evidence={"output_layer": last.label, "output_activation": out,
                      "loss": loss.source, "loss_expects": loss.expects},
            fix=Fix(summary=f"apply {what} once: either in the model or in the loss, not both",
                    code=_fix_double(ev, last.label, loss)))]
    return [Passed("double-softmax", f"model outputs {out}; loss {loss.name} expects "
                                     f"{loss.expects}", {"output_activation": out,
                                                         "loss_expects": loss.expects})]


@register("missing-softmax", "model", needs=("loss",),
          explains=("no-learning", "nan-loss", "cannot-overfit-batch",))
def missing_softmax(ev):
    graph, loss = ev.graph, ev.graph.loss
    out = graph.output_activation
    if out == g.LINEAR and loss.expects in (g.EXPECTS_PROBABILITIES,
                                            g.EXPECTS_LOG_PROBABILITIES):
        need = {g.EXPECTS_PROBABILITIES: "sigmoid" if loss.family == g.BINARY else "softmax",
                g.EXPECTS_LOG_PROBABILITIES: "log_softmax"}[loss.expects]
        keras_fix = (f"model.compile(loss=keras.losses.{_keras_loss_class(loss)}"
                     f"(from_logits=True), ...)\n# or end the model with "
                     f"keras.layers.Activation('{need}')")
        torch_fix = ("loss_fn = nn.CrossEntropyLoss()   # takes logits directly"
                     if need != "sigmoid" else "loss_fn = nn.BCEWithLogitsLoss()  # takes logits")
        if need == "log_softmax":
            torch_fix = ("loss_fn = nn.CrossEntropyLoss()   # = log_softmax + NLLLoss, on logits\n"
                         "# or: return F.log_softmax(self.fc(x), dim=1)")
        return [Finding(
            code="missing-softmax", area="model", severity="error",
            title=f"the model outputs raw logits but {loss.name} expects {loss.expects}",
            explanation=(
                f"The model's last layer ({graph.output_layer.label}) is linear, so it outputs "
                f"unbounded logits, but {loss.source} expects {loss.expects.replace('_', ' ')}. "
                f"The loss then reads negative or above-one numbers as probabilities: it is "
                f"wrong, can be negative or infinite, and its gradients point the wrong way."),
            evidence={"output_layer": graph.output_layer.label, "output_activation": out,
                      "loss": loss.source, "loss_expects": loss.expects},
            fix=Fix(summary=f"tell the loss it gets logits, or add a {need} at the end",
                    code=snippet(ev, keras=keras_fix, torch=torch_fix)))]
    return [Passed("missing-softmax", f"model outputs {out}; loss expects {loss.expects}",
                   {"output_activation": out})]


@register("output-activation-mismatch", "model", needs=("loss",),
          explains=("no-learning", "loss-plateau", "nan-loss", "cannot-overfit-batch",))
def output_activation_mismatch(ev):
    graph, loss = ev.graph, ev.graph.loss
    out = graph.output_activation
    units = graph.output_units
    problems = []
    if out == "softmax" and units == 1:
        problems.append(("error", "softmax over a single output unit always gives 1.0",
                         "A softmax normalises over the output units; over one unit its output is "
                         "always exactly 1, whatever the input, so nothing can be learned. For two "
                         "classes use one unit with a sigmoid, or two units with a softmax.",
                         "keras.layers.Dense(1, activation='sigmoid')  # with binary_crossentropy",
                         "nn.Linear(n, 1)  # with nn.BCEWithLogitsLoss()"))
    if loss.expects == g.EXPECTS_LOG_PROBABILITIES and out == "softmax":
        problems.append(("error", "NLL loss fed probabilities instead of log-probabilities",
                         "NLLLoss expects log-probabilities (F.log_softmax), but the model outputs "
                         "softmax probabilities: the loss maximises the probability itself rather "
                         "than its log, which gives weak, badly scaled gradients.",
                         "", "return F.log_softmax(self.fc(x), dim=1)  # not softmax"))
    if loss.expects == g.EXPECTS_PROBABILITIES and out == "log_softmax":
        problems.append(("error", f"{loss.name} fed log-probabilities",
                         "The loss expects probabilities between 0 and 1 but the model outputs "
                         "log-probabilities (all negative).",
                         "keras.layers.Softmax()  # not log_softmax",
                         "return torch.softmax(self.fc(x), 1)"))
    if loss.expects == g.EXPECTS_PROBABILITIES and out not in (
            "softmax", "sigmoid", g.LINEAR, "log_softmax"):
        problems.append(("error", f"a {out} output fed to a loss that expects probabilities",
                         f"{loss.source} expects probabilities between 0 and 1, but the model's "
                         f"last step is {out}, which does not produce a probability "
                         f"distribution.",
                         "keras.layers.Dense(n_classes, activation='softmax')",
                         "nn.CrossEntropyLoss() on a linear last layer"))
    if out == "sigmoid" and loss.family in (g.CATEGORICAL, g.SPARSE) and (units or 0) > 1:
        problems.append(("warning", "sigmoid outputs with a categorical cross-entropy",
                         "Categorical cross-entropy treats the outputs as one distribution over "
                         "the classes; independent sigmoids do not sum to one, so the loss and "
                         "the predicted class disagree. Use a softmax for one-label-per-image.",
                         "keras.layers.Dense(n_classes, activation='softmax')",
                         "nn.Linear(n, n_classes)  # with nn.CrossEntropyLoss()"))
    if not problems:
        return [Passed("output-activation-mismatch",
                       f"{out} output over {units} unit(s) fits {loss.name}",
                       {"output_activation": out, "output_units": units})]
    return [Finding(code="output-activation-mismatch", area="model", severity=sev, title=title,
                    explanation=text,
                    evidence={"output_layer": graph.output_layer.label, "output_activation": out,
                              "output_units": units, "loss": loss.source},
                    fix=Fix(summary="make the last activation fit the loss",
                            code=snippet(ev, keras=kfix, torch=tfix)))
            for sev, title, text, kfix, tfix in problems]
