"""Wall-time cost of `cnndoctor run --budget quick` against `python script.py`, on several scripts.

    python benchmarks/run_overhead.py [SCRIPT ...]     (default: the scripts in SCRIPTS)

Per script: the plain run time, the time of `cnndoctor run --budget quick` (the instrumented
script inside the session, the diagnosis that follows, start-up and the rest) and their ratio;
then the median and the worst ratio over the scripts (issue 11's aims: 1.5x median, 2.5x at
worst). Each is measured once, after one warm-up run of the plain script (imports and file
caches). Run it on an idle machine: the ratios compare wall times.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Healthy scripts as users write them (the overhead a user pays when nothing is wrong), the
#: 300-image Keras script issue 11 was measured on, and two broken torch scripts (the diagnosis
#: runs its probes on a failing model too).
SCRIPTS = ("examples/torch_healthy.py", "examples/keras_healthy.py",
           "examples/torch_double_softmax.py", "examples/torch_no_zero_grad.py")


def timed(cmd, env) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    return time.perf_counter() - start, proc


def measure(script: str) -> dict | None:
    out = tempfile.mkdtemp(prefix="cnndoctor-bench-")
    env = dict(os.environ, CNNDOCTOR_EXAMPLES_OUT=out, KERAS_BACKEND="torch")
    python = sys.executable
    timed([python, script], env)  # warm-up
    plain, proc = timed([python, script], env)
    if proc.returncode != 0:
        print(f"{script}: the plain run failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    report = os.path.join(out, "report.json")
    total, proc = timed([python, "-m", "cnndoctor.run", "--budget", "quick", "--json", report,
                         script], env)
    if proc.returncode == 2 or not os.path.exists(report):
        print(f"{script}: cnndoctor run failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    with open(report, encoding="utf-8") as fh:
        data = json.load(fh)
    scripts = sum(s["seconds"] for s in data["figures"]["run"]["scripts"])
    diagnosis = data["timings"].get("total", 0.0)
    return {"script": os.path.relpath(script, ROOT), "plain": plain, "total": total,
            "scripts": scripts, "diagnosis": diagnosis, "verdict": data.get("verdict"),
            "slowest": sorted(((k, v) for k, v in data["timings"].items()
                               if k not in ("total", "probes")), key=lambda kv: -kv[1])[:3]}


def main(argv: list[str]) -> int:
    chosen = argv or [os.path.join(ROOT, s) for s in SCRIPTS]
    rows = []
    print(f"{'script':36} {'python':>7} {'run':>7} {'ratio':>6}   in the run: script under "
          f"instrumentation, diagnosis (slowest parts), the rest")
    for script in chosen:
        r = measure(script)
        if r is None:
            return 1
        rows.append(r)
        slow = ", ".join(f"{k} {v:.1f}" for k, v in r["slowest"])
        ratio = r["total"] / r["plain"]
        print(f"{r['script']:36} {r['plain']:6.1f}s {r['total']:6.1f}s {ratio:5.2f}x"
              f"   {r['scripts']:.1f} s, {r['diagnosis']:.1f} s ({slow}), "
              f"{r['total'] - r['scripts'] - r['diagnosis']:.1f} s; verdict {r['verdict']}")
        sys.stdout.flush()
    ratios = [r["total"] / r["plain"] for r in rows]
    print(f"median ratio {statistics.median(ratios):.2f}x, worst {max(ratios):.2f}x "
          f"over {len(rows)} script(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
