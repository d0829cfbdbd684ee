"""The API and the command line as a user meets them: reports, JSON, exit codes, bad input, and
the promise that the user's model is never changed."""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import torch
import torch.nn as nn

import cnndoctor
from cnndoctor.cli import main
from conftest import same_weights, weights_of


def keras_model(broken=False):
    model = keras.Sequential([keras.Input((28, 28, 1)),
                              keras.layers.Conv2D(4, 3, activation=None if broken else "relu"),
                              keras.layers.BatchNormalization(),
                              keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="relu" if broken else None),
                              keras.layers.Softmax()])
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


def test_weights_and_mode_are_untouched(mnist_small):
    (x, y), (xv, yv) = mnist_small
    km = keras_model(broken=True)
    before = weights_of(km)
    cnndoctor.diagnose(km, train=(x, y), val=(xv, yv), budget="quick")
    assert same_weights(before, weights_of(km))

    tm = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.2),
                       nn.Flatten(), nn.Linear(4 * 26 * 26, 10), nn.Softmax(1))
    opt = torch.optim.SGD(tm.parameters(), lr=0.1, momentum=0.9)
    tm.train()
    before = weights_of(tm)
    xt = np.transpose(x, (0, 3, 1, 2))
    cnndoctor.diagnose(tm, train=(xt, y), val=(np.transpose(xv, (0, 3, 1, 2)), yv),
                       loss=nn.CrossEntropyLoss(), optimizer=opt, budget="quick")
    assert same_weights(before, weights_of(tm))  # batch-norm running statistics included
    assert tm.training
    assert opt.state_dict()["state"] == {}


def test_report_json_follows_the_contract(mnist_small, tmp_path):
    (x, y), _ = mnist_small
    report = cnndoctor.diagnose(keras_model(broken=True), train=(x, y), budget="static")
    path = tmp_path / "r.json"
    report.to_json(str(path))
    data = json.loads(path.read_text())
    for key in ("tool", "version", "framework", "verdict", "findings", "passed", "skipped",
                "timings", "figures"):
        assert key in data
    assert data["tool"] == "cnndoctor" and data["framework"] == "keras"
    assert data["verdict"] == "broken"
    assert [f["rank"] for f in data["findings"]] == list(range(1, len(data["findings"]) + 1))
    for f in data["findings"]:
        for key in ("code", "area", "severity", "title", "explanation", "evidence", "fix"):
            assert key in f
        assert f["severity"] in ("error", "warning", "info")
    assert all("measured" in p for p in data["passed"])
    assert "input_statistics" in data["figures"]
    text = str(report)
    assert "activation-before-softmax" in text and "fix:" in text and "passed:" in text


@pytest.mark.parametrize("bad, message", [
    (lambda x, y: (x[:10], y[:9]), "10 images but 9 labels"),
    (lambda x, y: (x[:0], y[:0]), "empty"),
    (lambda x, y: (x[..., 0, 0], y), "rank"),
    (lambda x, y: (x, np.zeros((len(y), 2, 2))), "labels have shape"),
])
def test_bad_data_gets_a_one_line_reason(mnist_small, bad, message):
    (x, y), _ = mnist_small
    train = bad(x, y)
    if message == "rank":  # (N, 28) is read as flattened features; a 5-D array is not images
        train = (x[:, None], y)
    with pytest.raises(cnndoctor.InputError) as info:
        cnndoctor.diagnose(keras_model(), train=train)
    assert "\n" not in str(info.value)
    if message != "rank":
        assert message in str(info.value)


def test_not_a_model_and_unknown_loss(mnist_small):
    (x, y), _ = mnist_small
    with pytest.raises(cnndoctor.InputError, match="expected a Keras 3 model"):
        cnndoctor.diagnose("model.h5", train=(x, y))
    with pytest.raises(cnndoctor.InputError, match="single Keras layer"):
        cnndoctor.diagnose(keras.layers.Dense(3), train=(x, y))
    with pytest.raises(cnndoctor.InputError, match="unknown loss"):
        cnndoctor.diagnose(keras_model(), train=(x, y), loss="categorical_crossentropyy")
    with pytest.raises(cnndoctor.InputError, match="budget"):
        cnndoctor.diagnose(keras_model(), train=(x, y), budget="fast")
    with pytest.raises(cnndoctor.InputError, match="progress must be"):
        cnndoctor.diagnose(keras_model(), train=(x, y), budget="quick", progress="yes")


def test_progress_lines_on_stderr(mnist_small, capsys):
    (x, y), _ = mnist_small
    report = cnndoctor.diagnose(keras_model(), train=(x[:300], y[:300]), budget="quick",
                                progress=True)
    err = capsys.readouterr().err
    assert "cnndoctor: training a copy for" in err
    # the probes ran (a bad progress value once made every probe fail and be skipped)
    assert not any("probe failed" in s.reason for s in report.skipped), report.skipped


def _save_case(tmp_path, mnist_small, broken):
    (x, y), _ = mnist_small
    model = keras_model(broken)
    path = tmp_path / ("broken.keras" if broken else "ok.keras")
    model.save(path)
    np.savez(tmp_path / "train.npz", x=x[:400], y=y[:400])
    return str(path), str(tmp_path / "train.npz")


def test_cli_check_exit_codes_and_json(tmp_path, mnist_small, capsys):
    broken, data = _save_case(tmp_path, mnist_small, broken=True)
    before = open(broken, "rb").read()
    out = tmp_path / "report.json"
    assert main(["check", broken, "--train", data, "--json", str(out), "-q",
                 "--budget", "static"]) == 1
    assert open(broken, "rb").read() == before  # the user's file is not rewritten
    assert json.loads(out.read_text())["verdict"] == "broken"
    assert "BROKEN" in capsys.readouterr().out
    healthy, data = _save_case(tmp_path, mnist_small, broken=False)
    assert main(["check", healthy, "--train", data, "-q", "--budget", "static"]) == 0
    assert "HEALTHY" in capsys.readouterr().out


def test_cli_bad_input_exits_2_with_one_line(tmp_path, mnist_small, capsys):
    healthy, data = _save_case(tmp_path, mnist_small, broken=False)
    assert main(["check", str(tmp_path / "missing.keras"), "--train", data]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnndoctor: error:") and "does not exist" in err and "\n" not in err
    (x, y), _ = mnist_small
    np.savez(tmp_path / "bad.npz", x=x[:10], y=y[:7])
    assert main(["check", healthy, "--train", str(tmp_path / "bad.npz")]) == 2
    assert "10 images but 7 labels" in capsys.readouterr().err
    assert main(["demo", "no-such-case"]) == 2
    assert "no built-in case" in capsys.readouterr().err


def test_console_script_usage_error_exit_code():
    exe = os.path.join(os.path.dirname(sys.executable), "cnndoctor")
    proc = subprocess.run([exe, "check"], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    proc = subprocess.run([exe, "checks"], capture_output=True, text=True)
    assert proc.returncode == 0 and "activation-before-softmax" in proc.stdout
