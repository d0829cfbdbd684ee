"""The evaluation path: what was fed at evaluation/prediction, compared with training.

For each evaluation dataset (``ev.evaluation``: the inputs exactly as the user's evaluation code
fed them) this probe measures, without judging:

- input statistics of training and evaluation inputs (per channel: mean, std, percentiles) and
  how they differ: scale ratio, offset, channel order, layout; the per-channel affine map that
  would bring the evaluation inputs to the training statistics;
- the model's predictions on them (the ones the script got, when captured, else a fresh
  ``runtime.predict``): how concentrated they are against the label distribution;
- labels: given, or recovered by matching evaluation images to training/validation images that
  are the same picture up to scale and offset (the same samples through two pipelines);
- accuracy through the evaluation path, through the training path on the same samples, with the
  training statistics restored (the fix, verified), and the validation accuracy;
- PyTorch: when evaluation ran with dropout/batch norm in training mode, how much the predictions
  change in eval mode;
- a confusion matrix (``ev.figures["confusion_matrix"]``).

Checks in ``cnndoctor.checks.evaluation`` turn this into findings.
"""
from __future__ import annotations

import numpy as np

from . import BUDGETS, register

# Images compared per dataset (evenly spaced subset): enough for per-class counts on 100
# classes (~10 per class) and for stable statistics; predict on 1,024 CIFAR-sized images takes
# well under a second on a CPU for the models of CASES.md.
MAX_EVAL_IMAGES = 1024
# Percentiles that define an input's range: robust to a few outlier pixels.
RANGE_PERCENTILES = (1.0, 99.0)
# Two images are "the same sample" when their standardised pixels correlate at least this much.
# An image and its /255 copy correlate at 1.0 up to float rounding (measured: > 0.99999); two
# different MNIST digits of the same class rarely exceed 0.95.
MATCH_CORRELATION = 0.999
# Training/validation images searched for matches (the most a session keeps per phase).
MAX_MATCH_POOL = 2048


def _np(x):
    from ..runtime import to_numpy

    return np.asarray(to_numpy(x))


def _subset_idx(n: int, k: int) -> np.ndarray:
    if n <= k:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))


def channel_stats(images: np.ndarray) -> dict:
    """Per-channel statistics of N x H x W x C images (finite values only)."""
    flat = images.reshape(-1, images.shape[-1]).astype(np.float64)
    flat = np.where(np.isfinite(flat), flat, np.nan)
    lo, hi = np.nanpercentile(flat, RANGE_PERCENTILES, axis=0)
    return {
        "mean": np.nanmean(flat, axis=0).tolist(),
        "std": np.nanstd(flat, axis=0).tolist(),
        "min": np.nanmin(flat, axis=0).tolist(),
        "max": np.nanmax(flat, axis=0).tolist(),
        f"p{RANGE_PERCENTILES[0]:g}": lo.tolist(),
        f"p{RANGE_PERCENTILES[1]:g}": hi.tolist(),
        "range": float(np.nanmax(hi) - np.nanmin(lo)),
        "overall_mean": float(np.nanmean(flat)),
        "overall_std": float(np.nanstd(flat)),
    }


def compare_inputs(train: dict, other: dict) -> dict:
    """How evaluation inputs differ from training inputs: scale, offset, channel order."""
    t_std, o_std = np.asarray(train["std"]), np.asarray(other["std"])
    t_mean, o_mean = np.asarray(train["mean"]), np.asarray(other["mean"])
    scale = (other["range"] / train["range"]) if train["range"] > 0 else None
    std_ratio = (other["overall_std"] / train["overall_std"]) if train["overall_std"] > 0 \
        else None
    # Offset of the means in training standard deviations, once the scale is accounted for.
    t_sd = max(train["overall_std"], 1e-12)
    rescaled_mean = o_mean / std_ratio if std_ratio else o_mean
    offset = float(np.max(np.abs(rescaled_mean - t_mean)) / t_sd)
    raw_offset = float(np.max(np.abs(o_mean - t_mean)) / t_sd)
    out = {"scale_ratio": scale, "std_ratio": std_ratio, "offset_std": offset,
           "mean_shift_std": raw_offset}
    # Channel order: do the evaluation channel means line up better reversed (RGB vs BGR)?
    if len(t_mean) == 3 and std_ratio:
        direct = float(np.abs(rescaled_mean - t_mean).sum())
        reversed_ = float(np.abs(rescaled_mean[::-1] - t_mean).sum())
        out["channel_mean_distance"] = {"as_is": direct, "reversed": reversed_}
        spread = float(np.ptp(t_mean))
        out["channels_reversed"] = bool(spread > 0.1 * t_sd and reversed_ < 0.5 * direct)
    # Per-channel affine map eval -> train (x * a + b), the preprocessing that would match.
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(o_std > 0, t_std / o_std, 1.0)
    b = t_mean - a * o_mean
    out["affine"] = {"scale": a.tolist(), "shift": b.tolist()}
    return out


