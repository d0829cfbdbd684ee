"""What training saw, kept beside the saved model file.

When a script saves a model during ``cnndoctor run``, two files are written next to it:
``<model file>.cnndoctor.json`` (statistics, history, setup, the model file's SHA-256) and
``<model file>.cnndoctor.npz`` (a bounded sample of the training and validation inputs and
labels as fed). A later session that loads the model reads them, so an evaluation script is
compared against training even when it runs on another day. The model file itself is never
touched; the sidecar is ignored when the model file no longer has the hash it had when saved.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

import numpy as np

from .capture import SIDECAR_SAMPLES

SUFFIX_JSON = ".cnndoctor.json"
SUFFIX_NPZ = ".cnndoctor.npz"
# Files above this size are identified by size and modification time instead of a full hash
# (hashing 2 GB takes several seconds).
HASH_LIMIT_BYTES = 2 * 1024 ** 3
FORMAT = 1


def fingerprint(path: str) -> dict | None:
    """SHA-256 of a model file (or of every file in a model directory), with its size."""
    if os.path.isdir(path):
        h = hashlib.sha256()
        size = 0
        for root, _, files in sorted(os.walk(path)):
            for name in sorted(files):
                fp = os.path.join(root, name)
                if fp.endswith((SUFFIX_JSON, SUFFIX_NPZ)):
                    continue
                size += os.path.getsize(fp)
                h.update(os.path.relpath(fp, path).encode())
                with open(fp, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
        return {"sha256": h.hexdigest(), "size": size}
    if not os.path.isfile(path):
        return None
    size = os.path.getsize(path)
    if size > HASH_LIMIT_BYTES:
        return {"size": size, "mtime": os.path.getmtime(path)}
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return {"sha256": h.hexdigest(), "size": size}


def write(model_path: str, meta: dict, arrays: dict[str, np.ndarray | None]) -> list[str]:
    """Write the sidecar files for ``model_path``; returns their paths."""
    from .. import __version__

    meta = dict(meta)
    meta.update({"tool": "cnndoctor", "version": __version__, "format": FORMAT,
                 "model_file": os.path.basename(model_path),
                 "model_fingerprint": fingerprint(model_path),
                 "written": time.strftime("%Y-%m-%dT%H:%M:%S")})
    kept = {k: np.asarray(v)[:SIDECAR_SAMPLES] for k, v in arrays.items() if v is not None}
    npz_path, json_path = model_path + SUFFIX_NPZ, model_path + SUFFIX_JSON
    tmp = npz_path + ".tmp.npz"
    np.savez_compressed(tmp, **kept)
    os.replace(tmp, npz_path)
    tmp = json_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(_plain(meta), fh, indent=1, allow_nan=False)
    os.replace(tmp, json_path)
    return [json_path, npz_path]


def read(model_path: str) -> tuple[dict | None, str | None]:
    """(sidecar, None) or (None, the reason there is none usable)."""
    json_path, npz_path = model_path + SUFFIX_JSON, model_path + SUFFIX_NPZ
    if not os.path.exists(json_path):
        return None, (f"no training record beside {os.path.basename(model_path)} (it was not "
                      f"saved under `cnndoctor run`)")
    try:
        with open(json_path, encoding="utf-8") as fh:
            meta = json.load(fh)
    except (OSError, ValueError) as exc:
        return None, f"{os.path.basename(json_path)} could not be read: {exc}"
    now = fingerprint(model_path)
    then = meta.get("model_fingerprint")
    if then and now and then != now:
        return None, (f"{os.path.basename(model_path)} changed after the training record beside "
                      f"it was written (saved again outside `cnndoctor run`?): the record was "
                      f"ignored")
    arrays: dict[str, Any] = {}
    if os.path.exists(npz_path):
        with np.load(npz_path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    meta["arrays"] = arrays
    meta["path"] = json_path
    return meta, None


def _plain(value: Any) -> Any:
    from ..report import _plain as plain

    return plain(value)
