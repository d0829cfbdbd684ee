"""`cnndoctor run`: users' unmodified scripts, run as a user would run them (a subprocess of the
`cnndoctor` command), then diagnosed.

Each script here is a plain script from examples/ (or a few lines written to a temporary folder);
outputs (saved models) go to a temporary folder, never into the repository.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")


def cnndoctor(*args, out_dir, cwd=None, timeout=600):
    """Run `cnndoctor ARGS` as a user would; (returncode, stdout, stderr, JSON report or None)."""
    report = os.path.join(out_dir, f"report-{len(os.listdir(out_dir))}.json")
    env = dict(os.environ, CNNDOCTOR_EXAMPLES_OUT=str(out_dir))
    env["PYTHONPATH"] = ROOT  # this checkout's code (an editable install may point elsewhere)
    env["CNNDOCTOR_CACHE"] = cache_of(out_dir)  # training records: beside the folder, not in it
    env.setdefault("OMP_NUM_THREADS", "1")  # small models: threads only add contention
    cmd = [sys.executable, "-m", "cnndoctor", "run", "--budget", "quick", "--json", report, *args]
    proc = subprocess.run(cmd, cwd=cwd or out_dir, env=env, capture_output=True, text=True,
                          timeout=timeout)
    data = None
    if os.path.exists(report):
        with open(report, encoding="utf-8") as fh:
            data = json.load(fh)
    return proc.returncode, proc.stdout, proc.stderr, data


def cache_of(out_dir) -> str:
    """The cache directory the runs in ``out_dir`` use (outside it)."""
    return f"{out_dir}-cache"


def finding(data, code):
    return next((f for f in data["findings"] if f["code"] == code), None)


def sha256(path):
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def script(tmp_path, name, body):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


# ---- case 4: a training script and a separate evaluation script ------------------------------
@pytest.fixture(scope="module")
def case4(tmp_path_factory):
    out = tmp_path_factory.mktemp("case4")
    rc, stdout, stderr, data = cnndoctor(
        os.path.join(EXAMPLES, "case4", "train.py"), os.path.join(EXAMPLES, "case4",
                                                                   "evaluate.py"), out_dir=out)
    return {"out": out, "rc": rc, "stdout": stdout, "stderr": stderr, "data": data,
            "model": os.path.join(out, "case4.keras")}


def test_case4_reports_the_evaluation_pipeline_bug(case4):
    data = case4["data"]
    assert case4["rc"] == 1, case4["stderr"][-2000:]
    codes = [f["code"] for f in data["findings"]]
    for code in ("preprocessing-mismatch", "prediction-collapse", "train-eval-discrepancy"):
        assert code in codes, codes
    # The cause ranks above the symptoms it explains.
    assert codes.index("preprocessing-mismatch") < codes.index("prediction-collapse")
    assert "preprocessing-mismatch" in finding(data, "prediction-collapse")["explained_by"]

    pm = finding(data, "preprocessing-mismatch")
    assert pm["severity"] == "error"
    assert 200 < pm["evidence"]["scale_ratio"] < 300  # raw 0-255 vs /255
    assert pm["evidence"]["training"]["range"][1] <= 1.0
    assert pm["evidence"]["evaluation"]["range"][1] > 200
    assert "255" in pm["fix"]["summary"]
    # The fix is measured: the same inputs scaled as in training score as in training.
    measured = pm["evidence"]["with_training_preprocessing"]
    assert measured["accuracy_with_training_statistics"] > measured["accuracy_as_fed"] + 0.2

    pc = finding(data, "prediction-collapse")["evidence"]
    assert pc["prediction_share_of_top"] >= 0.5 and pc["label_share_of_top"] <= 0.1

    td = finding(data, "train-eval-discrepancy")["evidence"]
    assert td["accuracy_training_path"] - td["accuracy_evaluation_path"] >= 0.2
    assert "matched" in td["labels_from"]  # the evaluation script passed no labels to predict

    cm = data["figures"]["confusion_matrix"]
    assert len(cm["labels"]) == 100 and len(cm["matrix"]) == 100
    assert sum(map(sum, cm["matrix"])) == cm["samples"] >= 500


def test_case4_scripts_behave_as_without_cnndoctor(case4):
    # The scripts' own output is there, unchanged, before the report.
    assert "Validation accuracy:" in case4["stdout"]
    assert case4["stdout"].index("saved ") < case4["stdout"].index("Validation accuracy:")
    assert case4["stdout"].index("Validation accuracy:") < case4["stdout"].index("verdict")
    # Both ran, the model was saved where the script said, and what training saw went to the
    # cache, named by the saved file's content; nothing of cnndoctor's is beside the model.
    run = case4["data"]["figures"]["run"]
    assert [s["status"] for s in run["scripts"]] == ["ok", "ok"]
    assert os.path.exists(case4["model"])
    assert run["cache_dir"] == cache_of(case4["out"])
    assert run["records_written"] == [
        os.path.join(cache_of(case4["out"]), "records", sha256(case4["model"]) + ".json")]
    assert os.path.exists(run["records_written"][0][:-5] + ".npz")
    assert not [n for n in os.listdir(case4["out"]) if "cnndoctor" in n]
    assert any(run["records_written"][0] in n for n in case4["data"]["notes"])


def test_case4_evaluation_in_a_later_session_uses_the_training_record(case4):
    model = case4["model"]
    record = case4["data"]["figures"]["run"]["records_written"][0]
    with open(record, encoding="utf-8") as fh:
        saved = json.load(fh)["model_fingerprint"]["sha256"]
    before = sha256(model)
    assert before == saved  # nothing touched the model file after the script saved it
    rc, stdout, stderr, data = cnndoctor(os.path.join(EXAMPLES, "case4", "evaluate.py"),
                                         out_dir=case4["out"])
    assert rc == 1, stderr[-2000:]
    codes = [f["code"] for f in data["findings"]]
    assert {"preprocessing-mismatch", "prediction-collapse", "train-eval-discrepancy"} <= \
        set(codes), codes
    assert sha256(model) == before  # the model file is bit-identical after a diagnosis
    assert any(record in n for n in data["notes"])  # the report says where training came from


def test_case4_from_the_python_api_and_the_negative(case4):
    """The same checks from diagnose(evaluate=...), and silence when evaluation is done right."""
    import keras
    import numpy as np

    import cnndoctor

    sys.path.insert(0, os.path.join(EXAMPLES, "case4"))
    try:
        from pairs import load
    finally:
        sys.path.pop(0)
    (xt, yt), (xv, yv) = load()
    model = keras.models.load_model(case4["model"])
    train = (xt[:1000].astype("float32") / 255, yt[:1000])
    val = (xv[:500].astype("float32") / 255, yv[:500])
    bad = cnndoctor.diagnose(model, train=train, val=val, evaluate=(xv[500:], yv[500:]),
                             budget="quick")
    assert {"preprocessing-mismatch", "prediction-collapse", "train-eval-discrepancy"} <= \
        set(bad.codes)
    good = cnndoctor.diagnose(model, train=train, val=val,
                              evaluate=(xv[500:].astype("float32") / 255, yv[500:]),
                              budget="quick")
    for code in ("preprocessing-mismatch", "prediction-collapse", "train-eval-discrepancy"):
        assert good.get(code) is None, good.get(code)
        assert code in good.passed_codes
    assert np.asarray(good.figures["confusion_matrix"]["matrix"]).trace() > 100


# ---- cases 1 and 2 as plain scripts: the same findings as the built-in demo ---------------------
def test_case1_script(tmp_path):
    rc, _, stderr, data = cnndoctor(os.path.join(EXAMPLES, "case1_colored_mnist.py"), "--",
                                    "--samples", "600", out_dir=tmp_path)
    assert rc == 1, stderr[-2000:]
    errors = {f["code"] for f in data["findings"] if f["severity"] == "error"}
    assert {"activation-before-softmax", "missing-nonlinearity"} <= errors
    assert "spurious-correlation" not in {f["code"] for f in data["findings"]}


def test_case2_script(tmp_path):
    rc, _, stderr, data = cnndoctor(os.path.join(EXAMPLES, "case2_row_column.py"),
                                    out_dir=tmp_path)
    assert rc == 1, stderr[-2000:]
    errors = {f["code"] for f in data["findings"] if f["severity"] == "error"}
    assert {"double-softmax", "unnormalized-input"} <= errors


# ---- PyTorch ----------------------------------------------------------------------------------
def test_torch_softmax_into_cross_entropy(tmp_path):
    rc, _, stderr, data = cnndoctor(os.path.join(EXAMPLES, "torch_double_softmax.py"),
                                    out_dir=tmp_path)
    assert rc == 1, stderr[-2000:]
    f = finding(data, "double-softmax")
    assert f is not None and f["severity"] == "error"
    assert data["framework"] == "torch"


def test_torch_loop_without_zero_grad(tmp_path):
    rc, _, stderr, data = cnndoctor(os.path.join(EXAMPLES, "torch_no_zero_grad.py"),
                                    out_dir=tmp_path)
    assert rc == 1, stderr[-2000:]
    f = finding(data, "missing-zero-grad")
    assert f is not None and f["severity"] == "error"
    ev = f["evidence"]
    assert ev["zero_grad_calls"] == 0
    assert ev["steps_with_stale_gradients"] == ev["steps_inspected"] > 10
    assert ev["grad_norm_last_steps"] > 5 * ev["grad_norm_first_steps"]


def test_torch_evaluation_with_dropout_active(tmp_path):
    rc, stdout, stderr, data = cnndoctor(os.path.join(EXAMPLES, "torch_eval_dropout.py"),
                                         out_dir=tmp_path)
    assert rc == 1, stderr[-2000:]
    assert "test accuracy:" in stdout
    f = finding(data, "eval-mode-not-set")
    assert f is not None and f["severity"] == "error"
    assert f["evidence"]["in_training_mode"] == f["evidence"]["evaluation_calls"] > 0
    assert any("Dropout" in m for m in f["evidence"]["dropout_modules"])
    assert f["evidence"]["agreement"] < 0.95  # predictions change once dropout is off
    assert finding(data, "missing-zero-grad") is None


def test_torch_healthy_script(tmp_path):
    rc, stdout, stderr, data = cnndoctor(os.path.join(EXAMPLES, "torch_healthy.py"),
                                         out_dir=tmp_path)
    assert rc in (0, 1), stderr[-2000:]
    errors = [f["code"] for f in data["findings"] if f["severity"] == "error"
              and not f["code"].startswith("fragile-to-")]
    assert errors == []
    passed = {p["code"] for p in data["passed"]}
    assert {"missing-zero-grad", "eval-mode-not-set", "double-softmax"} <= passed
    record = data["figures"]["run"]["records_written"][0]
    assert record.startswith(cache_of(tmp_path) + os.sep) and os.path.exists(record)
    assert not [n for n in os.listdir(tmp_path) if "cnndoctor" in n]


# ---- scripts that fail, never train, or are not there --------------------------------------------
def test_crashing_script_is_explained_and_still_diagnosed(tmp_path):
    path = script(tmp_path, "crash.py", """\
        import os, sys
        import numpy as np
        import keras
        print("args:", sys.argv[1:], "name:", __name__, "cwd:", os.getcwd())
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (300, 8, 8, 1)).astype("float32")   # not scaled
        y = rng.integers(0, 3, 300)                                   # class indices
        model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3),
                                  keras.layers.Flatten(), keras.layers.Dense(3),
                                  keras.layers.Softmax()])
        model.compile(loss="categorical_crossentropy", optimizer="adam")  # wants one-hot
        model.fit(x, y, epochs=1, verbose=0)
        """)
    rc, stdout, stderr, data = cnndoctor(path, "--", "--lr", "0.1", "-v", out_dir=tmp_path)
    assert f"args: ['--lr', '0.1', '-v'] name: __main__ cwd: {tmp_path}" in stdout
    # The script's own error, in one labelled block with its frames (none of cnndoctor's), not
    # as a traceback of cnndoctor.
    assert "---- crash.py raised ValueError (the script's own error" in stderr
    assert f'File "{path}", line 12, in <module>' in stderr
    assert "Traceback (most recent call last)" not in stderr
    assert "cnndoctor/run/" not in stderr.replace(os.sep, "/")
    assert stderr.strip().splitlines()[-1].startswith("cnndoctor: crash.py raised ValueError at "
                                                       "crash.py:12")
    assert rc == 1
    err = finding(data, "script-error")
    assert err["severity"] == "error" and err["evidence"]["where"] == "crash.py:12"
    assert "sparse_categorical_crossentropy" in err["fix"]["summary"]
    # What was captured before the error is still diagnosed.
    assert finding(data, "unnormalized-input") is not None
    assert finding(data, "missing-nonlinearity") is not None


def test_script_that_never_trains(tmp_path):
    path = script(tmp_path, "hello.py", "print('hello')\n")
    rc, stdout, stderr, data = cnndoctor(path, out_dir=tmp_path)
    assert rc == 2 and data is None
    assert "hello" in stdout
    assert "never trained a model" in stderr.strip().splitlines()[-1]


def test_missing_script(tmp_path):
    rc, stdout, stderr, _ = cnndoctor(str(tmp_path / "nope.py"), out_dir=tmp_path)
    assert rc == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "nope.py" in lines[0] and "does not exist" in lines[0]


def test_script_arguments_need_a_separator(tmp_path):
    path = script(tmp_path, "a.py", "print('a')\n")
    rc, stdout, stderr, _ = cnndoctor(path, "--epochs", "3", out_dir=tmp_path)
    assert rc == 2 and "a" not in stdout.split()
    assert "after --" in stderr.strip().splitlines()[-1]


def test_older_keras_script_runs_through_the_alias(tmp_path):
    path = script(tmp_path, "legacy.py", """\
        import numpy as np
        import tensorflow as tf
        from tensorflow import keras
        from tensorflow.keras.layers import Conv2D, Dense, Flatten
        from keras.utils import np_utils
        tf.random.set_seed(0)
        rng = np.random.default_rng(0)
        x = rng.random((200, 8, 8, 1)).astype("float32")
        Y = np_utils.to_categorical(rng.integers(0, 2, 200), 2)
        model = keras.models.Sequential([keras.Input((8, 8, 1)), Conv2D(4, 3, activation="relu"),
                                         Flatten(), Dense(2, activation="softmax")])
        model.compile(loss="categorical_crossentropy", optimizer="adam")
        model.fit(x, Y, epochs=1, verbose=0)
        print("legacy script finished")
        """)
    rc, stdout, stderr, data = cnndoctor(path, out_dir=tmp_path)
    assert "legacy script finished" in stdout, stderr[-2000:]
    assert rc in (0, 1)
    assert finding(data, "script-error") is None
    assert any("tensorflow" in n for n in data["notes"])


# ---- the pieces, in process ---------------------------------------------------------------------
def test_stream_keeps_a_bounded_sample_and_statistics_of_everything():
    import numpy as np

    from cnndoctor.run.capture import Stream

    s = Stream(phase="training", source="test", max_samples=100)
    rng = np.random.default_rng(0)
    data = rng.random((500, 4, 4, 3)).astype("float32") * [1, 2, 3]
    for epoch in range(2):  # a second pass over the data must not be kept twice
        for i in range(0, 500, 50):
            s.add(data[i:i + 50], np.arange(i, i + 50))
    assert s.kept == 100 and s.x.shape == (100, 4, 4, 3) and s.y.shape == (100,)
    stats = s.summary()["stats"]
    assert stats["samples"] == 1000
    assert np.allclose(stats["mean"], data.reshape(-1, 3).mean(0), atol=1e-6)
    assert np.allclose(stats["max"], data.reshape(-1, 3).max(0))


def test_stream_spreads_the_kept_samples_over_a_sorted_pass():
    import numpy as np

    from cnndoctor.run.capture import Stream

    s = Stream(phase="prediction", source="test", max_samples=10)
    s.begin(1000, spread=True)
    for i in range(0, 1000, 64):
        s.add(np.arange(i, min(i + 64, 1000)).reshape(-1, 1).astype("float32"))
    kept = s.x.ravel()
    assert len(kept) == 10 and kept[0] == 0 and kept[-1] == 999


def test_explanations_of_known_errors():
    from cnndoctor.run.explain import explain

    e = explain("ValueError", "Arguments `target` and `output` must have the same shape. "
                              "Received: target.shape=(32,), output.shape=(32, 10)",
                {"loss": "categorical_crossentropy", "label_shape": (300,)})
    assert "sparse_categorical_crossentropy" in e.fix
    e = explain("RuntimeError", "Given groups=1, weight of size [16, 3, 3, 3], expected "
                                "input[8, 28, 28, 3] to have 3 channels, but got 28 channels "
                                "instead", {})
    assert e.related == "channel-layout" and "permute" in e.fix
    e = explain("TypeError", "TorchTrainer.fit() got an unexpected keyword argument 'nb_epoch'",
                {})
    assert "epochs" in e.fix
    assert explain("ZeroDivisionError", "division by zero", {}) is None
