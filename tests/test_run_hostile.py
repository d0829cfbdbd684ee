"""`cnndoctor run` with scripts that misbehave, and what it writes (nothing beside the user's
files).

Small torch scripts train a real CNN for a second on 200 generated 8x8 images (4 classes: a
brighter square in the quadrant of the class). Most tests run them in this process through
``Session`` (as the command does); the two that are about the command's own output (the user's
folder, --timeout) run ``cnndoctor run`` as a user would.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from cnndoctor.run import NothingToDiagnose, Session, cache
from cnndoctor.run.stopping import STOP_RETRY_S

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SETUP = """\
import numpy as np
import torch
from torch import nn
rng = np.random.default_rng(0)
y = (np.arange(200) % 4).astype("int64")
x = rng.normal(0.5, 0.1, (200, 8, 8)).astype("float32")
for i, c in enumerate(y):
    r, k = divmod(int(c), 2)
    x[i, 4 * r:4 * r + 3, 4 * k:4 * k + 3] += 0.4
torch.manual_seed(0)
X, Y = torch.tensor(x[:, None]), torch.tensor(y)
model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
loss_fn = nn.CrossEntropyLoss()


def train_epoch(zero_grad=True):
    model.train()
    for i in range(0, len(X), 20):
        if zero_grad:
            optimizer.zero_grad()
        loss = loss_fn(model(X[i:i + 20]), Y[i:i + 20])
        loss.backward()
        optimizer.step()
    return loss.item()
"""

def with_setup(*parts: str) -> str:
    """A script: the data, model and training function above, then the parts (each dedented)."""
    return SETUP + "".join(textwrap.dedent(p) for p in parts)


TRAIN_AND_SAVE = with_setup("""\
for epoch in range(3):
    train_epoch()
torch.save(model.state_dict(), "model.pt")
""")

EVALUATE_LOADED = with_setup("""\
model.load_state_dict(torch.load("model.pt", weights_only=True))
model.eval()
with torch.no_grad():
    model(X * 255)  # the evaluation forgets the training scale
""")


def write(folder, name, text) -> str:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def checksums(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run_cli(*args, cwd, cache_dir, timeout=300):
    env = dict(os.environ, PYTHONPATH=ROOT, CNNDOCTOR_CACHE=str(cache_dir), NO_COLOR="1")
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run([sys.executable, "-m", "cnndoctor", "run", "--budget", "quick", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def user(tmp_path, monkeypatch):
    """The user's folder (the working directory) and a cache directory outside it."""
    folder = tmp_path / "project"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setenv("CNNDOCTOR_CACHE", str(tmp_path / "cache"))
    return folder


# ---- what cnndoctor writes: the cache ---------------------------------------------------------
def test_training_record_goes_to_the_cache_and_a_later_session_finds_it(user, tmp_path):
    train = write(user, "train.py", TRAIN_AND_SAVE)
    first = Session()  # CNNDOCTOR_CACHE chooses the folder
    first.run([train])
    assert first.scripts[0].status == "ok", first.scripts[0].error
    model_hash = hashlib.sha256((user / "model.pt").read_bytes()).hexdigest()
    records = tmp_path / "cache" / "records"
    assert sorted(os.listdir(records)) == [model_hash + ".json", model_hash + ".npz"]
    assert first.records_written == [str(records / (model_hash + ".json"))]
    assert sorted(os.listdir(user)) == ["model.pt", "train.py"]  # nothing of cnndoctor's here

    evaluate = write(user, "evaluate.py", EVALUATE_LOADED)
    later = Session()
    later.run([evaluate])
    kwargs = later.diagnose_kwargs()
    assert kwargs["train"][0].shape == (200, 1, 8, 8)  # the training batches, from the record
    assert float(kwargs["evaluate"].max()) > 100  # the evaluation inputs as fed, x 255
    assert any(str(records / model_hash) in n for n in later.notes)

    # Saved again with other weights: the record of the old bytes no longer applies.
    import torch

    state = torch.load(user / "model.pt", weights_only=True)
    torch.save({k: v + 1 for k, v in state.items()}, user / "model.pt")
    again = Session()
    again.run([evaluate])
    with pytest.raises(NothingToDiagnose, match="no training record of model.pt in the cache"):
        again.diagnose_kwargs()


