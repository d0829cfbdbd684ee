"""Opening model, weights and data files that may come from anywhere, without running their code.

The one home for reading the user's files (the CLI and ``diagnose(model="path")`` both call it):

- ``file.py:name``: the user's own code, run with ``runpy`` (it is code the user points at).
- ``.pt`` / ``.pth``: read with ``torch.load(weights_only=True)``. A whole pickled module (or
  anything else needing the full unpickler) is refused unless ``trust_pickle``: unpickling runs
  whatever the file says. The safe way is the model built in code plus a state_dict
  (``--model model.py:build --weights weights.pt``).
- ``.keras`` / ``.h5``: ``keras.models.load_model(safe_mode=True)`` unless ``trust_pickle`` (a
  ``Lambda`` layer's function is unpickled Python).
- ``.npz`` / ``.npy``: ``numpy.load(allow_pickle=False)``.

Before any of those, the first bytes of the file say what it really is (a zip archive holding a
torch pickle or a Keras config, HDF5, a bare pickle, numpy), so a wrong extension, an empty or a
truncated file gets one line saying so instead of the framework's own error. Nothing here
writes a file or reaches the network (remote paths such as ``hf://`` are not files, so they are
refused as missing).
"""
from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass
from typing import Any

from .errors import InputError

#: Extensions read as Keras model files and as torch files.
KERAS_EXTENSIONS = (".keras", ".h5", ".hdf5")
TORCH_EXTENSIONS = (".pt", ".pth")
#: Bytes of a legacy (non-zip) torch file or bare pickle scanned for the classes it would import:
#: the pickled objects come first and are small; the raw tensor storages that follow are skipped.
PICKLE_SCAN_BYTES = 1 << 20
#: Class names listed in a refusal message (enough to recognize a module or a hostile call).
LISTED_GLOBALS = 3
#: Keys of a training checkpoint dict that hold the model's state_dict (the common conventions
#: of PyTorch's saving tutorial, Lightning and timm).
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "module", "network")

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_NPY_SIGNATURE = b"\x93NUMPY"
_ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")
# Globals every torch.save file names; left out of the list of what a pickle would import.
_ROUTINE_GLOBALS = ("torch._utils.", "collections.OrderedDict", "torch.storage.", "torch._tensor.",
                    "torch.serialization.", "torch.device", "torch.Size", "__builtin__.set",
                    "builtins.set")


@dataclass
class Loaded:
    """A model read from a file: the model, the loss its ``file.py`` defines (or None)."""

    model: Any
    loss: Any = None


# ---- what a file is ------------------------------------------------------------------------

def sniff(path: str) -> str:
    """What ``path`` holds, from its bytes: "empty", "torch" (torch.save zip), "torchscript",
    "keras" (.keras zip), "npz", "zip" (another zip), "damaged-zip", "hdf5", "pickle" (a bare
    pickle: legacy torch.save or pickle.dump), "npy" or "unknown"."""
    if os.path.getsize(path) == 0:
        return "empty"
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head.startswith(_HDF5_SIGNATURE):
        return "hdf5"
    if head.startswith(_NPY_SIGNATURE):
        return "npy"
    if head.startswith(_ZIP_SIGNATURES):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError, EOFError):
            return "damaged-zip"
        if any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
            if any("/code/" in n or n.startswith("code/") or n.endswith("constants.pkl")
                   for n in names):
                return "torchscript"
            return "torch"
        if "config.json" in names:
            return "keras"
        if names and all(n.endswith(".npy") for n in names):
            return "npz"
        return "zip"
    if head[:1] == b"\x80" and 2 <= head[1] <= 5:  # pickle protocol 2-5
        return "pickle"
    return "unknown"


_WHAT = {"empty": "the file is empty (0 bytes)",
         "torch": "it is a torch file (written by torch.save)",
         "torchscript": "it is a TorchScript archive (written by torch.jit.save)",
         "keras": "it is a Keras model file (.keras, a zip archive with config.json)",
         "npz": "it is a numpy .npz archive (arrays, not a model)",
         "zip": "it is a zip archive with neither a Keras config nor a torch pickle",
         "damaged-zip": "it is a damaged or truncated zip archive",
         "hdf5": "it is an HDF5 file (Keras .h5)",
         "pickle": "it is a bare Python pickle (legacy torch.save or pickle.dump)",
         "npy": "it is a numpy .npy array (data, not a model)",
         "unknown": "its content is none of the model formats (not a zip archive, HDF5 or "
                    "pickle)"}
