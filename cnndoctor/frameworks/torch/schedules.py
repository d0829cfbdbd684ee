"""A torch learning-rate scheduler, followed by the probes' short trainings.

``diagnose(..., scheduler=)`` takes the user's ``torch.optim.lr_scheduler`` object (OneCycleLR,
CosineAnnealingLR, LinearLR, ...); ``replay`` turns it into plain figures once (the settings of
every parameter group before each of its steps: picklable, for the executor's workers), and
``cnndoctor.runtime.fit(user_schedule=...)`` follows them. The probes train a copy for far fewer steps
than the user's run, so the schedule is followed *in proportion*: step ``i`` of a probe of
``n`` steps gets the rates the user's scheduler gives at ``i * H / n`` of its length ``H``
(``total_steps``, ``T_max``, ``total_iters``). The warm-up, the peak and the annealing of the
user's run all fall inside the probe, whether the user steps the scheduler per batch or per
epoch.

The schedule is replayed on a replica over a one-tensor optimizer: the user's scheduler and
optimizer are never stepped. A scheduler whose length is not known (StepLR, ExponentialLR,
LambdaLR, warm restarts, ReduceLROnPlateau, which follows a metric) is not followed: the probes
train at the optimizer's current rate, as without a scheduler.

Keras needs none of this: a ``keras.optimizers.schedules`` schedule lives in the optimizer and is
cloned with it.
"""
from __future__ import annotations

import copy
import warnings
from typing import Any, Callable

#: what a replayed step may change in a parameter group: the rate, and the momentum that
#: OneCycleLR cycles against it (``momentum`` for SGD, ``betas[0]`` for Adam-style optimizers)
SCHEDULED_KEYS = ("lr", "momentum", "betas")
#: longest schedule replayed step by step (a longer one is sampled at this many points, so that
#: a OneCycleLR over 100 epochs of 5,000 batches, 500,000 steps, replays in about a second)
MAX_REPLAY = 20_000


def is_scheduler(obj: Any) -> bool:
    try:
        from torch.optim.lr_scheduler import LRScheduler
    except ImportError:  # torch < 2.0
        from torch.optim.lr_scheduler import _LRScheduler as LRScheduler
    return isinstance(obj, LRScheduler)


def length(scheduler: Any) -> int | None:
    """Scheduler steps the user's run spans, when the scheduler says; None otherwise."""
    subs = getattr(scheduler, "_schedulers", None)
    if subs is not None:  # SequentialLR: milestones then the last one; ChainedScheduler: longest
        lengths = [length(s) for s in subs]
        if None in lengths:
            return None
        milestones = getattr(scheduler, "_milestones", None)
        if milestones:
            return int(milestones[-1]) + int(lengths[-1])
        return max(lengths)
    for attr in ("total_steps", "T_max", "total_iters"):
        value = getattr(scheduler, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _replica(scheduler: Any):
    """A copy of ``scheduler`` over a one-tensor optimizer with the same groups, at its start."""
    import torch

    user_opt = scheduler.optimizer
    dummy_param = torch.zeros(1, requires_grad=True)
    groups = [{**copy.deepcopy({k: v for k, v in g.items() if k != "params"}),
               "params": [dummy_param] if i == 0 else [torch.zeros(1, requires_grad=True)]}
              for i, g in enumerate(user_opt.param_groups)]
    dummy = torch.optim.SGD(groups, lr=float(user_opt.param_groups[0]["lr"]))
    # every reference to the user's optimizer (sub-schedulers included) becomes the dummy
    replica = copy.deepcopy(scheduler, memo={id(user_opt): dummy})
    if getattr(replica, "_schedulers", None) is None and hasattr(replica, "_initial_step"):
        # back to the start of the run, as the constructor left it (a scheduler given after
        # training stands at its end)
        for g in dummy.param_groups:
            if "initial_lr" in g:
                g["lr"] = g["initial_lr"]
        replica.last_epoch = -1
        replica._initial_step()
    return replica, dummy


def _state(opt) -> list[dict]:
    return [{k: copy.copy(g[k]) for k in SCHEDULED_KEYS if k in g} for g in opt.param_groups]


def replay(scheduler: Any) -> list[list[dict]] | None:
    """The parameter-group settings before each of the user's scheduler steps ``0..H``, or None
    when the scheduler cannot be followed."""
    if scheduler is None or not is_scheduler(scheduler):
        return None
    total = length(scheduler)
    if total is None:
        return None
    try:
        with warnings.catch_warnings():
            # stepping the replica without an optimizer step: torch warns about the order
            warnings.simplefilter("ignore")
            replica, dummy = _replica(scheduler)
            stride = max(1, -(-total // MAX_REPLAY))
            states = [_state(dummy)]
            for step in range(1, total + 1):
                replica.step()
                if step % stride == 0 or step == total:
                    states.append(_state(dummy))
    except Exception:  # a scheduler this replay does not understand: not followed
        return None
    return states


def follow(states: list[list[dict]] | None, steps: int) -> Callable[[int], list[dict]] | None:
    """``plan(step) -> per-group settings`` for a probe of ``steps`` steps over a ``replay``."""
    if not states or steps <= 0:
        return None
    last = len(states) - 1

    def plan(step: int) -> list[dict]:
        return states[min(last, step * last // steps)]

    return plan


def apply(optimizer: Any, settings: list[dict]) -> None:
    """Set a torch optimizer's groups to one replayed step (group ``i`` from the user's group
    ``i``; extra groups take the first one's)."""
    for i, group in enumerate(optimizer.param_groups):
        src = settings[i] if i < len(settings) else settings[0]
        for key, value in src.items():
            if key in group:
                group[key] = value


def peak(states: list[list[dict]] | None) -> float | None:
    """The highest rate of the first parameter group over a ``replay``, or None."""
    rates = [float(s[0]["lr"]) for s in states or [] if s and "lr" in s[0]]
    return max(rates) if rates else None


def rate_words(states: list[list[dict]] | None) -> str:
    """How a finding names the user's rate: "learning rate", or "peak learning rate" when a
    followed schedule sets it (``user_lr`` is then the schedule's peak)."""
    return "peak learning rate" if states else "learning rate"


def torch_rate_fix(lr: float, states: list[list[dict]] | None, plain: str | None = None) -> str:
    """The torch line that sets the rate to ``lr``: ``plain`` (by default the optimizer's
    groups), or, under a scheduler (which would overwrite them at its next step), its peak."""
    if not states:
        return plain or f"for g in optimizer.param_groups: g['lr'] = {lr:.2g}"
    return (f"# the scheduler sets the rate at every step: make {lr:.2g} its peak\n"
            f"scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr={lr:.2g}, ...)\n"
            f"# (CosineAnnealingLR and the like scale from the optimizer's rate: "
            f"lr={lr:.2g} in its constructor)")
