"""The ``run`` subcommand:
``cnndoctor run SCRIPT [SCRIPT ...] [--json PATH] [--budget B] [-- ARGS]``.

The top-level command line adds it with ``add_parser(subparsers)`` and calls ``command(args)``;
``python -m cnndoctor.run ...`` runs it alone. Exit codes: 0 no finding of severity error, 1 at
least one, 2 the command could not run (one line on stderr says why).
"""
from __future__ import annotations

import argparse
import os
import sys

BUDGETS = ("quick", "standard", "thorough")
DESCRIPTION = ("Run your training and evaluation scripts unmodified, with instrumentation, then "
               "diagnose what they did: cnndoctor run train.py evaluate.py -- --epochs 3")
EPILOG = ("Scripts run in order in one process, as `python SCRIPT ARGS` would run them; "
          "arguments after `--` go to every script. When a script saves the model, what training "
          "saw is written beside it (<model>.cnndoctor.json/.npz) so that an evaluation script "
          "run later is still compared against training.")


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH")
    parser.add_argument("--html", metavar="PATH",
                        help="also write the report as one self-contained HTML page to PATH")
    parser.add_argument("--budget", choices=BUDGETS, default="standard",
                        help="how much the probes may train (default: standard)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the probes (default: 0)")
    parser.add_argument("--verbose", action="store_true", help="show passed and skipped checks")
    parser.add_argument("--verify", action="store_true",
                        help="apply each suggested fix to a copy, retrain it over seeds and "
                             "report whether it helps (slower)")
    parser.add_argument("--executor", choices=("auto", "inprocess", "local", "ray"),
                        default="auto", help="where the short trainings run: auto (default: "
                        "worker processes), inprocess, local, or ray (pip install "
                        "'cnndoctor[ray]')")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``run`` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser("run", help="run your scripts with instrumentation and diagnose",
                              description=DESCRIPTION, epilog=EPILOG)
    _options(p)
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="SCRIPT [SCRIPT ...] [-- ARGS]",
                   help="the scripts to run, then the arguments for them after --")
    p.set_defaults(command=command, func=command)
    return p


class UsageError(Exception):
    pass


def _split(args) -> argparse.Namespace:
    """Scripts, options given after them, and the scripts' own arguments (after ``--``)."""
    rest = list(getattr(args, "argv", None) or [])
    script_args: list[str] = []
    if "--" in rest:
        i = rest.index("--")
        rest, script_args = rest[:i], rest[i + 1:]
    late = argparse.ArgumentParser(prog="cnndoctor run", add_help=False)
    _options(late)
    late.add_argument("scripts", nargs="*")
    try:
        ns, unknown = late.parse_known_args(rest)
    except SystemExit:
        raise UsageError("bad options (see cnndoctor run --help)") from None
    if unknown:
        raise UsageError(f"unknown option {unknown[0]!r}: to pass arguments to the script, put "
                         f"them after --, e.g. cnndoctor run train.py -- {' '.join(unknown)}")
    out = argparse.Namespace(
        scripts=list(getattr(args, "scripts", None) or []) + ns.scripts,
        script_args=list(getattr(args, "script_args", None) or []) + script_args,
        json=ns.json or getattr(args, "json", None),
        html=ns.html or getattr(args, "html", None),
        budget=ns.budget if ns.budget != "standard" else getattr(args, "budget", "standard"),
        seed=ns.seed if ns.seed else getattr(args, "seed", 0),
        executor=ns.executor if ns.executor != "auto" else getattr(args, "executor", "auto"),
        verify=ns.verify or getattr(args, "verify", False),
        verbose=ns.verbose or getattr(args, "verbose", False))
    if not out.scripts:
        raise UsageError("no script given: cnndoctor run SCRIPT [SCRIPT ...] [-- ARGS]")
    return out


def _fail(reason: str) -> int:
    print(f"cnndoctor: {reason}", file=sys.stderr)
    return 2