def test_a_model_saved_every_epoch_keeps_one_record(user, tmp_path):
    script = write(user, "train.py", with_setup("""\
        for epoch in range(3):  # a checkpoint per epoch, at the same path
            train_epoch()
            torch.save(model.state_dict(), "model.pt")
        """))
    session = Session()
    session.run([script])
    model_hash = hashlib.sha256((user / "model.pt").read_bytes()).hexdigest()
    assert sorted(os.listdir(tmp_path / "cache" / "records")) == [model_hash + ".json",
                                                                  model_hash + ".npz"]
    assert session.records_written == [str(tmp_path / "cache" / "records" / model_hash) + ".json"]


def test_cache_location_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("CNNDOCTOR_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.directory() == str(tmp_path / "xdg" / "cnndoctor")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # not absolute: ignored (XDG spec)
    assert cache.directory() == os.path.join(os.path.expanduser("~"), ".cache", "cnndoctor")
    monkeypatch.setenv("CNNDOCTOR_CACHE", str(tmp_path / "mine"))
    assert cache.directory() == str(tmp_path / "mine")
    assert cache.directory(tmp_path / "flag") == str(tmp_path / "flag")  # --cache-dir wins


def test_cache_limit_removes_the_least_recently_used(tmp_path):
    import numpy as np

    where = str(tmp_path / "cache")
    rng = np.random.default_rng(0)
    arrays = {"train_x": rng.random((64, 32)).astype("float32")}  # incompressible: ~8 KB
    written = []
    for i in range(3):
        model = tmp_path / f"model{i}.pt"
        model.write_bytes(bytes([i]) * 100)
        written.append(cache.write(str(model), {"saved_by": f"train{i}.py"}, arrays, where))
        past = time.time() - 1000 + i * 100  # written in this order
        for path in (written[-1].json_path, written[-1].npz_path):
            os.utime(path, (past, past))
    n, size = cache.usage(where)
    assert n == 3
    one = size // 3
    assert cache.read(str(tmp_path / "model0.pt"), where)[0] is not None  # model0: used now
    (tmp_path / "model3.pt").write_bytes(b"\x03" * 100)
    w = cache.write(str(tmp_path / "model3.pt"), {}, arrays, where, limit=int(2.5 * one))
    assert w.evicted == 2  # model1 and model2, the least recently used; model0 was just read
    assert cache.read(str(tmp_path / "model1.pt"), where)[0] is None
    assert cache.read(str(tmp_path / "model2.pt"), where)[0] is None
    assert cache.read(str(tmp_path / "model0.pt"), where)[0]["saved_by"] == "train0.py"
    assert cache.read(str(tmp_path / "model3.pt"), where)[0] is not None


def test_cache_command_says_where_and_clear_empties_it(tmp_path, capsys):
    from cnndoctor.cli import main

    where = tmp_path / "cache"
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    import numpy as np

    cache.write(str(model), {}, {"train_x": np.zeros((4, 2, 2, 1))}, str(where))
    (where / "notes.txt").write_text("the user's own file")  # not cnndoctor's: left alone
    assert main(["cache", "--cache-dir", str(where)]) == 0
    out = capsys.readouterr().out
    assert str(where) in out and "1 training record(s)" in out and "--cache-dir" in out
    assert main(["cache", "clear", "--cache-dir", str(where)]) == 0
    assert "removed 1 training record(s)" in capsys.readouterr().out
    assert sorted(os.listdir(where)) == ["notes.txt"]
    assert cache.usage(str(where)) == (0, 0)
    assert cache.read(str(model), str(where))[0] is None


# ---- the command, as a user runs it --------------------------------------------------------------
def test_run_leaves_the_users_folder_as_it_was_and_keeps_its_paths(tmp_path):
    """A script that imports a module of its own, reads its arguments, changes directory and
    saves there; --json is relative to where cnndoctor was started."""
    folder = tmp_path / "project"
    folder.mkdir()
    write(folder, "helpers.py", "def out_dir(argv):\n    return argv[argv.index('--out') + 1]\n")
    (folder / "notes.txt").write_text("my notes\n")
    write(folder, "train.py", with_setup("""\
        import os, sys
        from helpers import out_dir
        print("argv", sys.argv)
        for epoch in range(3):
            train_epoch()
        os.makedirs(out_dir(sys.argv), exist_ok=True)
        os.chdir(out_dir(sys.argv))
        torch.save(model.state_dict(), "model.pt")
        """))
    before = checksums(folder)
    proc = run_cli("--json", "report.json", "train.py", "--", "--out", "runs", cwd=folder,
                   cache_dir=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"argv [{str(folder / 'train.py')!r}, '--out', 'runs']" in proc.stdout
    after = checksums(folder)
    assert {k: after[k] for k in before} == before  # every file the user had: byte for byte
    new = {k for k in after if k not in before and "__pycache__" not in k}
    assert new == {"report.json", os.path.join("runs", "model.pt")}  # the script's, and --json's
    data = json.loads((folder / "report.json").read_text())
    record = data["figures"]["run"]["records_written"][0]
    assert record.startswith(str(tmp_path / "cache") + os.sep)
    assert proc.stderr.strip().splitlines()[-1] == (
        f"cnndoctor: train.py ran in {data['figures']['run']['scripts'][0]['seconds']:.1f} s; "
        f"training record kept in {tmp_path / 'cache'} (exit 0)")


def test_timeout_stops_a_script_that_never_ends_and_diagnoses_what_it_did(tmp_path):
    write(tmp_path, "forever.py", with_setup("""\
        epoch = 0
        while True:  # trains until stopped, and never resets its gradients
            print("epoch", epoch, train_epoch(zero_grad=False), flush=True)
            epoch += 1
        """))
    start = time.perf_counter()
    proc = run_cli("--timeout", "6", "--json", "r.json", "forever.py", cwd=tmp_path,
                   cache_dir=tmp_path / "cache")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert time.perf_counter() - start < 200
    data = json.loads((tmp_path / "r.json").read_text())
    script = data["figures"]["run"]["scripts"][0]
    assert script["status"] == "stopped" and script["ended_by"] == "--timeout 6"
    assert 6 <= script["seconds"] < 6 + 2 * STOP_RETRY_S
    assert script["stopped_at"].startswith("forever.py:")
    assert any(n.startswith("forever.py was stopped by --timeout 6 after") for n in data["notes"])
    # What it did before the stop is diagnosed: its gradients were never reset.
    zg = next(f for f in data["findings"] if f["code"] == "missing-zero-grad")
    assert zg["evidence"]["zero_grad_calls"] == 0 and zg["evidence"]["steps_inspected"] > 10
    assert "script-error" not in {f["code"] for f in data["findings"]}  # a stop asked for
    assert "Traceback (most recent call last)" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "was stopped by --timeout 6" in last and "what it did until then was diagnosed" in last


# ---- hostile scripts, in process -----------------------------------------------------------
def test_os_exit_mid_way_keeps_what_was_captured(user):
    script = write(user, "train.py", with_setup("""\
        import os
        for epoch in range(3):
            train_epoch(zero_grad=False)
        os._exit(3)
        print("never reached")
        """))
    session = Session()
    session.run([script])
    result = session.scripts[0]
    assert (result.status, result.exit_code, result.ended_by) == ("exit", 3, "os._exit(3)")
    assert result.stopped_at == f"train.py:{SETUP.count(chr(10)) + 4}"  # the os._exit line
    assert not hasattr(os._exit, "__wrapped__")  # the real one is back after the session
    import cnndoctor

    report = cnndoctor.diagnose(budget="quick", executor="inprocess", progress=False,
                                **session.diagnose_kwargs())
    assert report.get("missing-zero-grad") is not None  # from the steps before os._exit
    err = report.get("script-error")
    assert err.severity == "error" and "os._exit(3)" in err.title


# The thread that called os._exit ends with SystemExit, which Python's threading ignores and
# pytest reports.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_os_exit_in_a_thread_and_sys_exit_end_the_script(user):
    thread = write(user, "thread.py", """\
        import os, threading, time
        threading.Thread(target=lambda: os._exit(4)).start()
        time.sleep(30)
        """)
    zero = write(user, "zero.py", "import sys\nprint('before')\nsys.exit(0)\nprint('after')\n")
    three = write(user, "three.py", "import sys\nsys.exit(3)\n")
    session = Session()
    start = time.perf_counter()
    session.run([thread])
    assert time.perf_counter() - start < 10  # the sleep was cut short
    assert (session.scripts[0].status, session.scripts[0].exit_code) == ("exit", 4)
    ctrl_c = write(user, "ctrl_c.py", """\
        import os, signal, threading, time
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()  # Ctrl-C pressed
        time.sleep(30)
        """)
    # a test run started in the background of a non-interactive shell inherits SIGINT ignored,
    # and then no Ctrl-C can reach the script: the simulation needs Python's default handler
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        session = Session()
        start = time.perf_counter()
        session.run([ctrl_c])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert time.perf_counter() - start < 10
    assert (session.scripts[0].status, session.scripts[0].ended_by) == ("stopped", "Ctrl-C")
    session = Session()
    session.run([zero, three])
    assert [s.status for s in session.scripts] == ["ok", "exit"]
    assert session.scripts[1].exit_code == 3 and session.scripts[1].error["where"] == "three.py:2"


# A stop that cut a DataLoader's start of its workers would leave torch printing "Exception
# ignored in ... __del__" with a traceback: none may appear.
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_dataloader_workers_neither_break_the_hooks_nor_hang(user):
    loader = """\
        from torch.utils.data import DataLoader, TensorDataset
        data = DataLoader(TensorDataset(X, Y), batch_size=20, shuffle=True, num_workers=2)
        """
    finite = write(user, "finite.py", with_setup(loader, """\
        for epoch in range(2):
            for xb, yb in data:
                optimizer.zero_grad()
                loss_fn(model(xb), yb).backward()
                optimizer.step()
        """))
    endless = write(user, "endless.py", with_setup(loader, """\
        while True:
            for xb, yb in data:
                optimizer.zero_grad()
                loss_fn(model(xb), yb).backward()
                optimizer.step()
        """))
    # worker processes alive before the scripts (the executor's pool of an earlier test in the
    # same pytest process) are not the DataLoader's
    before = set(multiprocessing.active_children())
    session = Session()
    session.run([finite])
    assert session.scripts[0].status == "ok", session.scripts[0].error
    rec = session.records[0]
    assert rec.steps == 20  # every optimizer step seen, the gradient resets as well
    assert rec.grad_checks >= 10 and rec.stale_grad_steps == 0
    kwargs = session.diagnose_kwargs()
    assert len(kwargs["train"][0]) == len(kwargs["train"][1]) == 200  # inputs with their labels
    assert not session.internal_errors
    assert set(multiprocessing.active_children()) <= before

    stopped = Session()
    start = time.perf_counter()
    stopped.run([endless], timeout=4)
    assert stopped.scripts[0].status == "stopped"
    assert time.perf_counter() - start < 4 + 2 * STOP_RETRY_S + 5  # workers shut down, no hang
    assert stopped.records[0].steps > 0
    deadline = time.time() + 10
    while set(multiprocessing.active_children()) - before and time.time() < deadline:
        time.sleep(0.1)
    assert set(multiprocessing.active_children()) <= before


def test_a_stop_never_cuts_a_model_file_in_two(user):
    script = write(user, "save.py", """\
        import torch
        state = {f"w{i}": torch.randn(5_000) for i in range(500)}  # 10 MB in 500 tensors
        while True:  # the script spends its time saving
            torch.save(state, "big.pt")
        """)
    session = Session()
    session.run([script], timeout=2)
    assert session.scripts[0].status == "stopped"
    import torch

    state = torch.load(user / "big.pt", weights_only=True)  # a whole file, never a cut one
    assert len(state) == 500 and state["w499"].shape == (5_000,)


def test_chdir_in_a_script_is_undone_and_paths_stay_the_users(user):
    script = write(user, "train.py", with_setup("""\
        import os
        os.makedirs("out", exist_ok=True)
        os.chdir("out")
        train_epoch()
        torch.save(model.state_dict(), "model.pt")
        """))
    evaluate = write(user, "evaluate.py", with_setup("""\
        model.load_state_dict(torch.load("out/model.pt", weights_only=True))  # from the start dir
        model.eval()
        with torch.no_grad():
            model(X)
        """))
    session = Session()
    session.run([script, evaluate])
    assert [s.status for s in session.scripts] == ["ok", "ok"]
    assert os.getcwd() == str(user)
    assert list(session.saved) == [str(user / "out" / "model.pt")]
    loaded = session.records[-1]
    assert loaded.loaded_from == str(user / "out" / "model.pt") and loaded.source is not None


def test_an_error_in_a_keras_callback_is_the_scripts_own(user, capsys):
    script = write(user, "train.py", """\
        import numpy as np
        import keras
        rng = np.random.default_rng(0)
        x, y = rng.random((200, 8, 8, 1)).astype("float32"), np.arange(200) % 4

        class Broken(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch == 1:
                    raise ValueError("x" * 2_000_000)  # megabytes of message

        model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3),
                                  keras.layers.ReLU(), keras.layers.Flatten(),
                                  keras.layers.Dense(4, activation="softmax")])
        model.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
        model.fit(x, y, epochs=4, batch_size=20, verbose=0, callbacks=[Broken()])
        """)
    session = Session()
    session.run([script])
    err = session.scripts[0].error
    assert session.scripts[0].status == "error"
    assert (err["type"], err["where"], err["during"]) == ("ValueError", "train.py:9", "model.fit")
    assert len(err["message"]) < 1000 and "2,000,000 characters" in err["message"]
    shown = capsys.readouterr().err
    assert shown.startswith("cnndoctor: ---- train.py raised ValueError (the script's own error")
    assert f'File "{script}", line 9, in on_epoch_end' in shown
    assert "Traceback (most recent call last)" not in shown
    assert "cnndoctor" + os.sep + "run" not in shown and "runpy" not in shown
    assert len(shown) < 5000
    kwargs = session.diagnose_kwargs()  # the epochs before the error are there to diagnose
    assert len(kwargs["train"][0]) == 200 and kwargs["captured"]["errors"][0] == err


def test_a_failure_inside_cnndoctor_is_one_line_with_the_details_in_the_cache(user, tmp_path,
                                                                             monkeypatch, capsys):
    import cnndoctor
    from cnndoctor.run.cli import main

    def broken(*args, **kwargs):
        raise RuntimeError("a bug of cnndoctor's")

    monkeypatch.setattr(cnndoctor, "diagnose", broken)
    write(user, "train.py", TRAIN_AND_SAVE)
    assert main(["train.py"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    saved = tmp_path / "cache" / cache.ERROR_FILE
    assert last == (f"cnndoctor: cnndoctor failed while diagnosing (RuntimeError: a bug of "
                    f"cnndoctor's); please report it with the details in {saved}")
    assert "Traceback (most recent call last)" in saved.read_text()  # for the bug report


# ---- repeatable runs: the scripts' random generators are seeded ------------------------------
UNSEEDED = """\
import random
import numpy as np
import torch
from torch import nn
perm = np.random.permutation(10)  # the shuffle of a script that never seeds
model = nn.Linear(4, 2)  # initial weights from torch's global generator
print("draws", random.random(), perm.tolist(), float(model.weight.detach().sum()))
"""


def _draws(session, capsys, script, seed):
    session.seed = seed
    session.run([script])
    assert session.scripts[0].status == "ok", session.scripts[0].error
    return next(line for line in capsys.readouterr().out.splitlines() if line.startswith("draws"))


def test_an_unseeded_script_draws_the_same_under_every_run(user, capsys):
    script = write(user, "train.py", UNSEEDED)
    first, second = Session(), Session()
    a, b = _draws(first, capsys, script, 0), _draws(second, capsys, script, 0)
    assert a == b  # the same shuffle, the same initial weights: the same model to diagnose
    assert any("seeded with 0 before each script" in n for n in first.notes), first.notes
    assert _draws(Session(), capsys, script, 1) != a  # --seed 1: other draws
    unseeded = [_draws(Session(), capsys, script, None) for _ in range(2)]
    assert unseeded[0] != unseeded[1]  # seed=None leaves the interpreter's own seeding
    # a script that seeds itself keeps its own seed, whatever the run's seed
    own = write(user, "own.py", "import random, numpy as np, torch\n"
                "random.seed(7); np.random.seed(7); torch.manual_seed(7)\n" + UNSEEDED)
    assert _draws(Session(), capsys, own, 0) == _draws(Session(), capsys, own, 1)
