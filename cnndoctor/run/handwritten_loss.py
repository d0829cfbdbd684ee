"""A loss written out by hand in PyTorch (``-torch.sum(y * torch.log(softmax(out)))``): read from
the tensor that ``backward()`` is called on.

- The labels: a tensor saved in the loss's autograd graph that has one row per sample of the
  batch and no gradient (class indices, or one-hot / probability rows).
- What the loss expects of the model's output, from the operations between the output and the
  loss: ``log`` of a softmax (``SoftmaxBackward``, or ``exp`` divided by its sum) or
  ``log_softmax``: the loss applies softmax itself, it expects logits; ``log`` straight of the
  output: it expects probabilities.
- An equivalent torch loss for the probes, with the same reduction (sum or mean).
"""
from __future__ import annotations

from typing import Any

# Graph nodes visited at most when walking back from the loss to the model output (a loss is a
# handful of operations; this bounds a walk into a large model that missed the output).
MAX_NODES = 200
# How many of the loss values observed in training are kept (first ones).
MAX_OBSERVED = 5000

EXPECTS_LOGITS = "logits"
EXPECTS_PROBABILITIES = "probabilities"


def _name(node) -> str:
    return type(node).__name__ if node is not None else ""


def _walk(loss, output):
    """Nodes from the loss back to the output: {node: parent nearer the loss} and the node that
    consumes the output (None when the output is not in the loss's graph)."""
    start = loss.grad_fn
    target = getattr(output, "grad_fn", None) if output is not None else None
    parent: dict = {start: None}
    queue = [start]
    seen = 0
    while queue and seen < MAX_NODES:
        node = queue.pop(0)
        seen += 1
        for nxt, _ in getattr(node, "next_functions", ()) or ():
            if nxt is None or nxt in parent:
                continue
            parent[nxt] = node
            if target is not None and nxt is target:
                return parent, nxt
            queue.append(nxt)
    return parent, None


def expects(loss, output) -> tuple[str | None, list[str]]:
    """What the loss does to the output: (EXPECTS_*, the operations from the output up)."""
    parent, found = _walk(loss, output)
    if found is None:
        return None, []
    ops = []
    node = parent[found]
    while node is not None:
        ops.append(_name(node).replace("Backward0", "").replace("Backward1", ""))
        node = parent[node]
    chain = [o.lower() for o in ops]
    for i, op in enumerate(chain):
        if op in ("logsoftmax", "nllloss", "crossentropyloss"):
            return EXPECTS_LOGITS, ops
        if op == "softmax":
            return (EXPECTS_LOGITS if "log" in chain[i + 1:] else None), ops
        if op == "exp":  # exp(z) / sum(exp(z)) written out, then log
            return (EXPECTS_LOGITS if "div" in chain[i + 1:] and "log" in chain[i + 1:]
                    else None), ops
        if op == "log":
            return EXPECTS_PROBABILITIES, ops
        if op in ("sigmoid", "mm", "addmm", "relu", "mul", "sum", "mean"):
            continue
    return None, ops


def labels(loss, batch_size: int, output=None) -> Any:
    """The labels of the batch: a gradient-free tensor saved in the loss's graph, one row per
    sample; class indices (int) or one-hot / probability rows (float, rows summing to 1)."""
    import torch

    parent, _ = _walk(loss, output)
    best = None
    for node in parent:
        for attr in dir(node):
            if not attr.startswith("_saved_"):
                continue
            try:
                t = getattr(node, attr)
            except Exception:
                continue
            if not isinstance(t, torch.Tensor) or t.requires_grad or t.ndim == 0 \
                    or t.shape[0] != batch_size:
                continue
            if output is not None and t.data_ptr() == output.data_ptr():
                continue
            if not t.is_floating_point() and t.ndim == 1 and bool((t >= 0).all()):
                return t
            if t.is_floating_point() and t.ndim == 2 and t.shape[1] > 1:
                rows = t.detach().sum(dim=1)
                if bool(((t >= 0) & (t <= 1)).all()) and bool(
                        torch.allclose(rows, torch.ones_like(rows), atol=1e-3)):
                    best = best if best is not None else t
    return best


