"""double-softmax and missing-softmax: what the model outputs and what the loss expects made to
agree. Keras: the loss's ``from_logits`` set to match the output. PyTorch: the softmax at the
end of the model removed, so that CrossEntropyLoss gets the logits it expects (double-softmax);
a loss taking logits for one that expects probabilities (missing-softmax)."""
from __future__ import annotations

from . import CannotApply, Trial, register


def _keras_loss(ev, from_logits: bool):
    from ..frameworks.keras.losses import with_from_logits

    info = ev.graph.loss
    loss = with_from_logits(info, from_logits)
    if loss is None:
        raise CannotApply(f"the loss {info.source if info else '?'} has no from_logits setting")
    return loss, f"keras.losses.{type(loss).__name__}(from_logits={from_logits})"


def _keras_with_loss(trial: Trial, ev, from_logits: bool) -> Trial:
    loss, text = _keras_loss(ev, from_logits=from_logits)
    return trial.change(model=trial.ops().recompile(trial.model, loss=loss), loss=loss,
                        params={"loss": text})


@register("loss-matches-output", treats=("double-softmax",),
          summary="the loss takes the model's probabilities (Keras from_logits=False; "
                  "PyTorch: drop the softmax at the end of the model)")
def double_softmax(trial: Trial, finding, ev) -> Trial:
    if trial.framework == "keras":
        return _keras_with_loss(trial, ev, from_logits=False)
    out = ev.graph.output_layer
    model = trial.ops().remove(trial.model, out.name, "softmax")
    return trial.change(model=model, params={"removed": out.label})


@register("logits-loss", treats=("missing-softmax",),
          summary="a loss that applies the softmax itself to the model's logits")
def missing_softmax(trial: Trial, finding, ev) -> Trial:
    if trial.framework == "keras":
        return _keras_with_loss(trial, ev, from_logits=True)
    from torch import nn

    info = ev.graph.loss
    if info is not None and info.family == "binary":
        return trial.change(loss=nn.BCEWithLogitsLoss(), params={"loss": "nn.BCEWithLogitsLoss()"})
    return trial.change(loss=nn.CrossEntropyLoss(), params={"loss": "nn.CrossEntropyLoss()"})
