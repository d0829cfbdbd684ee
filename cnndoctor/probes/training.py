"""Training probes: train copies of the model briefly and record what happens.

Five probes, each on a copy of the user's model (``runtime.clone``), each bounded by the budget:

* ``init``: the loss of the model as given against ln(C), and how its outputs are spread;
* ``train``: a short run with the user's loss, optimizer and batch size, recording on a sample of
  the steps: per layer the share of active ReLU units and the units dead over a sliding window,
  gradient norms, update-to-weight ratios; the loss curve; NaN/Inf;
* ``overfit_batch``: can the model fit one small batch at all;
* ``lr_range``: a learning-rate range test (Smith 2017) with the user's optimizer;
* ``seeds``: k short runs from fresh initialisations and the spread of validation accuracy.

Probes gather; the checks in ``cnndoctor/checks/training.py`` judge. Recording is shared with
the live monitors (``cnndoctor.monitor``) through ``LayerRecorder``.
"""
from __future__ import annotations

import contextlib
import math
import time
from collections import deque
from typing import Any

import numpy as np

from .. import graph as g
from .. import runtime as rt
from ..evidence import Evidence
from ..executor import Job, get_last_notes, run_jobs
from . import ProbeContext, register

# ---------------------------------------------------------------------------------------------
# Budgets. Sizes were chosen so that all training probes together stay under ~20 s per reference
# case at "quick" on 2 CPU cores (benchmarks/probe_time.py), leaving room for the other probes.

#: Training samples a probe may use (a seeded random subset when there are more).
MAX_TRAIN = {"quick": 1024, "standard": 2048, "thorough": 5000}
#: Validation samples for accuracies (held out from the training data when no val was given).
MAX_VAL = {"quick": 500, "standard": 1000, "thorough": 2000}
#: Optimizer steps of the short training run. Step counts, not seconds, bound the work so that a
#: diagnosis is deterministic; the seconds below are a safety net for very large models only (a run
#: cut by them says so in its result, "stopped": "time").
TRAIN_STEPS = {"quick": 80, "standard": 300, "thorough": 1500}
#: At "quick" 15 s keeps case 3 (a 4.7-million-weight convolution, ~0.5 s a step on 2 cores)
#: near 30 s in all; every other reference case finishes its 80 steps well within it.
TRAIN_SECONDS = {"quick": 15.0, "standard": 90.0, "thorough": 600.0}
#: Epochs never exceed this (tiny datasets: reference case 2 has six images, 100 epochs).
MAX_EPOCHS = 200
#: Steps of the overfit-one-batch test (Adam, see OVERFIT_LR), and the batch size it uses.
OVERFIT_STEPS = {"quick": 60, "standard": 150, "thorough": 300}
#: Seconds for all attempts of the overfit test together, and the least worth starting another
#: attempt with. Like TRAIN_SECONDS, a safety net for slow models (case 3's giant convolution
#: takes ~0.5 s a step on 2 cores): a test cut by it is reported as inconclusive (info).
OVERFIT_SECONDS = {"quick": 6.0, "standard": 45.0, "thorough": 180.0}
OVERFIT_MIN_SECONDS = 1.0
OVERFIT_SAMPLES = 16  # Karpathy, "A recipe for training neural networks" (2019): a few examples
#: Adam at 1e-3 (the Keras and torch default), then at 1e-2 if that did not fit the batch (tiny
#: models such as case 2's need the higher rate): this isolates model/loss/label bugs from a bad
#: learning rate, which the range test judges separately.
OVERFIT_LRS = (1e-3, 1e-2)
#: Learning-rate range test (Smith 2017): steps, and the range swept exponentially. fastai's
#: lr_find sweeps 1e-7 to 10 over 100 steps; ours spans the user's rate / LR_RANGE_BELOW to the
#: user's rate x LR_RANGE_ABOVE, always covering at least LR_RANGE_COVER (where SGD and Adam do
#: their work on our reference cases), within the absolute limits. Not at "quick": 40 steps proved
#: too few for the loss to fall measurably on case 1 before the rate got too high.
LR_RANGE_STEPS = {"standard": 150, "thorough": 300}
LR_RANGE_BELOW, LR_RANGE_ABOVE = 100.0, 100.0
LR_RANGE_COVER = (1e-3, 1.0)
LR_RANGE_MIN, LR_RANGE_MAX = 1e-7, 10.0
#: The rate the sweep centres on when the optimizer's rate cannot be read (Adam's default).
LR_DEFAULT = 1e-3
#: The sweep stops once the smoothed loss exceeds this multiple of its best value (fastai: 4).
LR_DIVERGE_FACTOR = 4.0
#: Smoothing of the range-test loss (exponential moving average with bias correction; fastai
#: uses 0.98 over 100+ steps, 0.9 reacts within ~10 steps on our shorter sweeps).
LR_SMOOTH_BETA = 0.9
#: Multi-seed study: how many fresh initialisations, and the steps each trains. Not at "quick":
#: after 80 steps the healthy case 1 model still varies by 2.4-5.6 points across 3 seeds (one
#: chi-square p = 6e-5), as much as the broken one on some seeds, so nothing reliable can be said.
#: At 150 steps x 5 seeds the healthy model varies by 1.1-1.8 points, the broken one by 4.7-17.5.
SEED_RUNS = {"standard": 5, "thorough": 8}
SEED_STEPS = {"standard": 150, "thorough": 600}
SEED_SECONDS = {"standard": 60.0, "thorough": 240.0}  # per run, safety net
#: Recording: about this many sampled steps per run (cost stays flat whatever the run length).
RECORD_SAMPLES = 30
#: After this many steps (0-based index), a run on course to hit its time limit records every
#: step: case 3's giant convolution gets ~25 of its 80 quick steps, which at one step in two
#: would leave the dead-unit window barely filled on a slower machine.
DENSE_RECORDING_AFTER = 3
#: Dead units: never active on any sample of the last DEAD_WINDOW recorded batches.
DEAD_WINDOW = 8
#: Samples for the loss and output distribution at initialisation, and for the training accuracy
#: after the probe run. At "quick" 256 halves the time of these two predictions on slow models
#: (case 3: 3.5 s each at 512); the standard error of an accuracy near 50% is still ~3 points.
INIT_SAMPLES = {"quick": 256, "standard": 512, "thorough": 512}
#: Points kept in the loss-curve figure of the report.
CURVE_POINTS = 200

