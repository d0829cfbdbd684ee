"""missing-nonlinearity: weighted layers that follow each other with nothing nonlinear between."""
from __future__ import annotations

from .. import graph as g
from . import Finding, Fix, Passed, register, snippet

CODE = "missing-nonlinearity"
# Steps that leave a chain of weighted layers linear, as CHECKS.md defines it: pooling, flatten,
# dropout and reshape (max pooling is piecewise linear and keeps the stack nearly one linear map).
# Batch norm is an affine map at inference (a scale and a shift per channel), and global average
# pooling a mean: Conv-BN-Conv-BN without an activation is one linear map too (the zoo's
# linear-stack mutation of the BN, residual and MobileNet-style models, benchmarks/mutations.py).
_BETWEEN = (g.POOL, g.SHAPE, g.DROPOUT, g.RESCALE, g.NORM, g.GLOBAL_POOL)


def linear_pairs(graph):
    """(earlier, later) weighted layers with only pooling/shape/dropout between them."""
    pairs = []
    for layer in graph.weighted:
        steps = graph.predecessors(layer)
        while len(steps) == 1 and steps[0].kind in _BETWEEN:
            steps = graph.predecessors(steps[0])
        if len(steps) == 1 and steps[0].kind == g.WEIGHTED and not steps[0].nonlinear:
            pairs.append((steps[0], layer))
    return pairs


def _extractor_is_linear(graph) -> bool:
    """True when nothing nonlinear (but pooling) happens before the last weighted layer."""
    weighted = graph.weighted
    if len(weighted) < 2:
        return False
    last = graph.layers.index(weighted[-1])
    # normalization and the additions of residual blocks are affine: they add no nonlinearity
    return not any(layer.nonlinear for layer in graph.layers[:last])


@register(CODE, "model",
          explains=("cannot-overfit-batch", "seed-instability",))
def check(ev):
    graph = ev.graph
    pairs = linear_pairs(graph)
    if not pairs:
        return [Passed(CODE, f"every weighted layer feeding another is followed by a "
                             f"nonlinearity ({len(graph.weighted)} weighted layers)",
                       {"weighted_layers": len(graph.weighted)})]
    whole = _extractor_is_linear(graph)
    names = [f"{a.label} -> {b.label}" for a, b in pairs]
    keras_fix = "\n".join(
        f"keras.layers.{a.source}(..., activation='relu')  # {a.name}" for a, _ in pairs)
    torch_fix = "\n".join(
        f"x = torch.relu(self.{a.name}(x))  # or nn.ReLU() after {a.name}" for a, _ in pairs)
    return [Finding(
        code=CODE, area="model", severity="error" if whole else "warning",
        title=("no nonlinearity anywhere before the output layer: the feature extractor is one "
               "linear map" if whole else
               f"{len(pairs)} weighted layer(s) feed the next with no nonlinearity between"),
        explanation=(
            "Two weighted layers with only pooling, flatten, dropout or reshape between them "
            "compose into a single linear map: the extra layer adds parameters but no power to "
            "represent anything new. "
            + ("Here no layer before the output has an activation, so the whole network can "
               "only draw linear boundaries on the pixels, however many filters it has. "
               if whole else "")
            + "Add an activation (ReLU) after each convolution or hidden dense layer."),
        evidence={"pairs": names, "layers_without_activation": [a.name for a, _ in pairs],
                  "whole_feature_extractor_linear": whole,
                  "weighted_layers": len(graph.weighted)},
        fix=Fix(summary=f"add a ReLU after {', '.join(a.label for a, _ in pairs)}",
                code=snippet(ev, keras=keras_fix, torch=torch_fix)))]
