"""Run scripts written for older Keras (``tf.keras``) on Keras 3, where a small alias is enough.

Installed only for the duration of a run and only when TensorFlow is not installed:

- ``import tensorflow as tf`` / ``from tensorflow import keras`` / ``from tensorflow.keras.layers
  import Dense`` give a small stand-in module whose ``keras`` is Keras 3 (on the torch backend).
  ``tf.random.set_seed`` maps to ``keras.utils.set_random_seed``; anything else of TensorFlow
  (``tf.data``, ``tf.constant``, ...) raises an error saying what to change.
- ``from keras.utils import np_utils`` (Keras 1/2) gives ``np_utils.to_categorical``.

Keras' own modules never see the stand-in: only imports from user code are answered, and Keras'
"is TensorFlow available" flag is pinned to False for the run.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types

SHIM_FLAG = "__cnndoctor_shim__"
# Packages whose imports of "tensorflow" must fail as they do without TensorFlow.
LIBRARY_PREFIXES = ("keras", "torch", "sklearn", "scipy", "numpy", "mlxtend", "cnndoctor",
                    "optree", "h5py", "pandas", "matplotlib", "PIL", "importlib", "_pytest",
                    "pytest", "tree", "ml_dtypes", "absl", "rich")


def tensorflow_missing() -> bool:
    mod = sys.modules.get("tensorflow")
    if mod is not None:
        return bool(getattr(mod, SHIM_FLAG, False))
    try:
        return importlib.util.find_spec("tensorflow") is None
    except (ImportError, ValueError):
        return True


class _TFAttrError(AttributeError):
    pass


def _unsupported(name: str) -> str:
    return (f"`tf.{name}` is TensorFlow, which is not installed: cnndoctor runs this script on "
            f"Keras 3 with the torch backend, where only `tf.keras` is available. Change "
            f"`tf.{name}` to its Keras 3 equivalent (keras.ops.* for tensor math, "
            f"keras.utils.set_random_seed for seeding, numpy arrays or a keras.utils.PyDataset "
            f"instead of tf.data), or install TensorFlow and set KERAS_BACKEND=torch.")


def _make_tensorflow(legacy=None):
    import keras

    tf = types.ModuleType("tensorflow")
    tf.__doc__ = "cnndoctor stand-in for TensorFlow: only tf.keras (Keras 3) is available."
    setattr(tf, SHIM_FLAG, True)
    tf.keras = keras
    random = types.ModuleType("tensorflow.random")
    random.set_seed = keras.utils.set_random_seed
    tf.random = random
    if legacy is not None:  # TensorFlow losses, activations and seeding, mapped with a note
        from .legacy import tf_ops

        random.set_seed = tf_ops.set_random_seed(legacy, "random.set_seed")
        tf.set_random_seed = tf_ops.set_random_seed(legacy, "set_random_seed")
        tf.nn = tf_ops.nn_module(legacy)
        tf.losses = tf_ops.losses_module(legacy)
        for sub in ("random", "nn", "losses"):
            setattr(getattr(tf, sub), SHIM_FLAG, True)

    def __getattr__(name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise _TFAttrError(_unsupported(name))

    tf.__getattr__ = __getattr__
    return tf


def _np_utils():
    import keras

    mod = types.ModuleType("keras.utils.np_utils")
    mod.__doc__ = "Keras 1/2 np_utils, mapped to Keras 3 by cnndoctor."
    setattr(mod, SHIM_FLAG, True)
    mod.to_categorical = keras.utils.to_categorical
    mod.normalize = keras.utils.normalize
    return mod


class _ShimFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, compat: "TFCompat"):
        self.compat = compat

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in ("tensorflow", "keras.utils.np_utils"):
            return None
        if fullname == "tensorflow" and (_from_library() or not self.compat.tensorflow):
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec):
        if spec.name == "tensorflow":
            return self.compat.make_tensorflow()
        if self.compat.legacy is not None:
            self.compat.legacy.note("`keras.utils.np_utils` is Keras 1/2; ran as `keras.utils` "
                                    "(to_categorical, normalize)", key="np_utils")
        return _np_utils()

    def exec_module(self, module):
        return None


def _from_library() -> bool:
    """True when the import comes from a library rather than from the user's script."""
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_globals.get("__name__", "") or ""
        filename = frame.f_code.co_filename
        if filename.startswith("<frozen importlib") or name.startswith("importlib"):
            frame = frame.f_back
            continue
        return name.split(".")[0] in LIBRARY_PREFIXES
    return False


class TFCompat:
    """Install with ``install()`` before the scripts run; ``uninstall()`` puts everything back."""

    def __init__(self, legacy=None):
        self.legacy = legacy  # the session's legacy mappings (notes with lines), if any
        self.finder = _ShimFinder(self)
        self.tensorflow = tensorflow_missing()
        self.used: list[str] = []  # what was aliased, for the report's notes
        self._pinned = None

    def install(self) -> None:
        sys.meta_path.insert(0, self.finder)

    def make_tensorflow(self):
        import keras

        try:  # Keras must go on believing that TensorFlow is absent
            from keras.src.utils import module_utils

            lazy = module_utils.tensorflow
            self._pinned = (lazy, lazy._available, lazy.module)
            lazy._available = False
        except Exception:  # pragma: no cover - other Keras versions
            pass
        tf = _make_tensorflow(self.legacy)
        sys.modules["tensorflow"] = tf
        # `from tensorflow.keras.layers import Dense`: alias every public keras module.
        for name, mod in list(sys.modules.items()):
            if (name == "keras" or name.startswith("keras.")) and not name.startswith("keras.src") \
                    and isinstance(mod, types.ModuleType) and "._" not in name:
                sys.modules["tensorflow." + name] = mod
        self.used.append("tensorflow → Keras 3 stand-in (tf.keras)")
        for sub in ("random", "nn", "losses"):
            if hasattr(tf, sub):
                sys.modules["tensorflow." + sub] = getattr(tf, sub)
        del keras
        return tf

    def uninstall(self) -> None:
        if self.finder in sys.meta_path:
            sys.meta_path.remove(self.finder)
        for name in [n for n, m in sys.modules.items()
                     if (n == "tensorflow" or n.startswith("tensorflow."))
                     and (getattr(m, SHIM_FLAG, False) or getattr(
                         sys.modules.get("tensorflow"), SHIM_FLAG, False))]:
            del sys.modules[name]
        np_utils = sys.modules.get("keras.utils.np_utils")
        if np_utils is not None and getattr(np_utils, SHIM_FLAG, False):
            del sys.modules["keras.utils.np_utils"]
            utils = sys.modules.get("keras.utils")
            if utils is not None and getattr(getattr(utils, "np_utils", None), SHIM_FLAG, False):
                delattr(utils, "np_utils")
            if self.legacy is None:
                self.used.append("keras.utils.np_utils → keras.utils.to_categorical")
        if self._pinned is not None:
            lazy, available, module = self._pinned
            lazy._available, lazy.module = available, module
            self._pinned = None
