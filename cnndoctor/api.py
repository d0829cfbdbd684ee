"""``cnndoctor.diagnose``: the Python entry point."""
from __future__ import annotations

import os
import time
from typing import Any, Callable

from . import _backend
from .adapters import describe, framework_of
from . import pipelines
from .data import make_dataset, require_trainable
from .errors import InputError, NotAModelError
from .evidence import Evidence
from .probes import BUDGETS, ProbeContext, run_probes
from .ranking import rank
from .report import Report

#: Images used for the one forward pass that reads the model's shapes (2 is enough for shapes and
#: keeps batch-norm statistics well defined).
EXAMPLE_BATCH = 2


def diagnose(model: Any, train: Any = None, val: Any = None, *, loss: Any = None,
             optimizer: Any = None, batch_size: int | None = None, epochs: int | None = None,
             evaluate: Any = None, reference: Any = None, budget: str = "standard",
             seed: int = 0, verify: bool = False, executor: str = "auto",
             progress: Callable[[str], None] | None = None, captured: dict | None = None,
             title: str = "", device: Any = None, scheduler: Any = None) -> Report:
    """Find out why ``model`` fails to train or generalize.

    model: a Keras 3 model or a ``torch.nn.Module`` (never modified: probes work on copies).
        ``diagnose`` opens no model file and unpickles nothing: read a file with
        ``cnndoctor.load_model(path)`` (Keras safe mode, torch ``weights_only=True``; a pickled
        module only with ``trust_pickle=True``).
    train, val: ``(x, y)`` pairs of images and labels in the layout the model takes (labels as
        integer classes or one-hot rows); ``val`` is optional. Or a data pipeline: a torch
        ``Dataset``/``DataLoader`` (transforms included), a Keras ``PyDataset``, a generator or
        iterable of ``(x, y)`` batches, or a folder path with one sub-folder per class; a
        bounded sample of it is read (``cnndoctor/pipelines``). Or the path of an .npz file
        with 'x' and 'y' (read with ``allow_pickle=False``). Training data needs two classes.
    loss, optimizer: as used in training. Keras: taken from ``model.compile`` when omitted.
        PyTorch: the loss module or function (``nn.CrossEntropyLoss()``, ``F.cross_entropy``)
        and the optimizer over ``model.parameters()``.
    scheduler: PyTorch: the learning-rate scheduler over ``optimizer`` (``OneCycleLR``,
        ``CosineAnnealingLR``, ...), when training uses one; the probes' short trainings follow
        its rates over the run in proportion (``cnndoctor/frameworks/torch/schedules.py``). Keras schedules
        live in the optimizer and need nothing here.
    evaluate: ``(x, y)`` exactly as fed by the evaluation or prediction code, when it differs from
        the training pipeline.
    reference: ``(x, y)`` or ``x``: real-world samples the model should handle.
    budget: "quick", "standard" or "thorough": how much training the probes may do.
    verify: retrain with the suggested fixes to show that they work.
    executor: where the many short trainings (seeds, fixes) run: "auto" (default: worker
        processes when there is more than one job), "inprocess", "local" or "ray" (a Ray
        cluster from RAY_ADDRESS, else a local one; needs ``pip install 'cnndoctor[ray]'``).
    progress: True to print what the probes are doing on stderr, or a function given each line;
        False turns off the progress bars too (drawn on stderr when it is a terminal, unless
        ``TQDM_DISABLE`` is set).
    device: where a torch model is probed ("cuda", "cuda:1", "cpu"); default: the model's own
        device. A model elsewhere is copied there (the user's model stays where it is).
    """
    from .executor import validate as _validate_executor

    executor = _validate_executor(executor)
    if budget not in BUDGETS:
        raise InputError(f"unknown budget {budget!r}: expected one of {', '.join(BUDGETS)}.")
    bars = progress is not False
    if progress is True:
        progress = _progress_to_stderr
    elif progress is False:
        progress = None
    elif progress is not None and not callable(progress):
        raise InputError(f"progress must be True, False, None or a function taking one line of "
                         f"text, got {type(progress).__name__}.")
    timings: dict[str, float] = {}
    start = time.perf_counter()
    if isinstance(model, (str, os.PathLike)):  # files are opened by load_model, never here
        raise NotAModelError(
            f"expected a Keras 3 model or a torch.nn.Module as the model, got the path "
            f"{os.fspath(model)!r}: read it first with cnndoctor.load_model("
            f"{os.fspath(model)!r}) (safe: no unpickling unless trust_pickle=True).")
    framework = framework_of(model)
    data_format = "channels_last" if framework == "keras" else "channels_first"
    if framework == "keras" and _backend.keras_backend() not in (None, "torch"):
        raise InputError(
            f"Keras is running on the {_backend.keras_backend()!r} backend; cnndoctor needs the "
            "torch backend: set KERAS_BACKEND=torch before importing keras.")
    if train is None:
        raise InputError("no training data: pass train=(x, y) with the images and labels the "
                         "model is trained on.")

    model, device_note = _on_device(model, framework, device)

    def read(name, source, require_labels=False, like=None):
        ds = pipelines.load(name, source, model=model, framework=framework,
                            data_format=data_format, budget=budget, seed=seed,
                            require_labels=require_labels, like=like)
        return ds if ds is not None else make_dataset(name, source, data_format,
                                                      require_labels=require_labels)

    train_ds = read("training", train, require_labels=True)
    if not captured:  # what a script trained on is diagnosed as it was (cnndoctor run)
        require_trainable(train_ds)
    val_ds = read("validation", val, True, train_ds) if val is not None else None
    eval_list = []
    if evaluate is not None:
        eval_list = [read("evaluation", evaluate, like=train_ds)]
    ref_ds = read("reference", reference, like=train_ds) if reference is not None else None
    for ds in (val_ds, *eval_list, ref_ds):
        if ds is not None and ds.images.shape[1:] != train_ds.images.shape[1:] \
                and ds.layout == train_ds.layout:
            raise InputError(
                f"the {ds.name} images have shape {tuple(ds.images.shape[1:])} (H x W x C) but the "
                f"training images have {tuple(train_ds.images.shape[1:])}: expected the same size.")

    if framework == "keras":
        loss = loss if loss is not None else getattr(model, "loss", None)
        optimizer = optimizer if optimizer is not None else getattr(model, "optimizer", None)
    schedule, optimizer = _schedule(scheduler, optimizer, framework)
    example = _example(train_ds, data_format)
    graph = describe(model, loss=loss, example=example)
    timings["read model"] = time.perf_counter() - start

    ev = Evidence(graph=graph, train=train_ds, val=val_ds, evaluation=eval_list,
                  reference=ref_ds, budget=budget, model=model, loss=loss, optimizer=optimizer,
                  schedule=schedule,
                  batch_size=batch_size or 32, epochs=epochs)
    if captured:
        ev.probes["captured"] = captured
    else:
        # NaN, infinities and labels out of range make every later measurement meaningless:
        # refuse with the reason (the run path, which diagnoses what a script did, reports them).
        from .checks.invalid_values import refusal

        reason = refusal(ev)
        if reason:
            raise InputError(reason)
    ctx = ProbeContext(budget=budget, seed=seed, verify=verify, progress=progress,
                       executor=executor, bars=bars)
    t0 = time.perf_counter()
    run_probes(ev, ctx)
    timings.update(ctx.timings)
    timings["probes"] = time.perf_counter() - t0

    from .checks import run_checks, settle_prognoses

    t0 = time.perf_counter()
    findings, passed, skipped = run_checks(ev)
    timings["checks"] = time.perf_counter() - t0
    if budget != "static":
        # Differential diagnosis: a symptom that no cause present explains is put to the cheap
        # interventions (learning rate, input scale, ...); what recovers training is named.
        from .differential import investigate

        t0 = time.perf_counter()
        more = investigate(ev, ctx, findings)
        if more is not None:
            findings, passed, skipped = _merge(more, findings, passed, skipped)
        timings["differential"] = time.perf_counter() - t0
    # a model shape predicted to fail that trained without the symptoms it would cause
    settle_prognoses(ev, findings)
    if verify:
        from .verify import verify_findings

        t0 = time.perf_counter()
        ev.figures["verification"] = verify_findings(ev, findings, ctx)
        timings["verification"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - start
    notes = list(graph.notes)
    if device_note:
        notes.append(device_note)
    sources = [ds for ds in (train_ds, val_ds, *eval_list, ref_ds)
               if ds is not None and ds.source is not None]
    for ds in sources:
        notes.append(pipelines.describe(ds))
        notes.extend(ds.notes)
    if sources:
        ev.figures["data_sources"] = {
            ds.name: {"source": ds.source, "total_size": ds.total_size,
                      "sample_size": len(ds), "sampling": ds.sampling,
                      "normalization": ds.normalization} for ds in sources}
    if _backend.BACKEND_NOTE and framework == "keras":
        notes.insert(0, _backend.BACKEND_NOTE)
    return Report(framework=framework, findings=rank(findings), passed=passed, skipped=skipped,
                  timings=timings, figures=ev.figures, model=graph.to_dict(), notes=notes,
                  title=title)


def _merge(more, findings, passed, skipped):
    """Second-pass results (checks that read the differential probe) into the first pass's."""
    new_findings, new_passed, new_skipped = more
    codes = {f.code for f in new_findings} | {p.code for p in new_passed}
    findings = [f for f in findings if f.code not in codes] + new_findings
    passed = [p for p in passed if p.code not in codes] + new_passed
    skipped = [s for s in skipped if s.code not in codes]
    return findings, passed, skipped


def _schedule(scheduler, optimizer, framework: str):
    """(the scheduler replayed or None, the optimizer): a scheduler needs a torch model and the
    optimizer it was made for (taken from it when ``optimizer`` is not given)."""
    if scheduler is None:
        return None, optimizer
    from .frameworks.torch import schedules as lr_schedules

    if framework != "torch" or not lr_schedules.is_scheduler(scheduler):
        raise InputError(
            f"scheduler must be a torch.optim.lr_scheduler object over the optimizer of a "
            f"PyTorch model, got {type(scheduler).__name__}"
            + (" for a Keras model (a Keras schedule goes into the optimizer: "
               "keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(...)))"
               if framework == "keras" else "") + ".")
    if optimizer is None:
        optimizer = scheduler.optimizer
    elif scheduler.optimizer is not optimizer:
        raise InputError("the scheduler was made for another optimizer than optimizer=...: "
                         "expected torch.optim.lr_scheduler.X(optimizer, ...) over that optimizer.")
    return lr_schedules.replay(scheduler), optimizer


def _example(ds, data_format: str):
    """A tiny batch in the layout the model takes, for reading shapes."""
    import numpy as np

    x = ds.x
    if hasattr(x, "detach"):
        return x[:EXAMPLE_BATCH].detach().float()
    arr = np.asarray(x[:EXAMPLE_BATCH], dtype=np.float32)
    return arr


def _on_device(model, framework: str, device):
    """The model to probe on ``device``: the model itself when it is there already (or no device
    was asked for), else a copy moved there (torch). Keras places its variables itself (its torch
    backend uses the GPU when there is one): cnndoctor.cli loads a Keras model under
    ``keras.device`` instead. Returns (model, note or None)."""
    if device is None or framework != "torch":
        return model, None
    import copy

    import torch

    try:
        target = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"unknown device {device!r}: expected 'cpu', 'cuda' or 'cuda:N'.") \
            from exc
    if target.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} was asked for, but torch sees no CUDA GPU here: "
                         f"use --device cpu.")
    current = next((p.device for p in model.parameters()), torch.device("cpu"))
    if current == target or (target.index is None and current.type == target.type):
        return model, None
    return copy.deepcopy(model).to(target), (
        f"the model is on {current}; it was probed on {target} as asked (a copy was moved "
        f"there, the model itself stays on {current}).")


def _progress_to_stderr(line: str) -> None:
    import sys

    print(f"cnndoctor: {line}", file=sys.stderr, flush=True)
