"""One interface for many short, independent trainings (seeds x fixes x learning rates).

    jobs = [Job(train_one_seed, (model, x, y), {"seed": s}, label=f"seed {s}") for s in seeds]
    results = run_jobs(jobs, ctx.executor, progress=ctx.say)   # in job order
    notes = get_last_notes()                                   # e.g. a job that ran in-process

Backends (``executor=``):

* ``"inprocess"``: a plain loop in this process; the reference every other backend must equal.
* ``"local"``: a pool of worker processes started with ``spawn`` (never ``fork``: torch and
  Keras hold threads and state that a fork copies half-way), one torch thread each, as many as
  there are cores. The pool lives for the whole session, so each worker pays the import of
  torch and Keras once; it is shut down at exit.
* ``"ray"``: Ray tasks (``num_cpus=1`` each) on the cluster named by ``RAY_ADDRESS``, else on a
  local Ray instance over all cores. Ray is optional: ``pip install 'cnndoctor[ray]'``.
* ``"auto"``: in-process when there is one job, one core, or the jobs are declared ``tiny``;
  else local.

A job is ``fn(*args, **kwargs)`` with ``fn`` a module-level (importable) function. Its arguments
travel with cloudpickle, so that model classes defined in the user's ``__main__`` script travel by
value; Keras 3 models pickle themselves (``KerasSaveable.__reduce__``). Each job seeds itself and
returns plain Python/numpy values, so its result is bit-identical whichever backend ran it. A
job whose arguments cannot be sent to another process runs here instead, and ``get_last_notes``
says so. A job that raises in a worker raises ``JobError`` here, with the worker's message and
its traceback text.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
import traceback
import types
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import InputError

EXECUTORS = ("auto", "inprocess", "local", "ray")
RAY_MISSING = "the ray executor needs Ray: pip install 'cnndoctor[ray]'"

#: Environment every worker gets before it imports torch or Keras: one torch thread per worker
#: (parallelism is across jobs; see runtime.PROBE_THREADS for the measurement behind it), and
#: Keras on the torch backend.
WORKER_ENV = {"CNNDOCTOR_THREADS": "1", "KERAS_BACKEND": "torch"}


@dataclass
class Job:
    """One short training: ``fn(*args, **kwargs)``; ``fn`` must be a module-level function."""

    fn: Callable
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    label: str = ""  # for progress lines ("seed 2, fixed copy")
    tiny: bool = False  # too small to be worth sending to another process

    def run(self) -> Any:
        return self.fn(*self.args, **self.kwargs)


class JobError(RuntimeError):
    """A job raised in a worker. ``str()`` is one line; ``worker_traceback`` has the details."""

    def __init__(self, label: str, error_type: str, message: str, worker_traceback: str = ""):
        where = f"job {label!r}" if label else "a job"
        super().__init__(f"{where} failed in a worker: {error_type}: {message}")
        self.label, self.error_type, self.message = label, error_type, message
        self.worker_traceback = worker_traceback


# ---------------------------------------------------------------------------------------------
# Payloads: what crosses the process boundary


class _NotTransferable(Exception):
    """The job's function or arguments cannot be sent to (or rebuilt in) a worker."""


