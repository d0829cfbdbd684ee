"""What a session knows about each model a script touched."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from .capture import Stream

TRAINING = "training"
VALIDATION = "validation"
EVALUATION = "evaluation"
PREDICTION = "prediction"
EVAL_PHASES = (EVALUATION, PREDICTION)


@dataclass
class ModelRecord:
    serial: int
    framework: str  # "keras" or "torch"
    model: Any
    script: str  # the script in which the session first saw it
    layout: str = "channels_last"
    streams: dict[str, Stream] = field(default_factory=dict)  # "<phase>@<script>" -> Stream
    compile: dict = field(default_factory=dict)  # Keras compile arguments, described
    fits: list[dict] = field(default_factory=list)  # one per Keras fit call
    evaluations: list[dict] = field(default_factory=list)  # Keras evaluate() results
    fit_arrays: tuple | None = None  # (x, y) subset of the arrays given to fit (crash fallback)
    fit_val_arrays: tuple | None = None
    # PyTorch
    loss: Any = None  # the loss module or function applied to the outputs in training
    loss_name: str | None = None
    optimizer: Any = None
    observed_losses: list[float] = field(default_factory=list)  # the values backward() ran on
    hand_loss: dict | None = None  # a hand-written loss: what it expects, its ops, its reduction
    steps: int = 0  # optimizer steps (torch) / training batches (keras)
    zero_grad_calls: int = 0
    grad_checks: int = 0  # optimizer steps after which the next backward was inspected
    stale_grad_steps: int = 0  # ... and found the previous step's gradients still there
    grad_norms: list[float] = field(default_factory=list)
    after_step: bool = False
    sentinel: Any = None  # (parameter name, hook handle, weakref to the parameter)
    sentinel_name: str | None = None  # the parameter whose gradients were inspected
    # saving / loading
    saved_to: list[str] = field(default_factory=list)
    loaded_from: str | None = None
    source: "ModelRecord | None" = None  # the in-session record whose saved file was loaded
    cached: dict | None = None  # the training record of the loaded file, from the cache
    cached_note: str | None = None  # why there is none

    # Keras evaluate()/predict() calls so far, per phase: each call is its own stream (its own
    # dataset, read with the weights of the moment it ran).
    calls: dict = field(default_factory=dict)

    def stream(self, phase: str, script: str, source: str) -> Stream:
        call = self.calls.get(phase)
        key = f"{phase}@{script}" if call is None else f"{phase}#{call}@{script}"
        s = self.streams.get(key)
        if s is None:
            if call is not None:
                source = f"{source} (call {call})"
            s = Stream(phase=phase, source=source, layout=self.layout)
            s.notes["steps_before"] = self.steps  # training steps done when it ran
            self.streams[key] = s
        return s

    def new_call(self, phase: str) -> int:
        """A new evaluate()/predict() call begins: its batches go to a stream of their own."""
        self.calls[phase] = self.calls.get(phase, 0) + 1
        return self.calls[phase]

    def streams_of(self, *phases: str) -> list[Stream]:
        return [s for s in self.streams.values() if s.phase in phases and s.batches]

    @property
    def trained(self) -> bool:
        return bool(self.fits) or self.steps > 0 or bool(self.streams_of(TRAINING))

    @property
    def label(self) -> str:
        name = getattr(self.model, "name", None) if self.framework == "keras" else None
        kind = type(self.model).__name__
        where = os.path.basename(self.script)
        if self.loaded_from:
            return f"{kind} loaded from {os.path.basename(self.loaded_from)} in {where}"
        return f"{kind}{f' {name!r}' if name else ''} from {where}"
