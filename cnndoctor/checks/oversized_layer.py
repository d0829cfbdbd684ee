"""oversized-layer: one layer holds most of the parameters, or a dense layer is disguised as a
convolution whose kernel covers the whole feature map."""
from __future__ import annotations

import math

from . import Finding, Fix, Passed, register, snippet

CODE = "oversized-layer"
# A convolution whose kernel covers its whole input map (output 1 x 1) with at least this many
# kernel positions is a dense layer in disguise (CASES.md case 3: 90 x 160 = 14,400 positions; the
# MNIST variant 14 x 14 = 196). 7 x 7 = 49 is the largest kernel in common use (ResNet's stem),
# so anything from 64 positions up that also collapses the map is not an ordinary convolution.
GIANT_KERNEL_POSITIONS = 64
# Share of all parameters above which one layer "holds most of the model". A disguised dense
# layer is reported as an error from this share on.
MOST_PARAMS_SHARE = 0.5
# A single layer holding this share *and* having this fan-in is a warning even when it is an
# honest Dense layer: at ~100k inputs per unit the default initialisations give logits whose scale
# depends on a few lucky inputs. The healthy dense head of CASES.md case 3 (MNIST) has fan-in
# 9,216 and 98% of the parameters and trains fine, so both limits sit well above it.
DOMINANT_SHARE = 0.9
EXTREME_FAN_IN = 100_000


def _spatial_out(layer):
    if not layer.output_shape or len(layer.output_shape) < 2:
        return None
    return layer.output_shape[:-1] if layer.output_shape[-1] == layer.units \
        else layer.output_shape[1:]


@register(CODE, "model",
          explains=("dead-relu", "no-learning", "loss-plateau", "vanishing-gradient",
                    "cannot-overfit-batch", "seed-instability", "overfitting",
                    "prediction-collapse",),
          # the whole-map convolution failed in case 3's lane model, but the thread's MNIST
          # variant trains in Keras 3 (97.2% over 3 seeds, benchmarks/case3_reference.py): the
          # error stands only where training shows the failure
          prognosis=True)
def check(ev):
    graph = ev.graph
    total = graph.total_params or 1
    weighted = [layer for layer in graph.weighted if layer.params]
    if not weighted:
        return []
    out = []
    for layer in weighted:
        share = layer.params / total
        positions = math.prod(layer.kernel_size) if layer.kernel_size else 1
        spatial = _spatial_out(layer)
        covers_map = (layer.op == "conv" and spatial is not None and all(d == 1 for d in spatial)
                      and positions >= GIANT_KERNEL_POSITIONS)
        if covers_map and share >= MOST_PARAMS_SHARE:
            out.append(_finding(ev, layer, share, total, disguised=True))
        elif share >= DOMINANT_SHARE and (layer.fan_in or 0) >= EXTREME_FAN_IN:
            out.append(_finding(ev, layer, share, total, disguised=False))
    if out:
        return out
    biggest = max(weighted, key=lambda layer: layer.params)
    return [Passed(CODE, f"largest layer {biggest.name} holds {biggest.params / total:.0%} of "
                         f"{total:,} parameters, fan-in {biggest.fan_in:,}",
                   {"layer": biggest.name, "share": biggest.params / total,
                    "fan_in": biggest.fan_in, "total_params": total})]


def _finding(ev, layer, share, total, disguised):
    evidence = {"layer": layer.name, "params": layer.params, "share_of_params": round(share, 4),
                "total_params": total, "fan_in": layer.fan_in,
                "kernel_size": list(layer.kernel_size) if layer.kernel_size else None,
                "input_shape": list(layer.input_shape) if layer.input_shape else None,
                "units": layer.units}
    if disguised and ev.framework == "keras" and layer.kernel_size:
        # Glorot initialisation counts the kernel area in fan_out: the disguised layer starts
        # with weights this many times smaller than the equivalent Dense layer's.
        area = math.prod(layer.kernel_size)
        conv_limit = math.sqrt(6 / (layer.fan_in + area * layer.units))
        dense_limit = math.sqrt(6 / (layer.fan_in + layer.units))
        evidence["init_scale_vs_dense"] = round(conv_limit / dense_limit, 3)
    keras_fix = ("# replace the giant convolution by a 1x1 convolution + global average pooling:\n"
                 "x = keras.layers.Conv2D(128, 1, activation='relu')(x)\n"
                 "x = keras.layers.Conv2D(n_classes, 1)(x)\n"
                 "x = keras.layers.GlobalAveragePooling2D()(x)\n"
                 "outputs = keras.layers.Softmax()(x)")
    torch_fix = ("self.head = nn.Sequential(nn.Conv2d(c, 128, 1), nn.ReLU(),\n"
                 "                          nn.Conv2d(128, n_classes, 1),\n"
                 "                          nn.AdaptiveAvgPool2d(1), nn.Flatten())")
    title = (f"{layer.label} is a dense layer disguised as a {_k(layer)} convolution holding "
             f"{share:.1%} of the parameters" if disguised else
             f"{layer.label} holds {share:.1%} of the parameters with a fan-in of {layer.fan_in:,}")
    return Finding(
        code=CODE, area="model", severity="error" if disguised else "warning", title=title,
        explanation=(
            (f"The kernel of {layer.label} covers its whole input map, so it computes what a "
             f"Dense layer would, but with {layer.params:,} weights ({share:.1%} of the model) "
             f"and {layer.fan_in:,} inputs per unit. Its default initialisation is scaled as for "
             f"a convolution (the kernel area counts in the fan-out), so it starts far smaller "
             f"than the Dense layer it replaced, and at the learning rate that suits the rest of "
             f"the network its units die or stop moving: the model ends up predicting one "
             f"class. 1x1 convolutions followed by global average pooling give a fully "
             f"convolutional head that trains like the dense one.") if disguised else
            (f"One layer holds {share:.1%} of all parameters and each of its units sums "
             f"{layer.fan_in:,} inputs: it dominates training, overfits easily, and its output "
             f"scale hinges on the initialisation. Reduce the feature map before it (pooling, "
             f"strides) or use global average pooling.")),
        evidence=evidence,
        fix=Fix(summary="replace it with a 1x1-conv + global-average-pooling head",
                code=snippet(ev, keras=keras_fix, torch=torch_fix)))


def _k(layer):
    return "x".join(str(k) for k in layer.kernel_size) if layer.kernel_size else "giant"