def _dumps(job: Job) -> bytes:
    import cloudpickle

    try:
        # one pickle for function and arguments: objects shared between them (a torch model
        # and the optimizer over its parameters) stay shared on the other side
        return cloudpickle.dumps((job.fn, job.args, job.kwargs))
    except Exception as exc:
        raise _NotTransferable(f"{type(exc).__name__}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _run_payload(payload: bytes) -> tuple:
    """In a worker: rebuild the job, run it. ("ok", result) | ("unpickle"|"error", ...)."""
    import pickle
    import warnings

    try:
        with warnings.catch_warnings():
            # Keras rebuilds a compiled model with a fresh optimizer and says it skipped the old
            # optimizer's variables: jobs re-create the optimizer anyway (runtime.fit).
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            fn, args, kwargs = pickle.loads(payload)
    except Exception as exc:
        return ("unpickle", f"{type(exc).__name__}: {_first_line(exc)}")
    try:
        return ("ok", fn(*args, **kwargs))
    except Exception as exc:
        return ("error", type(exc).__name__, _first_line(exc), traceback.format_exc())


def _worker_init() -> None:
    """Runs once in each new worker, before any job: one thread, torch and Keras imported."""
    for key, value in WORKER_ENV.items():
        os.environ[key] = value
    import torch

    torch.set_num_threads(1)
    import keras  # noqa: F401  (paid once per worker, not once per job)

    from . import runtime  # noqa: F401


# ---------------------------------------------------------------------------------------------
# Backends


class Executor:
    """Runs a list of jobs; ``run`` returns results in job order and notes about how they ran."""

    name = "executor"

    def run(self, jobs: list[Job], *, workers: int | None = None,
            progress: Callable[[str], None] | None = None) -> tuple[list[Any], list[str]]:
        raise NotImplementedError


class InProcessExecutor(Executor):
    name = "inprocess"

    def run(self, jobs, *, workers=None, progress=None):
        results = []
        for i, job in enumerate(jobs):
            _say(progress, job, i, len(jobs))
            results.append(job.run())
        return results, []


def _say(progress, job: Job, i: int, n: int, where: str = "") -> None:
    if progress is not None:
        label = f": {job.label}" if job.label else ""
        progress(f"job {i + 1} of {n}{label}{where}")


@contextlib.contextmanager
def _main_hidden():
    """Start spawn workers without the caller's ``__main__`` script.

    ``spawn`` re-runs the parent's main script in every worker (as ``__mp_main__``) unless it
    guards its code with ``if __name__ == "__main__"``: a user's training script that calls
    ``diagnose`` at its top level would train again in every worker. Jobs do not need it (their
    ``__main__`` classes travel by value with cloudpickle), so while workers start, the entry is
    a bare module. The user's module object is not touched.
    """
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


class LocalExecutor(Executor):
    """A spawn process pool, one torch thread per worker, kept for the whole session."""

    name = "local"

    def __init__(self, max_workers: int | None = None):
        self.max_workers = max(1, int(max_workers or os.cpu_count() or 1))
        self._pool = None
        self._lock = threading.Lock()

    def _ensure_pool(self):
        from concurrent.futures import ProcessPoolExecutor
        import multiprocessing

        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=self.max_workers, initializer=_worker_init,
                    mp_context=multiprocessing.get_context("spawn"))
            return self._pool

    def start(self) -> None:
        """Start every worker now (and pay their imports), not at the first jobs."""
        pool = self._ensure_pool()
        with _main_hidden():
            futures = [pool.submit(os.getpid) for _ in range(self.max_workers)]
        for f in futures:
            f.result()

    def shutdown(self, kill: bool = False) -> None:
        """Stop the workers; ``kill``: without waiting for the jobs they are running."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is None:
            return
        if kill:
            # the pool has no public way to stop running jobs before Python 3.14
            for process in list(getattr(pool, "_processes", {}).values()):
                with contextlib.suppress(Exception):
                    process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)

    def run(self, jobs, *, workers=None, progress=None):
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        limit = max(1, min(self.max_workers, int(workers or self.max_workers)))
        results: list[Any] = [None] * len(jobs)
        notes: list[str] = []
        here: list[int] = []
        payloads: dict[int, bytes] = {}
        for i, job in enumerate(jobs):
            try:
                payloads[i] = _dumps(job)
            except _NotTransferable as why:
                here.append(i)
                notes.append(_here_note(job, i, why))
        pool = self._ensure_pool() if payloads else None
        queue = list(payloads)
        running: dict[Any, int] = {}
        try:
            while queue or running:
                while queue and len(running) < limit:  # ``workers`` caps the jobs in flight
                    i = queue.pop(0)
                    _say(progress, jobs[i], i, len(jobs), " (local worker)")
                    with _main_hidden():
                        running[pool.submit(_run_payload, payloads.pop(i))] = i
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in done:
                    i = running.pop(future)
                    outcome = future.result()
                    if outcome[0] == "unpickle":
                        here.append(i)
                        notes.append(_here_note(jobs[i], i, outcome[1]))
                    else:
                        results[i] = _unwrap(jobs[i], outcome)
        except BrokenProcessPool:
            self.shutdown()  # a worker died (out of memory, a crash): the next call starts anew
            raise RuntimeError("a local worker process died while running jobs (out of memory "
                               "or a crash); run again with executor='inprocess' to see "
                               "why") from None
        except JobError:  # the caller gets the error now; jobs already running finish unseen
            for future in running:
                future.cancel()
            raise
        except BaseException:  # Ctrl-C: stop the jobs that still run
            self.shutdown(kill=True)
            raise
        for i in sorted(here):
            _say(progress, jobs[i], i, len(jobs), " (in this process)")
            results[i] = jobs[i].run()
        return results, notes


def _here_note(job: Job, i: int, why) -> str:
    name = f"{job.label!r}" if job.label else f"{i + 1}"
    return (f"job {name} ran in this process: its arguments cannot be sent to a worker "
            f"process ({why})")


def _unwrap(job: Job, outcome: tuple) -> Any:
    if outcome[0] == "ok":
        return outcome[1]
    _, error_type, message, tb = outcome
    raise JobError(job.label, error_type, message, tb)


class RayExecutor(Executor):
    """Ray tasks of one CPU each; ``RAY_ADDRESS`` names a cluster, else a local instance."""

    name = "ray"

    def __init__(self):
        self.ray = import_ray()
        self._remote = None

    def _ensure(self):
        ray = self.ray
        if not ray.is_initialized():
            if os.environ.get("RAY_ADDRESS"):
                ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
            else:
                # a local instance: its workers see this process's import path, as spawned
                # workers do (on a cluster, ship code with runtime_env working_dir/py_modules)
                ray.init(num_cpus=os.cpu_count(), log_to_driver=False, include_dashboard=False,
                         runtime_env={"env_vars": {
                             "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}})
        if self._remote is None:
            self._remote = ray.remote(num_cpus=1)(_ray_task)
        return self._remote

    def run(self, jobs, *, workers=None, progress=None):
        remote = self._ensure()
        ray = self.ray
        results: list[Any] = [None] * len(jobs)
        notes: list[str] = []
        here: list[int] = []
        queue: list[tuple[int, bytes]] = []
        for i, job in enumerate(jobs):
            try:
                queue.append((i, _dumps(job)))
            except _NotTransferable as why:
                here.append(i)
                notes.append(_here_note(job, i, why))
        limit = max(1, int(workers)) if workers else len(queue) or 1
        running: dict[Any, int] = {}
        while queue or running:
            while queue and len(running) < limit:
                i, payload = queue.pop(0)
                _say(progress, jobs[i], i, len(jobs), " (ray)")
                running[remote.remote(payload)] = i
            done, _ = ray.wait(list(running), num_returns=1)
            for ref in done:
                i = running.pop(ref)
                try:
                    outcome = ray.get(ref)
                except Exception as exc:  # the task itself failed (worker lost, no cnndoctor)
                    raise JobError(jobs[i].label, type(exc).__name__, _first_line(exc),
                                   str(exc)) from None
                if outcome[0] == "unpickle":
                    here.append(i)
                    notes.append(_here_note(jobs[i], i, outcome[1]))
                else:
                    results[i] = _unwrap(jobs[i], outcome)
        for i in sorted(here):
            _say(progress, jobs[i], i, len(jobs), " (in this process)")
            results[i] = jobs[i].run()
        return results, notes


def _ray_task(payload: bytes) -> tuple:
    if not getattr(_ray_task, "_ready", False):
        _worker_init()
        _ray_task._ready = True
    return _run_payload(payload)


def import_ray():
    """The ``ray`` module, or an InputError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise InputError(RAY_MISSING) from None
    return ray


