"""Hostile and odd scripts under ``cnndoctor run`` (cases for ``benchmarks/bad_inputs.py``).

Each case writes a small user script into its folder (a CNN trained for a second or two on 200
generated 8x8 images) and runs it as a user would: ``python -m cnndoctor run ...`` in
that folder. What each one shows:

- the user's folder is left as it was, apart from what the script writes itself (a saved model:
  the training record goes to the cache, ``$XDG_CACHE_HOME/cnndoctor``, outside the folder),
  and an evaluation script run later finds training there (two ``cnndoctor run`` calls, made
  from a few lines of Python: the case's ``via`` says "api");
- a script that never ends is stopped by ``--timeout`` and what it did is still diagnosed;
- ``sys.exit(0)``, ``sys.exit(3)``, ``os._exit(0)``, ``os._exit(3)`` mid-way: what was captured
  survives and is diagnosed (a non-zero status is the ``script-error`` finding: exit 1);
- ``DataLoader(num_workers=2)``: the worker processes neither break the hooks nor hang;
- ``os.chdir`` in the script: its relative paths are its own, ``--json`` stays relative to where
  cnndoctor was started;
- ``sys.argv``: the arguments after ``--`` reach the script, ``argv[0]`` is its path;
- megabytes printed: shown as they come (nothing held), the report still follows;
- an exception in a Keras callback or a torch training loop: the script's error in one labelled
  block (no "Traceback" header, no frame of cnndoctor), then the diagnosis;
- a script that swallows every stop: one line, exit 2, never a hang.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

from bad_cases_common import Case

# 200 generated 8x8 images in 4 classes: a brighter 3x3 square in the quadrant of the class, on
# noise. numpy only (already imported by cnndoctor), so a script reaches its training loop at once
# and a few seconds of --timeout are training, not imports; every class is as bright as the others.
DATA = """\
import numpy as np
rng = np.random.default_rng(0)
y = (np.arange(200) % 4).astype("int64")
x = rng.normal(0.5, 0.1, (200, 8, 8)).astype("float32")
for i, c in enumerate(y):
    r, k = divmod(int(c), 2)
    x[i, 4 * r:4 * r + 3, 4 * k:4 * k + 3] += 0.4
"""

TORCH_SETUP = DATA + """\
import torch
from torch import nn
torch.manual_seed(0)
X, Y = torch.tensor(x[:, None]), torch.tensor(y)
model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
loss_fn = nn.CrossEntropyLoss()


def train_epoch():
    model.train()
    for i in range(0, len(X), 20):
        optimizer.zero_grad()
        loss = loss_fn(model(X[i:i + 20]), Y[i:i + 20])
        loss.backward()
        optimizer.step()
    return float(loss)
"""

KERAS_SETUP = DATA + """\
import os
os.environ.setdefault("KERAS_BACKEND", "torch")
import keras
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, activation="relu"),
                          keras.layers.Flatten(), keras.layers.Dense(4, activation="softmax")])
model.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
"""


def _writer(**files: str):
    """setup(folder): write each script (name -> source) into the case's folder."""
    def setup(folder: Path) -> None:
        for name, text in files.items():
            (folder / name).write_text(textwrap.dedent(text))
    return setup


def _run(*args: str) -> list[str]:
    return ["run", "--budget", "quick", *args]


