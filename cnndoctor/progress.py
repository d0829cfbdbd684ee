"""Progress bars on stderr for the slow parts (the probes, the verification runs).

A bar is drawn only when stderr is a terminal, bars were not turned off (``diagnose(progress=
False)``, ``--quiet``) and ``TQDM_DISABLE`` is not set; otherwise ``bar`` gives an object that
does nothing. The one-line progress messages stay as they are (for logs): while a bar is drawn
they are printed above it, through ``lines_above``.
"""
from __future__ import annotations

import contextlib
import os
import sys

_ACTIVE: list = []  # the bars drawn now, innermost last


def enabled(wanted: bool = True, stream=None) -> bool:
    """Whether a bar may be drawn: wanted, on a terminal, and not disabled by TQDM_DISABLE."""
    stream = stream if stream is not None else sys.stderr
    if not wanted or os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false"):
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


class _NoBar:
    def update(self, n: int = 1, label: str | None = None) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


class _Bar(_NoBar):
    def __init__(self, total: int, desc: str, unit: str):
        from tqdm import tqdm

        # few, slow steps: draw each one (mininterval 0) rather than tqdm's 0.1 s throttle
        self._tqdm = tqdm(total=total, desc=desc, file=sys.stderr, leave=False,
                          dynamic_ncols=True, unit=unit, mininterval=0)

    def update(self, n: int = 1, label: str | None = None) -> None:
        if label is not None:
            self._tqdm.set_postfix_str(label, refresh=False)
        self._tqdm.update(n)

    def __enter__(self):
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _ACTIVE.remove(self)
        self._tqdm.close()


def bar(total: int, desc: str, wanted: bool = True, unit: str = "step"):
    """A context manager with ``update(n=1, label=None)``: a tqdm bar when ``enabled(wanted)``."""
    if total <= 0 or not enabled(wanted):
        return _NoBar()
    try:
        return _Bar(total, desc, unit)
    except ImportError:  # tqdm is a dependency; without it there is simply no bar
        return _NoBar()


@contextlib.contextmanager
def lines_above():
    """Print a progress line without breaking the bars: they are cleared and redrawn."""
    if not _ACTIVE:
        yield
        return
    from tqdm import tqdm

    with tqdm.external_write_mode(file=sys.stderr):
        yield