# ---------------------------------------------------------------------------------------------
# The interface

_LOCAL: LocalExecutor | None = None
_RAY: RayExecutor | None = None
_LAST_NOTES: list[str] = []
_IN_PROCESS = InProcessExecutor()


def validate(name: str | None) -> str:
    """The executor name, checked (None means "auto"); Ray's presence is checked for "ray"."""
    name = "auto" if name is None else str(name).lower()
    if name not in EXECUTORS:
        raise InputError(f"unknown executor {name!r}: expected one of {', '.join(EXECUTORS)}.")
    if name == "ray":
        import_ray()
    return name


def get_executor(name: str | None = "auto", jobs: list[Job] | None = None) -> Executor:
    """The backend called ``name``; for "auto", the one that suits ``jobs``."""
    global _LOCAL, _RAY
    name = validate(name)
    if name == "auto":
        cores = os.cpu_count() or 1
        few = jobs is not None and (len(jobs) <= 1 or all(j.tiny for j in jobs))
        name = "inprocess" if cores <= 1 or few else "local"
    if name == "inprocess":
        return _IN_PROCESS
    if name == "local":
        if _LOCAL is None:
            _LOCAL = LocalExecutor()
        return _LOCAL
    if _RAY is None:
        _RAY = RayExecutor()
    return _RAY


def run_jobs(jobs: list[Job], executor: str | None = "auto", *, workers: int | None = None,
             progress: Callable[[str], None] | None = None) -> list[Any]:
    """Run ``jobs`` and return their results in job order.

    ``executor``: "auto" (default), "inprocess", "local" or "ray". ``workers`` caps how many
    jobs run at once. ``progress`` gets one line per job as it starts. Notes on how the jobs ran
    (one that had to run in this process, and why) are in ``get_last_notes()`` afterwards.
    """
    global _LAST_NOTES
    jobs = list(jobs)
    _LAST_NOTES = []
    if not jobs:
        return []
    backend = get_executor(executor, jobs)
    if workers is not None and int(workers) <= 1 and backend is not _IN_PROCESS \
            and executor in (None, "auto"):
        backend = _IN_PROCESS
    results, notes = backend.run(jobs, workers=workers, progress=progress)
    _LAST_NOTES = list(notes)
    return results


def get_last_notes() -> list[str]:
    """What the last ``run_jobs`` call had to do differently (jobs run here, and why)."""
    return list(_LAST_NOTES)


def shutdown() -> None:
    """Stop the local worker pool (it restarts at the next call). Ray is left to its owner."""
    global _LOCAL
    if _LOCAL is not None:
        _LOCAL.shutdown()
        _LOCAL = None


atexit.register(shutdown)

__all__ = ["Job", "JobError", "Executor", "run_jobs", "get_executor", "get_last_notes",
           "shutdown", "validate", "EXECUTORS", "RAY_MISSING"]
