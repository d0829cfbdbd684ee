"""cnndoctor: finds out why a convolutional image classifier fails to train or to generalize.

    report = cnndoctor.diagnose(model, train=(x, y), val=(x_val, y_val))
    print(report)
"""
from ._backend import ensure_keras_backend

ensure_keras_backend()  # before anything imports keras

__version__ = "0.1.0"

from .api import diagnose  # noqa: E402
from .errors import InputError  # noqa: E402
from .loading import load_model  # noqa: E402
from .report import Finding, Passed, Report, Skipped  # noqa: E402

__all__ = ["diagnose", "load_model", "Report", "Finding", "Passed", "Skipped", "InputError", "__version__"]
