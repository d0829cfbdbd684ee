"""unnormalized-input: training inputs far from a unit scale with no normalization in the model."""
from __future__ import annotations

from .. import graph as g
from . import Finding, Fix, Passed, register, snippet

CODE = "unnormalized-input"
# Inputs whose 99.9th percentile of |x| stays below this are "unit scale": [0, 1], [-1, 1],
# ImageNet-standardised images (|x| up to ~2.7) and per-image standardised ones (rarely above ~6).
UNIT_SCALE_LIMIT = 10.0
# From here on the data is in the 8-bit pixel range (0-255 or close): the first layer's outputs
# are ~100x their intended scale, softmaxes saturate at once and ReLUs die (CASES.md case 2).
PIXEL_RANGE = 100.0
# Values this small (all below 0.01, e.g. divided by 255 twice) carry almost no signal into the
# first layer at the usual initialisations.
TINY_SCALE = 0.01


def normalizing_layer(graph):
    """The layer that normalizes the input inside the model, if any, before any weighted layer."""
    for layer in graph.layers:
        if layer.kind in (g.RESCALE, g.NORM):
            return layer
        if layer.kind == g.WEIGHTED:
            return None
    return None


@register(CODE, "data", needs=("train", "probe:datastats"),
          explains=("dead-relu", "no-learning", "loss-plateau", "vanishing-gradient",
                    "exploding-gradient", "nan-loss", "lr-too-high", "lr-too-low",
                    "cannot-overfit-batch", "seed-instability", "prediction-collapse",
                    "fragile-to-*",))
def check(ev):
    stats = ev.probes["datastats"].get("training", {})
    if not stats.get("finite"):
        return []
    lo, hi = stats["p0.1"], stats["p99.9"]
    scale = max(abs(lo), abs(hi))
    figures = {"min": stats["min"], "max": stats["max"], "mean": stats["mean"],
               "std": stats["std"], "p99.9_abs": scale}
    if ev.train.source is not None:  # read from a pipeline: say how many images this is from
        figures["images"] = len(ev.train)
        if ev.train.total_size:
            figures["of_images"] = ev.train.total_size
    pipeline = list(ev.train.normalization or [])
    if pipeline:
        from ..pipelines.normalization import describe

        figures["pipeline_normalization"] = pipeline
    inside = normalizing_layer(ev.graph)
    if pipeline and TINY_SCALE <= scale <= UNIT_SCALE_LIMIT:
        return [Passed(CODE, f"the data pipeline normalizes ({describe(pipeline)}): the inputs "
                             f"the model is fed span {stats['min']:.3g}...{stats['max']:.3g}",
                       {**figures, "normalized_by": "pipeline"})]
    if inside is not None:
        return [Passed(CODE, f"the model normalizes its input itself ({inside.name}, "
                             f"{inside.source}); training data spans {stats['min']:.3g}..."
                             f"{stats['max']:.3g}", {**figures, "normalized_by": inside.name})]
    if scale <= UNIT_SCALE_LIMIT and scale >= TINY_SCALE:
        return [Passed(CODE, f"training inputs span {stats['min']:.3g}...{stats['max']:.3g} "
                             f"(mean {stats['mean']:.3g}, std {stats['std']:.3g})", figures)]
    tiny = scale < TINY_SCALE
    severity = "error" if scale >= PIXEL_RANGE else "warning"
    divisor = 255 if stats["max"] > 200 else round(stats["max"]) or 1
    keras_fix = (f"model = keras.Sequential([keras.Input(shape), "
                 f"keras.layers.Rescaling(1 / {divisor}), ...])\n# or: x_train = x_train / "
                 f"{divisor} (and the same at evaluation!)")
    torch_fix = (f"x = x.float() / {divisor}   # in the Dataset / before the model, and the same "
                 f"at evaluation\n# or transforms.Normalize(mean, std) after ToTensor()")
    if tiny:
        keras_fix = "# the inputs are scaled twice: divide by 255 only once"
        torch_fix = keras_fix
    return [Finding(
        code=CODE, area="data", severity="warning" if tiny else severity,
        title=(f"training inputs are almost zero (|x| < {scale:.2g})" if tiny else
               f"training inputs range {stats['min']:.3g}...{stats['max']:.3g} with no "
               f"normalization in the model"),
        explanation=(
            "The inputs are so small that the first layer sees almost no signal; they look "
            "scaled twice." if tiny else
            f"Networks are initialised for inputs of about unit scale. With values up to "
            f"{stats['max']:.3g} the first layer's outputs are about {scale:.0f} times too "
            f"large: softmax outputs saturate at 0 or 1 from the first step, gradients vanish "
            f"or explode, and ReLU units that are pushed negative die for good. The learning "
            f"rate that suits scaled inputs is far too large for these."),
        evidence=figures,
        fix=Fix(summary=f"scale the inputs to [0, 1] (divide by {divisor}) or add a "
                        f"normalization layer at the input",
                code=snippet(ev, keras=keras_fix, torch=torch_fix)))]
