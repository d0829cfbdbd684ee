"""The report as one self-contained HTML page: verdict and summary, ranked findings (explanation,
evidence, fix, verification), the pictures, then the checks that passed and were skipped.

Nothing is fetched: the style is inline, the pictures are base64 PNG, and there is no script.
Every string that can come from the user (layer and class names, script paths, exception
messages, evidence values, notes, titles) goes through ``_e`` (``html.escape``).
"""
from __future__ import annotations

import html
import json
import math
import os

from . import plots

#: Evidence values longer than this many characters are cut (the JSON report has them whole).
EVIDENCE_CHARS = 400
#: Items of a list shown in an evidence cell before "... (n more)".
EVIDENCE_ITEMS = 12

VERDICT_WORDS = {"broken": "Broken", "warnings": "Warnings", "healthy": "Healthy"}
VERIFY_WORDS = {"verified": "Verified: the fix helps beyond seed noise",
                "not-verified": "Not verified: the fix does not help",
                "inconclusive": "Inconclusive: too few seeds or too noisy to tell"}

STYLE = """
.cnd{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d1d1f;
max-width:1000px;line-height:1.45;font-size:15px}
.cnd h1{font-size:1.5em;margin:.2em 0}.cnd h2{font-size:1.2em;margin:1.4em 0 .5em;
border-bottom:1px solid #ddd}.cnd h3{font-size:1.05em;margin:.2em 0}
.cnd .verdict{display:inline-block;padding:.15em .7em;border-radius:4px;color:#fff;
font-weight:600}.cnd .v-broken{background:#b3261e}.cnd .v-warnings{background:#a15c00}
.cnd .v-healthy{background:#1e7a34}
.cnd .sev{display:inline-block;min-width:5.5em;font-size:.8em;font-weight:600;padding:.05em .4em;
border-radius:3px;color:#fff;text-align:center}.cnd .s-error{background:#b3261e}
.cnd .s-warning{background:#a15c00}.cnd .s-info{background:#2b6c9e}
.cnd .finding{border:1px solid #ddd;border-left:5px solid #999;border-radius:4px;padding:.6em .9em;
margin:.8em 0;break-inside:avoid}.cnd .f-error{border-left-color:#b3261e}
.cnd .f-warning{border-left-color:#a15c00}.cnd .f-info{border-left-color:#2b6c9e}
.cnd code,.cnd pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.88em}
.cnd pre{background:#f5f5f7;border:1px solid #e3e3e3;padding:.5em .7em;overflow-x:auto;
white-space:pre-wrap}
.cnd table{border-collapse:collapse;margin:.4em 0;font-size:.9em}
.cnd td,.cnd th{border:1px solid #ddd;padding:.2em .5em;text-align:left;vertical-align:top}
.cnd th{background:#f5f5f7}.cnd .num{text-align:right;font-variant-numeric:tabular-nums}
.cnd figure{margin:.6em 0;break-inside:avoid}.cnd figure img{max-width:100%;height:auto}
.cnd figcaption{font-size:.85em;color:#555}.cnd .dim{color:#666;font-size:.9em}
.cnd .vw-verified{color:#1e7a34;font-weight:600}.cnd .vw-not-verified{color:#b3261e;
font-weight:600}.cnd .vw-inconclusive{color:#a15c00;font-weight:600}
@media print{.cnd{max-width:none;font-size:11pt}.cnd pre{white-space:pre-wrap}
.cnd .verdict,.cnd .sev{-webkit-print-color-adjust:exact;print-color-adjust:exact}}
"""


def _e(value) -> str:
    """Escaped text of any value: the only way user strings reach the page."""
    return html.escape(str(value), quote=True)


def _anchor(code: str) -> str:
    return "finding-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in str(code))


