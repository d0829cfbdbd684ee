"""Keras 3 instrumentation: compile, fit, evaluate, predict, the train/test/predict steps, save and
load_model. Installed for the duration of a session only; every patched method calls the original
with the same arguments and returns its result.

The step methods (``train_step``, ``test_step``, ``predict_step``) see every batch after Keras'
data adapters, whatever the user passed (arrays, generators, ``PyDataset``, a torch
``DataLoader``): those are the tensors actually fed. ``fit``/``evaluate``/``predict`` say which
phase a step belongs to (``test_step`` inside ``fit`` is validation).
"""
from __future__ import annotations

from .patching import Patches

import inspect
import os
from typing import Any

import numpy as np

from .capture import MAX_SAMPLES, to_numpy
from .records import EVALUATION, PREDICTION, TRAINING, VALIDATION

# Seed of the subset of fit() arrays kept as a fallback when training stops before enough
# batches were seen (a crash in the first step).
FALLBACK_SEED = 0


class KerasInstrument(Patches):
    def __init__(self, session):
        self.session = session
        Patches.__init__(self)
        self.phase_stack: list[tuple[Any, str]] = []  # (model, "fit"/"evaluate"/"predict")
        self.pending = None  # (model, stream) whose outputs the next top-level call produces

    def install(self) -> None:
        import keras
        from keras.src.models.model import Model
        from keras.src.trainers.trainer import Trainer

        base = Model
        for name, wrap in (("compile", self._wrap_compile), ("fit", self._wrap_fit),
                           ("evaluate", self._wrap_evaluate), ("predict", self._wrap_predict),
                           ("train_step", self._wrap_step(TRAINING)),
                           ("test_step", self._wrap_step(EVALUATION)),
                           ("predict_step", self._wrap_step(PREDICTION)),
                           ("save", self._wrap_save)):
            owner = next((c for c in base.__mro__ if name in vars(c)), None)
            if owner is None:
                continue
            self._patch(owner, name, wrap(vars(owner)[name]))
        assert Trainer.compile is not None
        for mod in (keras.models, keras.saving):
            if hasattr(mod, "load_model"):
                self._patch(mod, "load_model", self._wrap_load(getattr(mod, "load_model")))
            if hasattr(mod, "save_model"):
                self._patch(mod, "save_model", self._wrap_save_model(getattr(mod, "save_model")))

    def uninstall(self) -> None:
        self.restore()

    # ---- compile / fit / evaluate / predict ----------------------------------------------
    def _wrap_compile(self, orig):
        inst = self

        def compile(self_, *args, **kwargs):
            result = orig(self_, *args, **kwargs)
            if inst.session.active:
                inst.session.guard(lambda: inst._compiled(self_, args, kwargs, orig))
            return result

        return _like(compile, orig)

    def _compiled(self, model, args, kwargs, orig) -> None:
        rec = self.session.keras_record(model)
        bound = _bind(orig, model, args, kwargs)
        rec.compile = {k: _describe(bound.get(k)) for k in ("optimizer", "loss", "metrics")
                       if k in bound}

    def _wrap_fit(self, orig):
        inst = self

        def fit(self_, *args, **kwargs):
            if not inst.session.active:
                return orig(self_, *args, **kwargs)
            info = inst.session.guard(lambda: inst._fit_started(self_, orig, args, kwargs))
            inst.phase_stack.append((self_, "fit"))
            try:
                history = orig(self_, *args, **kwargs)
            except BaseException as exc:
                if info is not None:
                    info["error"] = f"{type(exc).__name__}: {exc}"
                inst.session.failed_in = inst.session.failed_in or "model.fit"
                raise
            finally:
                inst.phase_stack.pop()
            if info is not None:
                hist = getattr(history, "history", None)
                if isinstance(hist, dict):
                    info["history"] = {k: [float(v) for v in vals] for k, vals in hist.items()
                                       if _all_numbers(vals)}
                    info["epochs_run"] = len(next(iter(info["history"].values()), []))
            return history

        return _like(fit, orig)

    def _fit_started(self, model, orig, args, kwargs) -> dict:
        rec = self.session.keras_record(model)
        bound = _bind(orig, model, args, kwargs)
        x, y = bound.get("x"), bound.get("y")
        val = bound.get("validation_data")
        info = {
            "script": self.session.script_name,
            "epochs": bound.get("epochs"),
            "batch_size": bound.get("batch_size"),
            "x": _kind_of(x),
            "validation": _kind_of(val) if val is not None else (
                f"validation_split={bound.get('validation_split')}"
                if bound.get("validation_split") else None),
            "shuffle": bound.get("shuffle"),
        }
        rec.fits.append(info)
        xa, ya = to_numpy(x), to_numpy(y)
        if xa is not None and ya is not None and xa.ndim >= 2 and len(xa) == len(ya):
            split = float(bound.get("validation_split") or 0.0)
            n_train = int(len(xa) * (1 - split)) if split else len(xa)
            rec.fit_arrays = _subset(xa[:n_train], ya[:n_train])
            if split:
                rec.fit_val_arrays = _subset(xa[n_train:], ya[n_train:])
            # Shuffled batches are a random sample already; data fed in order (shuffle=False,
            # often sorted by class) is kept spread evenly over the pass.
            self.session.stream(rec, TRAINING).begin(
                n_train, spread=not bound.get("shuffle", True))
        if isinstance(val, (tuple, list)) and len(val) >= 2:
            va, vy = to_numpy(val[0]), to_numpy(val[1])
            if va is not None and vy is not None and len(va) == len(vy):
                rec.fit_val_arrays = _subset(va, vy)
                self.session.stream(rec, VALIDATION).begin(len(va), spread=True)
        return info

    def _wrap_evaluate(self, orig):
        inst = self

        def evaluate(self_, *args, **kwargs):
            if not inst.session.active or inst._in_fit(self_):
                return orig(self_, *args, **kwargs)
            info = inst.session.guard(lambda: inst._eval_started(self_, orig, args, kwargs))
            inst.phase_stack.append((self_, "evaluate"))
            try:
                result = orig(self_, *args, **kwargs)
            except BaseException:
                inst.session.failed_in = inst.session.failed_in or "model.evaluate"
                raise
            finally:
                inst.phase_stack.pop()
            if info is not None:
                info["result"] = _describe_result(self_, result)
            return result

        return _like(evaluate, orig)

    def _eval_started(self, model, orig, args, kwargs) -> dict:
        rec = self.session.keras_record(model)
        rec.new_call(EVALUATION)
        bound = _bind(orig, model, args, kwargs)
        x = to_numpy(bound.get("x"))
        self.session.stream(rec, EVALUATION).begin(
            len(x) if x is not None and x.ndim >= 1 else None, spread=True)
        info = {"script": self.session.script_name, "x": _kind_of(bound.get("x"))}
        rec.evaluations.append(info)
        return info

    def _wrap_predict(self, orig):
        inst = self

        def predict(self_, *args, **kwargs):
            if not inst.session.active:
                return orig(self_, *args, **kwargs)

            def started():
                rec = inst.session.keras_record(self_)
                rec.new_call(PREDICTION)
                x = to_numpy(args[0] if args else kwargs.get("x"))
                inst.session.stream(rec, PREDICTION).begin(
                    len(x) if x is not None and x.ndim >= 1 else None, spread=True)

            inst.session.guard(started)
            inst.phase_stack.append((self_, "predict"))
            try:
                return orig(self_, *args, **kwargs)
            except BaseException:
                inst.session.failed_in = inst.session.failed_in or "model.predict"
                raise
            finally:
                inst.phase_stack.pop()

        return _like(predict, orig)

    # ---- steps: the batches actually fed -------------------------------------------------
    def _phase(self, model, step_phase: str) -> str:
        calls = [what for owner, what in self.phase_stack if owner is model]
        if not calls:
            return step_phase
        if calls[0] == "fit":  # evaluate() inside fit() is the validation pass
            return TRAINING if step_phase == TRAINING else VALIDATION
        return EVALUATION if calls[-1] == "evaluate" else PREDICTION

    def _in_fit(self, model) -> bool:
        return any(owner is model and what == "fit" for owner, what in self.phase_stack)

    def _wrap_step(self, step_phase: str):
        inst = self

        def wrap(orig):
            def step(self_, data):
                session = inst.session
                if not session.active:
                    return orig(self_, data)
                stream = session.guard(lambda: inst._step_batch(self_, data, step_phase))
                session.in_keras_step += 1
                inst.pending = (self_, stream) if stream is not None and \
                    step_phase == EVALUATION else None
                try:
                    out = orig(self_, data)
                finally:
                    session.in_keras_step -= 1
                    inst.pending = None
                if stream is not None and step_phase == PREDICTION:
                    session.guard(lambda: stream.set_last_outputs(_first(out)))
                return out

            return _like(step, orig)

        return wrap

    def _step_batch(self, model, data, step_phase: str):
        from keras.src.trainers.data_adapters import data_adapter_utils

        rec = self.session.keras_record(model)
        x, y, _ = data_adapter_utils.unpack_x_y_sample_weight(data)
        if isinstance(x, (dict, list, tuple)):  # several inputs: not an image classifier input
            return None
        phase = self._phase(model, step_phase)
        if phase == TRAINING:
            rec.steps += 1
        stream = self.session.stream(rec, phase)
        stream.add(x, y if phase != PREDICTION else None)
        return stream

    def forward_done(self, module, output, depth: int) -> None:
        """A Keras layer call returned (from the global torch forward hook)."""
        if depth == 0 and self.pending is not None and self.pending[0] is module:
            self.pending[1].set_last_outputs(_first(output))

    # ---- save / load ---------------------------------------------------------------------
    def _wrap_save(self, orig):
        inst = self

        def save(self_, filepath, *args, **kwargs):
            with inst.session.held():  # a stop waits: never a half-written file
                result = orig(self_, filepath, *args, **kwargs)
            if inst.session.active:
                inst.session.guard(lambda: inst._saved(self_, filepath))
            return result

        return _like(save, orig)

    def _wrap_save_model(self, orig):
        inst = self

        def save_model(model, filepath, *args, **kwargs):
            with inst.session.held():  # a stop waits: never a half-written file
                result = orig(model, filepath, *args, **kwargs)
            if inst.session.active:
                inst.session.guard(lambda: inst._saved(model, filepath))
            return result

        return _like(save_model, orig)

    def _saved(self, model, filepath) -> None:
        if isinstance(filepath, (str, os.PathLike)):
            self.session.on_saved(self.session.keras_record(model), os.path.abspath(filepath))

    def _wrap_load(self, orig):
        inst = self

        def load_model(filepath, *args, **kwargs):
            model = orig(filepath, *args, **kwargs)
            if inst.session.active and isinstance(filepath, (str, os.PathLike)):
                inst.session.guard(lambda: inst.session.on_loaded(
                    model, os.path.abspath(filepath), framework="keras"))
            return model

        return _like(load_model, orig)


