"""Training records of ``cnndoctor run``, kept in cnndoctor's cache directory.

When a script saves a model during ``cnndoctor run``, what training saw (statistics, history,
setup, and a bounded sample of the training and validation inputs and labels as fed) is kept as
one *training record*: ``records/<key>.json`` and ``records/<key>.npz`` in the cache directory,
where ``<key>`` is the SHA-256 of the saved model file's content. A later session whose script
loads that file (an evaluation script run on another day) finds the record by the same hash and
is still compared against training. Nothing is written beside the user's files; a model file
saved again (other bytes) simply has no record until it is saved under ``cnndoctor run``.

Where: ``--cache-dir DIR``, else ``$CNNDOCTOR_CACHE``, else ``$XDG_CACHE_HOME/cnndoctor``, else
``~/.cache/cnndoctor``. The records take at most ``CACHE_LIMIT_BYTES``: beyond it, the least
recently used are removed. ``cnndoctor cache`` says where and how big; ``cnndoctor cache clear``
removes them (only files cnndoctor wrote there).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .capture import RECORD_SAMPLES

ENV_VAR = "CNNDOCTOR_CACHE"
RECORDS = "records"  # the sub-folder holding the records; `cache clear` touches nothing else
JSON, NPZ = ".json", ".npz"
TMP_MARK = ".tmp-"  # a record being written (renamed into place when complete)
ERROR_FILE = "last-internal-error.txt"  # details of the last failure inside cnndoctor itself
# The records take at most this much; beyond it the least recently used are removed. One record
# holds RECORD_SAMPLES samples: about 3 MB for 32x32x3 float32 images (fewer once compressed),
# 150 MB for 224x224x3 ones; 1 GiB keeps a few hundred small-image runs, or six ImageNet-sized.
CACHE_LIMIT_BYTES = 1024 ** 3
# Files above this size are identified by path, size and modification time instead of a full
# hash (hashing 2 GB takes several seconds, at save and again at load).
HASH_LIMIT_BYTES = 2 * 1024 ** 3
# A temporary file older than this is what a killed run left behind: removed by the next write.
STALE_TMP_S = 3600
FORMAT = 2


def directory(override: str | os.PathLike | None = None) -> str:
    """The cache directory (absolute): ``override``, ``$CNNDOCTOR_CACHE``, ``$XDG_CACHE_HOME``
    /cnndoctor, or ``~/.cache/cnndoctor``. Nothing is created here."""
    chosen = override or os.environ.get(ENV_VAR)
    if chosen:
        return os.path.abspath(os.path.expanduser(os.fspath(chosen)))
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = xdg if xdg and os.path.isabs(xdg) else os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "cnndoctor")


def origin(override: str | os.PathLike | None = None) -> str:
    """What chose the cache directory, in the words a user would look for."""
    if override:
        return "--cache-dir"
    if os.environ.get(ENV_VAR):
        return f"${ENV_VAR}"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return "$XDG_CACHE_HOME" if xdg and os.path.isabs(xdg) else "the default"


def fingerprint(path: str) -> dict | None:
    """SHA-256 of a model file (or of every file in a model directory), with its size; None when
    the path is not there."""
    if os.path.isdir(path):
        h = hashlib.sha256()
        size = 0
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                fp = os.path.join(root, name)
                size += os.path.getsize(fp)
                h.update(os.path.relpath(fp, path).encode())
                _hash_file(h, fp)
        return {"sha256": h.hexdigest(), "size": size}
    if not os.path.isfile(path):
        return None
    size = os.path.getsize(path)
    if size > HASH_LIMIT_BYTES:
        return {"size": size, "mtime": os.path.getmtime(path), "path": os.path.abspath(path)}
    h = hashlib.sha256()
    _hash_file(h, path)
    return {"sha256": h.hexdigest(), "size": size}


def _hash_file(h, path: str) -> None:
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)


def key_of(fp: dict) -> str:
    """The record's name: the content hash, or a hash of path, size and time for huge files."""
    if "sha256" in fp:
        return fp["sha256"]
    text = f"{fp['path']}|{fp['size']}|{fp['mtime']}"
    return hashlib.sha256(text.encode()).hexdigest()


def _records(cache_dir: str) -> str:
    return os.path.join(cache_dir, RECORDS)


@dataclass
class Written:
    key: str
    json_path: str
    npz_path: str
    evicted: int = 0  # older records removed to stay under the limit


def write(model_path: str, meta: dict, arrays: dict[str, np.ndarray | None],
          cache_dir: str | None = None, limit: int = CACHE_LIMIT_BYTES) -> Written:
    """Keep the training record of the model saved at ``model_path`` in the cache (``OSError``
    when the cache cannot be written)."""
    from .. import __version__

    cache_dir = directory(cache_dir)
    fp = fingerprint(model_path)
    if fp is None:
        raise FileNotFoundError(f"{model_path} is not there after saving")
    key = key_of(fp)
    folder = _records(cache_dir)
    os.makedirs(folder, exist_ok=True)
    meta = dict(meta)
    meta.update({"tool": "cnndoctor", "version": __version__, "format": FORMAT,
                 "model_file": os.path.abspath(model_path), "model_fingerprint": fp,
                 "written": time.strftime("%Y-%m-%dT%H:%M:%S")})
    kept = {k: np.asarray(v)[:RECORD_SAMPLES] for k, v in arrays.items() if v is not None}
    json_path, npz_path = os.path.join(folder, key + JSON), os.path.join(folder, key + NPZ)
    tag = f"{TMP_MARK}{os.getpid()}"
    tmp = npz_path + tag + NPZ  # np.savez adds .npz to a name without it
    try:
        np.savez_compressed(tmp, **kept)
        os.replace(tmp, npz_path)
        tmp = json_path + tag
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(_plain(meta), fh, indent=1, allow_nan=False)
        os.replace(tmp, json_path)  # last: a record is only found once both files are there
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    evicted = evict(cache_dir, limit, keep=key)
    return Written(key, json_path, npz_path, evicted)