def _value(v) -> str:
    """An evidence value as short plain text (escaped by the caller)."""
    if isinstance(v, bool) or v is None:
        text = str(v)
    elif isinstance(v, float):
        text = f"{v:.4g}" if math.isfinite(v) else str(v)
    elif isinstance(v, dict):
        text = ", ".join(f"{k}={_value(x)}" for k, x in v.items())
    elif isinstance(v, (list, tuple)):
        items = [("{" + _value(x) + "}") if isinstance(x, dict) else _value(x)
                 for x in v[:EVIDENCE_ITEMS]]
        more = f", ... ({len(v) - EVIDENCE_ITEMS} more)" if len(v) > EVIDENCE_ITEMS else ""
        text = "[" + ", ".join(items) + more + "]"
    else:
        text = str(v)
    return text if len(text) <= EVIDENCE_CHARS else text[:EVIDENCE_CHARS - 1] + "…"


def _pct(v) -> str:
    return f"{v:.1%}" if isinstance(v, (int, float)) and math.isfinite(v) else "–"


def _figure(plot: plots.Plot | None) -> str:
    if plot is None:
        return ""
    return (f'<figure><img src="data:image/png;base64,{plot.png_base64}" width="{plot.width}" '
            f'height="{plot.height}" alt="{_e(plot.title)}"><figcaption><b>{_e(plot.title)}'
            f"</b>{': ' + _e(plot.caption) if plot.caption else ''}</figcaption></figure>")


def _safe_plot(fn, *args, **kwargs) -> plots.Plot | None:
    """A picture, or none when its figures have an unexpected shape (the text says it all)."""
    try:
        return fn(*args, **kwargs)
    except Exception:  # a malformed figure must not cost the user the whole page
        return None


# ---- sections --------------------------------------------------------------------------------

def _header(report) -> str:
    counts = {s: sum(f.severity == s for f in report.findings) for s in ("error", "warning",
                                                                         "info")}
    title = report.title or "cnndoctor report"
    out = [f"<h1>{_e(title)}</h1>",
           f'<p><span class="verdict v-{_e(report.verdict)}" data-verdict="{_e(report.verdict)}">'
           f"{_e(VERDICT_WORDS.get(report.verdict, report.verdict))}</span> "
           f"{_e(report.framework)} model: {counts['error']} error, {counts['warning']} warning, "
           f"{counts['info']} info; {len(report.passed)} checks passed, {len(report.skipped)} "
           f"skipped.</p>"]
    if report.findings:
        out.append("<ol class=\"summary\">")
        for f in report.findings:
            out.append(f'<li><a href="#{_anchor(f.code)}"><code>{_e(f.code)}</code></a> '
                       f'<span class="sev s-{_e(f.severity)}">{_e(f.severity)}</span> '
                       f"{_e(f.title)}</li>")
        out.append("</ol>")
    else:
        out.append("<p>No problem found.</p>")
    for note in report.notes:
        out.append(f'<p class="dim">note: {_e(note)}</p>')
    return "\n".join(out)


def _evidence_table(evidence: dict) -> str:
    if not evidence:
        return ""
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_value(v))}</td></tr>"
                   for k, v in evidence.items())
    return f'<table class="evidence"><tbody>{rows}</tbody></table>'


