"""Bad inputs of ``cnndoctor check`` and ``cnndoctor.diagnose`` / ``cnndoctor.load_model``: model
files from strangers (pickles that would run code, TorchScript, Lambda layers), damaged and
misnamed files, and malformed data (layouts, lengths, classes, label types, ranks, folders).

Every case is small: a 3-class problem of 8 x 8 grayscale images (a bright 3 x 3 block whose
place is the class, on noise: learnable, so a healthy model gets a clean report), 60 images, a
tiny CNN, ``--budget static``. The files a case needs are made once (under a lock: the runner
sets cases up from two threads) and copied into the case's folder.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
from pathlib import Path

from bad_cases_common import Case

os.environ.setdefault("KERAS_BACKEND", "torch")

SIDE, CLASSES, IMAGES = 8, 3, 60
STATIC = ["-q", "--budget", "static"]

MODEL_PY = """\
import torch.nn as nn

loss = nn.CrossEntropyLoss()


def build():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


class Scale(nn.Module):
    def forward(self, x):
        return x / 255.0  # image folders are read as 0-255


def build_for_folders():
    return nn.Sequential(Scale(), *build())


def build_wider():
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 3))
"""

BROKEN_PY = """\
import torch.nn as nn


def build():
    layers = [nn.Conv2d(1, 4, 3), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(4 * 6 * 6))  # a missing argument
"""

# A pickle whose unpickling opens (creates) a file: what a hostile model file does, harmlessly.
HOSTILE = """\
import torch


class Hostile:
    def __reduce__(self):
        return (open, ("PICKLE_RAN_CODE", "w"))


torch.save({"weight": torch.zeros(3), "payload": Hostile()}, "model.pt")
"""

_lock = threading.Lock()
_store: Path | None = None


def _images(seed: int, n: int = IMAGES, side: int = SIDE):
    """N x side x side x 1 float32 in [0, 1] and labels 0..2: class c has a bright block at
    column 2c + 1 of the middle rows."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y = np.arange(n) % CLASSES
    x = rng.random((n, side, side, 1), dtype=np.float32) * 0.3
    for i, c in enumerate(y):
        x[i, 2:5, 2 * c + 1:2 * c + 4, 0] += 0.7
    return x, y.astype(np.int64)


