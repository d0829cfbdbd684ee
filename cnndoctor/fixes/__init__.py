"""Fixes: changes that cnndoctor can apply itself, to copies, and retrain to prove.

A fix is one module in this package with one ``@register``-ed function. It names the finding
codes it treats and turns a ``Trial`` (everything one verification training is made of: a model
template, the loss, the optimizer, the data, how the model is evaluated) into a changed copy:

    @register("linear-logits", treats=("activation-before-softmax",))
    def linear_logits(trial: Trial, finding: Finding, ev: Evidence) -> Trial:
        return trial.change(model=frameworks(trial).set_activation(trial.model, name, "linear"),
                            params={"layer": name})

The user's objects are never changed: ``trial.model`` is already a copy, and a fix that edits the
architecture builds another one (``surgery.py`` in ``cnndoctor/frameworks/keras/`` and
``cnndoctor/frameworks/torch/`` holds the per-framework changes). A fix that cannot apply to this model raises ``CannotApply`` with the
reason, which the report shows. Modules are found by walking the package: adding a fix is one
file and its test, no list to edit.
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


from ..errors import CannotApply  # noqa: F401  (fixes raise it; defined beside the other errors)


@dataclass
class Trial:
    """One way of training and measuring the model, as the user does it or with fixes applied.

    ``model`` is a template: every seed trains a fresh copy re-initialised from that seed
    (``retrain=True``), or, for evaluation fixes, a copy of the user's trained weights
    (``retrain=False``). Inputs in the model's own layout; labels as the user gives them.
    """

    framework: str
    model: Any
    loss: Any  # None for Keras: the model's compile() loss
    optimizer: Any  # None for Keras: the compiled optimizer
    x_train: Any
    y_train: Any
    x_val: Any
    y_val: Any
    batch_size: int = 32
    lr: float | None = None  # None: the optimizer's own
    schedule: list | None = None  # the user's torch scheduler, replayed (frameworks/torch/schedules.replay)
    #: applied to every input the model is given (training, validation, evaluation, reference)
    transform: Callable[[np.ndarray], np.ndarray] | None = None
    #: applied to the evaluation inputs only (the evaluation pipeline, as the user runs it)
    eval_transform: Callable[[np.ndarray], np.ndarray] | None = None
    augment: Callable | None = None  # augment(x_batch, rng) -> x_batch, training batches only
    balance_classes: bool = False  # resample training so that every class is seen equally often
    reset_grads: bool = True  # False: the user's loop never calls zero_grad()
    eval_mode: bool = True  # False: evaluated with dropout / batch norm in training mode
    retrain: bool = True  # False: measure the user's trained weights (evaluation fixes)
    #: with ``retrain=False``: batch norm's running statistics re-estimated on training images
    #: before measuring (a retrained copy always gets this: verify.run_trial)
    reestimate_batchnorm: bool = False
    #: what is measured: "validation" (held-out data), "evaluation" (the user's evaluation inputs,
    #: through their evaluation path) or "reference" (real-world samples)
    target: str = "validation"
    x_target: Any = None
    y_target: Any = None
    target_name: str = "validation data"
    metric: str = "accuracy"  # "accuracy" or "balanced accuracy"
    applied: list[dict] = field(default_factory=list)  # the fixes applied so far, with params

    def change(self, *, params: dict | None = None, name: str | None = None, **changes) -> "Trial":
        """A copy with ``changes``; ``params`` are recorded for the fix being applied."""
        out = dataclasses.replace(self, **changes)
        out.applied = list(self.applied)
        if params is not None or name is not None:
            out.applied.append({"name": name or _current.get("name", "?"), "params": params or {}})
        return out

    def ops(self):
        """The model surgery of this trial's framework (``cnndoctor/frameworks/<name>/surgery.py``)."""
        return importlib.import_module(f"cnndoctor.frameworks.{self.framework}.surgery")


_current: dict[str, str] = {}


@dataclass
class FixSpec:
    name: str
    treats: tuple[str, ...]
    fn: Callable[[Trial, Any, Any], Trial]
    summary: str = ""
    #: changes to the baseline trial that reproduce the user's setup for this finding (a loop
    #: without zero_grad(), evaluation in training mode, measured on the trained weights)
    reproduces: dict = field(default_factory=dict)
    #: a fix that verifies itself (retrains in its own way) returns the ``verified`` dict here
    verify: Callable | None = None

    def apply(self, trial: Trial, finding, ev) -> Trial:
        _current["name"] = self.name
        try:
            out = self.fn(trial, finding, ev)
        finally:
            _current.pop("name", None)
        if not out.applied or out.applied[-1]["name"] != self.name:
            out.applied = list(out.applied) + [{"name": self.name, "params": {}}]
        return out


REGISTRY: list[FixSpec] = []


def register(name: str, treats: tuple[str, ...], summary: str = "", *,
             reproduces: dict | None = None, verify: Callable | None = None):
    """Register a fix treating the finding ``treats`` codes ("fragile-to-*" for a family)."""

    def wrap(fn):
        REGISTRY.append(FixSpec(name=name, treats=tuple(treats), fn=fn,
                                summary=summary or (fn.__doc__ or "").strip().split("\n")[0],
                                reproduces=dict(reproduces or {}), verify=verify))
        return fn

    return wrap


def load_all() -> list[FixSpec]:
    """Import every fix module in this package once (found by walking it, no list to keep)."""
    if not getattr(load_all, "_done", False):
        for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
            if not info.name.startswith("_") and not info.name.endswith("_ops"):
                importlib.import_module(f"{__name__}.{info.name}")
        load_all._done = True
    return REGISTRY


def _matches(pattern: str, code: str) -> bool:
    return code.startswith(pattern[:-1]) if pattern.endswith("*") else pattern == code


def fix_for(code: str) -> FixSpec | None:
    """The fix that treats finding ``code``, or None."""
    return next((f for f in load_all() if any(_matches(t, code) for t in f.treats)), None)


def treated_codes() -> list[str]:
    return sorted({t for f in load_all() for t in f.treats})


__all__ = ["Trial", "FixSpec", "CannotApply", "register", "load_all", "fix_for",
           "treated_codes"]
