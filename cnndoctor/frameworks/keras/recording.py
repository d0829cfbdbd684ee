"""Taps on a Keras model's ReLUs, for the probes' activation records.

Keras layers on the torch backend bypass ``torch.nn.Module.__call__``, so forward hooks do not
fire on them: ReLU layers (and layers with a fused ReLU activation) get their ``call`` wrapped on
the instance, for the life of the taps; the wrapper records only between ``begin`` and ``end``.
"""
from __future__ import annotations

from typing import Any, Callable

from .runtime import layers

#: activations whose zero outputs mean a unit is silent (LeakyReLU and ELU never are)
RELU_FAMILY = ("relu", "relu6")


def is_relu(layer: Any) -> bool:
    if type(layer).__name__ == "ReLU":
        return float(getattr(layer, "negative_slope", 0.0) or 0.0) == 0.0
    act = getattr(layer, "activation", None)
    if act is None or isinstance(act, str):
        return isinstance(act, str) and act in RELU_FAMILY
    return getattr(act, "__name__", "") in RELU_FAMILY


def _restore_call(layer: Any) -> None:
    try:
        del layer.call  # the class's own call shows through again
    except AttributeError:
        pass


class ReluTaps:
    """``record(layer_name, output, channel_axis)`` for every ReLU output while active."""

    def __init__(self, model: Any, record: Callable[[str, Any, int], None],
                 function_name: Callable[[], str] | None = None):
        self.active = False
        self._tapped = []
        for layer in layers(model):
            if not is_relu(layer):
                continue
            original = layer.call
            axis = 1 if getattr(layer, "data_format", None) == "channels_first" else -1

            def call(*args, _orig=original, _name=layer.name, _axis=axis, **kwargs):
                out = _orig(*args, **kwargs)
                if self.active:
                    record(_name, out, _axis)
                return out

            layer.call = call
            self._tapped.append(layer)

    def begin(self) -> None:
        self.active = True

    def end(self) -> None:
        self.active = False

    def close(self) -> None:
        self.end()
        for layer in self._tapped:
            _restore_call(layer)
        self._tapped = []
