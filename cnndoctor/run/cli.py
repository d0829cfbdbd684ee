"""The ``run`` subcommand:
``cnndoctor run SCRIPT [SCRIPT ...] [--json PATH] [--budget B] [--timeout S] [-- ARGS]``, and
``cnndoctor cache [clear]`` (where ``run`` keeps its training records).

The top-level command line adds them with ``add_parser(subparsers)`` and
``add_cache_parser(subparsers)``; ``python -m cnndoctor.run ...`` runs ``run`` alone.

Exit codes of ``run``: 0 no finding of severity error; 1 at least one, which includes
``script-error`` when a script raised, exited with a non-zero status (``sys.exit(3)``,
``os._exit(3)``); 2 nothing could be diagnosed (bad arguments, a script missing, a script that
failed or was stopped before any training), one line on stderr says why. A script stopped by
``--timeout`` (or Ctrl-C) is not an error in itself: what it did until then is diagnosed (0 or 1)
and the report says it was stopped. Whatever happened, the last line on stderr says how each
script ended and where the training record went.
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
          "saw is kept in cnndoctor's cache (see `cnndoctor cache`), keyed by the saved file's "
          "content, so that an evaluation script run later is still compared against training; "
          "nothing is written beside your files. Exit codes: 0 no error found, 1 at least one "
          "(a script that raised or exited non-zero is one), 2 nothing could be diagnosed.")


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH")
    parser.add_argument("--html", metavar="PATH",
                        help="also write the report as one self-contained HTML page to PATH")
    parser.add_argument("--budget", choices=BUDGETS, default="standard",
                        help="how much the probes may train (default: standard)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the probes and of the scripts' random generators, set "
                             "before each script so that a run is repeatable (default: 0)")
    parser.add_argument("--verbose", action="store_true", help="show passed and skipped checks")
    parser.add_argument("--verify", action="store_true",
                        help="apply each suggested fix to a copy, retrain it over seeds and "
                             "report whether it helps (slower)")
    parser.add_argument("--executor", choices=("auto", "inprocess", "local", "ray"),
                        default="auto", help="where the short trainings run: auto (default: "
                        "worker processes), inprocess, local, or ray (pip install "
                        "'cnndoctor[ray]')")
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="stop a script that runs longer than this, then diagnose what it "
                             "did until then (default: no limit)")
    parser.add_argument("--cache-dir", metavar="DIR",
                        help="where training records are kept (default: $CNNDOCTOR_CACHE, else "
                             "$XDG_CACHE_HOME/cnndoctor, else ~/.cache/cnndoctor)")


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
        verbose=ns.verbose or getattr(args, "verbose", False),
        timeout=ns.timeout if ns.timeout is not None else getattr(args, "timeout", None),
        cache_dir=ns.cache_dir or getattr(args, "cache_dir", None),
        debug=getattr(args, "debug", False))
    if not out.scripts:
        raise UsageError("no script given: cnndoctor run SCRIPT [SCRIPT ...] [-- ARGS]")
    if out.timeout is not None and not out.timeout > 0:
        raise UsageError(f"--timeout {out.timeout:g}: expected a number of seconds above 0")
    # Paths of cnndoctor's own outputs are the user's, from where cnndoctor was started (a
    # script's os.chdir does not move them).
    for key in ("json", "html", "cache_dir"):
        if getattr(out, key):
            setattr(out, key, os.path.abspath(os.path.expanduser(getattr(out, key))))
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
    from .session import Session
    from ..errors import InputError
    from ..executor import validate

    try:
        validate(opts.executor)  # before the scripts run: a missing Ray is known now
    except InputError as exc:
        return _fail(f"error: {exc}")

    session = Session(cache_dir=opts.cache_dir, seed=opts.seed)
    names = " ".join(os.path.basename(p) for p in opts.scripts)
    limit = f" (each stopped after {opts.timeout:g} s)" if opts.timeout else ""
    print(f"cnndoctor: running {names} with instrumentation{limit}", file=sys.stderr, flush=True)
    session.run(opts.scripts, opts.script_args, timeout=opts.timeout)
    code = _diagnose(session, opts, names)
    if code != 2:  # exit 2 has said why in its one line
        print(_closing(session, code), file=sys.stderr, flush=True)
    return code


def _diagnose(session, opts, names: str) -> int:
    from .. import diagnose
    from ..errors import InputError
    from .session import NothingToDiagnose

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

        from . import cache

        details = traceback.format_exc()
        if opts.debug:
            print(details, file=sys.stderr)
        saved = cache.save_internal_error(details, session.cache_dir)
        where = f" with the details in {saved}" if saved else ""
        return _fail(_with_error(f"cnndoctor failed while diagnosing ({type(exc).__name__}: "
                                 f"{exc}); please report it{where}", session))
    report.notes.extend(_session_notes(session))
    report.figures["run"] = {"scripts": [r.to_dict() for r in session.scripts],
                             "records_written": list(session.records_written),
                             "cache_dir": session.cache_dir}
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


def _ended(r) -> str:
    """How one script ended, in a few words."""
    at = f" at {r.stopped_at}" if r.stopped_at else ""
    if r.status == "ok":
        early = r.ended_by if r.ended_by and r.ended_by.startswith("os._exit") else None
        return f"ran in {r.seconds:.1f} s" + (f" (ended by {early}{at})" if early else "")
    if r.status == "stopped":
        return f"was stopped by {r.ended_by} after {r.seconds:.1f} s{at}"
    if r.status == "error":
        err = r.error or {}
        where = f" at {err['where']}" if err.get("where") else ""
        return f"raised {err.get('type', 'an error')}{where} after {r.seconds:.1f} s"
    if r.status == "exit":
        return f"exited with status {r.exit_code} ({r.ended_by}{at}) after {r.seconds:.1f} s"
    return "was not run (an earlier script did not finish)"


def _session_notes(session) -> list[str]:
    notes = [f"{os.path.basename(r.path)} {_ended(r)}" for r in session.scripts]
    if any(r.status not in ("ok", "not run") for r in session.scripts):
        notes.append("the findings are about what the scripts did until they ended")
    notes += session.notes
    for path in session.records_written:
        notes.append(f"what training saw is kept in cnndoctor's cache: {path} (`cnndoctor "
                     f"cache clear` removes it)")
    if session.internal_errors:
        notes.append(f"{len(session.internal_errors)} observation(s) failed inside cnndoctor "
                     f"(the scripts were not affected): {session.internal_errors[0]}")
    return notes


def _closing(session, code: int) -> str:
    """The last line on stderr: how each script ended, where the training record went."""
    parts = [f"{os.path.basename(r.path)} {_ended(r)}" for r in session.scripts]
    if any(r.status not in ("ok", "not run") for r in session.scripts) and code != 2:
        parts.append("what it did until then was diagnosed")
    if session.records_written:
        parts.append(f"training record kept in {session.cache_dir}")
    return f"cnndoctor: {'; '.join(parts)} (exit {code})"


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


# ---- cnndoctor cache ---------------------------------------------------------------------------
CACHE_DESCRIPTION = ("Where `cnndoctor run` keeps what training saw when a script saves a model "
                     "(so that an evaluation script run later is compared against training), "
                     "and how big it is; `cnndoctor cache clear` removes those records.")


def add_cache_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``cache`` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser("cache", help="where `run` keeps training records; `cache clear`",
                              description=CACHE_DESCRIPTION)
    p.add_argument("action", nargs="?", choices=("clear",),
                   help="clear: remove every training record cnndoctor kept there")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="the cache directory (default: $CNNDOCTOR_CACHE, else "
                        "$XDG_CACHE_HOME/cnndoctor, else ~/.cache/cnndoctor)")
    p.set_defaults(func=cache_command)
    return p


def _mb(n: int) -> str:
    return f"{n / 1024 ** 2:.1f} MB" if n >= 1024 ** 2 else f"{n / 1024:.0f} KB"


def cache_command(args) -> int:
    from . import cache

    override = getattr(args, "cache_dir", None)
    where = cache.directory(override)
    if getattr(args, "action", None) == "clear":
        try:
            n, size = cache.clear(where)
        except OSError as exc:
            return _fail(f"could not clear {where}: {exc.strerror or exc}")
        print(f"cnndoctor: removed {n} training record(s) ({_mb(size)}) from {where}")
        return 0
    n, size = cache.usage(where)
    print(f"cnndoctor cache: {where} (chosen by {cache.origin(override)})")
    print(f"  {n} training record(s), {_mb(size)}; at most "
          f"{cache.CACHE_LIMIT_BYTES / 1024 ** 2:.0f} MB are kept, the least recently used "
          f"removed first")
    print(f"  another folder: --cache-dir DIR or {cache.ENV_VAR}=DIR; empty it: "
          f"cnndoctor cache clear")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cnndoctor run", description=DESCRIPTION, epilog=EPILOG)
    _options(parser)
    parser.add_argument("argv", nargs=argparse.REMAINDER,
                        metavar="SCRIPT [SCRIPT ...] [-- ARGS]")
    args = parser.parse_args(argv)
    return command(args)