# The extension each kind of content should have, for the "rename it" advice.
_EXTENSION = {"torch": ".pt", "torchscript": ".pt", "pickle": ".pt", "keras": ".keras",
              "hdf5": ".h5", "npz": ".npz", "npy": ".npy"}


def _rename_hint(path: str, kind: str) -> str:
    ext = _EXTENSION.get(kind)
    if ext is None:
        return ""
    return f": rename it to {os.path.splitext(os.path.basename(path))[0]}{ext}"


def _require_file(path: str, what: str) -> None:
    if not os.path.exists(path):
        raise InputError(f"{what} {path} does not exist.")
    if not os.path.isfile(path):
        raise InputError(f"{what} {path} is a folder: expected a file.")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


# ---- models --------------------------------------------------------------------------------

def load(spec: str, *, weights: str | None = None, trust_pickle: bool = False,
         api: bool = False) -> Loaded:
    """The model ``spec`` names: a .keras/.h5 file, a .pt/.pth file, or 'file.py:name' (a model
    or a function building one); ``weights``: a state_dict (.pt/.pth) or Keras weights (.h5)
    file loaded into it. ``api``: word the advice for Python callers instead of CLI options."""
    spec = os.fspath(spec)
    advice = _Advice(api)
    if _is_python_spec(spec):
        loaded = _load_python(spec)
        if weights is not None:
            load_weights(loaded.model, weights, built_by=spec, api=api)
        return loaded
    if weights is not None:
        raise InputError(f"--weights is for a model built in code ('model.py:build'); {spec} is "
                         f"a saved model, which carries its own weights."
                         if not api else
                         f"weights= is for a model built in code ('model.py:build'); {spec} is a "
                         f"saved model, which carries its own weights.")
    _require_file(spec, "model file")
    kind = sniff(spec)
    ext = os.path.splitext(spec)[1].lower()
    if ext in KERAS_EXTENSIONS:
        return Loaded(_load_keras(spec, kind, trust_pickle, advice))
    if ext in TORCH_EXTENSIONS:
        return Loaded(_load_torch_model(spec, kind, trust_pickle, advice))
    found = f"; {_WHAT[kind]}{_rename_hint(spec, kind)}" if kind in _EXTENSION else ""
    raise InputError(f"cannot tell what kind of model {spec} is from its extension "
                     f"{ext or '(none)'!r}: expected a .keras/.h5 file (Keras), a .pt/.pth file "
                     f"(torch) or 'file.py:name' naming a model or a function building one"
                     f"{found}.")


class _Advice:
    """The two ways out of a refused pickle, worded for the CLI or for Python."""

    def __init__(self, api: bool):
        self.api = api

    @property
    def trust(self) -> str:
        return "trust_pickle=True" if self.api else "--trust-pickle"

    @property
    def weights(self) -> str:
        if self.api:
            return ("build the model in code and load_state_dict(torch.load('weights.pt', "
                    "weights_only=True)), or cnndoctor.load_model('model.py:build', "
                    "weights='weights.pt')")
        return "--model model.py:build --weights weights.pt"


def _is_python_spec(spec: str) -> bool:
    head = spec.rsplit(":", 1)[0] if ":" in spec else ""
    return head.endswith(".py")


def _load_python(spec: str) -> Loaded:
    import runpy

    path, name = spec.rsplit(":", 1)
    _require_file(path, "model file")
    if not name:
        raise InputError(f"{spec}: expected 'file.py:name' naming a model or a function "
                         f"building one, e.g. {path}:build.")
    try:
        namespace = runpy.run_path(path, run_name="cnndoctor_model")
    except SyntaxError as exc:
        raise InputError(f"{path} has a syntax error at line {exc.lineno}: {exc.msg}.") from exc
    except Exception as exc:
        raise InputError(f"{path} raised {_first_line(exc)}{_user_line(exc, path)} when it was "
                         f"run to get {name!r}.") from exc
    if name not in namespace:
        raise InputError(f"{path} defines no {name!r}; expected a model or a function returning "
                         f"one.")
    obj = namespace[name]
    if callable(obj) and not hasattr(obj, "parameters") and not hasattr(obj, "layers"):
        try:
            obj = obj()
        except Exception as exc:
            raise InputError(f"{path}:{name}() raised {_first_line(exc)}"
                             f"{_user_line(exc, path)}; expected it to build the model with no "
                             f"arguments.") from exc
    return Loaded(obj, namespace.get("loss") or namespace.get("LOSS"))


