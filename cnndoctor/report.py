"""Findings and the report: the public contract of ``CHECKS.md``.

A *finding* is one problem with a stable code. A *passed* entry is a check that ran and found
nothing, with what it measured; a *skipped* entry is a check that could not run, with the reason.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

ERROR = "error"
WARNING = "warning"
INFO = "info"
SEVERITY_ORDER = {ERROR: 0, WARNING: 1, INFO: 2}
AREAS = ("model", "data", "training", "evaluation", "robustness")


@dataclass
class Fix:
    summary: str  # what to change, in words
    code: str = ""  # the snippet to write, in the user's framework
    #: the machine-applicable change (``cnndoctor/fixes``): {"name": ..., "params": {...}}, filled
    #: in when a fix module treats this finding's code
    transform: dict[str, Any] | None = None

    def to_dict(self) -> dict:
        out = {"summary": self.summary, "code": self.code}
        if self.transform is not None:
            out["transform"] = _plain(self.transform)
        return out


@dataclass
class Finding:
    code: str
    area: str
    severity: str
    title: str
    explanation: str
    evidence: dict[str, Any]
    fix: Fix
    verified: dict[str, Any] | None = None
    explained_by: list[str] = field(default_factory=list)  # codes of root causes present
    rank: int | None = None

    def __post_init__(self):
        if self.severity not in SEVERITY_ORDER:
            raise ValueError(f"unknown severity {self.severity!r}")
        if self.area not in AREAS:
            raise ValueError(f"unknown area {self.area!r}")

    def to_dict(self) -> dict:
        out = {
            "rank": self.rank,
            "code": self.code,
            "area": self.area,
            "severity": self.severity,
            "title": self.title,
            "explanation": self.explanation,
            "evidence": _plain(self.evidence),
            "fix": self.fix.to_dict(),
            "explained_by": list(self.explained_by),
        }
        if self.verified is not None:
            out["verified"] = _plain(self.verified)
        return out


@dataclass
class Passed:
    code: str
    measured: str  # one line: what was measured and found fine
    figures: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"code": self.code, "measured": self.measured, "figures": _plain(self.figures)}


@dataclass
class Skipped:
    code: str
    reason: str

    def to_dict(self) -> dict:
        return {"code": self.code, "reason": self.reason}


@dataclass
class Report:
    framework: str
    findings: list[Finding]
    passed: list[Passed]
    skipped: list[Skipped]
    timings: dict[str, float] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)  # confusion matrix, per-layer stats, ...
    model: dict[str, Any] = field(default_factory=dict)  # the neutral model description
    notes: list[str] = field(default_factory=list)  # what the user should know about this run
    title: str = ""

    @property
    def verdict(self) -> str:
        if any(f.severity == ERROR for f in self.findings):
            return "broken"
        if any(f.severity == WARNING for f in self.findings):
            return "warnings"
        return "healthy"

    @property
    def exit_code(self) -> int:
        """0 when no finding is an error, 1 otherwise (2 is for a command that could not run)."""
        return 1 if self.verdict == "broken" else 0

    @property
    def codes(self) -> list[str]:
        return [f.code for f in self.findings]

    @property
    def passed_codes(self) -> list[str]:
        return [p.code for p in self.passed]

    def get(self, code: str) -> Finding | None:
        """The finding with this code, or None."""
        return next((f for f in self.findings if f.code == code), None)

    def to_dict(self) -> dict:
        from . import __version__

        return {
            "tool": "cnndoctor",
            "version": __version__,
            "title": self.title,
            "framework": self.framework,
            "verdict": self.verdict,
            "findings": [f.to_dict() for f in self.findings],
            "passed": [p.to_dict() for p in self.passed],
            "skipped": [s.to_dict() for s in self.skipped],
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "figures": _plain(self.figures),
            "model": _plain(self.model),
            "notes": list(self.notes),
        }

    def to_json(self, path: str | None = None, indent: int = 2) -> str:
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False)
        if path is not None:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
        return text

    def to_html(self, path: str | None = None) -> str:
        """One self-contained HTML page (no network, no script); written to ``path`` if given."""
        from .html import page

        return page.write(self, path) if path is not None else page.document(self)

    def _repr_html_(self) -> str:
        """What Jupyter (and VS Code, Colab, Kaggle) shows: the page's body, no widgets."""
        from .html import page

        return page.body(self)

    def render(self, color: bool = False, verbose: bool = False) -> str:
        from .terminal import render

        return render(self, color=color, verbose=verbose)

    def __str__(self) -> str:
        return self.render()

    def __repr__(self) -> str:
        return (f"<cnndoctor Report {self.framework}: {self.verdict}, "
                f"{len(self.findings)} findings: {', '.join(self.codes) or 'none'}>")


def _plain(value: Any) -> Any:
    """Make numpy scalars/arrays and tuples JSON-safe; non-finite floats become None."""
    import math

    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        np = None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if np is not None and isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if np is not None and isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value
