"""Live monitoring: findings while the user's own training runs.

Keras::

    model.fit(x, y, epochs=10, callbacks=[cnndoctor.monitor.KerasMonitor()])

PyTorch::

    with cnndoctor.monitor.watch(model, optimizer, loss_fn=criterion) as w:
        for xb, yb in loader:
            optimizer.zero_grad(); loss = criterion(model(xb), yb); loss.backward()
            optimizer.step()
    print(w.findings)

Both record on one step in ``every`` (ReLU activity, per-layer gradient norms, update-to-weight
ratios) and the loss of every step when it is seen, and judge with the same checks and thresholds
as the training probes (``cnndoctor/checks/training.py``): ``nan-loss``, ``dead-relu``,
``exploding-gradient``, ``vanishing-gradient``, ``no-learning``, ``loss-plateau``. A finding is
reported once, when it first appears, through ``on_finding`` (default: one line on stderr).
``stop_on_error=True`` ends training at the first finding of severity ``error``: Keras sets
``model.stop_training``; PyTorch raises ``TrainingStopped`` from ``optimizer.step()``, which the
``with`` block swallows, so the code after it runs normally.

The monitors only read: no random numbers are drawn, gradients and weights are not touched, so the
training run is the same with and without them (``tests/test_monitor.py`` checks it bit for bit).
"""
from __future__ import annotations

import math
import sys
from typing import Any, Callable

import numpy as np

from . import runtime as rt
from .evidence import Evidence
from .graph import ModelGraph
from .probes import training as tp
from .report import ERROR, Finding

#: Record one step in this many. Measured with benchmarks/monitor_overhead.py: the recording step
#: costs a few forward passes' worth of bookkeeping, so 1 in 50 keeps the overhead at ~1-2 %.
DEFAULT_EVERY = 50
#: Recorded batches a ReLU unit must stay silent in to count as dead (as in the probes).
DEFAULT_WINDOW = tp.DEAD_WINDOW
#: Judge the recorded figures on every this-many-th recorded step (judging is cheap, but there is
#: no point doing it more often than figures change).
JUDGE_EVERY = 2
#: Steps before the loss-based findings (no-learning, loss-plateau) may be raised: the first
#: hundreds of steps of a healthy run can look flat at a coarse sampling.
MIN_STEPS_FOR_LOSS = 200

LIVE_CHECKS = ("nan-loss", "dead-relu", "exploding-gradient", "vanishing-gradient", "no-learning",
               "loss-plateau")


class TrainingStopped(Exception):
    """Raised from ``optimizer.step()`` by ``watch(..., stop_on_error=True)`` on an error."""

    def __init__(self, finding: Finding):
        super().__init__(f"cnndoctor stopped training: {finding.code}: {finding.title}")
        self.finding = finding


def print_finding(finding: Finding) -> None:
    print(f"cnndoctor [{finding.severity}] {finding.code}: {finding.title}", file=sys.stderr,
          flush=True)