RELU_FAMILY = ("relu", "relu6")


# ---------------------------------------------------------------------------------------------
# Data


def _split(ev: Evidence, budget: str, seed: int) -> dict:
    """Training and validation subsets in the model's own layout, as numpy/tensors."""
    rng = np.random.default_rng(seed)
    x, y = ev.train.x, (ev.train.y if ev.train.y is not None else ev.train.labels)
    n = len(ev.train)
    note = None
    if ev.val is not None and len(ev.val) > 0:
        vx, vy = ev.val.x, (ev.val.y if ev.val.y is not None else ev.val.labels)
        vidx = np.sort(rng.permutation(len(ev.val))[:MAX_VAL[budget]])
        val = (rt.take(vx, vidx), rt.to_numpy(vy)[vidx])
        tidx = np.sort(rng.permutation(n)[:MAX_TRAIN[budget]])
    elif n >= 50:
        order = rng.permutation(n)
        n_val = min(MAX_VAL[budget], max(10, n // 5))
        vidx, tidx = np.sort(order[:n_val]), np.sort(order[n_val:n_val + MAX_TRAIN[budget]])
        val = (rt.take(x, vidx), rt.to_numpy(y)[vidx])
        note = f"no validation data: {n_val} training samples were held out for accuracies"
    else:
        tidx = np.arange(n)
        val = (x, rt.to_numpy(y))
        note = "no validation data and too few samples to hold some out: accuracies are measured " \
               "on the training samples"
    train = (rt.take(x, tidx), rt.to_numpy(y)[tidx])
    return {"train": train, "val": val, "note": note,
            "num_classes": ev.num_classes or int(rt.integer_labels(y).max()) + 1}


def _batch_size(ev: Evidence, n: int) -> int:
    return int(max(1, min(ev.batch_size or 32, n)))


def _steps_plan(n: int, batch_size: int, steps: int) -> tuple[int, int]:
    """(epochs, max_steps) so that a run makes ``steps`` updates, tiny datasets included."""
    per_epoch = max(1, math.ceil(n / batch_size))
    epochs = min(MAX_EPOCHS, max(1, math.ceil(steps / per_epoch)))
    return epochs, min(steps, epochs * per_epoch)


# ---------------------------------------------------------------------------------------------
# Which layers are ReLUs, and which one feeds the softmax


def logits_relu_name(graph: g.ModelGraph) -> str | None:
    """The layer that applies a ReLU to the logits (fused or right after them), if any."""
    out = graph.output_layer
    if out is None:
        return None
    if out.kind == g.WEIGHTED:
        return out.name if (out.activation or "") in RELU_FAMILY else None
    if out.kind == g.ACTIVATION and (out.activation or "") in RELU_FAMILY:
        return out.name
    if out.kind in (g.SOFTMAX, g.LOG_SOFTMAX):
        prev = graph.producer(out)
        if prev is not None and (prev.activation or "") in RELU_FAMILY and prev.kind in (
                g.WEIGHTED, g.ACTIVATION):
            return prev.name
    return None


def _call_key(calls: dict[str, int], name: str) -> str:
    """``name`` for a layer's first call in a forward pass, ``name#k`` for its k-th (a module
    applied several times)."""
    count = calls.get(name, 0)
    calls[name] = count + 1
    return name if count == 0 else f"{name}#{count + 1}"


def _as_tensor(out: Any):
    import torch

    return out.detach() if isinstance(out, torch.Tensor) else torch.as_tensor(rt.to_numpy(out))


class LayerRecorder:
    """Records ReLU activity, gradient norms and update ratios on sampled steps of a run.

    The taps on the ReLUs are the framework's (``frameworks/<framework>/recording.py``).
    Recording is off except on sampled steps; ``close()`` removes everything.
    """

    def __init__(self, model: Any, graph: g.ModelGraph | None = None, *,
                 window: int = DEAD_WINDOW, every: int = 1):
        self.model = model
        self.every = max(1, int(every))
        self.framework = rt.framework_of(model)
        self.window = window
        self.active = False
        self.stats: dict[str, dict] = {}  # layer -> {"share": [...], "ever": deque, "units": n}
        self.order: list[str] = []
        self._calls: dict[str, int] = {}
        self._function_names = _graph_function_relus(graph, model) if graph else []
        self._function_count = 0
        self.weights = rt.named_weights(model)
        self.grads: dict[str, list] = {}
        self.updates: dict[str, list] = {}
        self.total_grad: list[float] = []
        self.grad_steps: list[int] = []
        self.nonfinite_grad_step: int | None = None
        self._snapshot: dict[str, Any] | None = None
        self._install()

    # -- activations ------------------------------------------------------------------------
    def _install(self) -> None:
        from ..frameworks import module

        taps = module(self.framework, "recording").ReluTaps
        self._taps = taps(self.model, self._record, self._function_name)

    def _function_name(self) -> str:
        k = self._function_count
        self._function_count += 1
        if k < len(self._function_names):
            return self._function_names[k]
        return f"relu (call {k + 1} in forward)"

    def sampled(self, step: int) -> bool:
        return step % self.every == 0

    def begin_recording(self) -> None:
        """Record the forward pass that follows (until ``end_recording``)."""
        self._function_count = 0
        self._calls = {}
        self.active = True
        self._taps.begin()

    def end_recording(self) -> None:
        self.active = False
        self._taps.end()

    @contextlib.contextmanager
    def forward(self, step: int):
        """Wrap one forward pass: records it when ``step`` is a sampled step."""
        if not self.sampled(step):
            yield
            return
        self.begin_recording()
        try:
            yield
        finally:
            self.end_recording()

    def after_backward(self, step: int) -> None:
        """Called with gradients in place, before the update: close and take gradient records."""
        self.close_updates(step)
        if self.sampled(step):
            self.record_gradients(step)

    def _record(self, name: str, out: Any, axis: int) -> None:
        import torch

        key, t = _call_key(self._calls, name), _as_tensor(out)
        if t.dim() < 2:
            return
        axis = axis if axis >= 0 else t.dim() - 1
        if t.dim() == 2:
            axis = 1
        # A unit fired on some sample of this batch iff its largest output is positive; amax over
        # the other axes needs no boolean copy or permute of the activation map.
        share = float(torch.count_nonzero(t > 0)) / max(1, t.numel())
        ever = t.amax(dim=tuple(d for d in range(t.dim()) if d != axis)) > 0
        entry = self.stats.get(key)
        if entry is None:
            entry = {"share": [], "ever": deque(maxlen=self.window), "units": int(t.shape[axis]),
                     "first": None, "samples": 0}
            self.stats[key] = entry
            self.order.append(key)
        entry["share"].append(share)
        entry["ever"].append(ever.cpu().numpy())
        entry["samples"] += int(t.shape[0])
        if entry["first"] is None:
            entry["first"] = ever.cpu().numpy()

    # -- gradients and updates ---------------------------------------------------------------
    def layer_groups(self) -> dict[str, list[rt.WeightRef]]:
        groups: dict[str, list[rt.WeightRef]] = {}
        for ref in self.weights:
            groups.setdefault(ref.layer, []).append(ref)
        return groups

    def close_updates(self, step: int) -> None:
        """Update-to-weight ratios of the step recorded just before this one."""
        import torch

        if not self._snapshot:
            return
        with torch.no_grad():
            for layer, (param, before, prev_step) in self._snapshot.items():
                if prev_step == step - 1:
                    delta = float(torch.linalg.vector_norm(param.detach() - before))
                    base = float(torch.linalg.vector_norm(before)) or 1e-12
                    self.updates.setdefault(layer, []).append(delta / base)
        self._snapshot = None

    def record_gradients(self, step: int) -> None:
        """Per-layer gradient norms now, and a snapshot of the kernels for the update ratio."""
        import torch

        total = 0.0
        self._snapshot = {}
        with torch.no_grad():
            for layer, refs in self.layer_groups().items():
                sq = 0.0
                for ref in refs:
                    if ref.param.grad is not None:
                        sq += float(ref.param.grad.detach().float().pow(2).sum())
                if not math.isfinite(sq) and self.nonfinite_grad_step is None:
                    self.nonfinite_grad_step = step
                self.grads.setdefault(layer, []).append(math.sqrt(sq) if math.isfinite(sq)
                                                        else float("inf"))
                total += sq
                kernel = _kernel(refs)
                self._snapshot[layer] = (kernel.param, kernel.param.detach().clone(), step)
        self.total_grad.append(math.sqrt(total) if math.isfinite(total) else float("inf"))
        self.grad_steps.append(step)

    # -- summaries ---------------------------------------------------------------------------
    def relu_summary(self) -> list[dict]:
        out = []
        for key in self.order:
            e = self.stats[key]
            ever = np.any(np.stack(list(e["ever"])), axis=0) if e["ever"] else None
            dead = int((~ever).sum()) if ever is not None else 0
            first_dead = int((~e["first"]).sum()) if e["first"] is not None else 0
            out.append({"layer": key, "units": e["units"],
                        "active_share": float(np.mean(e["share"][-self.window:])),
                        "active_share_start": float(e["share"][0]),
                        "dead_units": dead, "dead_share": dead / max(1, e["units"]),
                        "dead_units_first_batch": first_dead,
                        "dead_unit_indices": [int(i) for i in np.flatnonzero(~ever)][:64]
                        if ever is not None else [],
                        "window_batches": len(e["ever"])})
        return out

    def gradient_summary(self) -> list[dict]:
        out = []
        groups = self.layer_groups()
        for layer, refs in groups.items():
            grads = self.grads.get(layer, [])
            kernel = _kernel(refs)
            numel = int(kernel.param.numel())
            ups = self.updates.get(layer, [])
            out.append({"layer": layer, "params": int(sum(r.param.numel() for r in refs)),
                        "grad_norm_median": _median(grads),
                        "grad_norm_first": grads[0] if grads else None,
                        "grad_norm_last": grads[-1] if grads else None,
                        "grad_rms_median": (_median(grads) / math.sqrt(max(1, sum(
                            r.param.numel() for r in refs)))) if _median(grads) is not None
                        else None,
                        "update_ratio_median": _median(ups),
                        "weight_norm": float(kernel.param.detach().float().norm()),
                        "kernel_numel": numel})
        return out

    def close(self) -> None:
        self.end_recording()
        self._taps.close()


def _graph_function_relus(graph: g.ModelGraph, model: Any) -> list[str]:
    """Graph names of the ReLUs applied by function calls (torch), in execution order."""
    try:
        modules = {name for name, _ in model.named_modules()}
    except Exception:
        return []
    return [layer.name for layer in graph.layers
            if layer.kind == g.ACTIVATION and (layer.activation or "") in RELU_FAMILY
            and layer.name.split("#")[0] not in modules]


def _kernel(refs: list[rt.WeightRef]) -> rt.WeightRef:
    kernels = [r for r in refs if r.is_kernel]
    return max(kernels or refs, key=lambda r: r.param.numel())


def _median(values) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.median(vals)) if vals else None


def weight_snapshot(model: Any) -> dict[str, np.ndarray]:
    return {f"{r.layer}/{r.name}": rt.to_numpy(r.param).astype(np.float64).copy()
            for r in rt.named_weights(model)}


def weight_change(before: dict[str, np.ndarray], model: Any) -> dict:
    """Relative change of the weights, per layer and overall: ||W1 - W0|| / ||W0||."""
    after = weight_snapshot(model)
    per_layer: dict[str, list[float]] = {}
    d_total = w_total = 0.0
    finite = True
    for key, w0 in before.items():
        w1 = after.get(key)
        if w1 is None:
            continue
        if not np.all(np.isfinite(w1)):
            finite = False
            continue
        d = float(np.sum((w1 - w0) ** 2))
        w = float(np.sum(w0 ** 2))
        d_total += d
        w_total += w
        layer = key.split("/")[0]
        acc = per_layer.setdefault(layer, [0.0, 0.0])
        acc[0] += d
        acc[1] += w
    return {"relative": math.sqrt(d_total / w_total) if w_total > 0 else None,
            "max_abs": float(max((np.max(np.abs(after[k] - before[k])) for k in before
                                  if k in after and np.all(np.isfinite(after[k]))), default=0.0)),
            "per_layer": {k: (math.sqrt(v[0] / v[1]) if v[1] > 0 else None)
                          for k, v in per_layer.items()},
            "finite": finite}


def _curve(losses: list[float], points: int = CURVE_POINTS) -> dict:
    n = len(losses)
    if n <= points:
        steps = list(range(n))
    else:
        steps = sorted(set(np.linspace(0, n - 1, points).astype(int).tolist()))
    return {"step": steps, "loss": [losses[i] if math.isfinite(losses[i]) else None
                                    for i in steps]}


def _window_mean(values: list[float], first: bool, share: float = 0.1) -> float | None:
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return None
    k = max(1, int(round(len(vals) * share)))
    part = vals[:k] if first else vals[-k:]
    return float(np.mean(part))


def _mid_mean(values: list[float], share: float = 0.1) -> float | None:
    """Mean loss over a tenth of the run starting at its middle (for "frozen since halfway")."""
    vals = [v for v in values if math.isfinite(v)]
    if len(vals) < 10:
        return None
    k = max(1, int(round(len(vals) * share)))
    mid = len(vals) // 2
    return float(np.mean(vals[mid:mid + k]))


def _probe_seed(ctx: ProbeContext, offset: int) -> int:
    return int(ctx.seed) * 1000 + offset


# ---------------------------------------------------------------------------------------------
# Probes


def _needs_training(ev: Evidence) -> str | None:
    if ev.model is None:
        return "no model object to train a copy of"
    counts = ev.probes.get("trainable") or {}
    if counts.get("trainable") == 0 and counts.get("frozen"):
        return (f"every weight of the model is frozen ({counts['frozen']:,} weights): training "
                f"cannot change any of them")
    if ev.train is None or ev.train.labels is None or len(ev.train) == 0:
        return "no labelled training data"
    if ev.framework == "keras" and ev.loss is None and not getattr(ev.model, "compiled", False):
        return "the Keras model is not compiled and no loss was given"
    return None


def _weight_counts(refs: list[rt.WeightRef]) -> tuple[int, dict[str, int]]:
    per_layer: dict[str, int] = {}
    for r in refs:
        per_layer[r.layer] = per_layer.get(r.layer, 0) + int(r.param.numel())
    return sum(per_layer.values()), per_layer


@register("trainable")
def probe_trainable(ev: Evidence, ctx: ProbeContext) -> None:
    """How many of the model's learnable weights training may change, and which are frozen."""
    if ev.model is None:
        ev.probes["trainable"] = {"skipped": "no model object"}
        return
    trainable, trainable_layers = _weight_counts(rt.named_weights(ev.model))
    frozen, frozen_layers = _weight_counts(rt.frozen_weights(ev.model))
    ev.probes["trainable"] = {"trainable": trainable, "frozen": frozen,
                              "trainable_layers": sorted(trainable_layers),
                              "frozen_layers": frozen_layers}


@register("init")
def probe_init(ev: Evidence, ctx: ProbeContext) -> None:
    """Loss at initialisation against ln(C) and the spread of the outputs."""
    reason = _needs_training(ev)
    if reason:
        ev.probes["init"] = {"skipped": reason}
        return
    data = _split(ev, ctx.budget, _probe_seed(ctx, 1))
    x, y = data["train"]
    k = min(len(y), INIT_SAMPLES[ctx.budget])
    x, y = rt.take(x, np.arange(k)), y[:k]
    c = data["num_classes"]
    outputs = rt.predict(ev.model, x)
    probs = rt.output_probabilities(outputs, ev.graph.output_activation)
    loss = rt.loss_on(ev.model, x, y, loss=ev.loss, outputs=outputs)
    result: dict[str, Any] = {"loss": loss, "ln_c": math.log(c) if c > 1 else None,
                              "num_classes": c, "samples": int(k)}
    if probs.ndim == 2 and probs.shape[1] > 1:
        pred = probs.argmax(axis=1)
        counts = np.bincount(pred, minlength=probs.shape[1])
        ent = -np.sum(np.where(probs > 0, probs * np.log(np.clip(probs, 1e-12, 1)), 0), axis=1)
        result.update({
            "mean_max_prob": float(probs.max(axis=1).mean()),
            "mean_entropy_ratio": float(ent.mean() / math.log(probs.shape[1])),
            "saturated_share": float((probs.max(axis=1) > 0.99).mean()),
            "top_class_share": float(counts.max() / max(1, counts.sum())),
            "classes_predicted": int((counts > 0).sum()),
            "output_min": float(np.min(outputs)), "output_max": float(np.max(outputs)),
        })
    ev.probes["init"] = result


#: Narrow layers: fresh initialisations of the model looked at, forward only. The layer that
#: fails case 2 (two bias-free 2x2 filters) is dead on every image on 2 seeds of 6 and leaves one
#: image of six without an active unit on 3 more (benchmarks/grid_filters.py): 8 draws see both.
COVERAGE_DRAWS = 8
#: Images each draw is run on (the share of images that reach the next layer as all zeros).
COVERAGE_SAMPLES = 128
#: Draws after which a model whose every image activated every layer on every draw so far is
#: taken as clear: case 2's narrow layer leaves images silent on 6 of 8 draws (Keras) and 8 of 8
#: (torch), so 4 clean draws in a row would happen by chance with it about once in 250.
COVERAGE_CLEAR_DRAWS = 4
#: Time for all draws together; the draws done by then are reported (a Keras copy is rebuilt and
#: compiled per draw: 0.1-0.3 s for the reference cases, more for ResNet-sized models).
COVERAGE_SECONDS = {"quick": 1.5, "standard": 10.0, "thorough": 30.0}


class _CoverageTaps:
    """Per ReLU layer and image: did any unit of the layer fire on that image?"""

    def __init__(self, model: Any, graph: g.ModelGraph | None):
        from ..frameworks import module

        self._model = model
        self.fired: dict[str, list[np.ndarray]] = {}
        self.units: dict[str, int] = {}
        self._names = _graph_function_relus(graph, model) if graph else []
        self._count = 0
        self._calls: dict[str, int] = {}
        self._taps = module(rt.framework_of(model), "recording").ReluTaps(
            model, self._record, self._function_name)

    def _function_name(self) -> str:
        k, self._count = self._count, self._count + 1
        return self._names[k] if k < len(self._names) else f"relu (call {k + 1} in forward)"

    def _record(self, name: str, out: Any, axis: int) -> None:
        key, t = _call_key(self._calls, name), _as_tensor(out)
        if t.dim() < 2:
            return
        axis = 1 if t.dim() == 2 else (axis if axis >= 0 else t.dim() - 1)
        self.units[key] = int(t.shape[axis])
        self.fired.setdefault(key, []).append((t.reshape(t.shape[0], -1) > 0).any(dim=1)
                                              .cpu().numpy())

    def run(self, x: Any) -> dict[str, np.ndarray]:
        """One forward pass over ``x``: per layer, a boolean per image."""
        self.fired, self._count, self._calls = {}, 0, {}
        self._taps.begin()
        try:
            rt.predict(self._model, x)
        finally:
            self._taps.end()
        return {k: np.concatenate(v) for k, v in self.fired.items()}

    def close(self) -> None:
        self._taps.close()


@register("init_coverage")
def probe_init_coverage(ev: Evidence, ctx: ProbeContext) -> None:
    """Fresh initialisations, forward only: per ReLU layer, the share of images on which no unit
    of the layer fires (they reach the next layer as zeros: a layer too narrow for its inputs)."""
    if ev.model is None or ev.train is None or len(ev.train) == 0 or ev.graph is None:
        ev.probes["init_coverage"] = {"skipped": "no model or training images"}
        return
    logits = logits_relu_name(ev.graph)
    hidden = [layer for layer in ev.graph.layers if (layer.activation or "") in RELU_FAMILY
              and layer.name != logits]
    if not hidden:
        ev.probes["init_coverage"] = {"skipped": "no ReLU before the logits"}
        return
    n = min(len(ev.train), COVERAGE_SAMPLES)
    idx = np.sort(np.random.default_rng(_probe_seed(ctx, 7)).permutation(len(ev.train))[:n])
    x = rt.take(ev.train.x, idx)
    deadline = time.perf_counter() + COVERAGE_SECONDS.get(ctx.budget, COVERAGE_SECONDS["quick"])
    per_layer: dict[str, dict] = {}
    draws = 0
    for d in range(COVERAGE_DRAWS):
        if d and time.perf_counter() > deadline:
            break
        if d >= COVERAGE_CLEAR_DRAWS and not any(max(e["silent_shares"]) > 0
                                                 for e in per_layer.values()):
            break
        copy = rt.clone(ev.model, seed=_probe_seed(ctx, 100 + d), reinit=True)
        taps = _CoverageTaps(copy, ev.graph)
        try:
            fired = taps.run(x)
        finally:
            taps.close()
        draws += 1
        for key, ok in fired.items():
            if logits is not None and key.split("#")[0] == logits:
                continue
            e = per_layer.setdefault(key, {"layer": key, "units": taps.units.get(key),
                                           "silent_shares": [], "all_silent_draws": 0})
            silent = float(1.0 - ok.mean()) if ok.size else 0.0
            e["silent_shares"].append(round(silent, 4))
            e["all_silent_draws"] += int(ok.size > 0 and not ok.any())
    layers = []
    for e in per_layer.values():
        e["silent_share"] = float(np.mean(e["silent_shares"])) if e["silent_shares"] else 0.0
        e["draws_with_silent_images"] = int(sum(s > 0 for s in e["silent_shares"]))
        layers.append(e)
    ev.probes["init_coverage"] = {"draws": draws, "samples": int(n), "layers": layers}


@register("train")
def probe_train(ev: Evidence, ctx: ProbeContext) -> None:
    """A short run with the user's loss, optimizer and batch size, recorded on sampled steps."""
    reason = _needs_training(ev)
    if reason:
        ev.probes["train"] = {"skipped": reason}
        return
    budget = ctx.budget
    data = _split(ev, budget, _probe_seed(ctx, 2))
    xtr, ytr = data["train"]
    bs = _batch_size(ev, len(ytr))
    epochs, steps = _steps_plan(len(ytr), bs, TRAIN_STEPS[budget])
    ctx.say(f"training a copy for {steps} steps (batch {bs}, {len(ytr)} samples)")
    model = rt.clone(ev.model)
    every = max(1, steps // RECORD_SAMPLES)
    recorder = LayerRecorder(model, ev.graph, every=every)
    before = weight_snapshot(model)
    result = run_recorded(model, recorder, xtr, ytr, loss=ev.loss, optimizer=ev.optimizer,
                          epochs=epochs, batch_size=bs, seed=_probe_seed(ctx, 3),
                          val=data["val"], max_steps=steps, max_seconds=TRAIN_SECONDS[budget],
                          user_schedule=ev.schedule)
    result["weight_change"] = weight_change(before, model)
    k = min(len(ytr), INIT_SAMPLES[budget])
    result["train_acc_eval"] = rt.accuracy(rt.predict(model, rt.take(xtr, np.arange(k))), ytr[:k])
    if data["val"] is not None and rt.reestimate_batchnorm(model, rt.take(xtr, np.arange(k))):
        # After a short run batch norm's running statistics still trail the weights (Keras'
        # momentum 0.99 keeps 45% of the initial statistics after 80 steps): validation accuracy
        # read with them understates what the model learned. Measured again with statistics
        # re-estimated on training samples, for the overfitting check.
        xv, yv = data["val"]
        result["val_acc_bn_refreshed"] = rt.accuracy(rt.predict(model, xv), yv)
    counts = np.bincount(rt.integer_labels(ytr), minlength=data["num_classes"])
    result["majority_share"] = float(counts.max() / max(1, counts.sum()))
    result["loss_mid"] = _mid_mean(result["history"]["loss"])
    result.update({"batch_size": bs, "epochs_planned": epochs, "samples": len(ytr),
                   "num_classes": data["num_classes"], "note": data["note"],
                   "ln_c": math.log(data["num_classes"]) if data["num_classes"] > 1 else None,
                   "logits_relu": logits_relu_name(ev.graph), "record_every": every,
                   "user_lr": rt.user_lr(ev.model, ev.optimizer, ev.schedule),
                   "scheduled": result["history"].get("scheduled", False),
                   "optimizer": rt.describe_optimizer(ev.optimizer, ev.model)})
    ev.probes["train"] = result
    curve = _curve(result["history"]["loss"])
    ev.figures["loss_curve"] = {**curve, "ln_c": result["ln_c"],
                                "epoch_loss": result["history"]["epoch_loss"],
                                "val_acc": result["history"]["val_acc"]}
    if result["scheduled"]:  # the rates the user's scheduler gave the copy, at the same steps
        ev.figures["loss_curve"]["lr"] = [result["history"]["lr"][i] for i in curve["step"]]
    ev.figures["training_layers"] = {"relu": result["relu"], "gradients": result["gradients"]}


def run_recorded(model, recorder: LayerRecorder, x, y, **fit_kwargs) -> dict:
    """``runtime.fit`` with ``recorder`` sampling its steps; a summary of what it saw."""

    started = time.perf_counter()
    max_steps, max_seconds = fit_kwargs.get("max_steps"), fit_kwargs.get("max_seconds")

    def on_step(info: rt.StepInfo):
        recorder.after_backward(info.step)
        if info.step == DENSE_RECORDING_AFTER and max_steps and max_seconds:
            # A model this slow will be cut by the time limit: record every step from now on, so
            # that the fewer steps it gets still fill the dead-unit window.
            per_step = (time.perf_counter() - started) / (info.step + 1)
            if per_step * max_steps > max_seconds:
                recorder.every = 1
        return False

    try:
        history = rt.fit(model, x, y, on_step=on_step, forward_context=recorder.forward,
                         **fit_kwargs)
    finally:
        recorder.close()
    losses = history["loss"]
    finite = [v for v in losses if math.isfinite(v)]
    return {
        "history": history,
        "steps": history["steps"],
        "steps_planned": fit_kwargs.get("max_steps"),
        "stopped": history["stopped"],
        "seconds": history["seconds"],
        "loss_first": _window_mean(losses, True),
        "loss_last": _window_mean(losses, False),
        "loss_min": float(min(finite)) if finite else None,
        "loss_max": float(max(finite)) if finite else None,
        "nonfinite_step": history["nonfinite_step"],
        "nonfinite_grad_step": recorder.nonfinite_grad_step,
        "relu": recorder.relu_summary(),
        "gradients": recorder.gradient_summary(),
        "total_grad_norm": recorder.total_grad,
        "grad_steps": recorder.grad_steps,
        "val_acc": history["val_acc"][-1] if history["val_acc"] else None,
        "train_acc": history["acc"][-1] if history["acc"] else None,
    }


@register("overfit_batch")
def probe_overfit_batch(ev: Evidence, ctx: ProbeContext) -> None:
    """Train on one small batch until it is fitted (or the budget ends)."""
    reason = _needs_training(ev)
    if reason:
        ev.probes["overfit_batch"] = {"skipped": reason}
        return
    x, y = ev.train.x, (ev.train.y if ev.train.y is not None else ev.train.labels)
    labels = ev.train.labels
    rng = np.random.default_rng(_probe_seed(ctx, 4))
    # A batch with as many classes as possible: round-robin over the classes present.
    by_class = [rng.permutation(np.flatnonzero(labels == c)).tolist() for c in np.unique(labels)]
    idx: list[int] = []
    while len(idx) < min(OVERFIT_SAMPLES, len(labels)):
        for members in by_class:
            if members and len(idx) < OVERFIT_SAMPLES:
                idx.append(members.pop())
    idx_arr = np.sort(np.asarray(idx))
    xb, yb = rt.take(x, idx_arr), rt.to_numpy(y)[idx_arr]
    steps = OVERFIT_STEPS[ctx.budget]
    attempts = []
    deadline = time.perf_counter() + OVERFIT_SECONDS[ctx.budget]  # for all attempts together
    for i, lr in enumerate(OVERFIT_LRS):
        left = deadline - time.perf_counter()
        if attempts and left < OVERFIT_MIN_SECONDS:
            break
        ctx.say(f"overfitting one batch of {len(idx_arr)} samples (Adam, lr {lr:g}, "
                f"{steps} steps at most)")
        attempt = _overfit_once(ev, xb, yb, lr, steps, _probe_seed(ctx, 5 + i), left)
        attempts.append(attempt)
        if attempt["accuracy"] is not None and attempt["accuracy"] >= 1.0:
            break
    best = max(attempts, key=lambda a: (a["accuracy"] or 0.0, -a["steps"]))
    ev.probes["overfit_batch"] = {
        "samples": int(len(idx_arr)), "classes": int(len(np.unique(rt.integer_labels(yb)))),
        "max_steps": steps, **best, "attempts": attempts,
        # the test was cut by the time limit before every planned attempt ran its steps
        "cut_short": any(a["stopped"] == "time" for a in attempts)
        or len(attempts) < len(OVERFIT_LRS) and not (best["accuracy"] or 0.0) >= 1.0}


def _overfit_once(ev: Evidence, xb, yb, lr: float, steps: int, seed: int,
                  max_seconds: float) -> dict:
    model = rt.clone(ev.model)
    augmentation_off = rt.disable_augmentation(model)
    check_every = 10
    trace: list[tuple[int, float]] = []

    bn_trace: list[tuple[int, float]] = []

    def fitted() -> float | None:
        acc = rt.accuracy(rt.predict(model, xb), yb)
        if acc is not None and acc < 1.0 and rt.reestimate_batchnorm(model, xb):
            # Batch norm predicts with running statistics that trail the batch's: judged in
            # inference mode only, a batch fitted in training mode reads as unfitted.
            bn = rt.accuracy(rt.predict(model, xb), yb)
            bn_trace.append((len(trace) + 1, bn))
            acc = max(acc, bn if bn is not None else acc)
        return acc

    def on_step(info: rt.StepInfo):
        if (info.step + 1) % check_every == 0:
            acc = fitted()
            trace.append((info.step + 1, acc))
            return acc is not None and acc >= 1.0
        return False

    history = rt.fit(model, xb, yb, loss=ev.loss, optimizer=_adam_for(ev), epochs=steps,
                     batch_size=len(yb), seed=seed, lr=lr, max_steps=steps, on_step=on_step,
                     max_seconds=max_seconds)
    losses = history["loss"]
    # on_step sees the weights before the step's update, and fit still applies that update when
    # the callback stops it; one more Adam step can knock a fitted sample off again. The test asks
    # whether the model can fit the batch, so the best accuracy it reached is what counts.
    final = fitted()
    reached = [a for _, a in trace if a is not None] + ([final] if final is not None else [])
    return {"optimizer": f"Adam(lr={lr:g})", "steps": history["steps"],
            "accuracy": max(reached) if reached else None, "final_accuracy": final,
            "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None,
            "nonfinite": history["stopped"] == "nonfinite", "accuracy_trace": trace,
            "batchnorm_reestimated": bool(bn_trace), "augmentation_off": augmentation_off,
            "seconds": history["seconds"], "stopped": history["stopped"]}


def _adam_for(ev: Evidence):
    if ev.framework == "keras":
        return "adam"
    import torch

    return torch.optim.Adam


@register("lr_range", budgets=("standard", "thorough"))
def probe_lr_range(ev: Evidence, ctx: ProbeContext) -> None:
    """Sweep the learning rate exponentially and record where the loss falls and where it blows up."""
    reason = _needs_training(ev)
    if reason:
        ev.probes["lr_range"] = {"skipped": reason}
        return
    start_lr = rt.user_lr(ev.model, ev.optimizer, ev.schedule)
    data = _split(ev, ctx.budget, _probe_seed(ctx, 6))
    xtr, ytr = data["train"]
    bs = _batch_size(ev, len(ytr))
    steps = LR_RANGE_STEPS[ctx.budget]
    epochs, steps = _steps_plan(len(ytr), bs, steps)
    centre = start_lr if start_lr and start_lr > 0 else LR_DEFAULT
    lo = max(LR_RANGE_MIN, min(centre / LR_RANGE_BELOW, LR_RANGE_COVER[0]))
    hi = min(LR_RANGE_MAX, max(centre * LR_RANGE_ABOVE, LR_RANGE_COVER[1]))
    ctx.say(f"learning-rate range test ({steps} steps, {lo:.2g} to {hi:.2g})")
    model = rt.clone(ev.model)
    ratio = (hi / lo) ** (1.0 / max(1, steps - 1))
    smooth = {"avg": 0.0, "best": float("inf"), "n": 0}
    smoothed: list[float] = []

    def schedule(step: int) -> float:
        return lo * ratio ** step

    def on_step(info: rt.StepInfo):
        smooth["n"] += 1
        smooth["avg"] = LR_SMOOTH_BETA * smooth["avg"] + (1 - LR_SMOOTH_BETA) * info.loss
        value = smooth["avg"] / (1 - LR_SMOOTH_BETA ** smooth["n"])
        smoothed.append(value)
        smooth["best"] = min(smooth["best"], value)
        return smooth["n"] > 5 and value > LR_DIVERGE_FACTOR * smooth["best"]

    history = rt.fit(model, xtr, ytr, loss=ev.loss, optimizer=ev.optimizer, epochs=epochs,
                     batch_size=bs, seed=_probe_seed(ctx, 7), max_steps=steps,
                     lr_schedule=schedule, on_step=on_step)
    lrs = [schedule(i) for i in range(len(smoothed))]
    result = {"user_lr": start_lr, "lrs": lrs, "loss": smoothed, "raw_loss": history["loss"],
              "steps": len(smoothed), "optimizer": rt.describe_optimizer(ev.optimizer, ev.model)}
    result.update(_range_summary(lrs, smoothed, history))
    ev.probes["lr_range"] = result
    ev.figures["lr_range"] = {"lr": lrs, "loss": [v if math.isfinite(v) else None
                                                  for v in smoothed],
                              "user_lr": start_lr, "suggested_lr": result.get("suggested_lr")}


def _range_summary(lrs: list[float], smoothed: list[float], history: dict) -> dict:
    if len(smoothed) < 5:
        return {"conclusive": False}
    arr = np.asarray(smoothed)
    finite = np.isfinite(arr)
    best_i = int(np.nanargmin(np.where(finite, arr, np.nan)))
    start = float(np.mean(arr[:3]))
    # Steepest descent: the most negative slope of the smoothed loss against log10(lr), over the
    # part of the sweep before the minimum.
    log_lr = np.log10(lrs)
    # (The first tenth of the sweep is skipped: the moving average is still settling there.)
    steepest_i = None
    skip = max(1, len(arr) // 10)
    if best_i >= skip + 2:
        slopes = np.gradient(arr[:best_i + 1], log_lr[:best_i + 1])
        steepest_i = skip + int(np.argmin(slopes[skip:]))
    # Diverged: past the minimum, the loss is back above where the sweep started (training at
    # that rate makes the model worse than not training), or non-finite.
    diverged_i = None
    for i in range(best_i + 1, len(arr)):
        if not finite[i] or arr[i] > start:
            diverged_i = i
            break
    if diverged_i is None and history.get("stopped") == "nonfinite":
        diverged_i = len(arr) - 1
    fell = (start - arr[best_i]) / start if start > 0 else 0.0
    # Suggested: an order of magnitude below the minimum (Smith 2017; fastai's "minimum/10").
    return {"conclusive": True, "loss_start": start, "loss_best": float(arr[best_i]),
            "fell_share": float(fell), "best_lr": lrs[best_i],
            "steepest_lr": lrs[steepest_i] if steepest_i is not None else None,
            "diverged_lr": lrs[diverged_i] if diverged_i is not None else None,
            "suggested_lr": lrs[best_i] / 10.0}


@register("seeds", budgets=("standard", "thorough"))
def probe_seeds(ev: Evidence, ctx: ProbeContext) -> None:
    """k short runs from fresh initialisations: the spread of validation accuracy."""
    reason = _needs_training(ev)
    if reason:
        ev.probes["seeds"] = {"skipped": reason}
        return
    data = _split(ev, ctx.budget, _probe_seed(ctx, 8))
    xtr, ytr = data["train"]
    xv, yv = data["val"]
    bs = _batch_size(ev, len(ytr))
    k = SEED_RUNS[ctx.budget]
    epochs, steps = _steps_plan(len(ytr), bs, SEED_STEPS[ctx.budget])
    c = data["num_classes"]
    seeds = [_probe_seed(ctx, 100 + i) for i in range(k)]
    settings = {"loss": ev.loss, "optimizer": ev.optimizer, "schedule": ev.schedule,
                "epochs": epochs, "batch_size": bs,
                "steps": steps, "max_seconds": SEED_SECONDS[ctx.budget], "num_classes": c}
    jobs = [Job(seed_run, (ev.model, xtr, ytr, xv, yv), {"seed": seed, **settings},
                label=f"multi-seed study, seed {seed} ({steps} steps)") for seed in seeds]
    ctx.say(f"multi-seed study: {k} runs of {steps} steps")
    runs = run_jobs(jobs, getattr(ctx, "executor", "auto"), progress=ctx.say)
    notes = get_last_notes()
    skipped = next((r["skipped"] for r in runs if "skipped" in r), None)
    if skipped:
        ev.probes["seeds"] = {"skipped": skipped}
        return
    accs = np.asarray([r["val_acc"] for r in runs if r["val_acc"] is not None], dtype=float)
    result = {"runs": runs, "k": int(len(accs)), "steps": steps, "val_samples": int(len(yv)),
              "note": data["note"]}
    if notes:
        result["executor_notes"] = notes
    result.update(spread_statistics(accs, len(yv)))
    ev.probes["seeds"] = result
    ev.figures["seeds"] = {"val_acc": accs.tolist(), "mean": result.get("mean"),
                           "std": result.get("std")}


def seed_run(model, xtr, ytr, xv, yv, *, seed: int, loss, optimizer, epochs: int,
             batch_size: int, steps: int, max_seconds: float, num_classes: int,
             schedule: list | None = None) -> dict:
    """One run of the multi-seed study (an executor job): a fresh initialisation of ``model``
    from ``seed``, trained with the user's loss and optimizer; plain figures only."""
    try:
        fresh = rt.clone(model, seed=seed, reinit=True)
    except NotImplementedError as exc:
        return {"seed": seed, "skipped": str(exc)}
    history = rt.fit(fresh, xtr, ytr, loss=loss, optimizer=optimizer, epochs=epochs,
                     batch_size=batch_size, seed=seed, max_steps=steps, max_seconds=max_seconds,
                     user_schedule=schedule)
    if history["stopped"] != "nonfinite":
        # As in probe_train: after 150 steps batch norm's running statistics still trail the
        # weights (Keras keeps 22% of the initial ones), and how far differs from seed to seed:
        # the clean zoo's Keras batch-norm models spread over 45-100% with them, a spread of the
        # statistics, not of what the seeds learned. Re-estimated on training images first.
        rt.reestimate_batchnorm(fresh, rt.take(xtr, np.arange(min(len(ytr),
                                                                   INIT_SAMPLES["standard"]))))
    out = rt.predict(fresh, xv)
    acc = rt.accuracy(out, yv)
    pred = out.argmax(axis=1) if out.ndim == 2 and out.shape[1] > 1 else None
    never = int(num_classes - len(np.unique(pred))) if pred is not None else None
    return {"seed": seed, "val_acc": acc, "steps": history["steps"],
            "final_loss": history["epoch_loss"][-1] if history["epoch_loss"] else None,
            "classes_never_predicted": never, "stopped": history["stopped"],
            "nonfinite": history["stopped"] == "nonfinite"}


def spread_statistics(accs: np.ndarray, n_val: int) -> dict:
    """Spread of accuracies across seeds, against the spread sampling noise alone would give.

    Sampling noise: an accuracy p measured on n samples has a binomial standard error
    sqrt(p (1 - p) / n). Under "the seeds differ only by that noise", (k - 1) s^2 / sigma0^2
    follows a chi-square law with k - 1 degrees of freedom: its upper tail is the p-value. The
    interval for the standard deviation is the chi-square one, for the mean Student's t.
    """
    from scipy import stats

    k = len(accs)
    if k < 2:
        return {"mean": float(accs.mean()) if k else None, "std": None}
    mean = float(accs.mean())
    std = float(accs.std(ddof=1))
    p = min(max(mean, 1.0 / max(n_val, 1)), 1 - 1.0 / max(n_val, 1))
    sigma0 = math.sqrt(p * (1 - p) / max(n_val, 1))
    chi = (k - 1) * std ** 2 / sigma0 ** 2 if sigma0 > 0 else float("inf")
    p_value = float(stats.chi2.sf(chi, k - 1))
    lo_chi, hi_chi = stats.chi2.ppf([0.975, 0.025], k - 1)
    t = float(stats.t.ppf(0.975, k - 1))
    half = t * std / math.sqrt(k)
    return {"mean": mean, "std": std, "min": float(accs.min()), "max": float(accs.max()),
            "range": float(accs.max() - accs.min()),
            "std_ci95": [std * math.sqrt((k - 1) / lo_chi), std * math.sqrt((k - 1) / hi_chi)],
            "mean_ci95": [mean - half, mean + half],
            "sampling_std": sigma0, "std_ratio": std / sigma0 if sigma0 > 0 else None,
            "p_value": p_value}
