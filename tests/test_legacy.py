"""Users' own scripts as they wrote them (Keras 1/2 and TensorFlow-era code, hand-written PyTorch
losses, evaluations at any time) under `cnndoctor run --budget quick`.

The seed scripts in examples/seeds are the reporters' code with only the dataset loading
replaced by offline stand-ins (and epochs shortened); each test runs one as a user would (a
subprocess of `cnndoctor run`), then checks that it ran to its end, that the root cause of
CASES.md ranks first, and that the notes name the legacy calls that were mapped with their lines.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import json

import pytest

from test_run import finding

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = os.path.join(ROOT, "examples", "seeds")
HANDWRITTEN = os.path.join(ROOT, "examples", "handwritten")


def cnndoctor(*args, out_dir):
    """`cnndoctor run --budget quick --json R ARGS` in a subprocess, on this checkout's code:
    (returncode, stdout, stderr, JSON report or None)."""
    report = os.path.join(out_dir, f"report-{len(os.listdir(out_dir))}.json")
    env = dict(os.environ, PYTHONPATH=ROOT, CNNDOCTOR_CACHE=f"{out_dir}-cache")
    env.setdefault("OMP_NUM_THREADS", "1")  # small models: threads only add contention
    cmd = [sys.executable, "-m", "cnndoctor", "run", "--budget", "quick", "--json", report, *args]
    proc = subprocess.run(cmd, cwd=out_dir, env=env, capture_output=True, text=True, timeout=600)
    data = None
    if os.path.exists(report):
        with open(report, encoding="utf-8") as fh:
            data = json.load(fh)
    return proc.returncode, proc.stdout, proc.stderr, data


def seed_run(tmp_path, *names):
    """Copy the seed scripts (and their stand-in loader) to a temporary folder and run them."""
    for name in names + ("standins.py",):
        shutil.copy(os.path.join(SEEDS, name), tmp_path / name)
    return cnndoctor(*[str(tmp_path / n) for n in names], out_dir=tmp_path)


def codes(data):
    return [f["code"] for f in data["findings"]]


def note_with(data, *parts):
    return next((n for n in data["notes"] if all(p in n for p in parts)), None)


def test_seed000_colored_mnist_runs_and_reports_the_relu_before_softmax(tmp_path):
    rc, stdout, stderr, data = seed_run(tmp_path, "s000_colored_mnist.py")
    assert data is not None, stderr[-3000:]
    assert rc == 1 and finding(data, "script-error") is None
    assert set(codes(data)[:2]) == {"activation-before-softmax", "missing-nonlinearity"}, \
        codes(data)
    assert finding(data, "spurious-correlation") is None  # color is not the problem


def test_seed001_grid_runs_and_reports_the_double_softmax(tmp_path):
    rc, stdout, stderr, data = seed_run(tmp_path, "s001_grid.py")
    assert data is not None, stderr[-3000:]
    assert "Epoch 100/100" in stdout  # ran to its end
    assert finding(data, "script-error") is None
    top = codes(data)[:2]
    assert set(top) == {"double-softmax", "unnormalized-input"}, codes(data)
    assert finding(data, "double-softmax")["evidence"]["loss_expects"] == "logits"
    # the loss is flat, as the user saw it (0.8133 for 100 epochs in the report)
    assert finding(data, "no-learning") is not None, codes(data)
    assert note_with(data, "s001_grid.py:97:", "SGD(lr=0.001)", "learning_rate=0.001")
    assert note_with(data, "s001_grid.py:98:", "tf.nn.softmax_cross_entropy_with_logits_v2",
                     "from_logits=True")


def test_seed002_lane_head_runs_and_reports_the_oversized_layer(tmp_path):
    rc, stdout, stderr, data = seed_run(tmp_path, "s002_lane.py")
    assert data is not None, stderr[-3000:]
    assert rc == 1 and finding(data, "script-error") is None
    assert codes(data)[0] == "oversized-layer", codes(data)
    ev = finding(data, "oversized-layer")["evidence"]
    assert "conv7" in finding(data, "oversized-layer")["title"]
    assert ev  # share and fan-in are shown
    assert note_with(data, "s002_lane.py:39:", "Conv2D(256, 18, 32)", "(18, 32)")
    assert note_with(data, "s002_lane.py:22:", "border_mode=", "padding=")
    assert note_with(data, "s002_lane.py:47:", "fit_generator")
    assert note_with(data, "s002_lane.py:47:", "samples_per_epoch=320", "steps_per_epoch=10")
    assert note_with(data, "s002_lane.py:9:", "ImageDataGenerator")


def test_seed003_two_scripts_run_and_report_the_preprocessing_mismatch(tmp_path):
    rc, stdout, stderr, data = seed_run(tmp_path, "s003_train.py", "s003_evaluate.py")
    assert data is not None, stderr[-3000:]
    assert "Validation accuracy" in stdout  # the evaluation script ran to its end
    assert os.path.exists(tmp_path / "cifar100.h5") and os.path.exists(tmp_path / "cm.json")
    assert finding(data, "script-error") is None
    assert codes(data)[0] == "preprocessing-mismatch", codes(data)
    assert finding(data, "preprocessing-mismatch")["evidence"]["scale_ratio"] > 100
    for where, parts in (("s003_train.py:51:", ("Conv2D(32, 3, 3)", "border_mode=")),
                         ("s003_train.py:12:", ("np_utils",)),
                         ("s003_train.py:111:", ("nb_epoch", "epochs")),
                         ("s003_train.py:111:", ("samples_per_epoch=800", "steps_per_epoch=25")),
                         ("s003_train.py:116:", ("cifar100.h5", "HDF5")),
                         ("s003_evaluate.py:41:", ("load_model('cifar100.h5')",)),
                         ("s003_evaluate.py:54:", ("np.int", "int"))):
        for part in parts:
            assert note_with(data, where, part), (where, part, data["notes"])


def test_seed004_second_evaluation_is_the_users_own_digits(tmp_path):
    rc, stdout, stderr, data = seed_run(tmp_path, "s004_handwriting.py")
    assert data is not None, stderr[-3000:]
    assert "my handwriting: accuracy" in stdout
    assert codes(data)[0] == "domain-shift", codes(data)
    ds = finding(data, "domain-shift")
    acc = ds["evidence"]["accuracy"]
    assert acc["validation"] - acc["reference"] > 0.3  # the gap, measured
    assert any(f["code"].startswith("fragile-to-") and f["severity"] == "warning"
               for f in data["findings"])
    assert note_with(data, "(call 2)", "real-world reference samples")


def test_evaluation_of_a_training_batch_before_training_is_monitoring(tmp_path):
    rc, stdout, stderr, data = cnndoctor(
        os.path.join(HANDWRITTEN, "keras_eval_before_training.py"), out_dir=tmp_path)
    assert data is not None, stderr[-3000:]
    assert "test: loss" in stdout
    assert finding(data, "train-eval-discrepancy") is None, codes(data)
    assert finding(data, "duplicate-leakage") is None, codes(data)
    assert not [f for f in data["findings"] if f["severity"] == "error"], codes(data)
    assert note_with(data, "(call 1)", "after 0 of", "monitoring")


def test_torch_hand_written_cross_entropy_that_turns_nan(tmp_path):
    rc, stdout, stderr, data = cnndoctor(
        os.path.join(HANDWRITTEN, "torch_tf1_softmax_nan.py"), out_dir=tmp_path)
    assert rc == 1 and data is not None, stderr[-3000:]
    assert "epoch 1: loss nan" in stdout
    assert finding(data, "nan-loss") is not None, codes(data)
    # its cause ranks above it: the raw 0-255 inputs
    assert codes(data).index("unnormalized-input") < codes(data).index("nan-loss")
    assert note_with(data, "written out by hand", "expects logits", "reduction='sum'")


def test_torch_loss_whose_labels_cannot_be_read_is_judged_from_its_losses(tmp_path):
    src = open(os.path.join(HANDWRITTEN, "torch_tf1_softmax_nan.py")).read()
    body = src.replace("loss = -torch.sum(yb * torch.log(softmax(out)))",
                       "loss = -torch.log(softmax(out))[torch.arange(len(yb)), yb.argmax(1)].sum()")
    assert body != src
    path = tmp_path / "indexed.py"
    path.write_text(body)
    rc, stdout, stderr, data = cnndoctor(str(path), out_dir=tmp_path)
    assert rc == 1, stderr[-3000:]  # never 2 for a script that trained
    assert codes(data) == ["nan-loss"]
    assert finding(data, "nan-loss")["evidence"]["nonfinite_loss_step"] == 1


def test_preflight_lists_every_unmappable_line_before_running(tmp_path):
    path = tmp_path / "tf1.py"
    path.write_text(textwrap.dedent("""\
        print("THE SCRIPT RAN")
        import tensorflow as tf
        from keras.layers import Merge
        x = tf.placeholder(tf.float32, [None, 784])
        W = tf.Variable(tf.zeros([784, 10]))
        loss = tf.nn.softmax_cross_entropy_with_logits_v2  # mapped: not listed
        sess = tf.Session()
        """))
    rc, stdout, stderr, data = cnndoctor(str(path), out_dir=tmp_path)
    assert rc == 2 and data is None
    assert "THE SCRIPT RAN" not in stdout
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip().startswith("tf1.py:")]
    where = [ln.split(":")[1] for ln in lines]
    assert where == ["3", "4", "4", "5", "5", "7"], lines
    assert any("tf.placeholder" in ln and "keras.Input" in ln for ln in lines)
    assert any("tf.Session" in ln for ln in lines)
    assert not any("softmax_cross_entropy" in ln for ln in lines)


def test_plain_python_is_unchanged_and_the_mappings_are_gone_after_a_run(tmp_path):
    # Plain python: the Keras 1 / numpy 1 names fail as they do without cnndoctor.
    path = tmp_path / "old.py"
    path.write_text("import numpy as np\nprint(np.int)\n")
    proc = subprocess.run([sys.executable, str(path)], capture_output=True, text=True)
    assert proc.returncode == 1 and "AttributeError" in proc.stderr
    # In process: a run maps them, and removes every mapping when it ends.
    import keras
    import numpy as np

    from cnndoctor.run.session import Session

    inits = keras.layers.Conv2D.__init__
    script = tmp_path / "keras1.py"
    script.write_text(textwrap.dedent("""\
        import numpy as np
        from keras.layers import Convolution2D
        from keras.preprocessing.image import ImageDataGenerator
        layer = Convolution2D(4, 3, 3, border_mode='same')
        assert layer.kernel_size == (3, 3) and layer.strides == (1, 1), layer.kernel_size
        assert np.int is int
        """))
    session = Session()
    session.run([str(script)])
    assert session.scripts[0].status == "ok", session.scripts[0].error
    assert any("keras1.py:4:" in n and "border_mode" in n for n in session.notes)
    with pytest.raises(AttributeError):
        np.int  # noqa: B018
    assert keras.layers.Conv2D.__init__ is inits
    assert not hasattr(keras.Model, "fit_generator")
    assert not hasattr(keras.preprocessing.image, "ImageDataGenerator")
    with pytest.raises(ValueError, match="border_mode"):  # Keras 3's own refusal again
        keras.layers.Conv2D(4, 3, border_mode="same")
