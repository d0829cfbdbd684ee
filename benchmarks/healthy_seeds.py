"""False alarms on the healthy versions of the built-in cases, over several diagnosis seeds.

    python benchmarks/healthy_seeds.py [SEEDS] [BUDGET] [CASE ...]    (default: 5 quick, all)

Builds every healthy case for each seed (fresh weights and data split per seed), diagnoses it at
the budget, and prints the errors (there should be none) and the warnings per seed, then a
summary line per case. This is the calibration run behind the training thresholds: each must
stay quiet on every healthy case and seed.
"""
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "torch")

import cnndoctor  # noqa: E402
from cnndoctor.cases import all_cases, find  # noqa: E402


def main(seeds: int, budget: str, names: list[str]) -> int:
    chosen = [c for n in names for c in find(n)] if names else all_cases()
    healthy = [c for c in chosen if c.variant == "healthy"]
    total_errors = 0
    for case in healthy:
        errors_per_seed, seconds = [], []
        for seed in range(seeds):
            setup = case.build(seed)
            start = time.perf_counter()
            report = cnndoctor.diagnose(setup.model, **setup.diagnose_kwargs(), budget=budget,
                                        seed=seed)
            seconds.append(time.perf_counter() - start)
            errors = [f.code for f in report.findings if f.severity == "error"]
            warnings = [f.code for f in report.findings if f.severity == "warning"]
            errors_per_seed.append(errors)
            print(f"  {case.id:32} seed {seed}: errors {errors or '-'}  warnings {warnings or '-'}"
                  f"  ({seconds[-1]:.1f} s)", flush=True)
        n_bad = sum(1 for e in errors_per_seed if e)
        total_errors += n_bad
        print(f"{case.id:34} {seeds - n_bad}/{seeds} seeds without an error at '{budget}', "
              f"{sum(seconds) / len(seconds):.1f} s per diagnosis", flush=True)
    return 1 if total_errors else 0


if __name__ == "__main__":
    args = sys.argv[1:]
    n = int(args.pop(0)) if args and args[0].isdigit() else 5
    b = args.pop(0) if args and args[0] in ("static", "quick", "standard", "thorough") else "quick"
    sys.exit(main(n, b, args))
