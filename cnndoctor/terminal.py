"""The report as text for a terminal: verdict, ranked findings with evidence and fix, then the
checks that passed and those that were skipped."""
from __future__ import annotations

import json
import textwrap

WIDTH = 96
_COLORS = {"error": "31", "warning": "33", "info": "36", "ok": "32", "dim": "2", "bold": "1"}
_VERDICT = {"broken": ("error", "BROKEN"), "warnings": ("warning", "WARNINGS"),
            "healthy": ("ok", "HEALTHY")}


def _paint(text: str, style: str, color: bool) -> str:
    return f"\033[{_COLORS[style]}m{text}\033[0m" if color else text


def _wrap(text: str, indent: str) -> str:
    return textwrap.fill(text, WIDTH, initial_indent=indent, subsequent_indent=indent)


def _value(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_value(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        if len(v) > 12:
            return json.dumps(v[:12])[:-1] + ", ...]"
        return ", ".join(_value(x) for x in v) if all(not isinstance(x, (dict, list))
                                                      for x in v) else json.dumps(v)
    return str(v)


def render(report, color: bool = False, verbose: bool = False) -> str:
    lines: list[str] = []
    style, word = _VERDICT[report.verdict]
    head = f"cnndoctor: {report.title + ' — ' if report.title else ''}{report.framework} model"
    lines.append(_paint(head, "bold", color))
    counts = {s: sum(f.severity == s for f in report.findings) for s in ("error", "warning",
                                                                         "info")}
    lines.append(f"verdict: {_paint(word, style, color)}  ({counts['error']} error, "
                 f"{counts['warning']} warning, {counts['info']} info; "
                 f"{len(report.passed)} checks passed, {len(report.skipped)} skipped)")
    for note in report.notes:
        lines.append(_paint(_wrap(f"note: {note}", "  ").lstrip(), "dim", color))
    for f in report.findings:
        lines.append("")
        tag = _paint(f"{f.severity.upper():7}", f.severity, color)
        lines.append(f"{f.rank:>2}. {tag} {_paint(f.code, 'bold', color)}  {f.title}")
        if f.explained_by:
            lines.append(_paint(f"    explained by: {', '.join(f.explained_by)} (fix that first)",
                                "dim", color))
        lines.append(_wrap(f.explanation, "    "))
        evidence = {k: v for k, v in f.evidence.items() if verbose or not k.startswith("all_")}
        if evidence:
            lines.append("    evidence:")
            for k, v in evidence.items():
                text = f"{k}: {_value(v)}"
                if not verbose:
                    text = textwrap.shorten(text, WIDTH + 30, placeholder=" ...")
                lines.append(f"      {text}")
        lines.append(f"    fix: {f.fix.summary}")
        for code_line in f.fix.code.splitlines():
            lines.append(_paint(f"      {code_line}", "dim", color))
        if f.verified:
            lines.extend(_verified_lines(f.verified, color))
    combined = (report.figures.get("verification") or {}).get("combined")
    if combined:
        lines.append("")
        lines.append(_paint("all fixes together:", "bold", color))
        lines.extend(_verified_lines(combined, color))
    if report.passed:
        lines.append("")
        lines.append(_paint("passed:", "ok", color))
        for p in report.passed:
            lines.append("  ✓ " + textwrap.shorten(f"{p.code}: {p.measured}", WIDTH + 30,
                                                  placeholder=" ..."))
    if report.skipped:
        lines.append("")
        lines.append(_paint("skipped:", "dim", color))
        for s in report.skipped:
            lines.append("  - " + textwrap.shorten(f"{s.code}: {s.reason}", WIDTH + 30,
                                                  placeholder=" ..."))
    cm = report.figures.get("confusion_matrix") if isinstance(report.figures, dict) else None
    if cm and verbose:
        lines.append("")
        lines.append("confusion matrix: in the JSON report (figures.confusion_matrix)")
    total = report.timings.get("total")
    if total is not None:
        lines.append("")
        lines.append(_paint(f"took {total:.1f} s", "dim", color))
    return "\n".join(lines)


VERDICT_STYLE = {"verified": "ok", "not-verified": "error", "inconclusive": "warning"}


def _verified_lines(v: dict, color: bool) -> list[str]:
    """The verification of a fix: the verdict and its figures, per seed."""
    if "verdict" not in v:  # an older measurement without the seed study
        return [f"    verified: {_value(v)}"]
    out = [_paint(f"    {v['verdict'].upper()}", VERDICT_STYLE.get(v["verdict"], "bold"), color)
           + f" ({v['fix']}): " + v.get("summary", "").split(": ", 1)[-1]]
    b, a = v["before"]["values"], v["after"]["values"]
    if len(b) > 1 or len(a) > 1:
        seeds = v.get("seeds") or list(range(len(a)))
        out.append("      per seed " + ", ".join(str(s) for s in seeds) + ": as you have it "
                   + " ".join(f"{x:.1%}" for x in b) + "; with the fix "
                   + " ".join(f"{x:.1%}" for x in a))
    if v.get("note"):
        out.append(f"      note: {v['note']}")
    return out