def _user_line(exc: BaseException, path: str) -> str:
    """' (line N)' of the deepest frame of ``exc`` in ``path``."""
    tb, line = exc.__traceback__, None
    real = os.path.realpath(path)
    while tb is not None:
        if os.path.realpath(tb.tb_frame.f_code.co_filename) == real:
            line = tb.tb_lineno
        tb = tb.tb_next
    return f" at line {line}" if line else ""


def _load_keras(path: str, kind: str, trust_pickle: bool, advice: _Advice):
    expected = "keras" if path.lower().endswith(".keras") else "hdf5"
    if kind in ("torch", "torchscript", "pickle"):
        raise InputError(f"{path} is not a Keras model: {_WHAT[kind]}{_rename_hint(path, kind)}.")
    if kind != expected:
        raise InputError(f"could not read {path} (corrupt or not a Keras file): {_WHAT[kind]}"
                         f"{_rename_hint(path, kind) if kind in ('keras', 'hdf5') else ''}.")
    if kind == "hdf5":
        _require_readable_hdf5(path)
    import keras

    try:
        return keras.models.load_model(path, compile=True, safe_mode=not trust_pickle)
    except Exception as exc:
        text = str(exc)
        if "Lambda" in text and "safe_mode" in text:
            raise InputError(
                f"{path} has a Lambda layer whose Python function would be unpickled, which runs "
                f"code stored in the file; cnndoctor opens Keras files in safe mode. Pass "
                f"{advice.trust} only if you trust the file, or rebuild the model in code "
                f"('model.py:build') and load its weights.") from exc
        if "safe_mode" in text:
            raise InputError(f"{path} needs unsafe deserialization (code stored in the file); "
                             f"pass {advice.trust} only if you trust the file.") from exc
        if "No model found in config" in text:
            raise InputError(f"{path} holds weights only (no model config): build the model in "
                             f"code and pass --model model.py:build --weights {path}.") from exc
        if isinstance(exc, (OSError, EOFError, zipfile.BadZipFile, KeyError)) or \
                "truncated" in text or "unable to open" in text.lower():
            raise InputError(f"could not read {path} (corrupt or not a Keras file): "
                             f"{_first_line(exc)}.") from exc
        raise InputError(f"could not load the Keras model {path}: {_first_line(exc)}.") from exc


def _require_readable_hdf5(path: str) -> None:
    """A truncated or damaged HDF5 file is said before Keras is imported (seconds)."""
    try:
        import h5py
    except ImportError:  # Keras reads .h5 with h5py; without it, Keras says so itself
        return
    try:
        with h5py.File(path, "r"):
            pass
    except OSError as exc:
        raise InputError(f"could not read {path} (corrupt or not a Keras file): "
                         f"{_first_line(exc)}.") from exc


def _load_torch_model(path: str, kind: str, trust_pickle: bool, advice: _Advice):
    if kind in ("keras", "hdf5", "npz", "npy"):
        raise InputError(f"{path} is not a torch file: {_WHAT[kind]}{_rename_hint(path, kind)}.")
    if kind not in ("torch", "torchscript", "pickle"):
        raise InputError(f"could not read {path} (corrupt or not a torch file): {_WHAT[kind]}.")
    import torch

    if kind == "torchscript":
        if not trust_pickle:
            raise InputError(
                f"{path} is a TorchScript archive: loading it runs the code stored in it, so "
                f"cnndoctor does not open it unless you pass {advice.trust} (only for a file you "
                f"trust). The safe way: {advice.weights}.")
        try:
            return torch.jit.load(path, map_location="cpu")
        except Exception as exc:
            raise InputError(f"could not read {path} (corrupt or not a torch file): "
                             f"{_first_line(exc)}.") from exc
    if not trust_pickle:
        obj = _torch_load_safe(path, kind, advice)
        if _state_dict_of(obj) is not None:
            raise _weights_only(path, advice)
        raise InputError(f"{path} holds a {type(obj).__name__}, not a torch model: expected a "
                         f"state_dict with {advice.weights}.")
    try:
        obj = torch.load(path, weights_only=False, map_location="cpu")
    except Exception as exc:
        raise InputError(f"could not read {path} (corrupt or not a torch file): "
                         f"{_first_line(exc)}.") from exc
    if isinstance(obj, torch.nn.Module):
        return obj
    if isinstance(obj, dict):
        inner = next((obj[k] for k in STATE_DICT_KEYS if isinstance(obj.get(k), torch.nn.Module)),
                     None)
        if inner is not None:
            return inner
        if _state_dict_of(obj) is not None:
            raise _weights_only(path, advice)
    raise InputError(f"{path} holds a {type(obj).__name__}, not a torch model: expected a whole "
                     f"torch.nn.Module (torch.save(model, ...)).")


