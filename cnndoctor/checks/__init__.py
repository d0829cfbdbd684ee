"""Checks: evidence in, findings out.

One module per kind of problem. Each module registers its check with ``@register``; the check is a
plain function that reads ``Evidence`` and returns a list of ``Finding``, ``Passed`` and
``Skipped`` entries. Checks never train, load or modify anything: probes gather, checks judge.

Adding a check: write ``cnndoctor/checks/<name>.py`` with one ``@register``-ed function (with
``explains=`` the symptoms it can cause, for the ranking; ``prognosis=True`` where its error is a
prediction from the model's shape that training may not bear out), and add its test. Modules are
found by walking the package; ``MODULES`` only fixes the order of the reference ones.
"""
from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Callable

from .._plugins import import_modules, sort_by_module
from ..evidence import Evidence
from ..report import Finding, Fix, Passed, Skipped

# Module names under cnndoctor.checks, in the order their checks run.
MODULES = [
    # area "model"
    "activation_before_softmax",
    "missing_nonlinearity",
    "softmax_loss",  # double-softmax, missing-softmax, output-activation-mismatch
    "output_size",
    "oversized_layer",
    "excessive_dropout",
    # area "data"
    "invalid_values",
    "channel_layout",
    "unnormalized_input",
    "class_imbalance",
    "labels_uninformative",
    "duplicate_leakage",
    "spurious_correlation",
]
# Modules added by later capabilities register themselves if present (training, evaluation,
# robustness); a missing one is simply not run.
OPTIONAL_MODULES = ["training", "evaluation", "robustness", "differential"]


@dataclass
class Check:
    code: str  # the finding code it produces ("fragile-to-*" for a family)
    area: str
    fn: Callable[[Evidence], list]
    needs: tuple[str, ...]  # "train", "val", "labels", "evaluation", "reference", "probe:<name>"
    #: the symptom codes this finding can cause ("fragile-to-*" for the family): the ranking
    #: places those symptoms below it and names it in their ``explained_by``
    explains: tuple[str, ...] = ()
    #: a static prediction of failure (a model shape known to fail): an error only while the
    #: training probe shows one of the symptoms in ``explains``; see ``settle_prognoses``
    prognosis: bool = False


REGISTRY: list[Check] = []

_NEED_REASONS = {
    "train": "no training data was given",
    "val": "no validation data was given",
    "labels": "the training data has no labels",
    "evaluation": "no inputs fed at evaluation or prediction were captured",
    "reference": "no reference (real-world) samples were given",
    "loss": "the loss is not known (pass loss=... or compile the model)",
}


def register(code: str, area: str, needs: tuple[str, ...] = (),
             explains: tuple[str, ...] = (), prognosis: bool = False):
    """Register a check function producing findings with ``code`` in ``area``; ``explains``
    names the symptoms such a finding can cause; ``prognosis``: its errors predict a failure
    from the model's shape alone, and stand only while training shows one of those symptoms."""

    def wrap(fn):
        REGISTRY.append(Check(code=code, area=area, fn=fn, needs=tuple(needs),
                              explains=tuple(explains), prognosis=prognosis))
        return fn

    return wrap


def _missing(ev: Evidence, need: str) -> str | None:
    """The reason a need is not met, or None when it is."""
    if need == "train":
        return None if ev.train is not None else _NEED_REASONS[need]
    if need == "val":
        return None if ev.val is not None else _NEED_REASONS[need]
    if need == "labels":
        ok = ev.train is not None and ev.train.labels is not None
        return None if ok else _NEED_REASONS[need]
    if need == "evaluation":
        return None if ev.evaluation else _NEED_REASONS[need]
    if need == "reference":
        return None if ev.reference is not None else _NEED_REASONS[need]
    if need == "loss":
        return None if ev.graph.loss is not None else _NEED_REASONS[need]
    if need.startswith("probe:"):
        name = need.split(":", 1)[1]
        result = ev.probes.get(name)
        if result is None:
            return f"the {name.replace('_', ' ')} probe did not run at budget '{ev.budget}'"
        if isinstance(result, dict) and result.get("skipped"):
            return str(result["skipped"])
        return None
    raise ValueError(f"unknown need {need!r}")


