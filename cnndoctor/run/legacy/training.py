"""Keras 1/2 training calls on Keras 3: ``nb_epoch``, ``samples_per_epoch``, ``nb_val_samples``
and ``fit_generator`` / ``evaluate_generator`` / ``predict_generator``.

Keras 1 counted an epoch in samples (``samples_per_epoch``), Keras 2 and 3 in batches
(``steps_per_epoch``): the samples are divided by the generator's batch size, rounded up, which
is where Keras 1 ended its epoch too.
"""
from __future__ import annotations

import math

# Keras 1/2 generator arguments that Keras 3 moved to the dataset (PyDataset workers) or dropped.
DROPPED = ("max_q_size", "nb_worker", "pickle_safe", "max_queue_size", "workers",
           "use_multiprocessing")


def install(legacy) -> None:
    from keras.src.models.model import Model

    fit, evaluate, predict = Model.fit, Model.evaluate, Model.predict
    legacy._patch(Model, "fit", _wrap_fit(legacy, fit))
    legacy._patch(Model, "fit_generator", _fit_generator(legacy))
    legacy._patch(Model, "evaluate_generator", _eval_generator(legacy, "evaluate"))
    legacy._patch(Model, "predict_generator", _eval_generator(legacy, "predict"))


def _batch_size(data, default=None):
    bs = getattr(data, "batch_size", None)
    if isinstance(bs, int) and bs > 0:
        return bs
    if isinstance(data, (tuple, list)) and data and hasattr(data[0], "shape"):
        return None
    return default


def _steps(samples, data, what: str, legacy, default_batch=None):
    bs = _batch_size(data, default_batch)
    if bs is None:
        legacy.note(f"`{what}={samples}` is Keras 1 (samples); the batch size is unknown, so "
                    f"it ran as {samples} steps", key=what)
        return int(samples)
    steps = max(1, math.ceil(int(samples) / bs))
    return steps


def _translate_fit(legacy, args, kwargs, call="fit"):
    kwargs = dict(kwargs)
    x = args[0] if args else kwargs.get("x", kwargs.get("generator"))
    if "nb_epoch" in kwargs:
        kwargs["epochs"] = kwargs.pop("nb_epoch")
        legacy.note("`nb_epoch` is Keras 1; ran as `epochs`", key="nb_epoch")
    if "samples_per_epoch" in kwargs:
        n = kwargs.pop("samples_per_epoch")
        steps = _steps(n, x, "samples_per_epoch", legacy)
        kwargs["steps_per_epoch"] = steps
        legacy.note(f"`samples_per_epoch={n}` is Keras 1; ran as `steps_per_epoch={steps}` "
                    f"(samples / batch size {_batch_size(x) or '?'})", key="samples_per_epoch")
    if "nb_val_samples" in kwargs:
        n = kwargs.pop("nb_val_samples")
        val = kwargs.get("validation_data")
        if val is not None and not isinstance(val, (tuple, list)):
            steps = _steps(n, val, "nb_val_samples", legacy)
            kwargs["validation_steps"] = steps
            legacy.note(f"`nb_val_samples={n}` is Keras 1; ran as `validation_steps={steps}`",
                        key="nb_val_samples")
        else:
            legacy.note("`nb_val_samples` is Keras 1; dropped (validation arrays are used whole)",
                        key="nb_val_samples")
    for name in DROPPED:
        if name in kwargs:
            kwargs.pop(name)
            legacy.note(f"`{name}=` of `{call}` is Keras 1/2; dropped (Keras 3 sets workers on "
                        f"a PyDataset)", key=name)
    if "class_weight" in kwargs and kwargs["class_weight"] == {}:
        kwargs["class_weight"] = None
    return args, kwargs


def _wrap_fit(legacy, orig):
    def fit(self_, *args, **kwargs):
        if legacy.active:
            args, kwargs = _translate_fit(legacy, args, kwargs)
        return orig(self_, *args, **kwargs)

    fit.__wrapped__ = orig
    fit.__doc__ = orig.__doc__
    fit.__name__ = "fit"
    return fit


def _fit_generator(legacy):
    def fit_generator(self_, generator, *args, **kwargs):
        legacy.note("`fit_generator` is Keras 1/2; ran as `fit` (which takes generators and "
                    "PyDatasets in Keras 3)", key="fit_generator")
        # Keras 1: (generator, samples_per_epoch, nb_epoch, verbose, callbacks, validation_data,
        # nb_val_samples, ...); Keras 2: (generator, steps_per_epoch, epochs, verbose, ...).
        names = ["steps_per_epoch", "epochs", "verbose", "callbacks", "validation_data",
                 "validation_steps", "class_weight"]
        kwargs = dict(kwargs)
        for name, value in zip(names, args):
            kwargs.setdefault(name, value)
        if "steps_per_epoch" in kwargs and args:
            # Positional: Keras 1 gave samples. More than one pass of batches means samples.
            n = kwargs["steps_per_epoch"]
            length = _len(generator)
            if length is not None and n is not None and n > length:
                kwargs["samples_per_epoch"] = kwargs.pop("steps_per_epoch")
        _, kwargs = _translate_fit(legacy, (generator,), kwargs, call="fit_generator")
        kwargs.pop("generator", None)
        return self_.fit(generator, **kwargs)

    return fit_generator


def _len(data):
    try:
        return len(data)
    except Exception:
        return None


def _eval_generator(legacy, method: str):
    def call(self_, generator, *args, **kwargs):
        legacy.note(f"`{method}_generator` is Keras 1/2; ran as `{method}`",
                    key=f"{method}_generator")
        kwargs = dict(kwargs)
        if args:
            kwargs.setdefault("steps", args[0])
        if "val_samples" in kwargs:  # Keras 1
            n = kwargs.pop("val_samples")
            kwargs["steps"] = _steps(n, generator, "val_samples", legacy)
            legacy.note(f"`val_samples={n}` is Keras 1; ran as `steps={kwargs['steps']}`",
                        key="val_samples")
        for name in DROPPED:
            kwargs.pop(name, None)
        return getattr(self_, method)(generator, **kwargs)

    call.__name__ = f"{method}_generator"
    return call