def reduction(loss, batch_size: int) -> str:
    """'sum' or 'mean': how the per-sample terms were reduced (the last op of the graph)."""
    name = _name(loss.grad_fn).lower()
    node = loss.grad_fn
    if name.startswith("neg"):
        nxt = [n for n, _ in node.next_functions if n is not None]
        name = _name(nxt[0]).lower() if nxt else name
    return "mean" if name.startswith("mean") or name.startswith("div") else "sum"


def equivalent_loss(kind: str, how: str):
    """A torch loss with the same meaning: cross-entropy on logits, or NLL of the log of
    probabilities, with the same reduction; named for the report."""
    import torch

    if kind == EXPECTS_LOGITS:
        return torch.nn.CrossEntropyLoss(reduction=how)

    def hand_written_log_probabilities(out, target):
        logp = torch.log(out)
        if target.ndim == 2:
            per = -(target * logp).sum(dim=1)
            return per.sum() if how == "sum" else per.mean()
        return torch.nn.functional.nll_loss(logp, target, reduction=how)

    return hand_written_log_probabilities


# A loss that moved by less than this share of its first value over the whole run is flat
# (case 2's report: 0.8133 for 100 epochs, a change of 0; noise of a learning model is far above
# 1% over a run).
FLAT_SHARE = 0.01
# A loss that ends this many times above where it started (and above its minimum) grew without
# bound: a learning rate too high; a model that learns ends below its start.
EXPLODE_FACTOR = 10.0


def judge_observed(values: list[float], loss_name: str | None):
    """A finding from the losses that backward() was called on, when nothing else can be
    diagnosed (labels or loss unknown): NaN, flat or exploding; None when they look sane."""
    import math

    from ..report import Finding, Fix

    if not values:
        return None
    bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
    what = loss_name or "the loss written in the script"
    evidence = {"steps_observed": len(values), "loss_first": values[0],
                "loss_last": values[-1], "loss_min": min(v for v in values if math.isfinite(v))
                if any(math.isfinite(v) for v in values) else None, "loss": what}
    if bad is not None:
        evidence["nonfinite_loss_step"] = bad + 1
        return Finding(
            code="nan-loss", area="training", severity="error",
            title=f"training produced a NaN or infinite loss at step {bad + 1} (observed in the "
                  f"script's own training)",
            explanation=("Once a NaN or infinity enters the weights, every later prediction is "
                         "NaN and training cannot recover. A hand-written log of a softmax gives "
                         "-inf as soon as one probability reaches 0; large inputs or a high "
                         "learning rate get it there in a few steps."),
            evidence=evidence,
            fix=Fix("use torch.nn.functional.cross_entropy on the logits (it computes "
                    "log-softmax stably), normalize the inputs, lower the learning rate",
                    "loss = torch.nn.functional.cross_entropy(model(x), y.argmax(1))"))
    first, last = values[0], values[-1]
    if len(values) > 1 and abs(last - first) <= FLAT_SHARE * max(abs(first), 1e-12) and \
            max(values) - min(values) <= FLAT_SHARE * max(abs(first), 1e-12):
        return Finding(
            code="no-learning", area="training", severity="error",
            title=f"the loss did not move over {len(values)} steps: {first:.4g} -> {last:.4g} "
                  f"(observed in the script's own training)",
            explanation="The loss stayed where it started: the weights receive no useful "
                        "gradient (saturated outputs, dead units, a learning rate too small).",
            evidence=evidence, fix=Fix("normalize the inputs and check the learning rate", ""))
    if len(values) > 1 and last > EXPLODE_FACTOR * max(abs(first), 1e-12) \
            and last > EXPLODE_FACTOR * max(evidence["loss_min"], 1e-12):
        return Finding(
            code="lr-too-high", area="training", severity="error",
            title=f"the loss grew from {first:.4g} to {last:.4g} over {len(values)} steps "
                  f"(observed in the script's own training)",
            explanation="A loss that grows by an order of magnitude means the steps overshoot: "
                        "the learning rate is too high for this model and these inputs.",
            evidence=evidence, fix=Fix("lower the learning rate by 10x", ""))
    return None
