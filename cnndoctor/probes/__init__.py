"""Probes: gather evidence, never judge.

A probe is a function ``probe(ev: Evidence, ctx: ProbeContext) -> None`` that stores its result in
``ev.probes[name]`` (a dict; ``{"skipped": "reason"}`` when it cannot run) and may add figures to
``ev.figures``. Probes that train do so on copies of the user's model. Each probe is registered
with the budgets it runs at; ``run_probes`` runs those that fit the chosen budget, in order.
"""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

from .._plugins import import_modules, sort_by_module
from ..evidence import Evidence

#: "static" reads the model, loss and data only (no training, seconds); the others bound how much
#: training the probes may do.
BUDGETS = ("static", "quick", "standard", "thorough")
TRAINING_BUDGETS = ("quick", "standard", "thorough")

# Probe modules under cnndoctor.probes, in the order they run. Data statistics first; modules
# that a later capability adds are imported when present.
MODULES = ["datastats", "samples"]
OPTIONAL_MODULES = ["training", "evaluation", "batchnorm", "robustness"]


@dataclass
class ProbeContext:
    budget: str = "standard"
    seed: int = 0
    verify: bool = False  # retrain with the fixes to verify them (slow)
    #: where many short trainings run: "auto", "inprocess", "local" or "ray" (cnndoctor.executor)
    executor: str = "auto"
    progress: Callable[[str], None] | None = None  # called with a short line of what runs now
    timings: dict[str, float] = field(default_factory=dict)
    bars: bool = True  # progress bars on stderr when it is a terminal (cnndoctor.progress)

    def say(self, text: str) -> None:
        if self.progress is not None:
            from ..progress import lines_above

            with lines_above():
                self.progress(text)


@dataclass
class Probe:
    name: str
    fn: Callable[[Evidence, ProbeContext], None]
    budgets: tuple[str, ...]


REGISTRY: list[Probe] = []


def register(name: str, budgets: tuple[str, ...] = TRAINING_BUDGETS):
    def wrap(fn):
        REGISTRY.append(Probe(name=name, fn=fn, budgets=tuple(budgets)))
        return fn

    return wrap


def load_all() -> list[Probe]:
    if not getattr(load_all, "_done", False):
        import_modules(__name__, MODULES, OPTIONAL_MODULES)
        sort_by_module(REGISTRY, MODULES + OPTIONAL_MODULES)
        load_all._done = True
    return REGISTRY


def run_probes(ev: Evidence, ctx: ProbeContext) -> None:
    from ..progress import bar

    chosen = [p for p in load_all() if ctx.budget in p.budgets]
    with bar(len(chosen), "cnndoctor probes", wanted=ctx.bars, unit="probe") as shown:
        for probe in chosen:
            shown.update(0, label=probe.name)
            _run_one(probe, ev, ctx)
            shown.update(1)


def _run_one(probe: Probe, ev: Evidence, ctx: ProbeContext) -> None:
    start = time.perf_counter()
    try:
        probe.fn(ev, ctx)
    except Exception as exc:  # one failing probe must not hide the rest of the diagnosis
        from ..errors import InputError

        if isinstance(exc, InputError):
            raise
        reason = f"the {probe.name} probe failed: {type(exc).__name__}: {exc}"
        layout = _layout_mismatch(ev)
        if layout:  # the model cannot take these images at all: say why, not the traceback
            reason = (f"the {probe.name} probe could not feed the model: {layout} (see "
                      f"channel-layout)")
        ev.probes[probe.name] = {"skipped": reason}
        ev.figures.setdefault("probe_errors", []).append(
            {"probe": probe.name, "traceback": traceback.format_exc(limit=8)})
    ctx.timings[f"probe:{probe.name}"] = time.perf_counter() - start


def _layout_mismatch(ev: Evidence) -> str | None:
    """The training images' layout where it is not the model's, in words."""
    ds, model_format = ev.train, getattr(ev.graph, "data_format", None)
    if ds is None or not model_format or getattr(ds, "layout", None) in (None, model_format):
        return None
    return (f"the training images are {ds.layout.replace('_', ' ')} and the model takes "
            f"{model_format.replace('_', ' ')}")
