"""The executor: many short trainings give the same figures whichever backend runs them.

Real trainings on scikit-learn's 8x8 digits (Keras Sequential, Keras functional, a torch module
defined here), run in this process, in the local spawn pool and on a real local Ray instance;
figures must be bit-identical. Also: a job that raises, a job that cannot be sent to a worker, a
model class defined in a user's ``__main__`` script, and a missing Ray (one line, exit 2).
"""
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import torch

import cnndoctor
from cnndoctor.executor import Job, JobError, get_last_notes, run_jobs
from cnndoctor.probes.training import seed_run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Steps per training job: enough for the loss to move (so that seeds differ), few enough that
#: the whole file stays well under a minute on a loaded 2-core machine.
STEPS = 40


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32).reshape(-1, 8, 8, 1)
    y = y.astype(np.int64)
    return (x[:400], y[:400]), (x[400:600], y[400:600])


class TinyTorchNet(torch.nn.Module):
    """A torch model whose class lives in a test module (workers import it by reference)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.head = torch.nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).flatten(1))


def keras_sequential():
    import keras

    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, padding="same",
                                                                           activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer=keras.optimizers.RMSprop(1e-3), loss="sparse_categorical_crossentropy")
    return model


def keras_functional():
    import keras

    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    h = keras.layers.Dropout(0.2, seed=1)(keras.layers.GlobalAveragePooling2D()(h))
    out = keras.layers.Dense(10)(h)
    model = keras.Model(inp, out)
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _jobs(digits):
    """Seed-study jobs over three kinds of model, two seeds each where it matters."""
    (xtr, ytr), (xv, yv) = digits
    torch_model = TinyTorchNet()
    torch_opt = torch.optim.SGD(torch_model.parameters(), lr=0.05, momentum=0.9)
    to_torch = lambda a: np.ascontiguousarray(a.transpose(0, 3, 1, 2))  # noqa: E731
    settings = {"epochs": 4, "batch_size": 32, "steps": STEPS, "max_seconds": 600.0,
                "num_classes": 10}
    seq, fun = keras_sequential(), keras_functional()
    jobs = []
    for seed in (0, 1):
        jobs.append(Job(seed_run, (seq, xtr, ytr, xv, yv),
                        {"seed": seed, "loss": seq.loss, "optimizer": seq.optimizer, **settings},
                        label=f"keras sequential, seed {seed}"))
        jobs.append(Job(seed_run, (torch_model, to_torch(xtr), ytr, to_torch(xv), yv),
                        {"seed": seed, "loss": torch.nn.CrossEntropyLoss(),
                         "optimizer": torch_opt, **settings}, label=f"torch, seed {seed}"))
    jobs.append(Job(seed_run, (fun, xtr, ytr, xv, yv),
                    {"seed": 3, "loss": fun.loss, "optimizer": fun.optimizer, **settings},
                    label="keras functional, seed 3"))
    return jobs, (seq, fun, torch_model)


@pytest.fixture(scope="module")
def reference_results(digits):
    jobs, _ = _jobs(digits)
    return run_jobs(jobs, "inprocess")


def test_local_pool_gives_bit_identical_figures(digits, reference_results):
    jobs, models = _jobs(digits)
    before = [[np.array(w, copy=True) for w in m.get_weights()] for m in models[:2]] + \
        [{k: v.clone() for k, v in models[2].state_dict().items()}]
    lines = []
    local = run_jobs(jobs, "local", progress=lines.append)
    assert get_last_notes() == []  # every job went to a worker
    assert local == reference_results  # floats compared exactly
    assert len(lines) == len(jobs) and "keras sequential, seed 0" in lines[0]
    # the figures are real trainings: the loss moved, and the seed matters
    seq0, torch0, seq1, torch1 = reference_results[:4]
    assert seq0["final_loss"] < np.log(10) and torch0["final_loss"] < np.log(10)
    assert seq0["final_loss"] != seq1["final_loss"] and torch0["final_loss"] != torch1["final_loss"]
    assert all(r["steps"] == STEPS for r in reference_results)
    assert min(seq0["val_acc"], torch0["val_acc"]) > 0.3  # 10 classes: chance is 0.1
    # the user's models were sent as copies and are untouched
    for m, w in zip(models[:2], before[:2]):
        assert all(np.array_equal(a, b) for a, b in zip(m.get_weights(), w))
    assert all(torch.equal(v, before[2][k]) for k, v in models[2].state_dict().items())


def test_workers_caps_parallelism_and_keeps_order(digits, reference_results):
    jobs, _ = _jobs(digits)
    assert run_jobs(jobs[:3], "local", workers=1) == reference_results[:3]


def test_real_local_ray_gives_the_same_figures(digits, reference_results, monkeypatch):
    ray = pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # Ray workers do not inherit this process's sys.path: they need it to import this test
    # module's TinyTorchNet (on a cluster: runtime_env working_dir or py_modules).
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(sys.path)}})
    try:
        jobs, _ = _jobs(digits)
        assert run_jobs(jobs, "ray") == reference_results
        assert get_last_notes() == []
    finally:
        ray.shutdown()


def fails(message):
    raise ValueError(message)


def test_a_job_that_raises_reraises_here_with_the_worker_message():
    jobs = [Job(fails, ("the batch was empty",), label="seed 2, fixed copy"), Job(abs, (-3,))]
    with pytest.raises(JobError) as info:
        run_jobs(jobs, "local")
    text = str(info.value)
    assert "\n" not in text
    assert "seed 2, fixed copy" in text and "ValueError: the batch was empty" in text
    assert "raise ValueError(message)" in info.value.worker_traceback
    with pytest.raises(ValueError, match="the batch was empty"):  # in-process: the error itself
        run_jobs(jobs, "inprocess")


def doubled(x, guard=None):
    return [2 * v for v in x]


def test_an_unpicklable_argument_runs_in_process_with_a_note():
    lock = threading.Lock()  # cannot be pickled
    jobs = [Job(doubled, ([1, 2],)), Job(doubled, ([3],), {"guard": lock}, label="locked"),
            Job(doubled, ([4],))]
    assert run_jobs(jobs, "local") == [[2, 4], [6], [8]]
    notes = get_last_notes()
    assert len(notes) == 1 and "'locked' ran in this process" in notes[0]
    assert "lock" in notes[0].lower()


def test_auto_runs_one_job_or_tiny_jobs_in_process():
    from cnndoctor.executor import InProcessExecutor, LocalExecutor, get_executor

    one = [Job(abs, (-1,))]
    assert isinstance(get_executor("auto", one), InProcessExecutor)
    assert isinstance(get_executor("auto", [Job(abs, (-1,), tiny=True)] * 3), InProcessExecutor)
    expected = InProcessExecutor if (os.cpu_count() or 1) == 1 else LocalExecutor
    assert isinstance(get_executor("auto", one * 3), expected)
    with pytest.raises(cnndoctor.InputError, match="unknown executor 'threads'"):
        run_jobs(one, "threads")


def _python(code: str, *args: str, cwd: str | None = None, timeout: float = 240):
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, *(["-c", code] if code else []), *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout)


def test_model_class_from_a_user_main_script_travels_by_value(tmp_path):
    # A user's script, unguarded: it must not run again in the workers, and its model class
    # (defined in __main__, importable by no worker) must reach them by value.
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent("""
        import numpy as np, torch
        from cnndoctor.executor import Job, run_jobs, get_last_notes
        from cnndoctor.probes.training import seed_run
        print("SCRIPT TOP LEVEL RAN")

        class UserNet(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = torch.nn.Linear(64, 10)
            def forward(self, x):
                return self.fc(x.flatten(1))

        rng = np.random.default_rng(0)
        x = rng.random((128, 1, 8, 8), dtype=np.float32)
        y = rng.integers(0, 10, 128)
        jobs = [Job(seed_run, (UserNet(), x, y, x, y),
                    dict(seed=s, loss=None, optimizer=None, epochs=2, batch_size=16, steps=12,
                         max_seconds=600.0, num_classes=10)) for s in (0, 1)]
        local = run_jobs(jobs, "local", workers=1)  # one worker is enough to prove it
        print("NOTES", get_last_notes())
        print("SAME", local == run_jobs(jobs, "inprocess"), local[0] != local[1])
    """))
    done = _python("", str(script), cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("SCRIPT TOP LEVEL RAN") == 1
    assert "NOTES []" in done.stdout and "SAME True True" in done.stdout


def test_executor_ray_without_ray_is_one_line_and_exit_2(tmp_path):
    hide_ray = "import sys; sys.modules['ray'] = None; from cnndoctor.cli import main; "
    for argv in (["demo", "2", "--executor", "ray"],
                 ["run", str(tmp_path / "train.py"), "--executor", "ray"]):
        (tmp_path / "train.py").write_text("raise SystemExit('the script must not run')\n")
        done = _python(hide_ray + f"sys.exit(main({argv!r}))", cwd=str(tmp_path))
        assert done.returncode == 2, (argv, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert "the ray executor needs Ray: pip install 'cnndoctor[ray]'" in lines[0]
        assert "case" not in done.stdout  # nothing was diagnosed


def test_diagnose_executor_ray_without_ray_is_an_input_error(monkeypatch, digits):
    monkeypatch.setitem(sys.modules, "ray", None)
    (xtr, ytr), _ = digits
    with pytest.raises(cnndoctor.InputError, match=r"pip install 'cnndoctor\[ray\]'"):
        cnndoctor.diagnose(keras_sequential(), train=(xtr, ytr), executor="ray")


# ---------------------------------------------------------------------------------------------
# The multi-seed study through the executor


def _evidence(model, train, val):
    from cnndoctor.adapters import describe
    from cnndoctor.data import make_dataset
    from cnndoctor.evidence import Evidence

    return Evidence(graph=describe(model, loss=model.loss, example=train[0][:2]),
                    train=make_dataset("training", train, "channels_last", require_labels=True),
                    val=make_dataset("validation", val, "channels_last", require_labels=True),
                    evaluation=[], reference=None, budget="standard", model=model,
                    loss=model.loss, optimizer=model.optimizer, batch_size=32, epochs=None)


def test_seed_study_is_the_same_in_process_and_in_the_pool(digits):
    from cnndoctor.probes import ProbeContext
    from cnndoctor.probes.training import SEED_RUNS, probe_seeds

    model = keras_sequential()
    found = {}
    for executor in ("inprocess", "local"):
        ev = _evidence(model, *digits)
        probe_seeds(ev, ProbeContext(budget="standard", seed=0, executor=executor))
        found[executor] = ev.probes["seeds"]
    assert found["local"] == found["inprocess"]
    runs = found["local"]["runs"]
    assert len(runs) == SEED_RUNS["standard"] and len({r["seed"] for r in runs}) == len(runs)
    assert found["local"]["std"] > 0  # five different initialisations, five trainings
