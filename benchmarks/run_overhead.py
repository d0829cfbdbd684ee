"""Wall-time cost of `cnndoctor run --budget quick` against `python script.py` on a healthy script.

    python benchmarks/run_overhead.py [SCRIPT]     (default: examples/torch_healthy.py)

Prints the plain run time, the time of the instrumented script inside the session, the time of
the diagnosis that follows, and the ratios. Each is measured once, after one warm-up run of the
plain script (imports and file caches).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(cmd, env) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    return time.perf_counter() - start, proc


def main() -> int:
    script = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "examples",
                                                                  "torch_healthy.py")
    out = tempfile.mkdtemp(prefix="cnndoctor-bench-")
    env = dict(os.environ, CNNDOCTOR_EXAMPLES_OUT=out, KERAS_BACKEND="torch")
    python = sys.executable
    timed([python, script], env)  # warm-up
    plain, proc = timed([python, script], env)
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        return 1
    report = os.path.join(out, "report.json")
    total, proc = timed([python, "-m", "cnndoctor.run", "--budget", "quick", "--json", report,
                         script], env)
    if proc.returncode == 2:
        print(proc.stderr, file=sys.stderr)
        return 1
    with open(report, encoding="utf-8") as fh:
        data = json.load(fh)
    scripts = sum(s["seconds"] for s in data["figures"]["run"]["scripts"])
    diagnosis = data["timings"].get("total", 0.0)
    name = os.path.relpath(script, ROOT)
    print(f"script: {name}")
    print(f"python {name}: {plain:.1f} s")
    print(f"cnndoctor run --budget quick {name}: {total:.1f} s "
          f"(script under instrumentation {scripts:.1f} s, diagnosis {diagnosis:.1f} s, "
          f"start-up and the rest {total - scripts - diagnosis:.1f} s)")
    print(f"instrumentation overhead (script inside the session / plain run, which includes "
          f"interpreter start-up): {scripts / plain:.2f}x")
    print(f"wall-time ratio cnndoctor run / python: {total / plain:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