def _standardised(images: np.ndarray) -> np.ndarray:
    flat = images.reshape(len(images), -1).astype(np.float32)
    flat = np.where(np.isfinite(flat), flat, 0.0)
    flat = flat - flat.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(flat, axis=1, keepdims=True)
    return np.divide(flat, norm, out=np.zeros_like(flat), where=norm > 0)


def match_samples(query: np.ndarray, pools: list[tuple[str, np.ndarray]]) -> dict:
    """For each query image, the pool image that is the same picture up to scale and offset."""
    q = _standardised(query)
    best = np.full(len(query), -1.0, dtype=np.float32)
    where = np.full(len(query), -1, dtype=np.int64)
    which = np.full(len(query), -1, dtype=np.int64)
    for k, (_, pool) in enumerate(pools):
        if pool is None or len(pool) == 0 or pool.shape[1:] != query.shape[1:]:
            continue
        p = _standardised(pool[:MAX_MATCH_POOL])
        sims = q @ p.T
        j = sims.argmax(axis=1)
        s = sims[np.arange(len(q)), j]
        better = s > best
        best[better], where[better], which[better] = s[better], j[better], k
    matched = best >= MATCH_CORRELATION
    return {"matched": matched, "pool": which, "index": where, "similarity": best}


def prediction_spread(pred: np.ndarray, labels: np.ndarray | None, num_classes: int,
                      label_reference: np.ndarray | None) -> dict:
    """How concentrated predictions are, against the labels (or the training labels)."""
    counts = np.bincount(pred, minlength=num_classes)[:max(num_classes, pred.max() + 1)]
    n = int(counts.sum())
    ref = labels if labels is not None else label_reference
    ref_counts = np.bincount(ref, minlength=len(counts))[:len(counts)] if ref is not None \
        else None
    k = 1 if num_classes <= 3 else 2
    top = np.argsort(-counts, kind="stable")[:k]
    out = {
        "samples": n,
        "classes": int(num_classes),
        "k": k,
        "top_classes": top.tolist(),
        "top_share": float(counts[top].sum() / n) if n else 0.0,
        "classes_predicted": int((counts > 0).sum()),
        "effective_classes_predicted": _effective(counts),
        "prediction_counts": counts.tolist(),
        "reference": "evaluation labels" if labels is not None else (
            "training labels" if label_reference is not None else None),
    }
    if ref_counts is not None and ref_counts.sum():
        out["label_share_of_top"] = float(ref_counts[top].sum() / ref_counts.sum())
        out["effective_classes_in_labels"] = _effective(ref_counts)
        out["classes_in_labels"] = int((ref_counts > 0).sum())
    return out


def _effective(counts: np.ndarray) -> float:
    """exp(entropy): the number of equally used classes with the same spread."""
    p = counts[counts > 0] / max(counts.sum(), 1)
    return float(np.exp(-(p * np.log(p)).sum())) if p.size else 0.0


def confusion(labels: np.ndarray, pred: np.ndarray, num_classes: int) -> dict:
    c = int(max(num_classes, labels.max() + 1, pred.max() + 1))
    m = np.zeros((c, c), dtype=np.int64)
    np.add.at(m, (labels, pred), 1)
    return {"labels": list(range(c)), "matrix": m.tolist()}


def _accuracy(pred: np.ndarray, labels: np.ndarray) -> float | None:
    return float((pred == labels).mean()) if len(labels) else None


def _predict_classes(ev, x) -> tuple[np.ndarray, np.ndarray]:
    from ..runtime import output_probabilities, predict

    out = predict(ev.model, x)
    probs = output_probabilities(out, ev.graph.output_activation)
    return out, _classes(probs)


def _classes(probs: np.ndarray) -> np.ndarray:
    probs = np.asarray(probs)
    if probs.ndim >= 2 and probs.shape[-1] > 1:
        return probs.reshape(len(probs), -1).argmax(axis=1)
    return (probs.reshape(len(probs)) > 0.5).astype(np.int64)


def _apply_affine(x: np.ndarray, layout: str, affine: dict) -> np.ndarray:
    a = np.asarray(affine["scale"], dtype=np.float32)
    b = np.asarray(affine["shift"], dtype=np.float32)
    x = x.astype(np.float32)
    if x.ndim == 4:
        shape = (1, -1, 1, 1) if layout == "channels_first" else (1, 1, 1, -1)
        return x * a.reshape(shape) + b.reshape(shape)
    return x * float(a.mean()) + float(b.mean())


