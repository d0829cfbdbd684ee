"""Read the scripts before anything runs and list every line that uses an old name that cannot
be mapped (TensorFlow graph code, removed Keras APIs), each with its replacement, so that the
user fixes them all at once instead of meeting one crash at a time.

Only names cnndoctor knows to be unmappable are listed; everything else is left to the run.
TensorFlow names are listed only when TensorFlow is not installed (the run then uses a stand-in).
"""
from __future__ import annotations

import ast
import os

from .modules import MODULES
from .tf_ops import NN_ACTIVATIONS, NN_LOSSES

# tf.<name> that the stand-in maps (see tf_ops and tfcompat).
TF_MAPPED = {"keras", "nn", "losses", "random", "set_random_seed"}
TF_RANDOM_MAPPED = {"set_seed"}
# tf.<name> -> replacement, for the common ones; others get the generic advice.
TF_REPLACEMENTS = {
    "placeholder": "a keras.Input (TensorFlow 1 graphs do not run on Keras 3 with torch)",
    "Session": "model.fit / model.predict (no sessions in Keras 3)",
    "InteractiveSession": "model.fit / model.predict (no sessions in Keras 3)",
    "global_variables_initializer": "nothing (Keras 3 initialises its weights)",
    "Variable": "model weights (self.add_weight in a layer) or keras.Variable",
    "constant": "keras.ops.convert_to_tensor or a numpy array",
    "reduce_mean": "keras.ops.mean",
    "reduce_sum": "keras.ops.sum",
    "reduce_max": "keras.ops.max",
    "matmul": "keras.ops.matmul",
    "reshape": "keras.ops.reshape",
    "cast": "keras.ops.cast",
    "argmax": "keras.ops.argmax",
    "equal": "keras.ops.equal",
    "log": "keras.ops.log",
    "exp": "keras.ops.exp",
    "clip_by_value": "keras.ops.clip",
    "one_hot": "keras.ops.one_hot or keras.utils.to_categorical",
    "data": "numpy arrays or a keras.utils.PyDataset",
    "train": "a keras.optimizers optimizer (e.g. keras.optimizers.Adam(learning_rate=...))",
    "contrib": "its Keras 3 layer or op (tf.contrib has no equivalent)",
    "summary": "keras.callbacks.TensorBoard or a CSVLogger callback",
    "image": "keras.ops.image or keras.layers.Resizing/RandomFlip",
    "config": "nothing (device settings do not apply on the torch backend)",
    "compat": "Keras 3 code (tf.compat.v1 graphs do not run on Keras 3 with torch)",
    "GradientTape": "model.fit, or a torch training loop",
    "function": "nothing (Keras 3 compiles its own steps)",
}
for _dtype in ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"):
    TF_REPLACEMENTS[_dtype] = f'the dtype name "{_dtype}" (Keras 3 and numpy take dtype names)'
# Keras names removed without an equivalent that can be mapped.
KERAS_REMOVED = {
    "Merge": "keras.layers.Concatenate / Add / Multiply in the functional API",
    "merge": "keras.layers.concatenate / add / multiply",
    "set_session": "nothing (no sessions in Keras 3)",
    "get_session": "nothing (no sessions in Keras 3)",
    "KerasClassifier": "scikeras.wrappers.KerasClassifier",
}


def unmappable(paths: list[str], tensorflow_missing: bool = True) -> list[str]:
    """``script.py:LINE: `name` ... use REPLACEMENT`` for every unmappable use, in order."""
    out: list[str] = []
    for path in paths:
        try:
            with open(path, "rb") as fh:
                tree = ast.parse(fh.read(), filename=path)
        except (SyntaxError, ValueError, OSError):
            continue  # python itself will say what is wrong when it runs
        out += _Reader(os.path.basename(path), tensorflow_missing).read(tree)
    return out


