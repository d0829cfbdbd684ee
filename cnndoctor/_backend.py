"""Keras 3 runs on the torch backend here; choose it for the user when they have not chosen.

Without TensorFlow installed, ``import keras`` fails unless ``KERAS_BACKEND`` is set before the
first import, so this must run before anything imports keras.
"""
from __future__ import annotations

import os
import sys

#: Set when cnndoctor chose the backend, so that the report can say so.
BACKEND_NOTE: str | None = None


def ensure_keras_backend() -> None:
    global BACKEND_NOTE
    if "KERAS_BACKEND" not in os.environ and "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "torch"
        BACKEND_NOTE = ("KERAS_BACKEND was not set: cnndoctor set it to 'torch' "
                        "(set it yourself to choose another backend).")


def keras_backend() -> str | None:
    """The active Keras backend, or None when keras is not imported."""
    keras = sys.modules.get("keras")
    if keras is None:
        return None
    try:
        return keras.backend.backend()
    except Exception:  # pragma: no cover - exotic keras states
        return os.environ.get("KERAS_BACKEND")