def _verified(v: dict, heading: str = "Verification") -> str:
    if not isinstance(v, dict) or "verdict" not in v:
        return (f"<h4>{_e(heading)}</h4><pre>{_e(json.dumps(v, default=str, indent=1))}</pre>"
                if v else "")
    word = str(v.get("verdict"))
    before = (v.get("before") or {}).get("values") or []
    after = (v.get("after") or {}).get("values") or []
    seeds = v.get("seeds") or list(range(max(len(before), len(after))))
    out = [f"<h4>{_e(heading)}: <span class=\"vw-{_e(word)}\" data-verdict=\"{_e(word)}\">"
           f"{_e(VERIFY_WORDS.get(word, word))}</span></h4>"]
    where = f" on {_e(v['measured_on'])}" if v.get("measured_on") else ""
    out.append(f"<p>Fix <code>{_e(v.get('fix', ''))}</code>; {_e(v.get('metric', 'metric'))}"
               f" measured{where}"
               + (f", {_e(v['steps'])} steps per run" if v.get("steps") else "")
               + (f", {_e(v['seconds'])} s" if v.get("seconds") is not None else "") + ".</p>")
    rows = []
    for i, seed in enumerate(seeds):
        b = before[i] if i < len(before) else None
        a = after[i] if i < len(after) else None
        rows.append(f"<tr><td>{_e(seed)}</td><td class=\"num\">{_pct(b)}</td>"
                    f"<td class=\"num\">{_pct(a)}</td></tr>")
    bm, am = (v.get("before") or {}).get("mean"), (v.get("after") or {}).get("mean")
    rows.append(f"<tr><th>mean</th><th class=\"num\">{_pct(bm)}</th>"
                f"<th class=\"num\">{_pct(am)}</th></tr>")
    out.append('<table class="verified"><thead><tr><th>seed</th><th>as you have it</th>'
               f"<th>with the fix</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")
    d = v.get("difference") or {}
    if isinstance(d.get("mean"), (int, float)):
        interval = (f" (95% interval {d['low']:+.1%} to {d['high']:+.1%})"
                    if isinstance(d.get("low"), (int, float))
                    and isinstance(d.get("high"), (int, float)) else "")
        p = f", p = {v['p_value']:.3g}" if isinstance(v.get("p_value"), (int, float)) else ""
        out.append(f"<p>Difference: <b>{d['mean']:+.1%}</b>{interval}{p}.</p>")
    if v.get("note"):
        out.append(f'<p class="dim">note: {_e(v["note"])}</p>')
    out.append(_figure(_safe_plot(plots.verification, v)))
    return "\n".join(out)


def _finding(f) -> str:
    out = [f'<section class="finding f-{_e(f.severity)}" id="{_anchor(f.code)}" '
           f'data-code="{_e(f.code)}">',
           f"<h3>{_e(f.rank if f.rank is not None else '')}. "
           f'<span class="sev s-{_e(f.severity)}">{_e(f.severity)}</span> '
           f"<code>{_e(f.code)}</code> {_e(f.title)}</h3>",
           f'<p class="dim">area: {_e(f.area)}'
           + (f"; explained by {', '.join(_e(c) for c in f.explained_by)} (fix that first)"
              if f.explained_by else "") + "</p>",
           f"<p>{_e(f.explanation)}</p>",
           _evidence_table(f.evidence)]
    transform = getattr(f.fix, "transform", None)
    name = transform.get("name") if isinstance(transform, dict) else None
    out.append(f"<p><b>Fix:</b> {_e(f.fix.summary)}"
               + (f' <span class="dim">(automatic fix <code>{_e(name)}</code>)</span>'
                  if name else "") + "</p>")
    if f.fix.code:
        out.append(f"<pre><code>{_e(f.fix.code)}</code></pre>")
    if f.verified:
        out.append(_verified(f.verified))
    out.append("</section>")
    return "\n".join(out)


def _pictures(report) -> str:
    figs = report.figures if isinstance(report.figures, dict) else {}
    collapse = report.get("prediction-collapse")
    collapsed = (collapse.evidence.get("top_classes") if collapse else None) or []
    shown = [_safe_plot(plots.confusion_matrix, figs, collapsed=collapsed)]
    shown += [_safe_plot(fn, figs) for fn in plots.REPORT_PLOTS]
    body = "\n".join(_figure(p) for p in shown if p is not None)
    return f"<h2>What the probes saw</h2>\n{body}" if body else ""


def _checks(report) -> str:
    out = []
    if report.passed:
        rows = "".join(f"<tr><td><code>{_e(p.code)}</code></td><td>{_e(p.measured)}</td></tr>"
                       for p in report.passed)
        out.append(f'<h2>Passed ({len(report.passed)})</h2><table class="passed"><tbody>{rows}'
                   "</tbody></table>")
    if report.skipped:
        rows = "".join(f"<tr><td><code>{_e(s.code)}</code></td><td>{_e(s.reason)}</td></tr>"
                       for s in report.skipped)
        out.append(f'<h2>Skipped ({len(report.skipped)})</h2><table class="skipped"><tbody>'
                   f"{rows}</tbody></table>")
    return "\n".join(out)


