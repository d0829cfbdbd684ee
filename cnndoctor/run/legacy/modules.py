"""Keras 2 module paths that Keras 3 no longer has (``from keras.layers.core import Dense``,
``keras.layers.convolutional``, ``keras.layers.pooling``, ...) answered with the Keras 3 module
that holds the same names, for the run only."""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types

# Keras 2 module -> the Keras 3 module holding its names.
MODULES = {
    "keras.layers.core": "keras.layers",
    "keras.layers.convolutional": "keras.layers",
    "keras.layers.pooling": "keras.layers",
    "keras.layers.normalization": "keras.layers",
    "keras.layers.advanced_activations": "keras.layers",
    "keras.layers.recurrent": "keras.layers",
    "keras.layers.embeddings": "keras.layers",
    "keras.layers.noise": "keras.layers",
    "keras.layers.merge": "keras.layers",
    "keras.engine.topology": "keras.layers",
    "keras.engine.training": "keras.models",
}
FLAG = "__cnndoctor_legacy_alias__"


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, legacy):
        self.legacy = legacy

    def find_spec(self, fullname, path=None, target=None):
        if fullname in MODULES and self.legacy.active:
            return importlib.machinery.ModuleSpec(fullname, self)
        return None

    def create_module(self, spec):
        target = importlib.import_module(MODULES[spec.name])
        self.legacy.note(f"`{spec.name}` is a Keras 2 module; ran as `{MODULES[spec.name]}`",
                         key=spec.name, depth=2)
        mod = types.ModuleType(spec.name)
        setattr(mod, FLAG, True)
        mod.__getattr__ = lambda name: getattr(target, name)
        return mod

    def exec_module(self, module):
        return None


def _ours(module) -> bool:
    try:
        return bool(vars(module).get(FLAG, False))
    except TypeError:
        return False


def install(legacy) -> None:
    finder = _Finder(legacy)
    sys.meta_path.insert(0, finder)

    def cleanup():
        if finder in sys.meta_path:
            sys.meta_path.remove(finder)
        # vars(), not getattr(): modules such as torch.ops answer any attribute name.
        for name in [n for n, m in list(sys.modules.items()) if _ours(m)]:
            del sys.modules[name]
            parent, _, child = name.rpartition(".")
            owner = sys.modules.get(parent)
            if owner is not None and _ours(vars(owner).get(child)):
                delattr(owner, child)

    legacy.cleanups.append(cleanup)