class _Watcher:
    """What both monitors share: the recorder, the loss trace, the judging."""

    def __init__(self, model: Any, *, every: int, window: int, stop_on_error: bool,
                 on_finding: Callable[[Finding], None] | None, num_classes: int | None,
                 checks: tuple[str, ...]):
        self.model = model
        self.every = max(1, int(every))
        self.window = window
        self.stop_on_error = stop_on_error
        self.on_finding = on_finding if on_finding is not None else print_finding
        self.num_classes = num_classes
        self.checks = checks
        self.findings: list[Finding] = []
        self._losses: list[float] = []
        # Loss tensors not yet read: turning each into a float on every step would make a GPU wait
        # for the step to finish (a synchronisation per step); they are read together on
        # recorded steps instead.
        self._pending: list = []
        self.step = 0
        self.recorder: tp.LayerRecorder | None = None
        self.graph: ModelGraph | None = None
        self.initial: dict[str, np.ndarray] | None = None
        self.stop_reason: Finding | None = None
        self._judged = 0

    def start(self, graph: ModelGraph | None) -> None:
        self.graph = graph
        self.recorder = tp.LayerRecorder(self.model, graph, window=self.window, every=self.every)
        self.initial = tp.weight_snapshot(self.model)

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close()

    @property
    def losses(self) -> list[float]:
        """The loss of every step seen so far."""
        self._flush()
        return self._losses

    def add_loss(self, value: Any) -> None:
        if hasattr(value, "detach") and hasattr(value, "float"):  # a torch tensor: read later
            try:
                value = value.detach()  # one cheap op per step; the rest waits for _flush
                self._pending.append(value if value.dim() == 0 else value.float().mean())
                return
            except Exception:
                pass
        self._flush()
        try:
            self._losses.append(float(np.mean(value)))
        except (TypeError, ValueError):
            pass

    def _flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        for value in pending:
            try:
                self._losses.append(float(value.item()))
            except Exception:  # a monitor must never break the user's training
                pass

    def after_step(self) -> Finding | None:
        """After a recorded step: judge now and then; returns an error finding to stop on."""
        rec = self.recorder
        if rec is None or not rec.sampled(self.step):
            return None
        self._judged += 1
        nonfinite = self.losses and not math.isfinite(self.losses[-1])
        if self._judged % JUDGE_EVERY and not nonfinite:
            return None
        try:
            return self.judge()
        except Exception:  # a monitor must never break the user's training
            return None

    def judge(self) -> Finding | None:
        from .checks import training as ct

        rec = self.recorder
        losses = self.losses
        n_classes = self.num_classes or (self.graph.output_units if self.graph else None)
        relu_all = rec.relu_summary()
        relu = [e for e in relu_all if e["window_batches"] >= self.window]
        nonfinite_step = next((i for i, v in enumerate(losses) if not math.isfinite(v)), None)
        loss_checks_due = len(losses) >= MIN_STEPS_FOR_LOSS and any(
            c in self.checks for c in ("no-learning", "loss-plateau"))
        pseudo = {
            "steps": self.step + 1,
            "history": {"loss": losses, "acc": [], "val_acc": []},
            "loss_first": tp._window_mean(losses, True),
            "loss_last": tp._window_mean(losses, False),
            "loss_mid": tp._mid_mean(losses),
            "loss_min": min((v for v in losses if math.isfinite(v)), default=None),
            "nonfinite_step": nonfinite_step,
            "nonfinite_grad_step": rec.nonfinite_grad_step,
            # Copying every weight out is the costliest part of judging a large model, and only
            # the loss-based checks use it, once enough steps were seen.
            "weight_change": tp.weight_change(self.initial, self.model)
            if self.initial and loss_checks_due else {},
            "relu": relu,
            "relu_all": relu_all,
            "gradients": rec.gradient_summary(),
            "total_grad_norm": rec.total_grad,
            "ln_c": math.log(n_classes) if n_classes and n_classes > 1 else None,
            "num_classes": n_classes,
            "logits_relu": tp.logits_relu_name(self.graph) if self.graph else None,
            "train_acc_eval": None, "majority_share": None, "note": None,
            "optimizer": None,
        }
        graph = self.graph or ModelGraph(framework=rt.framework_of(self.model), name="model",
                                         layers=[], input_shape=None, data_format="")
        ev = Evidence(graph=graph, model=self.model)
        ev.probes["train"] = pseudo
        functions = {"nan-loss": ct.check_nan, "dead-relu": ct.check_dead_relu,
                     "exploding-gradient": ct.check_exploding,
                     "vanishing-gradient": ct.check_vanishing,
                     "no-learning": ct.check_no_learning, "loss-plateau": ct.check_plateau}
        stop = None
        for code in self.checks:
            if code in ("no-learning", "loss-plateau") and not loss_checks_due:
                continue
            try:
                results = functions[code](ev)
            except Exception:  # a monitor must never break the user's training
                continue
            for item in results:
                if not isinstance(item, Finding):
                    continue
                known = next((f for f in self.findings if f.code == item.code), None)
                if known is not None and not (known.severity != ERROR and item.severity == ERROR):
                    continue
                item.evidence = {**item.evidence, "step": self.step + 1}
                if known is not None:
                    self.findings.remove(known)
                self.findings.append(item)
                try:
                    self.on_finding(item)
                except Exception:
                    pass
                if item.severity == ERROR and stop is None:
                    stop = item
        if stop is not None and self.stop_on_error:
            self.stop_reason = stop
            return stop
        return None


def _describe(model: Any, loss: Any = None, example: Any = None) -> ModelGraph | None:
    from .adapters import describe

    try:
        with rt.preserved_rng():
            return describe(model, loss=loss, example=example)
    except Exception:
        return None


# ---------------------------------------------------------------------------------------------
# Keras


def _keras_callback_base():
    import keras

    return keras.callbacks.Callback