def _make_store(root: Path) -> None:
    import numpy as np
    import torch

    x, y = _images(0)
    chw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    np.savez(root / "train.npz", x=chw, y=y)                       # torch layout
    np.savez(root / "train_keras.npz", x=x, y=y)                   # keras layout
    np.savez(root / "channels_last.npz", x=x, y=y)                 # keras layout for torch
    np.savez(root / "short_labels.npz", x=chw, y=y[:50])
    np.savez(root / "one_class.npz", x=chw, y=np.zeros_like(y))
    np.savez(root / "string_labels.npz", x=chw, y=np.array(["cat", "dog", "owl"])[y])
    np.savez(root / "five_d.npz", x=chw[:, None], y=y)
    nan = chw.copy()
    nan[3, 0, 4, 4] = np.nan
    np.savez(root / "nan.npz", x=nan, y=y)
    np.savez(root / "objects.npz", x=chw, y=np.array([{"label": int(v)} for v in y],
                                                      dtype=object))
    whole = (root / "train.npz").read_bytes()
    (root / "truncated.npz").write_bytes(whole[: len(whole) // 2])

    (root / "model.py").write_text(MODEL_PY)
    (root / "broken_model.py").write_text(BROKEN_PY)
    namespace: dict = {}
    exec(MODEL_PY, namespace)
    torch.manual_seed(0)
    net = namespace["build"]()
    torch.save(net, root / "whole.pt")
    torch.save(net.state_dict(), root / "weights.pt")
    torch.jit.save(torch.jit.script(net), root / "scripted.pt")
    data = (root / "whole.pt").read_bytes()
    (root / "truncated.pt").write_bytes(data[: len(data) // 2])
    (root / "empty.pt").write_bytes(b"")

    hostile = root / "hostile"
    hostile.mkdir()
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", HOSTILE], cwd=hostile, check=True)
    assert not (hostile / "PICKLE_RAN_CODE").exists()

    import keras

    keras.utils.set_random_seed(0)
    km = keras.Sequential([keras.Input((SIDE, SIDE, 1)),
                           keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.Flatten(),
                           keras.layers.Dense(CLASSES, activation="softmax")])
    km.compile("adam", "sparse_categorical_crossentropy")
    km.save(root / "model.keras")
    km.save(root / "model.h5")
    lam = keras.Sequential([keras.Input((SIDE, SIDE, 1)), keras.layers.Lambda(lambda t: t * 2.0),
                            keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.Flatten(),
                            keras.layers.Dense(CLASSES, activation="softmax")])
    lam.compile("adam", "sparse_categorical_crossentropy")
    lam.save(root / "lambda.keras")
    data = (root / "model.keras").read_bytes()
    (root / "truncated.keras").write_bytes(data[: len(data) // 2])
    (root / "empty.keras").write_bytes(b"")
    data = (root / "model.h5").read_bytes()
    (root / "truncated.h5").write_bytes(data[: len(data) // 3])
    (root / "notes.txt").write_text("this is not a model\n")

    mixed, my = _images(1, n=30, side=10)
    _folder(root / "mixed", x, y, extra=(mixed, my))
    _folder(root / "broken_image", x[:30], y[:30])
    (root / "broken_image" / "c1" / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    (root / "empty_folder").mkdir()
    for c in range(CLASSES):
        (root / "no_images" / f"c{c}").mkdir(parents=True)
        (root / "no_images" / f"c{c}" / "README.txt").write_text("images go here\n")


def _folder(path: Path, x, y, extra=None) -> None:
    import numpy as np
    from PIL import Image

    def save(arr, label, name):
        sub = path / f"c{label}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray((np.clip(arr[..., 0], 0, 1) * 255).astype(np.uint8), "L").save(sub / name)

    for i, (img, label) in enumerate(zip(x, y)):
        save(img, int(label), f"{i:03d}.png")
    if extra is not None:
        for i, (img, label) in enumerate(zip(*extra)):
            save(img, int(label), f"big{i:03d}.png")


def _files(*names: str, rename: dict | None = None):
    """A setup copying the shared files ``names`` into the case folder (``rename``: name ->
    the name it has there)."""
    rename = rename or {}

    def setup(folder: Path) -> None:
        global _store
        with _lock:
            if _store is None:
                root = Path(tempfile.mkdtemp(prefix="cnndoctor-bad-inputs-"))
                atexit.register(shutil.rmtree, root, True)
                _make_store(root)
                _store = root
        for name in names:
            src, dst = _store / name, folder / rename.get(name, name)
            if src.is_dir():
                shutil.copytree(src, dst)
            else:
                shutil.copyfile(src, dst)

    return setup


def _check(*argv: str) -> list[str]:
    return ["check", *argv, *STATIC]


# API bodies: run inside ``try:`` by the runner (numpy as np, diagnose, InputError imported).
_TORCH_API = """
import sys
sys.path.insert(0, ".")
from model import build, loss
train = np.load("train.npz")
x, y = train["x"], train["y"]
"""


def _api(body: str) -> str:
    return _TORCH_API + body


def cases() -> list[Case]:
    c = []
    add = c.append

    # ---- untrusted model files --------------------------------------------------------------
    add(Case("pickled torch module (.pt), no --trust-pickle", "cli",
             _check("whole.pt", "--train", "train.npz"), setup=_files("whole.pt", "train.npz")))
    add(Case("pickled torch module, load_model()", "api", code="""
import cnndoctor
cnndoctor.load_model("whole.pt")
""", setup=_files("whole.pt")))
    add(Case("pickled torch module with --trust-pickle", "cli",
             _check("whole.pt", "--train", "train.npz", "--loss", "cross_entropy",
                    "--trust-pickle"), exit_code=0, finding="verdict:",
             setup=_files("whole.pt", "train.npz")))
    add(Case("pickle that would write a file, no --trust-pickle", "cli",
             _check("hostile/model.pt", "--train", "train.npz"),
             setup=_files("hostile", "train.npz")))
    add(Case("pickle that would write a file, load_model()", "api", code="""
import cnndoctor
cnndoctor.load_model("hostile/model.pt")
""", setup=_files("hostile")))
    add(Case("state_dict given as the model", "cli", _check("weights.pt", "--train", "train.npz"),
             setup=_files("weights.pt", "train.npz")))
    add(Case("--model model.py:build --weights weights.pt", "cli",
             _check("--model", "model.py:build", "--weights", "weights.pt", "--train",
                    "train.npz"), exit_code=0, finding="verdict:",
             setup=_files("model.py", "weights.pt", "train.npz")))
    add(Case("--weights that do not fit the built model", "cli",
             _check("--model", "model.py:build_wider", "--weights", "weights.pt", "--train",
                    "train.npz"), setup=_files("model.py", "weights.pt", "train.npz")))
    add(Case("load_model(weights=) that do not fit", "api", code="""
import cnndoctor
cnndoctor.load_model("model.py:build_wider", weights="weights.pt")
""", setup=_files("model.py", "weights.pt")))
    add(Case("--weights: a pickled module, not a state_dict", "cli",
             _check("--model", "model.py:build", "--weights", "whole.pt", "--train", "train.npz"),
             setup=_files("model.py", "whole.pt", "train.npz")))
    add(Case("TorchScript archive, no --trust-pickle", "cli",
             _check("scripted.pt", "--train", "train.npz"),
             setup=_files("scripted.pt", "train.npz")))
    add(Case("Keras file with a Lambda layer (safe mode)", "cli",
             _check("lambda.keras", "--train", "train_keras.npz"),
             setup=_files("lambda.keras", "train_keras.npz")))
    add(Case("Keras Lambda layer with --trust-pickle", "cli",
             _check("lambda.keras", "--train", "train_keras.npz", "--trust-pickle"), exit_code=0,
             finding="verdict:", setup=_files("lambda.keras", "train_keras.npz")))
    add(Case("diagnose() given a model path", "api", code="""
diagnose("model.keras", train=("train_keras.npz"))
""", setup=_files("model.keras", "train_keras.npz")))

    # ---- damaged and misnamed files ---------------------------------------------------------
    add(Case("zero-byte .keras", "cli", _check("empty.keras", "--train", "train_keras.npz"),
             setup=_files("empty.keras", "train_keras.npz")))
    add(Case("truncated .keras", "cli", _check("truncated.keras", "--train", "train_keras.npz"),
             setup=_files("truncated.keras", "train_keras.npz")))
    add(Case("truncated .keras, load_model()", "api", code="""
import cnndoctor
cnndoctor.load_model("truncated.keras")
""", setup=_files("truncated.keras")))
    add(Case("truncated .h5", "cli", _check("truncated.h5", "--train", "train_keras.npz"),
             setup=_files("truncated.h5", "train_keras.npz")))
    add(Case("zero-byte .pt", "cli", _check("empty.pt", "--train", "train.npz"),
             setup=_files("empty.pt", "train.npz")))
    add(Case("truncated .pt (with --trust-pickle)", "cli",
             _check("truncated.pt", "--train", "train.npz", "--trust-pickle"),
             setup=_files("truncated.pt", "train.npz")))
    add(Case(".keras file named .pt", "cli", _check("model.pt", "--train", "train_keras.npz"),
             setup=_files("model.keras", "train_keras.npz", rename={"model.keras": "model.pt"})))
    add(Case("torch file named .keras", "cli", _check("model.keras", "--train", "train.npz"),
             setup=_files("whole.pt", "train.npz", rename={"whole.pt": "model.keras"})))
    add(Case("a .txt file as the model", "cli", _check("notes.txt", "--train", "train.npz"),
             setup=_files("notes.txt", "train.npz")))
    add(Case("model.py that raises when building", "cli",
             _check("broken_model.py:build", "--train", "train.npz"),
             setup=_files("broken_model.py", "train.npz")))
    add(Case("data file that is a model (.keras as --train)", "cli",
             _check("model.keras", "--train", "model.keras"), setup=_files("model.keras")))
    add(Case("truncated .npz", "cli", _check("model.py:build", "--train", "truncated.npz"),
             setup=_files("model.py", "truncated.npz")))
    add(Case(".npz holding an object array (pickle)", "cli",
             _check("model.py:build", "--train", "objects.npz"),
             setup=_files("model.py", "objects.npz")))
    add(Case(".npz object array, diagnose(train=path)", "api", code=_api("""
diagnose(build(), train="objects.npz", loss=loss, budget="static", progress=False)
"""), setup=_files("model.py", "train.npz", "objects.npz")))

    # ---- malformed data ---------------------------------------------------------------------
    add(Case("channels-last images to a torch model", "cli",
             _check("model.py:build", "--train", "channels_last.npz"), exit_code=1,
             finding="channel-layout", setup=_files("model.py", "channels_last.npz")))
    add(Case("channels-last images to a torch model", "api", code=_api("""
report = diagnose(build(), train=(x.transpose(0, 2, 3, 1), y), loss=loss, budget="static",
                  progress=False)
print(report)
sys.exit(report.exit_code)
"""), exit_code=1, finding="channel-layout", setup=_files("model.py", "train.npz")))
    add(Case("mismatched x/y lengths", "cli",
             _check("model.py:build", "--train", "short_labels.npz"),
             setup=_files("model.py", "short_labels.npz")))
    add(Case("mismatched x/y lengths", "api", code=_api("""
diagnose(build(), train=(x, y[:50]), loss=loss, budget="static", progress=False)
"""), setup=_files("model.py", "train.npz")))
    add(Case("one class only", "cli", _check("model.py:build", "--train", "one_class.npz"),
             setup=_files("model.py", "one_class.npz")))
    add(Case("one class only", "api", code=_api("""
diagnose(build(), train=(x, np.zeros_like(y)), loss=loss, budget="static", progress=False)
"""), setup=_files("model.py", "train.npz")))
    add(Case("a single image", "api", code=_api("""
diagnose(build(), train=(x[:1], y[:1]), loss=loss, budget="static", progress=False)
"""), setup=_files("model.py", "train.npz")))
    add(Case("labels as strings", "cli", _check("model.py:build", "--train", "string_labels.npz"),
             setup=_files("model.py", "string_labels.npz")))
    add(Case("labels as strings", "api", code=_api("""
diagnose(build(), train=(x, np.array(["cat", "dog", "owl"])[y]), loss=loss, budget="static",
         progress=False)
"""), setup=_files("model.py", "train.npz")))
    add(Case("float labels 0.5, 1.5, ...", "api", code=_api("""
diagnose(build(), train=(x, y + 0.5), loss=loss, budget="static", progress=False)
"""), setup=_files("model.py", "train.npz")))
    add(Case("float labels 0.0, 1.0, 2.0 (accepted)", "api", code=_api("""
report = diagnose(build(), train=(x, y.astype("float32")), loss=loss, budget="static",
                  progress=False)
print(report)
sys.exit(report.exit_code)
"""), exit_code=0, finding="verdict:", setup=_files("model.py", "train.npz")))
    add(Case("1-D array as images", "api", code=_api("""
diagnose(build(), train=(x.reshape(-1)[:len(y)], y), loss=loss, budget="static", progress=False)
"""), setup=_files("model.py", "train.npz")))
    add(Case("5-D array as images", "cli", _check("model.py:build", "--train", "five_d.npz"),
             setup=_files("model.py", "five_d.npz")))
    add(Case("NaN in the images", "cli", _check("model.py:build", "--train", "nan.npz"),
             setup=_files("model.py", "nan.npz")))
    add(Case("images of mixed sizes in a folder", "cli",
             _check("model.py:build_for_folders", "--train-dir", "mixed"), exit_code=0,
             finding="resized",
             setup=_files("model.py", "mixed")))
    add(Case("a list of images of mixed sizes", "api", code=_api("""
small, large = list(x[:30]), list(np.zeros((30, 1, 10, 10), np.float32))
diagnose(build(), train=(small + large, np.concatenate([y[:30], y[:30]])), loss=loss,
         budget="static", progress=False)
"""), setup=_files("model.py", "train.npz")))
    add(Case("empty folder", "cli", _check("model.py:build", "--train-dir", "empty_folder"),
             setup=_files("model.py", "empty_folder")))
    add(Case("class folders with no images", "api", code=_api("""
diagnose(build(), train="no_images", loss=loss, budget="static", progress=False)
"""), setup=_files("model.py", "train.npz", "no_images")))
    add(Case("a broken image file in a folder", "cli",
             _check("model.py:build", "--train-dir", "broken_image"),
             setup=_files("model.py", "broken_image")))
    return c