def _history_accuracy(captured: dict) -> dict:
    fits = ((captured or {}).get("training") or {}).get("fits") or []
    for fit in reversed(fits):
        hist = fit.get("history") or {}
        out = {}
        for key in ("val_accuracy", "val_acc", "val_sparse_categorical_accuracy",
                    "val_categorical_accuracy"):
            if hist.get(key):
                out["validation"] = float(hist[key][-1])
                break
        for key in ("accuracy", "acc", "sparse_categorical_accuracy", "categorical_accuracy"):
            if hist.get(key):
                out["training"] = float(hist[key][-1])
                break
        if out:
            return out
    return {}


def compare_dataset(ev, ds, cap: dict) -> dict:
    """Everything the evaluation checks need about one evaluation dataset."""
    from ..runtime import output_probabilities

    result: dict = {"name": ds.name, "source": cap.get("source") or "evaluate=(x, y)",
                    "layout": ds.layout, "training_layout": ev.train.layout}
    n_all = len(ds)
    idx = _subset_idx(n_all, MAX_EVAL_IMAGES)
    images = ds.images[idx]
    x_raw = _np(ds.x)[idx]
    result["samples"] = int(len(idx))
    result["samples_seen"] = int(((cap.get("summary") or {}).get("stats") or {}).get("samples")
                                 or n_all)
    t_idx = _subset_idx(len(ev.train), MAX_EVAL_IMAGES)
    t_stats = channel_stats(ev.train.images[t_idx])
    e_stats = channel_stats(images)
    result["training_stats"], result["evaluation_stats"] = t_stats, e_stats
    result["training_dtype"] = str(_np(ev.train.x).dtype)
    result["evaluation_dtype"] = str(x_raw.dtype)
    result["comparison"] = compare_inputs(t_stats, e_stats) \
        if images.shape[-1] == ev.train.images.shape[-1] else {"channels_differ": True}
    if ds.images.shape[1:] != ev.train.images.shape[1:]:
        result["shape_differs"] = {"training": list(ev.train.images.shape[1:]),
                                   "evaluation": list(ds.images.shape[1:])}
        return result

    # Predictions: those the script got when captured, else computed now.
    outputs = cap.get("outputs")
    if outputs is not None and len(outputs) == n_all:
        outputs = np.asarray(outputs)[idx]
        result["predictions_from"] = "captured from the script"
    else:
        outputs, _ = _predict_classes(ev, x_raw)
        result["predictions_from"] = "computed by cnndoctor (runtime.predict)"
    probs = output_probabilities(outputs, ev.graph.output_activation)
    pred = _classes(probs)
    num_classes = int(ev.num_classes or (probs.shape[-1] if probs.ndim > 1 else 2))

    # Labels: given, or recovered from identical training/validation samples.
    labels = ds.labels[idx] if ds.labels is not None else None
    result["labels_from"] = "given" if labels is not None else None
    pools = [(name, d) for name, d in (("validation", ev.val), ("training", ev.train))
             if d is not None and d.labels is not None]
    m = match_samples(images, [(n, d.images) for n, d in pools]) if pools else None
    if m is not None:
        result["matched"] = int(m["matched"].sum())
        result["match_pools"] = [n for n, _ in pools]
    if labels is None and m is not None and m["matched"].any():
        rows = np.flatnonzero(m["matched"])
        labels_m = np.array([pools[m["pool"][r]][1].labels[m["index"][r]] for r in rows])
        result["labels_from"] = (f"{len(rows)} of {len(idx)} evaluation images matched to the "
                                 f"same images in the {' / '.join(n for n, _ in pools)} data")
        sel_pred, sel_labels = pred[rows], labels_m
    elif labels is not None:
        rows = np.arange(len(idx))
        sel_pred, sel_labels = pred, labels
    else:
        rows, sel_pred, sel_labels = None, pred, None

    train_labels = ev.train.labels
    result["spread"] = prediction_spread(sel_pred if sel_labels is not None else pred,
                                         sel_labels, num_classes, train_labels)
    if sel_labels is not None and len(sel_labels):
        result["accuracy"] = _accuracy(sel_pred, sel_labels)
        ev_cm = confusion(sel_labels, sel_pred, num_classes)
        ev_cm.update(dataset=result["source"], samples=int(len(sel_labels)),
                     labels_from=result["labels_from"])
        result["confusion_matrix"] = ev_cm

    # The same samples through the training pipeline.
    if m is not None and rows is not None and m["matched"][rows].any():
        hit = rows[m["matched"][rows]]
        pool_ids = m["pool"][hit]
        same_pred = np.empty(len(hit), dtype=np.int64)
        same_labels = np.empty(len(hit), dtype=np.int64)
        for k, (name, d) in enumerate(pools):
            sel = pool_ids == k
            if sel.any():
                src = _np(d.x)[m["index"][hit[sel]]]
                _, same_pred[sel] = _predict_classes(ev, src)
                same_labels[sel] = d.labels[m["index"][hit[sel]]]
        acc_same = _accuracy(same_pred, same_labels)
        sel_eval = np.isin(rows, hit)
        result["same_samples"] = {
            "samples": int(len(hit)),
            "accuracy_training_path": acc_same,
            "accuracy_evaluation_path": _accuracy(sel_pred[sel_eval], sel_labels[sel_eval])
            if sel_labels is not None else None,
        }
    # The evaluation inputs with the training statistics restored: the fix, measured.
    comp = result["comparison"]
    if sel_labels is not None and "affine" in comp:
        fixed_x = _apply_affine(x_raw, ds.layout, comp["affine"])
        if ds.layout != ev.train.layout and x_raw.ndim == 4:
            fixed_x = np.transpose(fixed_x, (0, 3, 1, 2) if ev.train.layout == "channels_first"
                                   else (0, 2, 3, 1))
        try:
            _, fixed_pred = _predict_classes(ev, fixed_x)
            result["accuracy_with_training_statistics"] = _accuracy(
                fixed_pred[rows], sel_labels)
        except Exception as exc:  # e.g. the model cannot take the other layout
            result["accuracy_with_training_statistics_error"] = f"{type(exc).__name__}: {exc}"
    # Validation accuracy through the training pipeline, now and as training reported it.
    if ev.val is not None and ev.val.labels is not None and ev.val.images.shape[1:] == \
            ev.train.images.shape[1:]:
        v_idx = _subset_idx(len(ev.val), MAX_EVAL_IMAGES)
        _, v_pred = _predict_classes(ev, _np(ev.val.x)[v_idx])
        result["validation_accuracy"] = _accuracy(v_pred, ev.val.labels[v_idx])
    hist = _history_accuracy(ev.probes.get("captured"))
    if hist:
        result["history_accuracy"] = hist
    return result


