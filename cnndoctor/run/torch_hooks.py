"""PyTorch instrumentation: global module and optimizer hooks, loss functions, save/load.

Installed for the duration of a session only. Everything is observed, nothing changed: hooks
return None, patched functions call the original with the same arguments and return its result.

- The model being trained: a module called at the top level (not inside another module) whose
  parameters an optimizer steps. Its calls with gradients on and ``module.training`` set are the
  training batches; the others are evaluation batches (``no_grad``/``inference_mode`` or
  ``model.eval()``), with a note of whether dropout/batch norm were still in training mode.
- The loss: the first loss module (``nn.CrossEntropyLoss()``...) or function
  (``F.cross_entropy``...) applied to the model's output in training; its target gives the labels.
- Gradient resets: after each optimizer step, the next backward pass into one parameter is
  inspected: gradients still holding the previous step's values mean they were never reset.
"""
from __future__ import annotations

from .patching import Patches

import weakref
from typing import Any

from .records import EVALUATION, TRAINING, ModelRecord

# Functional losses watched (torch.nn.functional names).
LOSS_FUNCTIONS = ("cross_entropy", "nll_loss", "binary_cross_entropy",
                  "binary_cross_entropy_with_logits", "mse_loss", "l1_loss", "smooth_l1_loss",
                  "huber_loss", "kl_div", "multi_margin_loss", "soft_margin_loss",
                  "multilabel_soft_margin_loss")
# Gradient norms kept per model (first ones and the most recent ones), for the evidence.
MAX_GRAD_NORMS = 2000


