"""Verification time per built-in case at a budget, in-process and with the local process pool.

    python benchmarks/verify_time.py [BUDGET] [CASE ...]     (default: quick, every broken case)

Prints, per case: the seconds spent verifying (``timings["verification"]``) with
``executor="inprocess"`` and ``executor="local"``, the speed-up, and each verified finding's
verdict and before -> after means, so that the figures in docs/benchmarks.md can be reproduced.
"""
from __future__ import annotations

import sys
import time

import cnndoctor
from cnndoctor import cases


def one(case, budget: str, executor: str) -> tuple[float, float, list[str]]:
    setup = case.build(0)
    t0 = time.perf_counter()
    report = cnndoctor.diagnose(setup.model, **setup.diagnose_kwargs(), budget=budget,
                                verify=True, executor=executor)
    total = time.perf_counter() - t0
    lines = []
    for f in report.findings:
        if f.verified and "verdict" in f.verified:
            v = f.verified
            lines.append(f"{f.code}: {v['verdict']} {v['before']['mean']:.1%} -> "
                         f"{v['after']['mean']:.1%}")
    combined = (report.figures.get("verification") or {}).get("combined")
    if combined:
        lines.append(f"all fixes together: {combined['verdict']} "
                     f"{combined['before']['mean']:.1%} -> {combined['after']['mean']:.1%}")
    return report.timings.get("verification", 0.0), total, lines


def main(argv: list[str]) -> None:
    budget = argv[0] if argv and argv[0] in ("quick", "standard", "thorough") else "quick"
    names = argv[1:] if argv and argv[0] == budget else argv
    chosen = [c for n in names for c in cases.find(n)] if names else \
        [c for c in cases.all_cases() if c.variant == "broken"]
    print(f"budget {budget}; verification seconds (whole diagnosis in brackets)")
    print(f"{'case':30} {'in-process':>16} {'local pool':>16} {'speed-up':>9}")
    for case in chosen:
        inproc, inproc_total, lines = one(case, budget, "inprocess")
        local, local_total, _ = one(case, budget, "local")
        speed = inproc / local if local else float("nan")
        print(f"{case.id:30} {inproc:7.1f} ({inproc_total:6.1f}) {local:7.1f} ({local_total:6.1f})"
              f" {speed:8.2f}x")
        for line in lines:
            print(f"    {line}")
        sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
