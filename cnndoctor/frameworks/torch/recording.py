"""Taps on a torch model's ReLUs, for the probes' activation records.

ReLU modules get forward hooks, and a ``TorchFunctionMode`` sees ``F.relu`` / ``torch.relu`` /
``x.relu()`` called inside ``forward``. Both are attached only between ``begin`` and ``end`` (a
sampled step), so the steps in between run without them.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

#: the functional forms of ReLU a forward may call
RELU_FUNCTIONS = {torch.relu, torch.nn.functional.relu, torch.nn.functional.relu6,
                  torch.Tensor.relu, torch.relu_, torch.Tensor.relu_, torch.nn.functional.relu_}
#: module classes (lower-case names) whose zero outputs mean a unit is silent
RELU_MODULES = ("relu", "relu6")


class ReluTaps:
    """``record(name, output, channel_axis)`` for every ReLU output while active; functional
    ReLUs are named by ``function_name()`` (called once per call, in execution order)."""

    def __init__(self, model: Any, record: Callable[[str, Any, int], None],
                 function_name: Callable[[], str] | None = None):
        self.active = False
        self._record = record
        self._function_name = function_name or (lambda: "relu (in forward)")
        self._modules = [(name or "relu", module) for name, module in model.named_modules()
                         if type(module).__name__.lower() in RELU_MODULES]
        self._depth = 0  # > 0 inside a ReLU module: its own F.relu is not a second record
        self._hooks: list = []
        self._mode = None

    def begin(self) -> None:
        self.active = True
        if self._mode is not None:
            return
        taps = self

        def pre(mod, inputs):
            taps._depth += 1

        for name, module in self._modules:
            def post(mod, inputs, output, _name=name):
                taps._depth -= 1
                if taps.active:
                    taps._record(_name, output, 1)

            self._hooks.append(module.register_forward_pre_hook(pre))
            self._hooks.append(module.register_forward_hook(post))
        self._depth = 0

        class _Mode(torch.overrides.TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                if func in RELU_FUNCTIONS and taps._depth == 0 and isinstance(out, torch.Tensor):
                    taps._record(taps._function_name(), out, 1)
                return out

        self._mode = _Mode()
        self._mode.__enter__()

    def end(self) -> None:
        self.active = False
        if self._mode is not None:
            mode, self._mode = self._mode, None
            mode.__exit__(None, None, None)
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    def close(self) -> None:
        self.end()