def cases() -> list[Case]:
    torch_train = TORCH_SETUP + """\
for epoch in range(3):
    print(f"epoch {epoch}: loss {train_epoch():.3f}")
torch.save(model.state_dict(), "model.pt")
print("saved model.pt")
"""
    never_ends = TORCH_SETUP + """\
import time
epoch = 0
while True:  # "train until I press Ctrl-C"
    print(f"epoch {epoch}: loss {train_epoch():.3f}", flush=True)
    epoch += 1
    time.sleep(0.1)
"""
    swallows = TORCH_SETUP + """\
while True:
    try:
        train_epoch()
    except BaseException:  # catches everything, even KeyboardInterrupt
        pass
"""

    def mid_way(call: str) -> str:
        return TORCH_SETUP + f"""\
import os, sys
for epoch in range(2):
    print(f"epoch {{epoch}}: loss {{train_epoch():.3f}}")
{call}
print("never printed")
"""

    loader = TORCH_SETUP + """\
from torch.utils.data import DataLoader, TensorDataset

if __name__ == "__main__":
    data = DataLoader(TensorDataset(X, Y), batch_size=20, shuffle=True, num_workers=2)
    for epoch in range(2):
        for xb, yb in data:
            optimizer.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
        print(f"epoch {epoch}: loss {float(loss):.3f}")
"""
    chdir = TORCH_SETUP + """\
import os
os.makedirs("runs", exist_ok=True)
os.chdir("runs")  # the script's own relative paths are from here on
for epoch in range(3):
    train_epoch()
torch.save(model.state_dict(), "model.pt")
print("saved", os.path.abspath("model.pt"))
"""
    argv = TORCH_SETUP + """\
import sys
expected = ["--epochs", "2", "--name", "two words"]
if sys.argv[1:] != expected or not sys.argv[0].endswith("train.py"):
    print("wrong arguments:", sys.argv, file=sys.stderr)
    sys.exit(5)
for epoch in range(int(sys.argv[2])):
    train_epoch()
print("arguments as given:", sys.argv[1:])
"""
    chatty = TORCH_SETUP + """\
for epoch in range(3):
    for step in range(20_000):  # 20 MB of progress lines
        print(f"epoch {epoch} step {step:6d} " + "." * 980)
    train_epoch()
"""
    keras_callback = KERAS_SETUP + """\
class StopWhenGood(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise ValueError(f"accuracy {logs['accuracy']:.2f} logged, then the callback broke")


model.fit(x[..., None], y, epochs=5, batch_size=20, verbose=0, callbacks=[StopWhenGood()])
"""
    torch_loop = TORCH_SETUP + """\
for epoch in range(4):
    loss = train_epoch()
    if epoch == 2:
        raise RuntimeError(f"checkpoint server unreachable (loss was {loss:.3f})")
"""
    evaluate = TORCH_SETUP + """\
model.load_state_dict(torch.load("model.pt", weights_only=True))
model.eval()
with torch.no_grad():  # the bug: the evaluation forgets the training scale
    pred = model(X * 255).argmax(1)
print(f"accuracy {float((pred == Y).float().mean()):.2f}")
"""
    two_sessions = """\
import subprocess
cmd = [sys.executable, "-m", "cnndoctor", "run", "--budget", "quick"]
first = subprocess.run(cmd + ["train.py"], capture_output=True, text=True)
assert first.returncode == 0, first.stderr[-3000:]
second = subprocess.run(cmd + ["evaluate.py"], capture_output=True, text=True)
sys.stdout.write(second.stdout)
sys.stderr.write(second.stderr)
sys.exit(second.returncode)
"""
    return [
        Case("run: train script saving a model (folder as it was)", "cli",
             argv=_run("train.py"), exit_code=0, writes=("model.pt",),
             setup=_writer(**{"train.py": torch_train})),
        Case("run: train.py, then evaluate.py in a later run (the cache)", "api",
             code=two_sessions, exit_code=1, finding="preprocessing-mismatch",
             writes=("model.pt",),
             setup=_writer(**{"train.py": torch_train, "evaluate.py": evaluate})),
        Case("run: --timeout on a script that never ends", "cli",
             argv=_run("--timeout", "10", "train.py"), exit_code=0,
             setup=_writer(**{"train.py": never_ends})),
        Case("run: --timeout on a script swallowing every stop", "cli",
             argv=_run("--timeout", "8", "train.py"), exit_code=2,
             setup=_writer(**{"train.py": swallows})),
        Case("run: sys.exit(0) mid-way", "cli", argv=_run("train.py"), exit_code=0,
             setup=_writer(**{"train.py": mid_way("sys.exit(0)")})),
        Case("run: sys.exit(3) mid-way", "cli", argv=_run("train.py"), exit_code=1,
             setup=_writer(**{"train.py": mid_way("sys.exit(3)")})),
        Case("run: os._exit(0) mid-way", "cli", argv=_run("train.py"), exit_code=0,
             setup=_writer(**{"train.py": mid_way("os._exit(0)")})),
        Case("run: os._exit(3) mid-way", "cli", argv=_run("train.py"), exit_code=1,
             setup=_writer(**{"train.py": mid_way("os._exit(3)")})),
        Case("run: torch DataLoader(num_workers=2)", "cli", argv=_run("train.py"), exit_code=0,
             setup=_writer(**{"train.py": loader})),
        Case("run: os.chdir in the script, relative --json", "cli",
             argv=_run("--json", "report.json", "train.py"), exit_code=0,
             writes=("runs/model.pt", "report.json"), setup=_writer(**{"train.py": chdir})),
        Case("run: script reading sys.argv (args after --)", "cli",
             argv=_run("train.py", "--", "--epochs", "2", "--name", "two words"), exit_code=0,
             setup=_writer(**{"train.py": argv})),
        Case("run: script printing 60 MB", "cli", argv=_run("train.py"), exit_code=0,
             setup=_writer(**{"train.py": chatty})),
        Case("run: exception inside a Keras callback", "cli", argv=_run("train.py"),
             exit_code=1, setup=_writer(**{"train.py": keras_callback})),
        Case("run: exception inside a torch training loop", "cli", argv=_run("train.py"),
             exit_code=1, setup=_writer(**{"train.py": torch_loop})),
    ]