# ---- helpers ------------------------------------------------------------------------------
def _bind(orig, model, args, kwargs) -> dict:
    """The call's arguments by name, defaults included; unknown keywords (Keras 1/2 names such
    as nb_epoch, which make the call itself fail) are left out so the data is still seen."""
    sig = inspect.signature(orig)
    try:
        a = sig.bind(model, *args, **kwargs)
    except TypeError:
        known = {k: v for k, v in kwargs.items() if k in sig.parameters}
        try:
            a = sig.bind_partial(model, *args, **known)
        except TypeError:
            return dict(known)
    a.apply_defaults()
    return dict(a.arguments)


def _like(new, orig):
    for attr in ("__name__", "__qualname__", "__doc__", "__module__"):
        try:
            setattr(new, attr, getattr(orig, attr))
        except (AttributeError, TypeError):
            pass
    new.__wrapped__ = orig
    return new


def _first(out):
    if isinstance(out, (list, tuple)) and out:
        return out[0]
    if isinstance(out, dict) and out:
        return next(iter(out.values()))
    return out


def _subset(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    if len(x) == 0:
        return None
    n = min(len(x), MAX_SAMPLES)
    idx = np.sort(np.random.default_rng(FALLBACK_SEED).choice(len(x), n, replace=False))
    return np.array(x[idx]), np.array(y[idx])


def _kind_of(value: Any) -> str | None:
    if value is None:
        return None
    arr = to_numpy(value) if not isinstance(value, (tuple, list)) else None
    if arr is not None and arr.ndim >= 1:
        return f"array {tuple(arr.shape)} {arr.dtype}"
    if isinstance(value, (tuple, list)):
        return f"({', '.join(str(_kind_of(v)) for v in value[:3])})"
    return type(value).__name__


def _describe(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_describe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _describe(v) for k, v in value.items()}
    name = type(value).__name__
    if callable(value) and hasattr(value, "__name__") and not hasattr(value, "get_config"):
        return value.__name__
    return name


def _all_numbers(vals) -> bool:
    try:
        return all(np.isscalar(v) or np.ndim(v) == 0 for v in vals)
    except Exception:
        return False


def _describe_result(model, result) -> dict:
    if isinstance(result, dict):
        return {str(k): float(v) for k, v in result.items() if np.ndim(v) == 0}
    values = result if isinstance(result, (list, tuple)) else [result]
    names = list(getattr(model, "metrics_names", []) or [])
    if len(names) != len(values):
        names = ["loss"] + [f"metric_{i}" for i in range(1, len(values))]
    out = {}
    for n, v in zip(names, values):
        try:
            out[n] = float(v)
        except (TypeError, ValueError):
            pass
    return out