class TorchInstrument(Patches):
    def __init__(self, session):
        self.session = session
        self.handles: list = []
        Patches.__init__(self)
        self.depth = 0
        self.loss_depth = 0
        self.kind_cache: dict[type, str] = {}
        self.last_out: Any = None  # weakref to the last top-level output of a tracked model
        self.last_stream = None
        self.last_rec: ModelRecord | None = None
        self.opt_records: dict[int, ModelRecord | None] = {}
        self.loaded_objects: dict[int, tuple[Any, str]] = {}  # id(obj) -> (obj, path)
        self.torch = None
        # Samples in a DataLoader pass that reads its dataset in order (no shuffling): the next
        # stream fed keeps its samples spread over that pass, not the first ones only (data kept
        # in class order, e.g. an ImageFolder, would give the first classes alone).
        self.pending_pass: int | None = None

    # ---- install / uninstall -------------------------------------------------------------
    def install(self) -> None:
        import torch
        import torch.nn.functional as F
        from torch.nn.modules import module as module_mod
        from torch.optim import optimizer as optim_mod

        self.torch = torch
        self.handles += [
            module_mod.register_module_forward_pre_hook(self._pre),
            module_mod.register_module_forward_hook(self._post, always_call=True),
            optim_mod.register_optimizer_step_pre_hook(self._step_pre),
            optim_mod.register_optimizer_step_post_hook(self._step_post),
        ]
        for name in LOSS_FUNCTIONS:
            orig = getattr(F, name, None)
            if orig is not None:
                self._patch(F, name, self._wrap_loss_fn(orig, name))
        self._patch(torch.optim.Optimizer, "zero_grad",
                    self._wrap_zero_grad(torch.optim.Optimizer.zero_grad, optimizer=True))
        self._patch(torch.nn.Module, "zero_grad",
                    self._wrap_zero_grad(torch.nn.Module.zero_grad, optimizer=False))
        self._patch(torch.Tensor, "backward", self._wrap_backward(torch.Tensor.backward))
        from torch.utils.data import DataLoader

        self._patch(DataLoader, "__iter__", self._wrap_loader_iter(DataLoader.__iter__))
        from torch.utils.data import dataloader as loader_mod

        workers_iter = getattr(loader_mod, "_MultiProcessingDataLoaderIter", None)
        if workers_iter is not None and hasattr(workers_iter, "_shutdown_workers"):
            self._patch(workers_iter, "_shutdown_workers",
                        self._wrap_shutdown(workers_iter._shutdown_workers))
        self._patch(torch, "save", self._wrap_save(torch.save))
        self._patch(torch, "load", self._wrap_load(torch.load))
        self._patch(torch.nn.Module, "load_state_dict",
                    self._wrap_load_state_dict(torch.nn.Module.load_state_dict))

    def uninstall(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
        for rec in self.session.records:
            if rec.sentinel is not None:
                rec.sentinel[1].remove()
                rec.sentinel = None
        self.restore()

    # ---- module kinds --------------------------------------------------------------------
    def _kind(self, module) -> str:
        t = type(module)
        kind = self.kind_cache.get(t)
        if kind is None:
            import sys

            keras = sys.modules.get("keras")
            if keras is not None and isinstance(module, keras.layers.Layer):
                kind = "keras"
            elif isinstance(module, self.torch.nn.modules.loss._Loss):
                kind = "loss"
            else:
                kind = "module"
            self.kind_cache[t] = kind
        return kind

    # ---- forward hooks -------------------------------------------------------------------
    def _pre(self, module, args):
        depth = self.depth
        self.depth = depth + 1
        if not self.session.active:
            return None
        kind = self._kind(module)
        if kind == "module":
            if depth == 0:
                self._root_call(module, args)
        elif kind == "loss":
            self.loss_depth += 1
            if len(args) >= 2 and not self.session.in_keras_step:
                self._loss_call(module, args[0], args[1])
        return None

    def _post(self, module, args, output):
        self.depth = max(0, self.depth - 1)
        if not self.session.active:
            return None
        kind = self.kind_cache.get(type(module))
        if kind == "loss":
            self.loss_depth = max(0, self.loss_depth - 1)
        elif kind == "keras":
            self.session.keras_forward_done(module, output, self.depth)
        elif kind == "module" and self.depth == 0 and self.last_rec is not None \
                and self.last_rec.model is module:
            out = _first_tensor(output)
            if out is not None:
                self.last_out = weakref.ref(out)
                if self.last_stream is not None and self.last_stream.phase != TRAINING:
                    self.last_stream.set_last_outputs(out)
        return None

    def _root_call(self, module, args) -> None:
        torch = self.torch
        x = args[0] if args else None
        if not isinstance(x, torch.Tensor):
            self.last_rec = None
            return
        rec = self.session.torch_record(module)
        if rec is None:
            self.last_rec = None
            return
        grad = torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
        phase = TRAINING if (grad and module.training) else EVALUATION
        stream = self.session.stream(rec, phase)
        if self.pending_pass is not None:
            stream.begin(self.pending_pass, spread=True)
            self.pending_pass = None
        stream.add(x)
        notes = stream.notes
        notes["calls"] = notes.get("calls", 0) + 1
        if phase == EVALUATION:
            if module.training:
                notes["calls_in_training_mode"] = notes.get("calls_in_training_mode", 0) + 1
            if grad:
                notes["calls_with_grad"] = notes.get("calls_with_grad", 0) + 1
        self.last_rec, self.last_stream, self.last_out = rec, stream, None

    # ---- losses --------------------------------------------------------------------------
    def _loss_call(self, loss_obj, inp, target) -> None:
        torch = self.torch
        rec, stream = self.last_rec, self.last_stream
        if rec is None or stream is None or not isinstance(inp, torch.Tensor):
            return
        ref = self.last_out() if self.last_out is not None else None
        linked = ref is not None and (inp is ref or _same_batch(inp, ref))
        if not linked:
            linked = stream._last_rows is not None and inp.ndim >= 1 \
                and inp.shape[0] == stream.last_n and stream.ys and stream.ys[-1] is None
        if not linked:
            return
        stream.set_last_labels(target)
        if stream.phase == TRAINING and rec.loss is None and torch.is_grad_enabled():
            rec.loss = loss_obj
            rec.loss_name = (type(loss_obj).__name__ if isinstance(loss_obj, torch.nn.Module)
                             else f"F.{getattr(loss_obj, '__name__', 'loss')}")

    def _wrap_loss_fn(self, orig, name):
        inst = self

        def loss_fn(input, target, *args, **kwargs):
            if inst.session.active and inst.loss_depth == 0 and not inst.session.in_keras_step:
                try:
                    inst._loss_call(orig, input, target)
                except Exception:  # observing must never break the script
                    pass
            return orig(input, target, *args, **kwargs)

        loss_fn.__name__ = orig.__name__
        loss_fn.__qualname__ = getattr(orig, "__qualname__", orig.__name__)
        loss_fn.__doc__ = orig.__doc__
        loss_fn.__wrapped__ = orig
        return loss_fn

    # ---- the tensor backward() is called on: the loss of the step -----------------------
    def _wrap_backward(self, orig):
        inst = self

        def backward(self_, *args, **kwargs):
            if inst.session.active and not inst.session.in_keras_step:
                inst.session.guard(lambda: inst._backward(self_))
            return orig(self_, *args, **kwargs)

        backward.__wrapped__ = orig
        backward.__doc__ = orig.__doc__
        return backward

    def _backward(self, loss) -> None:
        from . import handwritten_loss as hw

        rec, stream = self.last_rec, self.last_stream
        if rec is None or stream is None or stream.phase != TRAINING or loss.ndim != 0 \
                or loss.grad_fn is None:
            return
        if len(rec.observed_losses) < hw.MAX_OBSERVED:
            rec.observed_losses.append(float(loss.detach()))
        if rec.loss is not None and rec.hand_loss is None:  # a known loss gave the labels
            return
        out = self.last_out() if self.last_out is not None else None
        if stream.ys and stream.ys[-1] is None and stream._last_rows is not None:
            y = hw.labels(loss, stream.last_n, out)
            if y is not None:
                stream.set_last_labels(y)
        if rec.hand_loss is None:
            kind, ops = hw.expects(loss, out)
            how = hw.reduction(loss, stream.last_n)
            rec.hand_loss = {"expects": kind, "ops": ops, "reduction": how}
            if kind is not None:
                rec.loss = hw.equivalent_loss(kind, how)
                rec.loss_name = (f"hand-written loss ({' -> '.join(ops) or '?'} of the output, "
                                 f"reduced by {how}): expects {kind}")
                used = (type(rec.loss).__name__ if kind == hw.EXPECTS_LOGITS
                        else "the same formula")
                self.session.notes.append(
                    f"the loss is written out by hand ({' -> '.join(ops)} applied to the "
                    f"model's output, then {how}): it expects {kind}; the probes use {used} "
                    f"with reduction={how!r}")

    # ---- optimizers and gradient resets --------------------------------------------------
    def _record_for_optimizer(self, opt) -> ModelRecord | None:
        key = id(opt)
        if key in self.opt_records and self.opt_records[key] is not None:
            return self.opt_records[key]
        params = [p for g in opt.param_groups for p in g["params"]]
        ids = {id(p) for p in params}
        found = None
        for rec in reversed(self.session.records):
            if rec.framework != "torch":
                continue
            if any(id(p) in ids for p in rec.model.parameters()):
                found = rec
                break
        self.opt_records[key] = found
        return found

    def _step_pre(self, opt, args, kwargs):
        if not self.session.active:
            return None
        rec = self._record_for_optimizer(opt)
        if rec is None:
            self.session.orphan_steps += 1
            return None
        rec.optimizer = opt
        rec.steps += 1
        if rec.sentinel is None:
            self._attach_sentinel(rec, opt)
        if rec.sentinel is not None and len(rec.grad_norms) < MAX_GRAD_NORMS:
            p = rec.sentinel[2]()
            if p is not None and p.grad is not None:
                rec.grad_norms.append(float(p.grad.detach().norm()))
        return None

    def _step_post(self, opt, args, kwargs):
        if not self.session.active:
            return None
        rec = self.opt_records.get(id(opt))
        if rec is not None:
            rec.after_step = True
        return None

    def _attach_sentinel(self, rec: ModelRecord, opt) -> None:
        # One parameter with a gradient stands for all: the first backward pass after a step
        # shows whether its gradient was reset (None or zeros) or still holds the last step's.
        names = {id(p): n for n, p in rec.model.named_parameters()}
        for group in opt.param_groups:
            for p in group["params"]:
                if p.grad is not None and p.requires_grad:
                    ref = weakref.ref(p)

                    def check(grad, rec=rec, ref=ref):
                        if rec.after_step and self.session.active:
                            rec.after_step = False
                            param = ref()
                            rec.grad_checks += 1
                            if param is not None and param.grad is not None \
                                    and bool(param.grad.detach().ne(0).any()):
                                rec.stale_grad_steps += 1
                        return None

                    handle = p.register_hook(check)
                    rec.sentinel = (names.get(id(p), "parameter"), handle, ref)
                    rec.sentinel_name = rec.sentinel[0]
                    return

    def _wrap_zero_grad(self, orig, optimizer: bool):
        inst = self

        def zero_grad(self_, *args, **kwargs):
            if inst.session.active and not inst.session.in_keras_step:
                try:
                    if optimizer:
                        rec = inst._record_for_optimizer(self_)
                    else:
                        rec = inst.session.known_torch_record(self_)
                    if rec is not None:
                        rec.zero_grad_calls += 1
                except Exception:
                    pass
            return orig(self_, *args, **kwargs)

        zero_grad.__wrapped__ = orig
        zero_grad.__doc__ = orig.__doc__
        return zero_grad

    # ---- data loaders --------------------------------------------------------------------
    def _wrap_loader_iter(self, orig):
        inst = self

        def __iter__(self_):
            if inst.session.active:
                inst.session.guard(lambda: inst._loader_pass(self_))
            with inst.session.held():  # starting workers: a stop waits until they run
                return orig(self_)

        __iter__.__wrapped__ = orig
        __iter__.__doc__ = orig.__doc__
        return __iter__

    def _wrap_shutdown(self, orig):
        inst = self

        def _shutdown_workers(self_, *args, **kwargs):
            # runs at the end of a pass and in the iterator's destructor: a stop cutting it
            # leaves workers running for good, so the stop waits for the watchdog's next try
            with inst.session.held(deferred=True):
                return orig(self_, *args, **kwargs)

        _shutdown_workers.__wrapped__ = orig
        return _shutdown_workers

    def _loader_pass(self, loader) -> None:
        from torch.utils.data import SequentialSampler

        sampler = getattr(loader, "sampler", None)
        self.pending_pass = None
        if isinstance(sampler, SequentialSampler):
            try:
                self.pending_pass = len(sampler)
            except TypeError:  # a data source without a length (Keras' own loaders)
                pass

    # ---- save / load ---------------------------------------------------------------------
    def _wrap_save(self, orig):
        inst = self

        def save(obj, f, *args, **kwargs):
            with inst.session.held():  # a stop waits: never a half-written file
                result = orig(obj, f, *args, **kwargs)
            if inst.session.active:
                inst.session.guard(lambda: inst._saved(obj, f))
            return result

        save.__wrapped__ = orig
        save.__doc__ = orig.__doc__
        return save

    def _saved(self, obj, f) -> None:
        path = _path_of(f)
        if path is None:
            return
        rec = self._owner_of(obj)
        if rec is not None:
            self.session.on_saved(rec, path)

    def _owner_of(self, obj, depth: int = 0) -> ModelRecord | None:
        """The tracked model that ``obj`` is (a module) or holds the weights of (a state dict)."""
        torch = self.torch
        if isinstance(obj, torch.nn.Module):
            return self.session.known_torch_record(obj)
        if isinstance(obj, dict) and depth < 2:
            tensors = [v for v in obj.values() if isinstance(v, torch.Tensor)]
            if tensors:
                ptrs = {t.data_ptr() for t in tensors[:8]}
                for rec in reversed(self.session.records):
                    if rec.framework == "torch" and any(
                            p.data_ptr() in ptrs for p in rec.model.parameters()):
                        return rec
            for v in obj.values():
                if isinstance(v, (dict, torch.nn.Module)):
                    found = self._owner_of(v, depth + 1)
                    if found is not None:
                        return found
        return None

    def _wrap_load(self, orig):
        inst = self

        def load(f, *args, **kwargs):
            obj = orig(f, *args, **kwargs)
            if inst.session.active:
                inst.session.guard(lambda: inst._loaded(obj, f))
            return obj

        load.__wrapped__ = orig
        load.__doc__ = orig.__doc__
        return load

    def _loaded(self, obj, f) -> None:
        path = _path_of(f)
        if path is None:
            return
        torch = self.torch
        if isinstance(obj, torch.nn.Module):
            self.session.on_loaded(obj, path, framework="torch")
            return
        if isinstance(obj, dict):
            self.loaded_objects[id(obj)] = (obj, path)
            for v in obj.values():
                if isinstance(v, dict):
                    self.loaded_objects[id(v)] = (v, path)
                elif isinstance(v, torch.nn.Module):
                    self.session.on_loaded(v, path, framework="torch")

    def _wrap_load_state_dict(self, orig):
        inst = self

        def load_state_dict(self_, state_dict, *args, **kwargs):
            result = orig(self_, state_dict, *args, **kwargs)
            if inst.session.active and id(state_dict) in inst.loaded_objects \
                    and inst._kind(self_) == "module":
                path = inst.loaded_objects[id(state_dict)][1]
                inst.session.guard(lambda: inst.session.on_loaded(self_, path, framework="torch"))
            return result

        load_state_dict.__wrapped__ = orig
        load_state_dict.__doc__ = orig.__doc__
        return load_state_dict


def _first_tensor(output):
    import torch

    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


def _same_batch(a, b) -> bool:
    """``a`` is a view/reshape of ``b`` (out.view(...), out.squeeze(1), ...)."""
    try:
        return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr() \
            and a.numel() == b.numel()
    except Exception:
        return False


def _path_of(f) -> str | None:
    import os

    if isinstance(f, (str, os.PathLike)):
        return os.path.abspath(os.fspath(f))
    return None


__all__ = ["TorchInstrument"]
