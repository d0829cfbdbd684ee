"""Seconds cnndoctor takes to diagnose each built-in case, per budget.

    python benchmarks/diagnosis_time.py                 # static checks only (model, loss, data)
    python benchmarks/diagnosis_time.py static quick    # also the quick training probes
    python benchmarks/diagnosis_time.py quick 3-lane-head   # only the cases named

Case building (data generation, and for case 4 the brief training the case needs) is timed
separately and not counted in the diagnosis.
"""
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "torch")

import torch  # noqa: E402

import cnndoctor  # noqa: E402
from cnndoctor.cases import all_cases, find  # noqa: E402
from cnndoctor.probes import BUDGETS  # noqa: E402


def main(budgets, names=()):
    print(f"torch threads: {torch.get_num_threads()}, cpu count: {os.cpu_count()}")
    print(f"{'case':36} {'images':>7} {'build s':>8} " + " ".join(f"{b + ' s':>10}"
                                                            for b in budgets))
    for case in ([c for n in names for c in find(n)] if names else all_cases()):
        t0 = time.perf_counter()
        setup = case.build(0)
        build = time.perf_counter() - t0
        row = []
        for budget in budgets:
            t0 = time.perf_counter()
            report = cnndoctor.diagnose(setup.model, **setup.diagnose_kwargs(), budget=budget)
            row.append(time.perf_counter() - t0)
        n = len(setup.train[0])
        print(f"{case.id:36} {n:7d} {build:8.2f} " + " ".join(f"{s:10.2f}" for s in row)
              + f"   {report.verdict}: {', '.join(report.codes) or '-'}", flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    main([a for a in args if a in BUDGETS] or ["static"], [a for a in args if a not in BUDGETS])
