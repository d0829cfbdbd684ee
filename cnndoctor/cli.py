"""The command line: ``cnndoctor demo``, ``cnndoctor check``, ``cnndoctor run``, ``cnndoctor checks``.

Exit codes: 0 no finding of severity error; 1 at least one error (for ``demo``: a case did not
give its expected diagnosis); 2 the command itself could not run, with a one-line reason.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from ._backend import ensure_keras_backend

ensure_keras_backend()


class _Exit(Exception):
    def __init__(self, message: str):
        super().__init__(message)


def _progress(quiet: bool):
    if quiet:
        return None
    start = time.perf_counter()

    def say(text: str) -> None:
        print(f"  [{time.perf_counter() - start:5.1f}s] {text}", file=sys.stderr, flush=True)

    return say


def _write_json(path: str, payload: dict) -> None:
    try:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2, allow_nan=False)
            fh.write("\n")
    except OSError as exc:
        raise _Exit(f"cannot write the JSON report to {path}: {exc.strerror}") from exc


def _write_html(report, path: str) -> None:
    try:
        report.to_html(path)
    except OSError as exc:
        raise _Exit(f"cannot write the HTML report to {path}: {exc.strerror}") from exc


def _html_dir(path: str | None) -> str | None:
    """The folder for ``demo --html``: created when missing; refused when it is a file."""
    if path is None:
        return None
    if os.path.exists(path) and not os.path.isdir(path):
        raise _Exit(f"--html {path}: expected a folder for the demo's pages, found a file")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise _Exit(f"cannot create the folder {path} for the HTML pages: {exc.strerror}")
    return path


# ---- demo -----------------------------------------------------------------------------------

def cmd_demo(args) -> int:
    from . import cases as case_registry
    from .api import diagnose

    all_cases = case_registry.all_cases()
    if args.list:
        for c in all_cases:
            note = "" if c.reproduces else "  (as reported; trains here: see its story)"
            print(f"{c.id:34} {c.variant:8} {c.title}{note}")
        return 0
    chosen = []
    for name in args.cases or []:
        found = case_registry.find(name)
        if not found:
            raise _Exit(f"no built-in case {name!r}; `cnndoctor demo --list` shows them "
                        f"(e.g. 1, colored-mnist, 2-row-column-torch)")
        chosen.extend(c for c in found if c not in chosen)
    if not chosen:
        chosen = all_cases
    color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    html_dir = _html_dir(getattr(args, "html", None))
    reports, failures, pages = [], [], []
    for case in chosen:
        variant = case.variant if case.reproduces else f"{case.variant} as reported; trains here"
        print(f"\n{'=' * 96}\ncase {case.id}: {case.title} [{variant}]\n{'=' * 96}")
        if case.story:
            print(case.story)
        say = _progress(args.quiet)
        if say:
            say(f"building case {case.id}")
        setup = case.build(args.seed)
        report = diagnose(setup.model, **setup.diagnose_kwargs(), budget=args.budget,
                          seed=args.seed, verify=getattr(args, "verify", False),
                          progress=say or False, executor=args.executor,
                          title=f"case {case.id}")
        print()
        print(report.render(color=color, verbose=args.verbose))
        missing = _expectation_gaps(case, report, verify=getattr(args, "verify", False))
        if missing:
            failures.append((case.id, missing))
            print(f"\n!! case {case.id} did not give its expected diagnosis: {'; '.join(missing)}")
        reports.append({"case": case.id, "variant": case.variant, **report.to_dict()})
        if html_dir:
            _write_html(report, os.path.join(html_dir, f"{case.id}.html"))
            pages.append({"file": f"{case.id}.html", "case": case.id, "title": case.title,
                          "verdict": report.verdict, "codes": report.codes,
                          "expected": not missing})
    if args.json:
        payload = reports[0] if len(reports) == 1 else {
            "tool": "cnndoctor", "cases": reports}
        _write_json(args.json, payload)
    if html_dir:
        from .html import write_index

        print(f"HTML pages: {write_index(html_dir, pages)}")
    print(f"\n{len(chosen)} case(s) diagnosed; "
          f"{len(chosen) - len(failures)} gave their expected diagnosis.")
    return 1 if failures else 0


def _expectation_gaps(case, report, verify: bool = False) -> list[str]:
    gaps = []
    if verify and case.variant == "broken" and case.reproduces:
        verdicts = [f.verified.get("verdict") for f in report.findings if f.verified]
        combined = (report.figures.get("verification") or {}).get("combined") or {}
        if "verified" not in verdicts + [combined.get("verdict")]:
            gaps.append("no fix was verified by retraining")
    errors = {f.code for f in report.findings if f.severity == "error"}
    for code in case.expect_errors:
        if case.reproduces and code not in errors:
            gaps.append(f"expected error {code}")
        elif not case.reproduces:
            # the stand-in trains despite the mistake: the finding must be there, and its fix
            # must not be claimed to help
            found = next((f for f in report.findings if f.code == code), None)
            if found is None:
                gaps.append(f"expected finding {code}")
            elif verify and (found.verified or {}).get("verdict") == "verified":
                gaps.append(f"the fix of {code} was called verified on a model that trains")
    for code in case.expect_passed:
        if code not in report.passed_codes:
            gaps.append(f"expected {code} to pass")
    if case.variant == "healthy" and errors:
        gaps.append(f"healthy case has errors: {', '.join(sorted(errors))}")
    return gaps


# ---- check ----------------------------------------------------------------------------------

def _model_spec(args) -> str:
    """The model named by the positional MODEL or by --model (the same thing; one of them)."""
    positional, option = args.model, getattr(args, "model_option", None)
    if positional and option and positional != option:
        raise _Exit(f"two models given ({positional} and --model {option}): give one")
    spec = positional or option
    if not spec:
        raise _Exit("no model: pass MODEL (or --model MODEL): a .keras/.h5 file, a .pt file "
                    "holding a torch module (with --trust-pickle), or 'model.py:build' "
                    "[--weights weights.pt]")
    return spec


def cmd_check(args) -> int:
    from .api import diagnose
    from .loading import load, load_arrays

    spec = _model_spec(args)
    data = {}
    for key, what in (("train", "training data"), ("val", "validation data"),
                      ("evaluate", "evaluation data"), ("reference", "reference data")):
        npz, folder = getattr(args, key), getattr(args, f"{key}_dir", None)
        if npz and folder:
            raise _Exit(f"give the {what} once: --{key} NPZ or --{key}-dir DIR, not both")
        data[key] = _data_dir(folder, key) if folder else \
            (load_arrays(npz, what) if npz is not None else None)
    if data["train"] is None:
        raise _Exit("no training data: pass --train NPZ or --train-dir DIR (one sub-folder of "
                    "images per class)")
    with _device_scope(spec, args.device):
        loaded = load(spec, weights=args.weights, trust_pickle=args.trust_pickle)
        model, loss = loaded.model, loaded.loss
        if args.loss:
            loss = _named_loss(args.loss)
        report = diagnose(model, **data, loss=loss, batch_size=args.batch_size,
                          budget=args.budget, seed=args.seed, verify=args.verify,
                          executor=args.executor,
                          progress=_progress(args.quiet) or False, title=os.path.basename(spec),
                          device=args.device)
    print(report.render(color=sys.stdout.isatty() and not os.environ.get("NO_COLOR"),
                        verbose=args.verbose))
    if args.json:
        report.to_json(args.json)
    if args.html:
        _write_html(report, args.html)
    return report.exit_code


def _data_dir(path: str, key: str) -> str:
    if not os.path.isdir(path):
        raise _Exit(f"--{key}-dir {path} is not a folder: expected one sub-folder of images per "
                    f"class")
    return path


def _device_scope(model_spec: str, device: str | None):
    """Keras models are loaded and probed under ``keras.device(device)`` (Keras places its
    variables itself); torch models are moved by ``diagnose(device=...)``."""
    import contextlib

    if device is None or not model_spec.endswith((".keras", ".h5")):
        return contextlib.nullcontext()
    import keras

    return keras.device(device)


def _named_loss(name: str):
    """A loss from its name: torch short names (cross_entropy, nll, ...) as modules, anything
    else as the Keras name it is."""
    from .frameworks.torch.losses import SHORT_NAMES, by_name

    return by_name(name) if name in SHORT_NAMES else name


# ---- checks ---------------------------------------------------------------------------------

def cmd_checks(args) -> int:
    from .checks import load_all

    for check in load_all():
        needs = f"  (needs {', '.join(check.needs)})" if check.needs else ""
        print(f"{check.area:11} {check.code}{needs}")
    return 0


# ---- main -----------------------------------------------------------------------------------

def _common(p):
    p.add_argument("--json", metavar="PATH", help="write the report as JSON to PATH")
    p.add_argument("--html", metavar="PATH",
                   help="write the report as one self-contained HTML page to PATH (demo: PATH "
                        "is a folder, one page per case and index.html)")
    p.add_argument("--budget", choices=("static", "quick", "standard", "thorough"),
                   default="quick", help="how much training the probes may do: static = none, "
                                         "read the model and data only (default: quick)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--verbose", "-v", action="store_true", help="show all evidence")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    p.add_argument("--verify", action="store_true",
                   help="apply each suggested fix to a copy, retrain it over seeds and report "
                        "whether it helps (slower)")
    p.add_argument("--executor", choices=("auto", "inprocess", "local", "ray"), default="auto",
                   help="where the short trainings run: auto (default: worker processes, one "
                        "per core), inprocess, local, or ray (RAY_ADDRESS or a local Ray; "
                        "pip install 'cnndoctor[ray]')")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnndoctor",
        description="Find out why a CNN image classifier fails to train or to generalize.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of failures")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"cnndoctor {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="diagnose the built-in reference cases")
    demo.add_argument("cases", nargs="*", metavar="CASE",
                      help="case number, key or id (default: all); see --list")
    demo.add_argument("--list", action="store_true", help="list the built-in cases")
    _common(demo)
    demo.set_defaults(func=cmd_demo)

    check = sub.add_parser("check", help="diagnose a saved model on data files")
    check.add_argument("model", nargs="?", metavar="MODEL",
                       help="a .keras/.h5 file, 'file.py:name' (a model or a function building "
                            "one; with --weights), or a .pt file holding a whole torch module "
                            "(only with --trust-pickle)")
    check.add_argument("--model", dest="model_option", metavar="MODEL",
                       help="the same as the positional MODEL")
    check.add_argument("--weights", metavar="FILE",
                       help="weights for the model that 'file.py:name' builds: a torch "
                            "state_dict (.pt/.pth, read with weights_only=True) or Keras "
                            "weights (.weights.h5)")
    check.add_argument("--trust-pickle", action="store_true",
                       help="open a .pt file holding a whole pickled module, or a .keras file "
                            "with a Lambda layer: unpickling runs code stored in the file, so "
                            "only for files you trust (the safe way: --model model.py:build "
                            "--weights weights.pt)")
    check.add_argument("--train", metavar="NPZ",
                       help=".npz with 'x' (images) and 'y' (labels) used in training")
    for key, what in (("train", "training images"), ("val", "validation images"),
                      ("evaluate", "images as the evaluation code reads them"),
                      ("reference", "real-world samples")):
        check.add_argument(f"--{key}-dir", metavar="DIR",
                           help=f"{what}: a folder with one sub-folder of PNG/JPEG images per "
                                f"class (a sample bounded by the budget is read)")
    check.add_argument("--device", metavar="DEVICE",
                       help="where the probes run: cpu, cuda, cuda:N (default: the model's own "
                            "device)")
    check.add_argument("--val", metavar="NPZ", help="validation data, same format")
    check.add_argument("--evaluate", metavar="NPZ",
                       help="the data exactly as the evaluation code feeds it")
    check.add_argument("--reference", metavar="NPZ", help="real-world samples ('x', optional 'y')")
    check.add_argument("--loss", help="the training loss when the model does not carry it: a "
                                      "Keras name, or cross_entropy/nll/bce/bce_with_logits/mse")
    check.add_argument("--batch-size", type=int, default=None)
    _common(check)
    check.set_defaults(func=cmd_check)

    checks = sub.add_parser("checks", help="list the finding codes cnndoctor checks")
    checks.set_defaults(func=cmd_checks)

    try:
        from .run import cli as run_cli
    except ImportError:
        run_cli = None
    if run_cli is not None:
        run_cli.add_parser(sub)
        run_cli.add_cache_parser(sub)
        if "run" in sub.choices and not sub.choices["run"].get_default("func"):
            sub.choices["run"].set_defaults(func=run_cli.command)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from .errors import InputError

    try:
        if getattr(args, "executor", None):  # a missing Ray is said before anything runs
            from .executor import validate

            validate(args.executor)
        return int(args.func(args) or 0)
    except (_Exit, InputError) as exc:
        print(f"cnndoctor: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cnndoctor: interrupted", file=sys.stderr)
        return 2
    except Exception as exc:  # never a deep traceback for the user
        if args.debug:
            raise
        print(f"cnndoctor: error: {type(exc).__name__}: {exc} (run with --debug for the "
              f"traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