def _model(report) -> str:
    layers = (report.model or {}).get("layers") or []
    if not layers:
        return ""
    rows = []
    for layer in layers:
        shape = layer.get("output_shape")
        rows.append(f"<tr><td>{_e(layer.get('name', ''))}</td><td>{_e(layer.get('source', ''))}"
                    f"</td><td>{_e(layer.get('activation') or '')}</td>"
                    f"<td>{_e(tuple(shape) if isinstance(shape, list) else shape or '')}</td>"
                    f"<td class=\"num\">{_e(layer.get('params', ''))}</td></tr>")
    name = (report.model or {}).get("name") or ""
    return (f"<h2>Model {_e(name)}</h2><table class=\"model\"><thead><tr><th>layer</th>"
            "<th>what it is</th><th>activation</th><th>output shape</th><th>parameters</th>"
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _run_scripts(report) -> str:
    run = (report.figures or {}).get("run") if isinstance(report.figures, dict) else None
    if not run:
        return ""
    rows = []
    for s in run.get("scripts") or []:
        err = s.get("error") or {}
        what = (f"{err.get('type', '')}"
                + (f" at {err['where']}" if err.get("where") else "")
                + f": {err.get('message', '')}") if err else ""
        rows.append(f"<tr><td>{_e(s.get('path', ''))}</td><td>{_e(s.get('status', ''))}</td>"
                    f"<td>{_e(what)}</td></tr>")
    return ("<h2>Scripts run</h2><table class=\"scripts\"><thead><tr><th>script</th>"
            f"<th>status</th><th>error</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def body(report) -> str:
    """The page's content without the <html> wrapper (what a notebook shows)."""
    from .. import __version__

    combined = (report.figures.get("verification") or {}).get("combined") \
        if isinstance(report.figures, dict) else None
    parts = [f"<style>{STYLE}</style>", '<div class="cnd">', _header(report)]
    if report.findings:
        parts.append(f"<h2>Findings ({len(report.findings)}), most important first</h2>")
        parts += [_finding(f) for f in report.findings]
    if combined:
        parts.append('<section class="finding" id="all-fixes">'
                     + _verified(combined, "All fixes together") + "</section>")
    parts += [_pictures(report), _checks(report), _run_scripts(report), _model(report)]
    total = (report.timings or {}).get("total")
    parts.append(f'<p class="dim">cnndoctor {_e(__version__)}'
                 + (f"; diagnosis took {total:.1f} s" if isinstance(total, (int, float)) else "")
                 + "</p></div>")
    return "\n".join(p for p in parts if p)


def document(report) -> str:
    """The whole self-contained HTML document."""
    title = report.title or "cnndoctor report"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>cnndoctor: {_e(title)} ({_e(report.verdict)})</title></head>\n"
            f"<body>\n{body(report)}\n</body></html>\n")


def write(report, path: str) -> str:
    text = document(report)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return text


def index(entries: list[dict]) -> str:
    """A page linking one page per case: entries of {"file", "case", "title", "verdict",
    "codes", "expected"} (expected: True when the case gave its expected diagnosis)."""
    rows = []
    for en in entries:
        codes = ", ".join(f"<code>{_e(c)}</code>" for c in en.get("codes") or []) or "none"
        ok = en.get("expected")
        rows.append(f"<tr data-case=\"{_e(en['case'])}\"><td><a href=\"{_e(en['file'])}\">"
                    f"{_e(en['case'])}</a></td><td>{_e(en.get('title', ''))}</td>"
                    f"<td><span class=\"verdict v-{_e(en['verdict'])}\">"
                    f"{_e(VERDICT_WORDS.get(en['verdict'], en['verdict']))}</span></td>"
                    f"<td>{codes}</td><td>{'' if ok is None else ('yes' if ok else 'no')}</td>"
                    "</tr>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>cnndoctor demo</title></head><body>"
            f"<style>{STYLE}</style><div class=\"cnd\"><h1>cnndoctor demo</h1>"
            "<table class=\"cases\"><thead><tr><th>case</th><th>what</th><th>verdict</th>"
            "<th>findings</th><th>expected diagnosis</th></tr></thead><tbody>"
            f"{''.join(rows)}</tbody></table></div></body></html>\n")


def write_index(directory: str, entries: list[dict]) -> str:
    path = os.path.join(directory, "index.html")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(index(entries))
    return path