class _Reader(ast.NodeVisitor):
    def __init__(self, name: str, tf_missing: bool):
        self.name, self.tf_missing = name, tf_missing
        self.tf_names: set[str] = set()  # local names bound to the tensorflow module
        self.keras_names: set[str] = set()  # keras, K (keras.backend), layers, ...
        self.found: list[tuple[int, str]] = []

    def read(self, tree) -> list[str]:
        for node in ast.walk(tree):  # bindings first: imports may sit anywhere
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name == "tensorflow" or a.name.startswith("tensorflow."):
                        if a.name == "tensorflow" or a.asname:
                            self.tf_names.add(a.asname or "tensorflow")
                    if a.name.startswith("keras"):
                        self.keras_names.add((a.asname or a.name).split(".")[0])
            elif isinstance(node, ast.ImportFrom) and node.module:
                if node.module.split(".")[0] in ("keras", "tensorflow"):
                    for a in node.names:
                        self.keras_names.add(a.asname or a.name)
        self.visit(tree)
        seen, lines = set(), []
        for line, text in sorted(self.found):
            if (line, text) not in seen:
                seen.add((line, text))
                lines.append(f"{self.name}:{line}: {text}")
        return lines

    def _add(self, node, text):
        self.found.append((node.lineno, text))

    def visit_ImportFrom(self, node):
        mod = node.module or ""
        if self.tf_missing and mod.startswith("tensorflow") and not (
                mod in ("tensorflow", "tensorflow.keras") or mod.startswith("tensorflow.keras.")):
            self._add(node, f"`from {mod} import ...` is TensorFlow, which cannot be mapped; "
                            f"use {self._tf_fix(mod.split('.')[1])}")
        if mod == "tensorflow" and self.tf_missing:
            for a in node.names:
                if a.name not in TF_MAPPED:
                    self._add(node, f"`tensorflow.{a.name}` cannot be mapped; use "
                                    f"{self._tf_fix(a.name)}")
        for a in node.names:
            if mod.split(".")[0] in ("keras", "tensorflow") and a.name in KERAS_REMOVED:
                self._add(node, f"`{a.name}` was removed from Keras; use {KERAS_REMOVED[a.name]}")
        if mod.startswith(("keras.engine", "keras.wrappers")) and mod not in MODULES:
            self._add(node, f"`{mod}` is a Keras 2 module with no Keras 3 counterpart; import "
                            f"from keras.layers / keras.models / keras.utils instead")
        self.generic_visit(node)

    def visit_Attribute(self, node):
        chain = _chain(node)
        if chain and len(chain) >= 2:
            root = chain[0]
            if root in self.tf_names and self.tf_missing:
                self._check_tf(node, chain)
            if (root in self.keras_names or root in self.tf_names) and chain[-1] in \
                    KERAS_REMOVED and chain[-1] not in ("merge",):
                self._add(node, f"`{'.'.join(chain)}` was removed from Keras; use "
                                f"{KERAS_REMOVED[chain[-1]]}")
        if chain is None:  # a call or subscript inside: read it; a plain name chain is done
            self.generic_visit(node)

    def _check_tf(self, node, chain):
        first = chain[1]
        name = ".".join(["tf"] + chain[1:])
        if first not in TF_MAPPED:
            self._add(node, f"`{name}` is TensorFlow, which cannot be mapped; use "
                            f"{self._tf_fix(first)}")
        elif first == "random" and len(chain) > 2 and chain[2] not in TF_RANDOM_MAPPED:
            self._add(node, f"`{name}` cannot be mapped; use keras.random.{chain[2]} or numpy")
        elif first == "nn" and len(chain) > 2 and chain[2] not in NN_LOSSES \
                and chain[2] not in NN_ACTIVATIONS:
            self._add(node, f"`{name}` cannot be mapped; use keras.ops.{chain[2]} (or the "
                            f"keras.layers layer of that name)")

    @staticmethod
    def _tf_fix(first: str) -> str:
        return TF_REPLACEMENTS.get(first, f"its Keras 3 equivalent (keras.ops.{first} for tensor "
                                          f"math)")


def _chain(node) -> list[str] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return parts[::-1]


def report_lines(problems: list[str]) -> str:
    n = len(problems)
    head = (f"cnndoctor: {n} line(s) use names that cannot be run on Keras 3 with the torch "
            f"backend; change them and run again (nothing was run):")
    return "\n".join([head] + [f"  {p}" for p in problems])
