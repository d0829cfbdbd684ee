"""duplicate-leakage: evaluation samples that also occur in the training set."""
from __future__ import annotations

import hashlib

import numpy as np

from . import Finding, Fix, Passed, register, snippet

CODE = "duplicate-leakage"
# Images are compared after quantising to 256 levels of their own dataset's range, so that a copy
# saved as uint8 and one kept as float still match.
LEVELS = 255
# Share of evaluation images found in training from which accuracy figures are inflated enough to
# matter (1 in 100 moves accuracy by up to a point); from 10% on the evaluation set is mostly a
# copy of training data and its accuracy says little about new images.
WARN_SHARE = 0.01
ERROR_SHARE = 0.10


def _hashes(images: np.ndarray, lo: float, hi: float) -> list[bytes]:
    span = hi - lo if hi > lo else 1.0
    q = np.clip(np.round((np.nan_to_num(images) - lo) / span * LEVELS), 0, LEVELS).astype(np.uint8)
    return [hashlib.blake2b(img.tobytes(), digest_size=16).digest() for img in q]


@register(CODE, "data", needs=("train",),
          explains=("overfitting",))
def check(ev):
    others = [ds for ds in [ev.val, *ev.evaluation, ev.reference] if ds is not None]
    if not others:
        return []
    lo, hi = float(np.nanmin(ev.train.images)), float(np.nanmax(ev.train.images))
    train = set(_hashes(ev.train.images, lo, hi))
    out, measured = [], {}
    for ds in others:
        hashes = _hashes(ds.images, lo, hi)
        dup = np.array([h in train for h in hashes])
        share = float(dup.mean())
        measured[ds.name] = {"duplicates": int(dup.sum()), "images": len(ds), "share": share}
        if share >= WARN_SHARE:
            out.append(Finding(
                code=CODE, area="data", severity="warning",
                title=f"{dup.sum()} of {len(ds)} {ds.name} images ({share:.0%}) are also in the "
                      f"training set",
                explanation=(f"{share:.0%} of the {ds.name} images are exact copies of training "
                             f"images, so the accuracy measured on them is inflated: the model is "
                             f"partly tested on what it memorised. "
                             + ("The evaluation set is mostly training data." if share >=
                                ERROR_SHARE else "")),
                evidence={"dataset": ds.name, "duplicates": int(dup.sum()), "images": len(ds),
                          "share": share, "first_indices": np.flatnonzero(dup)[:10].tolist()},
                fix=Fix(summary="remove the duplicates from the evaluation split",
                        code=snippet(ev, keras="# split once, after removing duplicates:\n"
                                               "_, keep = np.unique(x.reshape(len(x), -1), "
                                               "axis=0, return_index=True)",
                                     torch="# split once, after removing duplicates:\n"
                                           "_, keep = np.unique(x.reshape(len(x), -1), axis=0,"
                                           " return_index=True)"))))
    if out:
        return out
    return [Passed(CODE, "; ".join(f"{m['duplicates']} of {m['images']} {name} images found in "
                                   f"training" for name, m in measured.items()), measured)]