def command(args) -> int:
    """Run the scripts, diagnose, print the report; returns the exit code."""
    try:
        opts = _split(args)
    except UsageError as exc:
        return _fail(str(exc))
    for path in opts.scripts:
        if not os.path.isfile(path):
            what = "is a directory" if os.path.isdir(path) else "does not exist"
            return _fail(f"cannot run {path}: the file {what}")
    from .legacy.preflight import report_lines, unmappable
    from .tfcompat import tensorflow_missing

    problems = unmappable(opts.scripts, tensorflow_missing=tensorflow_missing())
    if problems:
        print(report_lines(problems), file=sys.stderr)
        return 2
    from .session import NothingToDiagnose, Session
    from .. import diagnose
    from ..errors import InputError
    from ..executor import validate

    try:
        validate(opts.executor)  # before the scripts run: a missing Ray is known now
    except InputError as exc:
        return _fail(f"error: {exc}")

    session = Session()
    names = " ".join(os.path.basename(p) for p in opts.scripts)
    print(f"cnndoctor: running {names} with instrumentation", file=sys.stderr, flush=True)
    session.run(opts.scripts, opts.script_args)
    try:
        kwargs = session.diagnose_kwargs()
    except NothingToDiagnose as exc:
        return _observed_or_fail(str(exc), session, opts)
    print("cnndoctor: diagnosing what the scripts did", file=sys.stderr, flush=True)
    model = kwargs.pop("model")
    title = f"cnndoctor run {names}"
    try:
        report = diagnose(model, budget=opts.budget, seed=opts.seed, title=title,
                          verify=getattr(opts, "verify", False), progress=_progress,
                          executor=opts.executor, **kwargs)
    except InputError as exc:
        return _observed_or_fail(f"the captured data could not be diagnosed: {exc}", session,
                                 opts)
    except Exception as exc:  # a bug of ours: say so in one line, keep the details for a report
        import traceback

        traceback.print_exc()
        return _fail(_with_error(f"cnndoctor failed while diagnosing ({type(exc).__name__}: "
                                 f"{exc}); please report it", session))
    report.notes.extend(_session_notes(session))
    report.figures["run"] = {"scripts": [r.to_dict() for r in session.scripts],
                             "sidecars_written": list(session.sidecars_written)}
    print(_render(report, opts.verbose))
    if opts.json:
        try:
            report.to_json(opts.json)
        except OSError as exc:
            return _fail(f"could not write {opts.json}: {exc.strerror or exc}")
    if opts.html:
        try:
            report.to_html(opts.html)
        except OSError as exc:
            return _fail(f"could not write {opts.html}: {exc.strerror or exc}")
    return report.exit_code


def _observed_or_fail(reason: str, session, opts) -> int:
    """A torch script that trained is judged from the losses it computed (never exit 2)."""
    observed = session.observed_loss_report()
    if observed is None:
        return _fail(_with_error(reason, session))
    print(f"cnndoctor: {reason}; judged from the losses the script computed", file=sys.stderr)
    observed.notes.extend(_session_notes(session))
    print(_render(observed, opts.verbose))
    if opts.json:
        try:
            observed.to_json(opts.json)
        except OSError as exc:
            return _fail(f"could not write {opts.json}: {exc.strerror or exc}")
    return observed.exit_code


def _with_error(reason: str, session) -> str:
    err = next((r.error for r in session.scripts if r.error), None)
    if not err:
        return reason
    text = f"{reason}. {err['script']} raised {err['type']}"
    if err.get("where"):
        text += f" at {err['where']}"
    expl = err.get("explanation")
    if expl:
        text += f": {expl['cause']}; fix: {expl['fix']}"
    return text


def _session_notes(session) -> list[str]:
    notes = []
    for r in session.scripts:
        state = {"ok": "ran", "error": "raised an error", "exit": f"exited with {r.exit_code}",
                 "not run": "was not run (an earlier script failed)"}[r.status]
        notes.append(f"{os.path.basename(r.path)} {state}"
                     + (f" in {r.seconds:.1f} s" if r.status != "not run" else ""))
    notes += session.notes
    if session.sidecars_written:
        notes.append("what training saw was written beside the saved model: "
                     + ", ".join(os.path.basename(p) for p in session.sidecars_written))
    if session.internal_errors:
        notes.append(f"{len(session.internal_errors)} observation(s) failed inside cnndoctor "
                     f"(the scripts were not affected): {session.internal_errors[0]}")
    return notes


def _progress(text: str) -> None:
    print(f"cnndoctor: {text}", file=sys.stderr, flush=True)


def _render(report, verbose: bool) -> str:
    try:
        return report.render(verbose=verbose)
    except ImportError:  # the terminal view is not there: a plain listing
        lines = [f"cnndoctor: {report.verdict}"]
        for f in report.findings:
            lines.append(f"{f.rank}. [{f.severity}] {f.code}: {f.title}")
        for n in report.notes:
            lines.append(f"note: {n}")
        return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cnndoctor run", description=DESCRIPTION, epilog=EPILOG)
    _options(parser)
    parser.add_argument("argv", nargs=argparse.REMAINDER,
                        metavar="SCRIPT [SCRIPT ...] [-- ARGS]")
    args = parser.parse_args(argv)
    return command(args)