class KerasMonitor(_keras_callback_base()):
    """A Keras callback that reports training findings while ``model.fit`` runs.

    every: record one batch in this many (bounds the overhead).
    stop_on_error: stop training (``model.stop_training = True``) at the first error.
    on_finding: called with each new ``Finding`` (default: a line on stderr).
    num_classes: for the chance level ln(C) (default: the model's output units).
    """

    def __init__(self, every: int = DEFAULT_EVERY, *, stop_on_error: bool = False,
                 on_finding: Callable[[Finding], None] | None = None,
                 num_classes: int | None = None, window: int = DEFAULT_WINDOW,
                 checks: tuple[str, ...] = LIVE_CHECKS):
        super().__init__()
        self.options = dict(every=every, window=window, stop_on_error=stop_on_error,
                            on_finding=on_finding, num_classes=num_classes, checks=checks)
        self.watcher: _Watcher | None = None

    @property
    def findings(self) -> list[Finding]:
        return list(self.watcher.findings) if self.watcher else []

    def on_train_begin(self, logs=None):
        self.watcher = _Watcher(self.model, **self.options)
        self.watcher.start(_describe(self.model, loss=getattr(self.model, "loss", None)))
        self._seen_in_epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._seen_in_epoch = 0
        self._running = 0.0

    def on_train_batch_begin(self, batch, logs=None):
        w = self.watcher
        if w is not None and w.recorder is not None and w.recorder.sampled(w.step):
            w.recorder.begin_recording()

    def on_train_batch_end(self, batch, logs=None):
        w = self.watcher
        if w is None or w.recorder is None:
            return
        rec = w.recorder
        rec.end_recording()
        # Keras logs the running mean of the epoch; recover this batch's loss from it.
        if logs and "loss" in logs:
            mean = float(logs["loss"])
            k = self._seen_in_epoch + 1
            value = mean * k - self._running * (k - 1) if k > 1 else mean
            if not math.isfinite(mean):
                value = mean
            self._running = mean
            self._seen_in_epoch = k
            w.add_loss(value)
        rec.close_updates(w.step)
        if rec.sampled(w.step):
            rec.record_gradients(w.step)
        stop = w.after_step()
        w.step += 1
        if stop is not None:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.watcher is not None:
            self.watcher.close()


# ---------------------------------------------------------------------------------------------
# PyTorch


class watch:
    """Watch a PyTorch training loop: ``with watch(model, optimizer) as w: ...``.

    Hooks the model's forward pass (ReLU activity on recorded steps) and ``optimizer.step()``
    (gradient norms before it, update ratios after it). ``loss_fn``: a loss module whose forward
    hook sees each loss value (or call ``w.log_loss(loss)`` yourself). ``stop_on_error``: raise
    ``TrainingStopped`` from ``optimizer.step()`` at the first error; the ``with`` block swallows
    it. Also usable without ``with``: ``w = watch(...).start()`` ... ``w.stop()``.
    """

    def __init__(self, model: Any, optimizer: Any, *, every: int = DEFAULT_EVERY,
                 loss_fn: Any = None, stop_on_error: bool = False,
                 on_finding: Callable[[Finding], None] | None = None,
                 num_classes: int | None = None, window: int = DEFAULT_WINDOW,
                 checks: tuple[str, ...] = LIVE_CHECKS):
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.watcher = _Watcher(model, every=every, window=window, stop_on_error=stop_on_error,
                                on_finding=on_finding, num_classes=num_classes, checks=checks)
        self._handles: list = []
        self._described = False

    @property
    def findings(self) -> list[Finding]:
        return list(self.watcher.findings)

    @property
    def stopped_by(self) -> Finding | None:
        return self.watcher.stop_reason

    def log_loss(self, loss: Any) -> None:
        """Record this step's loss when no ``loss_fn`` module was given."""
        self.watcher.add_loss(loss)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "watch":
        import torch

        w = self.watcher
        w.start(None)
        rec = w.recorder

        def pre_forward(module, args):
            if not (module.training and torch.is_grad_enabled()):
                return
            if not rec.sampled(w.step) or rec.active:
                return
            if not self._described and args and isinstance(args[0], torch.Tensor):
                # Once, before the first recorded forward pass, so that ReLUs called as functions
                # inside forward are recorded under their layer names from the start. describe()
                # works on a copy of the model without hooks, so this does not re-enter.
                self._described = True
                graph = _describe(self.model, loss=self.loss_fn, example=args[0][:2].detach())
                if graph is not None:
                    w.graph = graph
                    rec._function_names = tp._graph_function_relus(graph, self.model)
            rec.begin_recording()

        def post_forward(module, args, output):
            if rec.active:
                rec.end_recording()

        def pre_step(optimizer, args, kwargs):
            rec.close_updates(w.step)
            if rec.sampled(w.step):
                rec.record_gradients(w.step)
                stop = w.after_step()
                if stop is not None:
                    raise TrainingStopped(stop)

        def post_step(optimizer, args, kwargs):
            w.step += 1

        self._handles.append(self.model.register_forward_pre_hook(pre_forward))
        self._handles.append(self.model.register_forward_hook(post_forward, always_call=True))
        self._handles.append(self.optimizer.register_step_pre_hook(pre_step))
        self._handles.append(self.optimizer.register_step_post_hook(post_step))
        if self.loss_fn is not None and isinstance(self.loss_fn, torch.nn.Module):
            def on_loss(module, args, output):
                try:
                    w.add_loss(output)
                except Exception:  # a monitor must never break the user's training
                    pass
            self._handles.append(self.loss_fn.register_forward_hook(on_loss))
        return self

    def stop(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.watcher.close()

    def __enter__(self) -> "watch":
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.stop()
        return exc_type is not None and issubclass(exc_type, TrainingStopped)


__all__ = ["KerasMonitor", "watch", "TrainingStopped", "print_finding", "DEFAULT_EVERY"]
