"""Mutation benchmark: bugs injected into a zoo of healthy models, and false alarms on the clean ones.

    python benchmarks/mutations.py [--budget quick] [--seeds 3] [--clean-budgets quick,standard]
                                   [--json out.json] [--no-clean] [--no-mutations] [NAME ...]

NAME: zoo models (``keras-cnn``, ``torch-resnet18``, ...) and/or operators (``double-softmax``,
...); none means all. Every operator runs on every chosen model it applies to (seed 0, at
``--budget``), every chosen clean model over ``--seeds`` seeds at each clean budget.

A mutant counts only when it is *killed* (DeepCrime): trained as the user trains it, it is
clearly worse than the clean model (``cnndoctor/zoo/killed.py``: one training of each, a margin
of ``KILL_MARGIN``). The others are listed apart with their figures: a bug that does not hurt
this model is not one a diagnosis must find. ``--no-kill-check`` skips those trainings and counts
every mutant.

Prints, over the killed mutants, the top-1 rate (an expected code ranked first) and
found-anywhere rate per operator, the false alarms (any ``error`` on a clean model) per model,
the median diagnosis time, a confusion table (operator -> the code ranked first), and any check
skipped because a probe crashed. Timings on a shared 2-core machine are noisy.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import Counter, defaultdict

os.environ.setdefault("KERAS_BACKEND", "torch")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import cnndoctor  # noqa: E402
from cnndoctor.errors import InputError  # noqa: E402
from cnndoctor.zoo import ZOO, killed  # noqa: E402
from cnndoctor.zoo.mutations import OPERATORS, RUN_ONLY  # noqa: E402


def diagnose(setup, budget: str, seed: int) -> dict:
    start = time.perf_counter()
    try:
        report = cnndoctor.diagnose(setup.model, **setup.diagnose_kwargs(), budget=budget,
                                    seed=seed)
        ranked = [(f.code, f.severity) for f in report.findings]
        refused = None
        # a check skipped because its probe crashed is a hole in the diagnosis, not a pass
        failures = sorted({s.reason for s in report.skipped if "probe failed" in s.reason})
    except InputError as exc:  # diagnose refuses NaN data with the code in its message
        code = str(exc).split(":", 1)[0]
        ranked, refused, failures = [(code, "error")], str(exc), []
    return {"ranked": ranked, "refused": refused, "probe_failures": failures,
            "seconds": time.perf_counter() - start}


def run_mutations(models, operators, budget: str, log, kill_check: bool = True) -> list[dict]:
    rows = []
    clean: dict[str, dict] = {}  # model -> the clean model's kill measurement (seed 0)
    for op in operators:
        for entry in models:
            if not op.applies(entry):
                continue
            try:
                out = diagnose(op.build(entry, 0), budget, 0)
            except Exception as exc:  # a crash is a miss, reported with its reason
                out = {"ranked": [], "refused": None, "seconds": 0.0, "probe_failures": [],
                       "crash": f"{type(exc).__name__}: {exc}"[:300]}
            kill = {"killed": True, "kill_why": "not measured (--no-kill-check)"}
            if kill_check:
                if entry.name not in clean:
                    clean[entry.name] = killed.measure(entry.build(0), seed=0)
                mutant = killed.measure(op.build(entry, 0), op.harm, 0, clean=entry.build(0))
                hit, why = killed.verdict(op.harm, clean[entry.name], mutant)
                kill = {"killed": hit, "kill_why": why, "clean_score": clean[entry.name]["score"],
                        "mutant_score": mutant.get("score"),
                        "kill_seconds": mutant["seconds"]}
            codes = [c for c, _ in out["ranked"]]
            row = {"operator": op.name, "model": entry.name, "expect": list(op.expect),
                   "top1": bool(codes) and codes[0] in op.expect,
                   "found": any(c in op.expect for c in codes), **out, **kill}
            rows.append(row)
            verdict = "TOP1" if row["top1"] else "found" if row["found"] else "MISS"
            log(f"  {op.name:26} {entry.name:24} {verdict:5} "
                f"{'killed' if row['killed'] else 'ALIVE ':6} {out['seconds']:5.1f}s  "
                f"{out['ranked'][:4]}  [{row['kill_why']}]"
                + (f"  {out['crash']}" if out.get("crash") else "")
                + (f"  PROBE FAILED: {out['probe_failures']}" if out["probe_failures"] else ""))
    return rows


def run_clean(models, seeds: int, budgets, log) -> list[dict]:
    rows = []
    for budget in budgets:
        for entry in models:
            for seed in range(seeds):
                out = diagnose(entry.build(seed), budget, seed)
                errors = [c for c, s in out["ranked"] if s == "error"]
                rows.append({"model": entry.name, "budget": budget, "seed": seed,
                             "errors": errors, **out})
                log(f"  clean {entry.name:24} {budget:8} seed {seed}: errors {errors or '-'}  "
                    f"warnings {[c for c, s in out['ranked'] if s == 'warning'] or '-'}  "
                    f"({out['seconds']:.1f} s)"
                    + (f"  PROBE FAILED: {out['probe_failures']}" if out["probe_failures"] else ""))
    return rows


def summarize(mut: list[dict], clean: list[dict]) -> str:
    lines = []
    if mut:
        lines += ["", "Over the killed mutants (the others are listed below):", "",
                  "| operator | expected code | applies to | killed | top-1 | found anywhere | "
                  "median s |", "|---|---|---|---|---|---|---|"]
        by_op = defaultdict(list)
        for r in mut:
            by_op[r["operator"]].append(r)
        for op, rs in by_op.items():
            k = [r for r in rs if r["killed"]]
            t1, fa = sum(r["top1"] for r in k), sum(r["found"] for r in k)
            lines.append(f"| {op} | {', '.join(rs[0]['expect'])} | {len(rs)} | {len(k)} | "
                         f"{t1}/{len(k)} | {fa}/{len(k)} | "
                         f"{statistics.median(r['seconds'] for r in rs):.1f} |")
        k = [r for r in mut if r["killed"]]
        n = max(1, len(k))
        t1, fa = sum(r["top1"] for r in k), sum(r["found"] for r in k)
        lines += ["", f"killed mutants: {len(k)} of {len(mut)}; top-1 {t1}/{len(k)} "
                      f"({100 * t1 / n:.1f}%), found anywhere {fa}/{len(k)} ({100 * fa / n:.1f}%), "
                      f"median {statistics.median(r['seconds'] for r in mut):.1f} s per diagnosis"]
        lines += ["", "confusion over the killed mutants (operator -> code ranked first, count):",
                  ""]
        for op, rs in by_op.items():
            first = Counter((r["ranked"][0][0] if r["ranked"] else "(nothing)")
                            for r in rs if r["killed"])
            if first:
                lines.append(f"- {op}: " + ", ".join(f"{c} {k}" for c, k in first.most_common()))
        misses = [r for r in k if not r["top1"]]
        if misses:
            lines += ["", "killed but not ranked first:", ""]
            lines += [f"- {r['operator']} on {r['model']}: {r['ranked'][:3] or 'nothing'} "
                      f"[{r['kill_why']}]" for r in misses]
        alive = [r for r in mut if not r["killed"]]
        if alive:
            lines += ["", f"not killed ({len(alive)}: as good as the clean model, not counted):",
                      ""]
            lines += [f"- {r['operator']} on {r['model']}: {r['kill_why']}; diagnosis "
                      f"{'top-1' if r['top1'] else 'found' if r['found'] else 'not found'}"
                      f" {r['ranked'][:2]}" for r in alive]
    if clean:
        lines += ["", "| clean model | budget | seeds with an error | errors | median s |",
                  "|---|---|---|---|---|"]
        groups = defaultdict(list)
        for r in clean:
            groups[(r["model"], r["budget"])].append(r)
        for (model, budget), rs in groups.items():
            bad = [r for r in rs if r["errors"]]
            errs = Counter(c for r in rs for c in r["errors"])
            lines.append(f"| {model} | {budget} | {len(bad)}/{len(rs)} | "
                         f"{', '.join(f'{c} x{k}' for c, k in errs.items()) or '-'} | "
                         f"{statistics.median(r['seconds'] for r in rs):.1f} |")
        total = sum(1 for r in clean if r["errors"])
        lines += ["", f"false alarms: {total} of {len(clean)} clean diagnoses had an error"]
    holes = [r for r in mut + clean if r.get("probe_failures")]
    if holes:
        lines += ["", "checks skipped because a probe crashed:", ""]
        lines += [f"- {r.get('operator', 'clean')} on {r['model']}: {r['probe_failures']}"
                  for r in holes]
    lines += ["", "not measured through diagnose() (loop bugs that `cnndoctor run` observes): "
                  + ", ".join(f"{k} -> {v}" for k, v in RUN_ONLY.items())]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*")
    ap.add_argument("--budget", default="quick")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--clean-budgets", default="quick,standard")
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-clean", action="store_true")
    ap.add_argument("--no-mutations", action="store_true")
    ap.add_argument("--no-kill-check", action="store_true",
                    help="count every mutant (skip the training that tells killed ones)")
    args = ap.parse_args(argv)
    ops = {o.name: o for o in OPERATORS}
    unknown = [n for n in args.names if n not in ZOO and n not in ops]
    if unknown:
        print(f"unknown model or operator: {', '.join(unknown)}; models: {', '.join(ZOO)}; "
              f"operators: {', '.join(ops)}", file=sys.stderr)
        return 2
    models = [ZOO[n] for n in args.names if n in ZOO] or list(ZOO.values())
    operators = [ops[n] for n in args.names if n in ops] or OPERATORS

    def log(line):
        print(line, flush=True)

    mut = [] if args.no_mutations else run_mutations(models, operators, args.budget, log,
                                                     kill_check=not args.no_kill_check)
    clean = [] if args.no_clean else run_clean(models, args.seeds,
                                               args.clean_budgets.split(","), log)
    print(summarize(mut, clean))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"budget": args.budget, "argv": sys.argv[1:] if argv is None else argv,
                       "kill_margin": killed.KILL_MARGIN, "date": time.strftime("%Y-%m-%d %H:%M"),
                       "mutations": mut, "clean": clean}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
