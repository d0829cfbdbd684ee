"""Stopping a script that runs under ``cnndoctor run``: ``--timeout``, ``os._exit()``, Ctrl-C.

The scripts run in cnndoctor's own process, so that the model objects they train are the ones
diagnosed. Everything captured lives in that process; a script therefore must never end it:

- ``os._exit(n)`` is replaced, for the session and in this process only, by a stop of the script
  with status ``n``: what was captured survives and is diagnosed. In any other process (the
  forked workers of a ``DataLoader``, ``multiprocessing``, a script's own ``os.fork()``) it is the
  real ``os._exit``, as the child expects. Called from one of the script's threads, it stops the
  script in its main thread and ends the calling thread. One difference with Python remains: the
  script's ``finally`` blocks run (``os._exit`` would skip them).
- ``--timeout SECONDS``: a watchdog thread stops the script when its time is up, and again every
  ``STOP_RETRY_S`` while it has not stopped (a script that catches everything). A script that
  is still running after ``STOP_ATTEMPTS`` stops swallows them all: nothing can be diagnosed
  without its cooperation, so cnndoctor says so in one line and ends with exit code 2.
- Ctrl-C while a script runs stops that script; what it did so far is still diagnosed.

A stop waits while the script is inside a step that must not be cut in two (``held``): saving a
model file (a stop there would leave the user a truncated file), creating a ``DataLoader``'s
worker processes (torch cannot shut down half-started workers) and shutting them down (torch
marks the shutdown done before it starts: cut in two, it leaves workers that never end); it is
raised when that step returns, or, for a step that may run inside a destructor (where an
exception can only be printed and dropped), at the watchdog's next try.

A stop is the exception ``ScriptStopped``, raised in the script's thread. It derives from
``BaseException``, so the ``except Exception`` of a script or a library does not swallow it. It is
delivered by a signal to the main thread (``SIGALRM``, which also wakes a ``time.sleep`` or a
blocking read), or, when the scripts do not run in the main thread or the script replaced that
signal's handler, as an asynchronous exception (raised at the next Python line the script runs).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import threading

# A script that caught the stop is stopped again this often (seconds) until it ends ...
STOP_RETRY_S = 1.0
# ... this many times at most: 10 s for its `finally` blocks and its own clean-up (saving a
# checkpoint takes a second or two), after which it is taken to ignore stops on purpose.
STOP_ATTEMPTS = 10
GAVE_UP_EXIT = 2  # the exit code then: nothing could be diagnosed
STOP_SIGNAL = signal.SIGALRM


class ScriptStopped(BaseException):
    """Raised in a script to stop it. ``kind``: "timeout", "os._exit" or "interrupt"."""

    def __init__(self, kind: str = "timeout", code: int | None = None, detail: str = ""):
        super().__init__(kind, code, detail)
        self.kind, self.code, self.detail = kind, code, detail


class Stopper:
    """Stops the script running in the thread that created it (one script at a time)."""

    def __init__(self) -> None:
        self.script = "the script"
        self.thread = threading.get_ident()
        self.pid = os.getpid()
        self.armed = False
        self.pending: ScriptStopped | None = None  # the stop asked for, delivered until it ends
        self._in_main = threading.current_thread() is threading.main_thread()
        self._old_handler = None
        self._handler_set = False
        self._done = threading.Event()
        self._watchdog: threading.Thread | None = None
        self._real_exit = None
        self.hold = 0  # depth of steps that a stop must not cut (see held)

    # ---- the session ---------------------------------------------------------------------
    def install(self) -> None:
        """Replace ``os._exit`` and take the stop signal, for the session."""
        real = self._real_exit = os._exit
        stopper = self

        def _exit(status=0, /):
            if os.getpid() != stopper.pid or not stopper.armed:
                real(status)
            stop = ScriptStopped("os._exit", _status(status))
            if threading.get_ident() == stopper.thread:  # the script's own call: at once
                stopper.pending = stopper.pending or stop
                raise _copy(stopper.pending)
            stopper.request(stop)
            raise SystemExit(status)  # another thread of the script: it ends here

        _exit.__wrapped__ = real
        _exit.__doc__ = real.__doc__
        os._exit = _exit
        if self._in_main:
            self._old_handler = signal.signal(STOP_SIGNAL, self._on_signal)
            self._handler_set = True

    def uninstall(self) -> None:
        self.end()
        if self._real_exit is not None:
            os._exit = self._real_exit
            self._real_exit = None
        if self._handler_set:
            signal.signal(STOP_SIGNAL, self._old_handler if self._old_handler is not None
                          else signal.SIG_DFL)
            self._handler_set = False

    # ---- one script ----------------------------------------------------------------------
    def begin(self, timeout: float | None, script: str = "the script") -> None:
        """A script starts; it is stopped after ``timeout`` seconds when given."""
        self.script = script
        self.pending = None
        self._done = threading.Event()
        self.armed = True
        if timeout is not None:
            done = self._done
            self._watchdog = threading.Thread(target=self._watch, args=(timeout, done),
                                              name="cnndoctor-timeout", daemon=True)
            self._watchdog.start()

    def end(self) -> ScriptStopped | None:
        """The script ended (or was stopped): no stop is delivered any more. Returns the stop
        that was asked for, if any."""
        self.armed = False
        self._done.set()
        if self._watchdog is not None:
            self._watchdog.join()
            self._watchdog = None
        stop, self.pending = self.pending, None
        return stop

    def request(self, stop: ScriptStopped) -> None:
        """Stop the script (from any thread)."""
        if not self.armed:
            return
        if self.pending is None:
            self.pending = stop
        if threading.get_ident() == self.thread:
            if self.hold == 0:
                raise _copy(self.pending)
            return  # raised when the held step returns
        self._deliver()

    @contextlib.contextmanager
    def held(self, deferred: bool = False):
        """A step no stop may cut: a stop asked for meanwhile is raised when it returns, or,
        ``deferred`` (a step that may run in a destructor), delivered again by the watchdog."""
        self.hold += 1
        try:
            yield
        finally:
            self.hold -= 1
            if self.hold == 0 and self.armed and self.pending is not None \
                    and threading.get_ident() == self.thread and not deferred:
                raise _copy(self.pending)

    # ---- delivery ------------------------------------------------------------------------
    def _watch(self, timeout: float, done: threading.Event) -> None:
        if done.wait(timeout):
            return
        if self.pending is None:
            self.pending = ScriptStopped("timeout", detail=f"{timeout:g}")
        for _ in range(STOP_ATTEMPTS):
            if not self.armed or done.is_set():
                return
            self._deliver()
            done.wait(STOP_RETRY_S)
        if self.armed and not done.is_set():
            import sys

            try:
                print(f"cnndoctor: {self.script} was stopped {STOP_ATTEMPTS} times after "
                      f"--timeout {timeout:g} and kept running (it catches every exception, "
                      f"even the stop): nothing could be diagnosed; let it end, e.g. catch "
                      f"Exception instead of BaseException", file=sys.stderr, flush=True)
            finally:
                (self._real_exit or os._exit)(GAVE_UP_EXIT)

    def _deliver(self) -> None:
        if not self.armed:
            return
        if self._handler_set and signal.getsignal(STOP_SIGNAL) == self._on_signal:
            signal.pthread_kill(self.thread, STOP_SIGNAL)
        else:  # another thread runs the scripts, or the script took the signal for itself
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.thread),
                                                       ctypes.py_object(ScriptStopped))

    def _on_signal(self, signum, frame) -> None:
        if self.armed and self.pending is not None and self.hold == 0:
            raise _copy(self.pending)

    def clear_async(self) -> None:
        """Drop an asynchronous stop not yet raised (the script ended first)."""
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.thread), None)


def _copy(stop: ScriptStopped) -> ScriptStopped:
    return ScriptStopped(stop.kind, stop.code, stop.detail)


def _status(status) -> int:
    try:
        return int(status)
    except (TypeError, ValueError):
        return 1