def read(model_path: str, cache_dir: str | None = None) -> tuple[dict | None, str | None]:
    """(record, None) for the model file at ``model_path``, or (None, why there is none)."""
    cache_dir = directory(cache_dir)
    name = os.path.basename(model_path)
    fp = fingerprint(model_path)
    if fp is None:
        return None, f"{name} is not there"
    json_path = os.path.join(_records(cache_dir), key_of(fp) + JSON)
    npz_path = json_path[:-len(JSON)] + NPZ
    if not os.path.exists(json_path):
        return None, (f"no training record of {name} in the cache ({cache_dir}): it was not "
                      f"saved under `cnndoctor run`, was saved again since, or its record was "
                      f"removed (`cnndoctor cache clear`, or the cache's size limit)")
    try:
        with open(json_path, encoding="utf-8") as fh:
            meta = json.load(fh)
        arrays: dict[str, Any] = {}
        if os.path.exists(npz_path):
            with np.load(npz_path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        return None, f"the training record {json_path} could not be read: {exc}"
    try:
        os.utime(json_path)  # recently used: the last to be evicted
    except OSError:
        pass
    meta["arrays"] = arrays
    meta["path"] = json_path
    return meta, None


def remove(cache_dir: str | None, key: str) -> None:
    """Remove one record (a model file saved again in the same session supersedes it)."""
    folder = _records(directory(cache_dir))
    for suffix in (JSON, NPZ):
        try:
            os.remove(os.path.join(folder, key + suffix))
        except FileNotFoundError:
            pass


def _entries(cache_dir: str) -> dict[str, dict]:
    """key -> {"bytes", "used" (last use), "files"} for each record; temporary files as well,
    under their own name."""
    folder = _records(cache_dir)
    out: dict[str, dict] = {}
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return out
    for name in names:
        path = os.path.join(folder, name)
        if TMP_MARK in name:
            key = name
        elif name.endswith((JSON, NPZ)):
            key = name.rsplit(".", 1)[0]
        else:
            continue  # not ours
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue
        e = out.setdefault(key, {"bytes": 0, "used": 0.0, "files": [], "tmp": TMP_MARK in name,
                                 "json": False})
        e["bytes"] += st.st_size
        e["files"].append(path)
        if name.endswith(JSON) and not e["tmp"]:  # read() touches the .json: its time is the use
            e["used"], e["json"] = st.st_mtime, True
        elif not e["json"]:
            e["used"] = max(e["used"], st.st_mtime)
    return out


def usage(cache_dir: str | None = None) -> tuple[int, int]:
    """(number of training records, bytes they take)."""
    entries = _entries(directory(cache_dir))
    records = [e for e in entries.values() if not e["tmp"]]
    return len(records), sum(e["bytes"] for e in entries.values())


def evict(cache_dir: str | None = None, limit: int = CACHE_LIMIT_BYTES,
          keep: str | None = None) -> int:
    """Remove the least recently used records until they take at most ``limit`` bytes (never
    ``keep``, the record just written) and stale temporary files; returns how many records."""
    cache_dir = directory(cache_dir)
    entries = _entries(cache_dir)
    now = time.time()
    for key, e in list(entries.items()):
        if e["tmp"]:
            if now - e["used"] > STALE_TMP_S:
                _unlink(e["files"])
            del entries[key]
    total = sum(e["bytes"] for e in entries.values())
    removed = 0
    for key, e in sorted(entries.items(), key=lambda kv: kv[1]["used"]):
        if total <= limit:
            break
        if key == keep:
            continue
        _unlink(e["files"])
        total -= e["bytes"]
        removed += 1
    return removed


def clear(cache_dir: str | None = None) -> tuple[int, int]:
    """Remove every training record (and temporary file) cnndoctor wrote in the cache;
    returns (records, bytes) removed. Other files in that directory are left alone."""
    cache_dir = directory(cache_dir)
    entries = _entries(cache_dir)
    for e in entries.values():
        _unlink(e["files"])
    error_file = os.path.join(cache_dir, ERROR_FILE)
    if os.path.exists(error_file):
        _unlink([error_file])
    for folder in (_records(cache_dir), cache_dir):
        try:
            os.rmdir(folder)  # only when empty
        except OSError:
            pass
    return (sum(1 for e in entries.values() if not e["tmp"]),
            sum(e["bytes"] for e in entries.values()))


def save_internal_error(text: str, cache_dir: str | None = None) -> str | None:
    """Keep the details of a failure inside cnndoctor (a traceback, for a bug report) in the
    cache; returns the file, or None when it cannot be written."""
    cache_dir = directory(cache_dir)
    path = os.path.join(cache_dir, ERROR_FILE)
    try:
        os.makedirs(cache_dir, exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError:
        return None
    return path


def _unlink(paths) -> None:
    for p in paths:
        try:
            os.remove(p)
        except FileNotFoundError:
            pass


def _plain(value: Any) -> Any:
    from ..report import _plain as plain

    return plain(value)
