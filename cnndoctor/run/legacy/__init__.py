"""Old Keras 1/2, TensorFlow-era and numpy names mapped to Keras 3 / numpy 2, for one run only.

Installed by a ``cnndoctor run`` session right after its other instruments and removed when the
scripts have run: plain ``python script.py`` never sees any of it. Each family lives in its own
module (``keras_args``: layer and optimizer arguments; ``training``: fit/generator APIs;
``image``: ImageDataGenerator; ``saving``: HDF5 files; ``backend``: image data format;
``tf_ops``: TensorFlow losses and ops; ``modules``: Keras 2 module paths;
``numpy_aliases``: np.int & co). Every mapping that a
script actually used is recorded as a note with the script's file and line, so that the report
also tells the user how to port the script:

    s003_train.py:57: `nb_epoch` is Keras 1; ran as `epochs`
"""
from __future__ import annotations

import os
import sys

from ..patching import Patches


class Legacy(Patches):
    """The legacy mappings of one session; ``notes`` lists what was used, with its line."""

    def __init__(self, session):
        Patches.__init__(self)
        self.session = session
        self.notes: list[str] = []
        self._seen: set[tuple] = set()
        self.cleanups: list = []  # callables run by uninstall (state that is not an attribute)

    @property
    def active(self) -> bool:
        return bool(getattr(self.session, "active", False))

    def install_keras(self) -> None:
        """The Keras families (called once keras is imported)."""
        from . import backend, image, keras_args, modules, saving, training

        for family in (keras_args, training, image, saving, backend, modules):
            family.install(self)

    def install_base(self) -> None:
        """What does not need Keras: numpy aliases."""
        from . import numpy_aliases

        numpy_aliases.install(self)

    def uninstall(self) -> None:
        self.restore()
        for fn in reversed(self.cleanups):
            try:
                fn()
            except Exception:  # pragma: no cover - never leave the rest undone
                pass
        self.cleanups = []

    # ---- notes ---------------------------------------------------------------------------
    def note(self, message: str, key: str | None = None, depth: int = 2) -> None:
        """Record ``message`` with the file:line of the user's script that led here."""
        where = caller_in_script(self.session, depth)
        mark = (where, key or message)
        if mark in self._seen:
            return
        self._seen.add(mark)
        self.notes.append(f"{where}: {message}" if where else message)


def _script_paths(session) -> set[str]:
    paths = {os.path.abspath(r.path) for r in getattr(session, "scripts", [])}
    return {os.path.normcase(p) for p in paths}


def caller_in_script(session, depth: int = 2) -> str | None:
    """``script.py:LINE`` of the innermost frame that belongs to one of the session's scripts
    (or, failing that, to a module beside them)."""
    scripts = _script_paths(session)
    dirs = {os.path.dirname(p) for p in scripts}
    try:
        frame = sys._getframe(depth)
    except ValueError:
        return None
    fallback = None  # a helper module beside the scripts
    while frame is not None:
        fn = os.path.normcase(os.path.abspath(frame.f_code.co_filename))
        if fn in scripts:
            return f"{os.path.basename(fn)}:{frame.f_lineno}"
        if fallback is None and os.path.dirname(fn) in dirs:
            fallback = f"{os.path.basename(fn)}:{frame.f_lineno}"
        frame = frame.f_back
    return fallback
