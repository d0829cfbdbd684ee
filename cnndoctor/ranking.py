"""Ranking: root causes above the symptoms they explain, errors above warnings, and among
causes of the same severity, those whose fix was verified to recover most first.

Each check declares which symptoms its finding can cause (``@register(..., explains=...)``, from
CASES.md and the mechanisms in CHECKS.md): a symptom (dead ReLUs, a flat loss, collapsed
predictions) is placed below every root cause present in the same report that explains it, and its
``explained_by`` lists them, so that the person reading the report fixes the cause first.
"""
from __future__ import annotations

from .report import AREAS, SEVERITY_ORDER, Finding

AREA_ORDER = {area: i for i, area in enumerate(AREAS)}


def causes_of(code: str) -> tuple[str, ...]:
    """The codes that can cause ``code``, as the checks declare them (``explains=``)."""
    from .checks import explanations

    table = explanations()
    if code.startswith("fragile-to-"):
        return table.get("fragile-to-*", ())
    return table.get(code, ())


#: Order of verification verdicts among causes of equal severity: a cause whose fix was shown to
#: work first, then the untested, then those whose fix did not help.
VERDICT_ORDER = {"verified": 0, "inconclusive": 1, None: 1, "not-verified": 2}


def _effect(f: Finding) -> tuple:
    """Where fixes were tried, the cause whose fix recovers most ranks first."""
    v = f.verified or {}
    gain = (v.get("difference") or {}).get("mean")
    return (VERDICT_ORDER.get(v.get("verdict"), 1), -(gain or 0.0))


def rank(findings: list[Finding]) -> list[Finding]:
    """Return the findings ordered for reading, with ``rank`` and ``explained_by`` filled in."""
    present = {f.code for f in findings}
    for f in findings:
        f.explained_by = [c for c in causes_of(f.code) if c in present and c != f.code]

    depth_cache: dict[str, int] = {}

    def depth(code: str, seen: frozenset = frozenset()) -> int:
        # How many links of cause -> symptom lie above this finding (0 for a root cause).
        if code in depth_cache:
            return depth_cache[code]
        causes = [c for c in causes_of(code) if c in present and c not in seen and c != code]
        d = 0 if not causes else 1 + max(depth(c, seen | {code}) for c in causes)
        depth_cache[code] = d
        return d

    ordered = sorted(
        findings,
        key=lambda f: (SEVERITY_ORDER[f.severity], depth(f.code), *_effect(f),
                       AREA_ORDER.get(f.area, 9)))
    # A symptom never outranks one of its causes, whatever the severities say.
    result: list[Finding] = []
    pending = list(ordered)
    while pending:
        for i, f in enumerate(pending):
            if all(c in {r.code for r in result} for c in f.explained_by):
                result.append(pending.pop(i))
                break
        else:  # a cycle in the declared explanations: keep the sorted order
            result.extend(pending)
            break
    for i, f in enumerate(result, start=1):
        f.rank = i
    return result
