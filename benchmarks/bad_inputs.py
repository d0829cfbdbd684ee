"""Bad inputs, tried as a new user would: every case through the CLI or the API, each in a fresh
interpreter and its own folder. Prints one row per case: the input, the exit code (and the one
documented), the message the user reads, whether a traceback leaked, whether any of the user's
files changed (checksums before and after), and the time.

    python benchmarks/bad_inputs.py                 # every case; exit 1 if any fails
    python benchmarks/bad_inputs.py --markdown      # the table for docs/benchmarks.md
    python benchmarks/bad_inputs.py -k pickle       # only cases whose name holds 'pickle'

The cases live beside this file: ``bad_cases_inputs.py`` (model files, arrays, folders) and
``bad_cases_scripts.py`` (scripts under ``cnndoctor run``); each has ``cases() -> list[Case]``.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bad_cases_common import Case, Outcome, run_case  # noqa: E402

CASE_MODULES = ("bad_cases_inputs", "bad_cases_scripts")
# Two at a time: CI has 2 cores, and each case is mostly one interpreter importing torch.
PARALLEL = 2


def all_cases() -> list[Case]:
    cases: list[Case] = []
    for name in CASE_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        cases.extend(module.cases())
    return cases


def run_all(cases: list[Case], root: Path, parallel: int = PARALLEL) -> list[Outcome]:
    def one(item):
        i, case = item
        return run_case(case, root / f"case{i:02d}")

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        return list(pool.map(one, enumerate(cases)))


def _cell(text: str, width: int = 110) -> str:
    text = text.replace("|", "\\|")
    return text if len(text) <= width else text[: width - 1] + "…"


def table(outcomes: list[Outcome], markdown: bool) -> str:
    rows = []
    head = ("input", "via", "exit (doc)", "message", "traceback", "files changed", "s", "ok")
    for o in outcomes:
        rows.append((o.case.name, o.case.kind, f"{o.exit_code} ({o.case.exit_code})",
                     _cell(o.message), "yes" if o.traceback else "no",
                     ", ".join(o.changed) or "none", f"{o.seconds:.1f}",
                     "ok" if o.ok else "FAIL"))
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    lines = []
    for r in rows:
        lines.append(f"{r[7]:4}  {r[0][:44]:44} {r[1]:3}  exit {r[2]:8} tb={r[4]:3} "
                     f"changed={r[5][:20]:6} {r[6]:>6}s  {r[3]}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("-k", metavar="TEXT", help="only the cases whose name holds TEXT")
    parser.add_argument("--keep", metavar="DIR", help="run in DIR and keep the case folders")
    args = parser.parse_args(argv)
    cases = [c for c in all_cases() if not args.k or args.k.lower() in c.name.lower()]
    if not cases:
        print("no cases", file=sys.stderr)
        return 2
    if args.keep:
        root = Path(args.keep)
        root.mkdir(parents=True, exist_ok=True)
        outcomes = run_all(cases, root)
    else:
        with tempfile.TemporaryDirectory(prefix="cnndoctor-bad-") as tmp:
            outcomes = run_all(cases, Path(tmp))
    print(table(outcomes, args.markdown))
    failed = [o for o in outcomes if not o.ok]
    print(f"\n{len(outcomes)} case(s); {len(outcomes) - len(failed)} answered as documented, "
          f"{len(failed)} did not.")
    for o in failed:
        print(f"\n--- {o.case.name}: exit {o.exit_code}, expected {o.case.exit_code}; "
              f"traceback={o.traceback}; changed={o.changed}\n{o.output.strip()[-1500:]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
