"""Framework adapters: a Keras 3 model or a torch.nn.Module in, a ``ModelGraph`` out."""
from __future__ import annotations

import sys
from typing import Any

from ..errors import NotAModelError
from ..graph import ModelGraph


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


def describe(model: Any, loss: Any = None, example: Any = None) -> ModelGraph:
    """Describe ``model`` (and ``loss``) in framework-neutral terms.

    ``example`` is one batch of inputs in the model's own layout (numpy or tensor); adapters use it
    to learn shapes where the model does not declare them.
    """
    framework = framework_of(model)
    if framework == "keras":
        from .keras_adapter import describe_keras

        return describe_keras(model, loss=loss, example=example)
    from .torch_adapter import describe_torch

    return describe_torch(model, loss=loss, example=example)
