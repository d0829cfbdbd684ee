"""Seconds the robustness probes take on reference case 5 (MNIST + inverted, photographed digits).

    python benchmarks/robustness_time.py            # the test's sizes: 3,000 training images
    python benchmarks/robustness_time.py full       # the case as shipped: 8,000 training images

Prints the time of each phase: building the case (training the user's model, not counted),
property comparison + matching search (domain_shift), the perturbation sweep per budget, and the
verification (3 seeds x with/without augmentation, retrained from fresh weights), with the
accuracy figures it measured.
"""
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "torch")

import torch  # noqa: E402

import cnndoctor  # noqa: E402,F401
from cnndoctor.api import diagnose  # noqa: E402
from cnndoctor.cases.handwriting import build_setup  # noqa: E402


def main(full: bool):
    print(f"torch threads: {torch.get_num_threads()}, cpu count: {os.cpu_count()}, "
          f"load average: {os.getloadavg()[0]:.1f}")
    t0 = time.perf_counter()
    setup = build_setup(0) if full else build_setup(0, n_train=3000, n_reference=600)
    print(f"build case 5 ({len(setup.train[0])} training images, {len(setup.reference[0])} "
          f"photos): {time.perf_counter() - t0:.1f} s")
    for budget in ("quick", "standard"):
        report = diagnose(setup.model, budget=budget, **setup.diagnose_kwargs())
        t = report.timings
        print(f"budget {budget:9}: domain_shift {t.get('probe:domain_shift', 0):6.1f} s, "
              f"perturbation_sweep {t.get('probe:perturbation_sweep', 0):6.1f} s, "
              f"diagnosis total {t.get('total', 0):6.1f} s")
    report = diagnose(setup.model, budget="quick", verify=True, **setup.diagnose_kwargs())
    t = report.timings
    print(f"verification (quick + verify): robustness_fix {t.get('probe:robustness_fix', 0):.1f} s,"
          f" diagnosis total {t.get('total', 0):.1f} s")
    f = report.get("domain-shift")
    if f is not None and f.verified:
        print("  " + f.verified["summary"])
        print(f"  validation: {f.verified['validation_before']['mean']:.1%} -> "
              f"{f.verified['validation_after']['mean']:.1%}")
        acc = f.evidence.get("accuracy", {})
        print(f"  the user's model: {acc.get('reference', 0):.1%} on the photos vs "
              f"{acc.get('validation', 0):.1%} on validation")


if __name__ == "__main__":
    main("full" in sys.argv[1:])