def load_all() -> list[Check]:
    """Import every check module once so that they register; returns the registry."""
    if not getattr(load_all, "_done", False):
        import pkgutil

        found = sorted(m.name for m in pkgutil.iter_modules(__path__)
                       if not m.name.startswith("_"))
        extra = [m for m in found if m not in MODULES + OPTIONAL_MODULES]
        import_modules(__name__, MODULES, OPTIONAL_MODULES + extra)
        sort_by_module(REGISTRY, MODULES + OPTIONAL_MODULES + extra)
        load_all._done = True
    return REGISTRY


def explanations() -> dict[str, tuple[str, ...]]:
    """symptom code -> the codes whose checks declare that they can cause it."""
    out: dict[str, list[str]] = {}
    for check in load_all():
        for symptom in check.explains:
            causes = out.setdefault(symptom, [])
            if check.code not in causes:
                causes.append(check.code)
    return {k: tuple(v) for k, v in out.items()}


def run_checks(ev: Evidence, needing: str | None = None
               ) -> tuple[list[Finding], list[Passed], list[Skipped]]:
    """Run every registered check whose needs are met (``needing``: only the checks that
    need this, e.g. "probe:differential" for the second pass)."""
    findings: list[Finding] = []
    passed: list[Passed] = []
    skipped: list[Skipped] = []
    for check in load_all():
        if needing is not None and needing not in check.needs:
            continue
        reason = next((r for r in (_missing(ev, n) for n in check.needs) if r), None)
        if reason and "probe:differential" in check.needs:
            continue  # the differential diagnosis runs only when a symptom needs it
        if reason:
            skipped.append(Skipped(check.code, reason))
            continue
        try:
            results = check.fn(ev)
        except Exception as exc:  # a bug in one check must not hide the others' findings
            skipped.append(Skipped(check.code, f"the check failed: {type(exc).__name__}: {exc}"))
            ev.figures.setdefault("check_errors", []).append(
                {"check": check.code, "traceback": traceback.format_exc(limit=5)})
            continue
        for item in results:
            if isinstance(item, Finding):
                findings.append(item)
            elif isinstance(item, Passed):
                passed.append(item)
            elif isinstance(item, Skipped):
                skipped.append(item)
            else:  # pragma: no cover - programming error in a check
                raise TypeError(f"check {check.code} returned {type(item).__name__}")
    return findings, passed, skipped


def settle_prognoses(ev: Evidence, findings: list[Finding]) -> None:
    """A prognosis (an error predicted from the model's shape) that training did not bear out
    becomes a warning: when the training probe ran and none of the symptoms the check says its
    finding causes is in the report, the model trained despite it. The finding stays (the shape
    is still wasteful and its fix is still tried by ``--verify``), with what was seen in its
    evidence. Without a training probe (budget "static") the prediction stands as an error."""
    trained = ev.probes.get("train")
    if not trained or (isinstance(trained, dict) and trained.get("skipped")):
        return
    present = {f.code for f in findings}
    for check in load_all():
        if not check.prognosis:
            continue
        seen = sorted(c for c in check.explains if c in present)
        for f in findings:
            if f.code != check.code or f.severity != "error":
                continue
            f.evidence["symptoms_in_training"] = seen
            if seen:
                continue
            f.severity = "warning"
            f.explanation += (" In the training probe, though, this model showed none of those "
                              "symptoms (" + ", ".join(check.explains[:4]) + ", ...): the model "
                              "trains despite it, so here it is a warning, not the cause of a "
                              "failure.")


def snippet(ev: Evidence, keras: str, torch: str) -> str:
    """The fix code for the user's framework."""
    return keras if ev.framework == "keras" else torch


__all__ = ["register", "run_checks", "settle_prognoses", "load_all", "snippet", "Finding", "Fix",
           "Passed", "Skipped", "Evidence", "REGISTRY"]
