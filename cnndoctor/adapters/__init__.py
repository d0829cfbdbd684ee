"""Framework adapters: a Keras 3 model or a torch.nn.Module in, a ``ModelGraph`` out.

The adapters themselves live with the rest of their framework's code
(``cnndoctor/frameworks/<framework>/adapter.py``); this is the framework-neutral entry point.
"""
from __future__ import annotations

from typing import Any

from ..frameworks import framework_of, module
from ..graph import ModelGraph

__all__ = ["describe", "framework_of"]


def describe(model: Any, loss: Any = None, example: Any = None) -> ModelGraph:
    """Describe ``model`` (and ``loss``) in framework-neutral terms.

    ``example`` is one batch of inputs in the model's own layout (numpy or tensor); adapters use it
    to learn shapes where the model does not declare them.
    """
    framework = framework_of(model)
    adapter = module(framework, "adapter")
    return getattr(adapter, f"describe_{framework}")(model, loss=loss, example=example)