def eval_mode_effect(ev, captured: dict) -> dict | None:
    """PyTorch: predictions made with dropout/batch norm in training mode vs in eval mode."""
    info = (captured or {}).get("torch") or {}
    if not info.get("eval_calls_in_training_mode"):
        return None
    out = {"calls_in_training_mode": info["eval_calls_in_training_mode"],
           "calls": info.get("eval_calls"), "dropout": info.get("dropout_modules"),
           "norm": info.get("norm_modules")}
    for i, ds in enumerate(ev.evaluation):
        cap = (captured.get("evaluation") or [{}])[i] if i < len(captured.get("evaluation") or []) \
            else {}
        outputs = cap.get("outputs")
        if outputs is None or len(outputs) != len(ds):
            continue
        from ..runtime import output_probabilities

        idx = _subset_idx(len(ds), MAX_EVAL_IMAGES)
        p_train_mode = _classes(output_probabilities(np.asarray(outputs)[idx],
                                                     ev.graph.output_activation))
        _, p_eval_mode = _predict_classes(ev, _np(ds.x)[idx])  # runtime.predict uses eval()
        out["samples"] = int(len(idx))
        out["agreement"] = float((p_train_mode == p_eval_mode).mean())
        if ds.labels is not None:
            out["accuracy_training_mode"] = _accuracy(p_train_mode, ds.labels[idx])
            out["accuracy_eval_mode"] = _accuracy(p_eval_mode, ds.labels[idx])
        break
    return out


@register("evaluation", budgets=BUDGETS)
def evaluation(ev, ctx) -> None:
    captured = ev.probes.get("captured") or {}
    result: dict = {}
    if not ev.evaluation or ev.train is None:
        result["skipped"] = "no inputs fed at evaluation or prediction were captured"
    else:
        ctx.say("comparing the evaluation path with training")
        caps = captured.get("evaluation") or []
        result["datasets"] = [compare_dataset(ev, ds, caps[i] if i < len(caps) else {})
                              for i, ds in enumerate(ev.evaluation)]
        for r in result["datasets"]:
            if "confusion_matrix" in r:
                ev.figures["confusion_matrix"] = r["confusion_matrix"]
                break
        ev.figures["evaluation_inputs"] = [
            {"dataset": r["source"], "training": r["training_stats"],
             "evaluation": r["evaluation_stats"], "comparison": r["comparison"]}
            for r in result["datasets"]]
    if ev.framework == "torch" and captured:
        try:
            effect = eval_mode_effect(ev, captured)
        except Exception as exc:  # measuring the effect is a bonus; the observation stands
            effect = {"error": f"{type(exc).__name__}: {exc}"}
        if effect is not None:
            result["eval_mode"] = effect
    ev.probes["evaluation"] = result