def _torch_load_safe(path: str, kind: str, advice: _Advice):
    """``torch.load(weights_only=True)``; a file that needs more is refused, naming the classes
    its pickle would import (read with pickletools, which executes nothing)."""
    import pickle

    import torch

    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        names = _pickle_globals(path, kind)
        listed = ", ".join(names[:LISTED_GLOBALS]) + (", ..." if len(names) > LISTED_GLOBALS
                                                      else "")
        module = any(n.startswith("torch.nn.") or ".nn.modules." in n for n in names)
        what = "a whole pickled torch module" if module else "pickled Python objects"
        raise InputError(
            f"{path} holds {what}{f' ({listed})' if listed else ''}; unpickling it runs code "
            f"stored in the file, so cnndoctor does not open it unless you pass {advice.trust} "
            f"(only for a file you trust). The safe way: {advice.weights}.") from exc
    except Exception as exc:
        raise InputError(f"could not read {path} (corrupt or not a torch file): "
                         f"{_first_line(exc)}.") from exc


def _pickle_globals(path: str, kind: str) -> list[str]:
    """The module.Class names a torch file's pickle would import, without unpickling it."""
    import pickletools

    try:
        if kind == "torch":
            with zipfile.ZipFile(path) as zf:
                member = next(n for n in zf.namelist() if n.endswith("data.pkl"))
                data = zf.read(member)
        else:
            with open(path, "rb") as fh:
                data = fh.read(PICKLE_SCAN_BYTES)
    except Exception:
        return []
    found: list[str] = []
    strings: list[str] = []
    stream = io.BytesIO(data)
    for _ in range(4):  # a legacy torch file is a few pickles in a row (magic, version, object)
        try:
            for op, arg, _pos in pickletools.genops(stream):
                if op.name in ("GLOBAL", "INST"):
                    found.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                if isinstance(arg, str) and ("UNICODE" in op.name or "STRING" in op.name):
                    strings.append(arg)
        except Exception:
            break
    unique = list(dict.fromkeys(found))
    return [n for n in unique if not n.startswith(_ROUTINE_GLOBALS) and
            not n.endswith("Storage")]


def _weights_only(path: str, advice) -> InputError:
    """The refusal of a file that holds weights but no model, with the way to give both."""
    return InputError(f"{path} holds a state_dict (weights only); cnndoctor needs the model too: "
                      f"{advice.weights} (a function in model.py that builds the model).")


def _state_dict_of(obj: Any) -> dict | None:
    """The state_dict in ``obj``: a dict of tensors, or a checkpoint dict holding one."""
    import torch

    if not isinstance(obj, dict) or not obj:
        return None
    if all(isinstance(k, str) for k in obj) and \
            all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    for key in STATE_DICT_KEYS:
        inner = obj.get(key)
        if isinstance(inner, dict) and inner and \
                all(isinstance(v, torch.Tensor) for v in inner.values()):
            return inner
    return None


# ---- weights -------------------------------------------------------------------------------

def load_weights(model: Any, path: str, *, built_by: str = "the model", api: bool = False
                 ) -> None:
    """Load a weights file into a model built in code: a torch state_dict (.pt/.pth, read with
    ``weights_only=True``) or Keras weights (.weights.h5 / .h5). A file that does not fit the
    model (missing or extra tensors, other shapes) raises ``InputError`` with one line."""
    path = os.fspath(path)
    _require_file(path, "weights file")
    kind = sniff(path)
    advice = _Advice(api)
    if hasattr(model, "load_state_dict") and hasattr(model, "parameters"):
        if kind not in ("torch", "pickle"):
            raise InputError(f"could not read the weights {path} for the torch model built by "
                             f"{built_by}: {_WHAT[kind]}; expected a state_dict saved with "
                             f"torch.save(model.state_dict(), 'weights.pt').")
        obj = _torch_load_safe(path, kind, advice)
        state = _state_dict_of(obj)
        if state is None:
            raise InputError(f"{path} holds a {type(obj).__name__}, not a state_dict: expected "
                             f"torch.save(model.state_dict(), 'weights.pt').")
        _check_fits(model, state, path, built_by)
        model.load_state_dict(state)
        return
    if hasattr(model, "load_weights"):
        if kind != "hdf5":
            raise InputError(f"could not read the weights {path} for the Keras model built by "
                             f"{built_by}: {_WHAT[kind]}; expected a Keras weights file saved "
                             f"with model.save_weights('model.weights.h5').")
        try:
            model.load_weights(path)
        except Exception as exc:
            raise InputError(f"{path} does not fit the Keras model built by {built_by}: "
                             f"{_first_line(exc)}.") from exc
        return
    raise InputError(f"{built_by} did not give a Keras or torch model to load {path} into.")


