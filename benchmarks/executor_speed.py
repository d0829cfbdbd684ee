"""The multi-seed study of a built-in case, in-process and in the local process pool.

    python benchmarks/executor_speed.py [CASE] [--budget standard] [--repeat 1]

Default: case 1 (1-colored-mnist), the standard budget (5 seeds x 150 steps). Prints the time
of the study in this process and in the local pool (warm: the pool's start, paid once per
session, is timed on its own), the speed-up, and checks that both gave the same figures. Timings
on a shared machine are noisy: the load average is printed beside them.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import cnndoctor  # noqa: F401  (sets the Keras backend)
from cnndoctor import cases, executor
from cnndoctor.adapters import describe, framework_of
from cnndoctor.data import make_dataset
from cnndoctor.evidence import Evidence
from cnndoctor.probes import ProbeContext
from cnndoctor.probes.training import SEED_RUNS, SEED_STEPS, probe_seeds


def evidence_for(setup) -> Evidence:
    """What ``diagnose`` hands the probes, for a built-in case (no other probe runs)."""
    model = setup.model
    fmt = "channels_last" if framework_of(model) == "keras" else "channels_first"
    train = make_dataset("training", setup.train, fmt, require_labels=True)
    val = make_dataset("validation", setup.val, fmt, require_labels=True) \
        if setup.val is not None else None
    loss = setup.loss if setup.loss is not None else getattr(model, "loss", None)
    optimizer = setup.optimizer if setup.optimizer is not None else getattr(model, "optimizer",
                                                                            None)
    x = train.x[:2]
    example = x.detach().float() if hasattr(x, "detach") else x.astype("float32")
    return Evidence(graph=describe(model, loss=loss, example=example), train=train, val=val,
                    evaluation=[], reference=None, budget="standard", model=model, loss=loss,
                    optimizer=optimizer, batch_size=setup.batch_size or 32, epochs=setup.epochs)


def _cpu_seconds(pids) -> float:
    """CPU seconds (user + system) used so far by the processes ``pids`` (Linux /proc)."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


def study(ev: Evidence, budget: str, name: str, pids) -> tuple[float, float, dict]:
    """Seconds of the study, CPU seconds our processes used meanwhile, and its figures."""
    cpu0, t0 = _cpu_seconds(pids), time.perf_counter()
    probe_seeds(ev, ProbeContext(budget=budget, seed=0, executor=name))
    return time.perf_counter() - t0, _cpu_seconds(pids) - cpu0, dict(ev.probes["seeds"])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", nargs="?", default="1-colored-mnist")
    parser.add_argument("--budget", default="standard", choices=sorted(SEED_RUNS))
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per backend")
    args = parser.parse_args(argv)
    found = cases.find(args.case)
    if not found:
        print(f"no built-in case {args.case!r}", file=sys.stderr)
        return 2
    case = found[0]
    print(f"case {case.id}, budget {args.budget}: {SEED_RUNS[args.budget]} seeds x "
          f"{SEED_STEPS[args.budget]} steps; {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f} at start")
    ev = evidence_for(case.build(0))
    pool = executor.get_executor("local")
    t0 = time.perf_counter()
    pool.start()
    print(f"local pool start ({pool.max_workers} workers, imports of torch and Keras): "
          f"{time.perf_counter() - t0:.1f} s (once per session)")
    # this process and the pool's workers (a private attribute: a benchmark may look inside)
    pids = [os.getpid(), *getattr(pool._pool, "_processes", {})]
    times: dict[str, list[float]] = {"inprocess": [], "local": []}
    figures = {}
    for _ in range(max(1, args.repeat)):
        for name in ("inprocess", "local"):
            seconds, cpu, figures[name] = study(ev, args.budget, name, pids)
            times[name].append(seconds)
            accs = ", ".join(f"{r['val_acc']:.1%}" for r in figures[name]["runs"])
            # Cores we actually got: with other sessions busy, Linux's autogroup scheduler
            # shares the CPUs between sessions, so more processes of ours do not get more.
            print(f"  {name:10} {seconds:6.1f} s, {cpu:6.1f} CPU s ({cpu / seconds:.2f} cores "
                  f"on average); validation accuracy per seed: {accs}")
    same = figures["inprocess"] == figures["local"]
    best_in, best_local = min(times["inprocess"]), min(times["local"])
    print(f"in-process {best_in:.1f} s, local pool {best_local:.1f} s: speed-up "
          f"{best_in / best_local:.2f}x (best of {len(times['local'])}); same figures: {same}; "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    executor.shutdown()
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
