"""One home per framework: ``cnndoctor/frameworks/keras/`` and ``cnndoctor/frameworks/torch/``.

Everything that differs between Keras 3 and PyTorch lives in its framework's folder, each with
the same modules:

- ``adapter``: the model (and loss) read into the framework-neutral ``ModelGraph``;
- ``losses``: what a loss expects, a loss from its name, how labels are given to it;
- ``runtime``: inputs, train/eval modes, copies, weights, labels, one training step
  (``Trainer``); ``cnndoctor.runtime`` is the framework-neutral front end over it;
- ``recording``: the taps that let probes record activations during a forward pass;
- ``surgery``: changes to a copy's architecture, for the fixes.

``of(model)`` gives the framework's ``runtime`` module. A new framework is a new folder with
these modules; a new fix that needs framework code adds a function to each ``surgery``.
"""
from __future__ import annotations

import importlib
import sys
from typing import Any

from ..errors import NotAModelError

NAMES = ("keras", "torch")


def framework_of(model: Any) -> str:
    """"keras" or "torch"; raises NotAModelError for anything else."""
    keras = sys.modules.get("keras")
    if keras is not None and isinstance(model, keras.Model):
        return "keras"
    if keras is not None and isinstance(model, keras.layers.Layer):
        raise NotAModelError(
            f"got a single Keras layer ({type(model).__name__}); expected a Keras model: wrap it, "
            "e.g. keras.Sequential([...]).")
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        return "torch"
    raise NotAModelError(
        f"expected a Keras 3 model (keras.Model / keras.Sequential) or a torch.nn.Module as the "
        f"model, got {type(model).__module__}.{type(model).__qualname__}.")


def module(framework: str, name: str):
    """``cnndoctor.frameworks.<framework>.<name>`` (``name``: adapter, losses, runtime, ...)."""
    if framework not in NAMES:
        raise ValueError(f"unknown framework {framework!r}: expected one of {', '.join(NAMES)}")
    return importlib.import_module(f"{__name__}.{framework}.{name}")


def of(model: Any):
    """The ``runtime`` module of ``model``'s framework."""
    return module(framework_of(model), "runtime")