def _check_fits(model, state: dict, path: str, built_by: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    shapes = [(k, tuple(state[k].shape), tuple(expected[k].shape)) for k in expected
              if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if not (missing or extra or shapes):
        return
    parts = []
    if shapes:
        k, got, want = shapes[0]
        more = f" (and {len(shapes) - 1} more)" if len(shapes) > 1 else ""
        parts.append(f"{k} is {list(got)} in the file but {list(want)} in the model{more}")
    if missing:
        parts.append(f"{len(missing)} tensor(s) of the model are not in the file "
                     f"(e.g. {missing[0]})")
    if extra:
        parts.append(f"{len(extra)} tensor(s) in the file are not in the model (e.g. {extra[0]})")
    hint = ""
    if extra and all(k.startswith("module.") for k in state):
        hint = ("; the file's names start with 'module.' (saved from DataParallel): save "
                "model.module.state_dict() instead")
    raise InputError(f"{path} does not fit the model built by {built_by}: {'; '.join(parts)}"
                     f"{hint}.")


# ---- arrays --------------------------------------------------------------------------------

#: Names an .npz's images and labels are found under (first match wins).
X_KEYS = ("x", "images", "x_train", "x_val", "x_test")
Y_KEYS = ("y", "labels", "y_train", "y_val", "y_test")


def load_arrays(path: str, what: str):
    """(x, y) from an .npz with images and labels, or x alone (an .npy, or an .npz without
    labels), read with ``allow_pickle=False``."""
    import numpy as np

    path = os.fspath(path)
    _require_file(path, f"{what} file")
    kind = sniff(path)
    if kind not in ("npz", "npy"):
        raise InputError(f"could not read {what} file {path} as .npz/.npy: {_WHAT[kind]}"
                         f"{_rename_hint(path, kind) if kind in ('npz', 'npy') else ''}; "
                         f"expected np.savez(path, x=images, y=labels).")
    try:
        data = np.load(path, allow_pickle=False)
        if not hasattr(data, "files"):
            return data
        with data:
            keys = {k.lower(): k for k in data.files}
            x = next((keys[k] for k in X_KEYS if k in keys), None)
            y = next((keys[k] for k in Y_KEYS if k in keys), None)
            if x is None:
                raise InputError(f"{path} has arrays {data.files}; expected 'x' (images) and "
                                 f"'y' (labels).")
            arrays = {k: _read_member(data, k, path) for k in (x, y) if k}
        return (arrays[x], arrays[y]) if y else arrays[x]
    except InputError:
        raise
    except Exception as exc:
        if "allow_pickle" in str(exc):
            raise _object_array(path, "the array") from exc
        raise InputError(f"could not read {what} file {path} as .npz/.npy (corrupt or "
                         f"truncated): {_first_line(exc)}.") from exc


def _read_member(data, key: str, path: str):
    try:
        return data[key]
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise _object_array(path, repr(key)) from exc
        raise


def _object_array(path: str, name: str) -> InputError:
    return InputError(
        f"{path} holds {name} as an array of Python objects, which numpy can only read by "
        f"unpickling (running code from the file); cnndoctor reads .npz/.npy files with "
        f"allow_pickle=False: save numbers, e.g. np.savez(path, x=x.astype('float32'), "
        f"y=y.astype('int64')).")


def load_model(spec: str, *, weights: str | None = None, trust_pickle: bool = False) -> Any:
    """A model from a file, the way ``cnndoctor check`` reads it: a .keras/.h5 file (Keras safe
    mode), 'model.py:build' (a model or a function building one) with an optional ``weights``
    file (a torch state_dict read with ``weights_only=True``, or Keras weights), or, only with
    ``trust_pickle=True``, a .pt file holding a whole pickled module (unpickling runs code
    stored in the file: only for files you trust). Bad files raise ``InputError``."""
    return load(spec, weights=weights, trust_pickle=trust_pickle, api=True).model
