"""The report's pictures: matplotlib figures (Agg backend) drawn from the JSON figures of a report,
returned as base64 PNG so that the page is one self-contained file.

Each function takes what the probes stored (``Report.figures``, a finding's evidence or its
``verified`` figures) and returns a ``Plot`` or None when what it needs is absent. Text drawn into
a picture is never interpreted as HTML (it is pixels), so user strings need no escaping here.
"""
from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass

#: Resolution of the PNGs: 90 dpi keeps a 6 x 3.2 inch plot near 25-40 KB and still sharp on
#: paper at the printed width of ~15 cm (the page is a few hundred KB per case, at most 2 MB).
DPI = 90
WIDTH_IN, HEIGHT_IN = 6.0, 3.2
#: Largest confusion matrix drawn cell by cell with its counts written in; larger ones (CIFAR-100)
#: are drawn as an image without numbers.
CM_ANNOTATE_MAX = 12
#: Panels per row of the perturbation sweep (4 fit the page width at a readable size).
SWEEP_COLUMNS = 4
#: Dead-unit share above which a layer's bar is drawn in the warning color: the dead-relu
#: check's own threshold is read when it is importable, this is the fallback (half the units).
DEAD_SHARE_MARK = 0.5
BEFORE_COLOR, AFTER_COLOR, BAD_COLOR = "#b2502c", "#2c7bb6", "#d7301f"


@dataclass
class Plot:
    title: str
    png_base64: str
    caption: str = ""
    width: int = 0  # pixels
    height: int = 0


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _figure(width: float = WIDTH_IN, height: float = HEIGHT_IN, ncols: int = 1):
    plt = _plt()
    fig, axes = plt.subplots(1, ncols, figsize=(width, height), dpi=DPI, squeeze=False)
    return fig, list(axes[0])


def _done(fig, title: str, caption: str = "") -> Plot:
    plt = _plt()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    w, h = (int(round(v * DPI)) for v in fig.get_size_inches())
    plt.close(fig)
    return Plot(title, base64.b64encode(buf.getvalue()).decode("ascii"), caption, w, h)


def _finite(values) -> list[float | None]:
    out = []
    for v in values or []:
        out.append(float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None)
    return out


def _nums(values) -> list[float]:
    return [v for v in _finite(values) if v is not None]


# ---- training ---------------------------------------------------------------------------------

