"""What a bad-input case is, and how one is run and judged (used by ``benchmarks/bad_inputs.py``).

Every case runs in a fresh interpreter, in its own folder, as a new user would run it: through
the CLI (``python -m cnndoctor ...``) or through the API (a few lines of Python calling
``cnndoctor.diagnose``). It passes when it ends with the documented exit code, with a one-line
message (or a finding standing in for one), no traceback, and every file that was in its folder
before left byte for byte as it was (apart from what a user's own script writes itself).
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TRACEBACK = "Traceback (most recent call last)"
# A case that has not ended after this long is a failure in itself (a hang): the slowest case,
# a `cnndoctor run --timeout` on a script that never ends, takes about a minute on 2 cores.
CASE_TIMEOUT_S = 300

# The API cases end this way: an InputError is the clear answer (its message printed, exit 2);
# anything else escaping is a leaked traceback.
_API_PRELUDE = """\
import os, sys
os.environ.setdefault("KERAS_BACKEND", "torch")
import numpy as np
from cnndoctor import diagnose
from cnndoctor.errors import InputError
try:
{body}
except InputError as exc:
    print(f"InputError: {{exc}}", file=sys.stderr)
    sys.exit(2)
"""


@dataclass
class Case:
    name: str                       # what the user did, in a few words
    kind: str                       # "cli" or "api"
    argv: list[str] | None = None   # cnndoctor's arguments (kind "cli")
    code: str | None = None         # the body of a try block calling the API (kind "api")
    exit_code: int = 2              # the documented exit code
    finding: str | None = None      # a finding code that may answer instead of a message
    writes: tuple[str, ...] = ()    # files the user's own script writes (allowed to change)
    setup: object = None            # callable(folder: Path) writing the case's input files
    timeout_s: float = CASE_TIMEOUT_S


@dataclass
class Outcome:
    case: Case
    exit_code: int | None
    message: str
    traceback: bool
    changed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    output: str = ""

    @property
    def ok(self) -> bool:
        answered = bool(self.message) and "\n" not in self.message
        return (self.exit_code == self.case.exit_code and not self.traceback
                and not self.changed and answered)


def checksums(folder: Path) -> dict[str, str]:
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            out[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _message(case: Case, stdout: str, stderr: str) -> str:
    """The one line that answers the user: an error line, or the finding that stands for it."""
    for line in stderr.splitlines():
        if line.startswith(("cnndoctor: error:", "InputError:")):
            return line.strip()
    if case.finding:
        for line in (stdout + "\n" + stderr).splitlines():
            if case.finding in line:
                return line.strip()
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""


def run_case(case: Case, folder: Path) -> Outcome:
    folder.mkdir(parents=True, exist_ok=True)
    if case.setup is not None:
        case.setup(folder)
    before = checksums(folder)
    env = dict(os.environ, KERAS_BACKEND="torch", PYTHONPATH=str(REPO), NO_COLOR="1",
               XDG_CACHE_HOME=str(folder.parent / f".cache-{folder.name}"))
    env.pop("CNNDOCTOR_CACHE", None)  # each case its own cache, beside (not in) its folder
    if case.kind == "cli":
        cmd = [sys.executable, "-m", "cnndoctor", *case.argv]
    else:
        body = textwrap.indent(textwrap.dedent(case.code).strip(), "    ")
        cmd = [sys.executable, "-c", _API_PRELUDE.format(body=body)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True,
                              timeout=case.timeout_s)
        code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        code = None
        stdout = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        stderr = f"(no answer after {case.timeout_s:.0f} s)"
    seconds = time.perf_counter() - start
    after = checksums(folder)
    changed = [name for name, digest in before.items()
               if name not in case.writes and after.get(name) != digest]
    changed += [f"{name} (new)" for name in after
                if name not in before and name not in case.writes and "__pycache__" not in name]
    return Outcome(case, code, _message(case, stdout, stderr),
                   TRACEBACK in stdout or TRACEBACK in stderr, changed, seconds,
                   output=(stdout[-2000:] + "\n" + stderr[-4000:]))