def loss_curve(figures: dict) -> Plot | None:
    lc = figures.get("loss_curve") or {}
    loss = _finite(lc.get("loss"))
    if len(_nums(loss)) < 2:
        return None
    steps = lc.get("step") or list(range(len(loss)))
    fig, (ax,) = _figure()
    ax.plot(steps, [v if v is not None else float("nan") for v in loss], color=AFTER_COLOR,
            label="training loss (probe run)")
    if isinstance(lc.get("ln_c"), (int, float)):
        ax.axhline(lc["ln_c"], color="#888", ls="--", lw=1,
                   label=f"chance: ln(classes) = {lc['ln_c']:.2f}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    accs = _nums(lc.get("val_acc"))
    caption = "the probe's short training run on a copy of your model"
    if accs:
        caption += f"; validation accuracy after it: {accs[-1]:.1%}"
    return _done(fig, "Loss curve", caption)


def training_layers(figures: dict) -> Plot | None:
    tl = figures.get("training_layers") or {}
    relu = [r for r in tl.get("relu") or [] if isinstance(r.get("dead_share"), (int, float))]
    grads = [g for g in tl.get("gradients") or []
             if isinstance(g.get("grad_norm_median"), (int, float))]
    if not relu and not grads:
        return None
    try:
        from ..checks.training import DEAD_WARN as mark  # the dead-relu warning threshold
    except ImportError:
        mark = DEAD_SHARE_MARK
    panels = [p for p in (relu, grads) if p]
    n = max(len(relu), len(grads))
    fig, axes = _figure(WIDTH_IN * (1.0 if len(panels) == 1 else 1.4),
                        max(HEIGHT_IN, 0.9 + 0.28 * n), ncols=len(panels))
    i = 0
    if relu:
        ax = axes[i]
        i += 1
        names = [_short(r["layer"]) for r in relu][::-1]
        vals = [r["dead_share"] for r in relu][::-1]
        ax.barh(names, vals, color=[BAD_COLOR if v >= mark else AFTER_COLOR for v in vals])
        ax.axvline(mark, color="#888", ls="--", lw=1)
        ax.set_xlim(0, 1)
        ax.set_xlabel("share of units never active")
        ax.set_title("dead ReLU units per layer", fontsize=9)
    if grads:
        ax = axes[i]
        names = [_short(g["layer"]) for g in grads][::-1]
        vals = [max(g["grad_norm_median"], 1e-12) for g in grads][::-1]
        ax.barh(names, vals, color=AFTER_COLOR)
        ax.set_xscale("log")
        ax.set_xlabel("median gradient norm (log)")
        ax.set_title("gradient norm per layer", fontsize=9)
    for ax in axes:
        ax.tick_params(axis="y", labelsize=7)
    return _done(fig, "Per-layer activity and gradients",
                 "measured during the probe's training run; dashed line: the dead-unit "
                 "threshold of the check")


def lr_range(figures: dict) -> Plot | None:
    lr = figures.get("lr_range") or {}
    pairs = [(a, b) for a, b in zip(_finite(lr.get("lr")), _finite(lr.get("loss")))
             if a is not None and b is not None and a > 0]
    if len(pairs) < 3:
        return None
    fig, (ax,) = _figure()
    ax.plot([a for a, _ in pairs], [b for _, b in pairs], color=AFTER_COLOR)
    ax.set_xscale("log")
    for key, color, label in (("user_lr", BEFORE_COLOR, "your learning rate"),
                              ("suggested_lr", "#1a9641", "suggested")):
        if isinstance(lr.get(key), (int, float)) and lr[key] > 0:
            ax.axvline(lr[key], color=color, ls="--", lw=1, label=f"{label}: {lr[key]:.3g}")
    ax.set_xlabel("learning rate (log)")
    ax.set_ylabel("smoothed loss")
    ax.legend(fontsize=8)
    return _done(fig, "Learning-rate range test",
                 "loss while the learning rate grows step by step")


def seeds(figures: dict) -> Plot | None:
    s = figures.get("seeds") or {}
    accs = _nums(s.get("val_acc"))
    if len(accs) < 2:
        return None
    fig, (ax,) = _figure(WIDTH_IN, 2.6)
    ax.bar([str(i) for i in range(len(accs))], accs, color=AFTER_COLOR)
    if isinstance(s.get("mean"), (int, float)):
        ax.axhline(s["mean"], color="#444", ls="--", lw=1, label=f"mean {s['mean']:.1%}")
        ax.legend(fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_xlabel("seed (fresh weights)")
    ax.set_ylabel("validation accuracy")
    spread = f"; standard deviation {s['std']:.1%}" if isinstance(s.get("std"), (int, float)) \
        else ""
    return _done(fig, "Accuracy per seed",
                 f"the same model trained from {len(accs)} initialisations{spread}")


# ---- evaluation and data ---------------------------------------------------------------------

def confusion_matrix(figures: dict, collapsed: list | None = None,
                     class_names: list | None = None) -> Plot | None:
    cm = figures.get("confusion_matrix") or {}
    m = cm.get("matrix")
    if not m or not isinstance(m, list) or not all(isinstance(r, list) for r in m):
        return None
    import numpy as np

    mat = np.asarray(m, dtype=float)
    c = mat.shape[0]
    names = [str(v) for v in (class_names or cm.get("class_names") or cm.get("labels")
                              or range(c))][:c]
    names += [str(i) for i in range(len(names), c)]
    marked = {str(v) for v in collapsed or []}
    side = 4.2 if c <= CM_ANNOTATE_MAX else 4.8
    fig, (ax,) = _figure(side + 1.2, side)
    ax.imshow(np.log1p(mat), cmap="Blues", aspect="auto", interpolation="nearest")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if c <= CM_ANNOTATE_MAX:
        ax.set_xticks(range(c), [_short(n, 10) for n in names], rotation=45, ha="right",
                      fontsize=7)
        ax.set_yticks(range(c), [_short(n, 10) for n in names], fontsize=7)
        top = mat.max() or 1.0
        for i in range(c):
            for j in range(c):
                if mat[i, j]:
                    ax.text(j, i, f"{int(mat[i, j])}", ha="center", va="center", fontsize=6,
                            color="white" if mat[i, j] > top / 2 else "black")
    cols = [j for j, n in enumerate(names) if n in marked or str(j) in marked]
    for j in cols:
        ax.axvspan(j - 0.5, j + 0.5, fill=False, edgecolor=BAD_COLOR, lw=1)
        ax.annotate(_short(names[j], 10), (j, -0.5), xytext=(0, 6), textcoords="offset points",
                    ha="center", va="bottom", fontsize=7, color=BAD_COLOR,
                    annotation_clip=False)
    caption = f"{int(mat.sum())} samples"
    if cm.get("dataset"):
        caption += f" from {cm['dataset']}"
    if cols:
        caption += ("; outlined in red: the classes the predictions collapse onto ("
                    + ", ".join(names[j] for j in cols) + ")")
    return _done(fig, "Confusion matrix", caption)


def input_histograms(figures: dict) -> Plot | None:
    hists = {k: v for k, v in (figures.get("input_histograms") or {}).items()
             if v.get("counts") and len(v.get("edges") or []) == len(v["counts"]) + 1}
    if not hists:
        return None
    n = len(hists)
    fig, axes = _figure(min(2.6 * n + 0.6, 10.0), 2.6, ncols=n)
    for ax, (name, h) in zip(axes, hists.items()):
        edges, counts = h["edges"], h["counts"]
        widths = [b - a for a, b in zip(edges[:-1], edges[1:])]
        ax.bar(edges[:-1], counts, width=widths, align="edge",
               color=BEFORE_COLOR if name in ("evaluation", "reference") else AFTER_COLOR)
        ax.set_title(f"{name}: {edges[0]:.3g} to {edges[-1]:.3g}", fontsize=9)
        ax.set_xlabel("pixel value", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_yticks([])
    return _done(fig, "Input values per dataset",
                 "histogram of pixel values, each dataset on its own axis: compare the ranges")


def perturbation_sweep(figures: dict) -> Plot | None:
    sweep = figures.get("perturbation_sweep") or {}
    series = {}
    for name, rows in sweep.items():
        pts = [(r.get("level"), r.get("accuracy")) for r in rows or [] if isinstance(r, dict)]
        pts = [(a, b) for a, b in pts if isinstance(a, (int, float))
               and isinstance(b, (int, float))]
        if len(pts) >= 2:
            series[name] = pts
    if not series:
        return None
    plt = _plt()
    cols = min(SWEEP_COLUMNS, len(series))
    rows = -(-len(series) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols + 0.4, 1.7 * rows + 0.3), dpi=DPI,
                             squeeze=False, sharey=True)
    for k, ax in enumerate(axes.ravel()):
        if k >= len(series):
            ax.axis("off")
            continue
        name, pts = list(series.items())[k]
        ax.plot([a for a, _ in pts], [b for _, b in pts], marker="o", ms=3, color=BEFORE_COLOR)
        ax.set_ylim(0, 1)
        ax.set_title(_short(name, 20), fontsize=8)
        ax.tick_params(labelsize=6)
    for r in range(rows):
        axes[r][0].set_ylabel("accuracy", fontsize=7)
    return _done(fig, "Accuracy vs perturbation strength",
                 "the model on held-out images perturbed at each strength tried (x: the "
                 "perturbation's own unit)")


def sample_images(figures: dict) -> Plot | None:
    import numpy as np

    sets = {}
    for name, entry in (figures.get("sample_images") or {}).items():
        try:
            arr = np.frombuffer(base64.b64decode(entry["uint8_base64"]), dtype=np.uint8)
            arr = arr.reshape(entry["shape"])
        except (KeyError, ValueError, TypeError):
            continue
        if arr.ndim == 4 and len(arr):
            sets[name] = (arr, entry)
    if not sets:
        return None
    cols = max(len(a) for a, _ in sets.values())
    plt = _plt()
    fig, axes = plt.subplots(len(sets), cols, figsize=(1.0 * cols + 0.4, 1.15 * len(sets)),
                             dpi=DPI, squeeze=False)
    for r, (name, (arr, entry)) in enumerate(sets.items()):
        labels = entry.get("labels") or []
        lo, hi = (entry.get("range") or [0, 1])[:2]
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(arr):
                ax.axis("off")
                continue
            img = arr[c]
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray",
                      vmin=0, vmax=255, interpolation="nearest")
            if c < len(labels):
                ax.set_title(f"label {labels[c]}", fontsize=7)
            if c == 0:
                ax.set_ylabel(f"{name}\n{lo:.3g}..{hi:.3g}", fontsize=7)
    return _done(fig, "Example images",
                 "the first images of each dataset, each row scaled over its own value range")


# ---- verification -----------------------------------------------------------------------------

def verification(v: dict) -> Plot | None:
    """Per-seed metric before vs after the fix, and the loss curves when given."""
    before = _nums((v.get("before") or {}).get("values"))
    after = _nums((v.get("after") or {}).get("values"))
    if not before and not after:
        return None
    curves = v.get("curves") or {}
    has_curves = any(_nums(c) for c in (curves.get("before") or []) + (curves.get("after") or [])
                     if isinstance(c, list))
    fig, axes = _figure(WIDTH_IN * (1.3 if has_curves else 0.8), 2.8,
                        ncols=2 if has_curves else 1)
    ax = axes[0]
    for x, vals, color, label in ((0, before, BEFORE_COLOR, "as you have it"),
                                  (1, after, AFTER_COLOR, "with the fix")):
        if vals:
            jitter = [x + (i - (len(vals) - 1) / 2) * 0.06 for i in range(len(vals))]
            ax.scatter(jitter, vals, color=color, zorder=3, s=22)
            mean = sum(vals) / len(vals)
            ax.hlines(mean, x - 0.25, x + 0.25, color=color, lw=2)
    for b, a in zip(before, after):
        ax.plot([0, 1], [b, a], color="#bbb", lw=0.8, zorder=1)
    ax.set_xticks([0, 1], ["as you have it", "with the fix"], fontsize=8)
    ax.set_xlim(-0.5, 1.5)
    ax.set_ylabel(_short(str(v.get("metric") or "metric"), 30), fontsize=8)
    ax.set_title("per seed (dots) and mean (bar)", fontsize=9)
    if has_curves:
        ax = axes[1]
        for key, color in (("before", BEFORE_COLOR), ("after", AFTER_COLOR)):
            for i, curve in enumerate(curves.get(key) or []):
                vals = _finite(curve) if isinstance(curve, list) else []
                if vals:
                    ax.plot(range(len(vals)), [x if x is not None else float("nan")
                                               for x in vals], color=color, lw=1, alpha=0.8,
                            label=("as you have it" if key == "before" else "with the fix")
                            if i == 0 else None)
        ax.set_xlabel("recorded point of training", fontsize=8)
        ax.set_ylabel("loss", fontsize=8)
        ax.set_title("loss curves, one per seed", fontsize=9)
        ax.legend(fontsize=7)
    return _done(fig, "Before and after the fix",
                 f"{len(after or before)} seed(s), trained from fresh weights")


def _short(text: str, n: int = 24) -> str:
    text = str(text)
    return text if len(text) <= n else text[:n - 1] + "…"


REPORT_PLOTS = (loss_curve, training_layers, lr_range, seeds, input_histograms,
                perturbation_sweep, sample_images)
