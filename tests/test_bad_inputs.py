"""Untrusted files and bad inputs: a pickle that would run code is refused (and does not run), a
trusted pickled module loads, weights load into a model built in code, nothing tries the network,
and every case of ``benchmarks/bad_inputs.py`` ends as documented."""
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import cnndoctor
from cnndoctor.cli import main

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


class WritesAFile:
    """Unpickling this calls ``open(path, "w")``: a stand-in for a hostile model file."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))


@pytest.fixture
def digits_npz(tmp_path, mnist_small):
    (x, y), _ = mnist_small
    path = tmp_path / "train.npz"
    np.savez(path, x=np.ascontiguousarray(x[:200].transpose(0, 3, 1, 2)), y=y[:200])
    return str(path)


def test_pickle_that_would_write_a_file_is_refused_and_does_not_run(tmp_path, digits_npz,
                                                                     capsys):
    marker = tmp_path / "marker.txt"
    hostile = tmp_path / "model.pt"
    torch.save({"weight": torch.zeros(3), "payload": WritesAFile(str(marker))}, hostile)
    before = hostile.read_bytes()

    assert main(["check", str(hostile), "--train", digits_npz, "-q", "--budget", "static"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--trust-pickle" in err and "runs code" in err
    assert "--model model.py:build --weights weights.pt" in err  # the safe way is named
    with pytest.raises(cnndoctor.InputError, match="trust_pickle=True"):
        cnndoctor.load_model(str(hostile))
    assert not marker.exists()
    assert hostile.read_bytes() == before

    # The file really is hostile: trusted, its unpickling runs the code (and it is no model).
    with pytest.raises(cnndoctor.InputError, match="not a torch model"):
        cnndoctor.load_model(str(hostile), trust_pickle=True)
    assert marker.exists()


def test_pickled_module_loads_only_with_trust_pickle(tmp_path, digits_npz, capsys):
    net = small_net()
    path = tmp_path / "whole.pt"
    torch.save(net, path)
    assert main(["check", str(path), "--train", digits_npz, "-q", "--budget", "static",
                 "--loss", "cross_entropy"]) == 2
    err = capsys.readouterr().err
    assert "whole pickled torch module" in err and "torch.nn.modules.container.Sequential" in err

    code = main(["check", str(path), "--train", digits_npz, "-q", "--budget", "static",
                 "--loss", "cross_entropy", "--trust-pickle", "--json",
                 str(tmp_path / "r.json")])
    assert code in (0, 1)
    import json

    report = json.loads((tmp_path / "r.json").read_text())
    assert report["framework"] == "torch"
    assert [layer["kind"] for layer in report["model"]["layers"]][:1] == ["weighted"]
    loaded = cnndoctor.load_model(str(path), trust_pickle=True)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(),
                                                 net.state_dict().values()))


def test_weights_into_a_model_built_in_code(tmp_path, digits_npz, capsys):
    net = small_net()
    torch.save(net.state_dict(), tmp_path / "weights.pt")
    (tmp_path / "model.py").write_text(
        "import torch.nn as nn\n"
        "def build():\n"
        "    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(),\n"
        "                         nn.Linear(4 * 26 * 26, 10))\n"
        "def build_wide():\n"
        "    return nn.Sequential(nn.Conv2d(1, 6, 3), nn.ReLU(), nn.Flatten(),\n"
        "                         nn.Linear(6 * 26 * 26, 10))\n")
    spec, weights = f"{tmp_path / 'model.py'}:build", str(tmp_path / "weights.pt")
    loaded = cnndoctor.load_model(spec, weights=weights)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(),
                                                 net.state_dict().values()))
    # the positional MODEL and --model are the same thing
    assert main(["check", "--model", spec, "--weights", weights, "--train", digits_npz, "-q",
                 "--budget", "static", "--loss", "cross_entropy"]) in (0, 1)
    assert main(["check", spec, "--weights", weights, "--train", digits_npz, "-q",
                 "--budget", "static", "--loss", "cross_entropy"]) in (0, 1)
    capsys.readouterr()
    assert main(["check", f"{tmp_path / 'model.py'}:build_wide", "--weights", weights,
                 "--train", digits_npz, "-q", "--budget", "static"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "0.weight is [4, 1, 3, 3] in the file but [6, 1, 3, 3]" in err
    # a state_dict alone is not a model: the message names the safe way
    assert main(["check", weights, "--train", digits_npz, "-q", "--budget", "static"]) == 2
    assert "--model model.py:build --weights weights.pt" in capsys.readouterr().err


def test_keras_lambda_needs_trust_pickle_and_damaged_files_say_so(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Lambda(lambda t: t * 2.0),
                              keras.layers.Flatten(), keras.layers.Dense(2)])
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(cnndoctor.InputError, match="Lambda layer.*trust_pickle=True"):
        cnndoctor.load_model(str(path))
    assert len(cnndoctor.load_model(str(path), trust_pickle=True).layers) == 3
    data = path.read_bytes()
    for name, content in (("empty.keras", b""), ("cut.keras", data[: len(data) // 2])):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(cnndoctor.InputError, match=r"could not read .* \(corrupt or not a "
                                                       r"Keras file\)"):
            cnndoctor.load_model(str(tmp_path / name))
    (tmp_path / "model.pt").write_bytes(data)
    with pytest.raises(cnndoctor.InputError, match="rename it to model.keras"):
        cnndoctor.load_model(str(tmp_path / "model.pt"))


def test_a_diagnosis_tries_no_network(mnist_small, monkeypatch):
    """A real diagnosis (training probes included) with every way out blocked and recorded."""
    attempts = []

    def refuse(name):
        def blocked(*args, **kwargs):
            attempts.append((name, args[1:2] if name.startswith("socket.") else args[:1]))
            raise OSError(f"network blocked by the test ({name})")
        return blocked

    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    (x, y), (xv, yv) = mnist_small
    to_chw = lambda a: np.ascontiguousarray(a.transpose(0, 3, 1, 2))  # noqa: E731
    net = small_net()
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    report = cnndoctor.diagnose(net, train=(to_chw(x[:400]), y[:400]),
                                val=(to_chw(xv[:100]), yv[:100]), loss=nn.CrossEntropyLoss(),
                                optimizer=opt, budget="quick", executor="inprocess",
                                progress=False)
    assert attempts == []
    assert report.verdict != "broken", report.codes  # real digits, a sound model
    ran = {p.code for p in report.passed} | {f.code for f in report.findings}
    assert "no-learning" in ran  # the training probe ran (not skipped)
    assert not any("probe failed" in s.reason for s in report.skipped), report.skipped


@pytest.mark.slow
def test_every_bad_input_case_ends_as_documented(capsys):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bad_inputs
    finally:
        sys.path.remove(str(BENCHMARKS))
    cases = bad_inputs.all_cases()
    assert len(cases) >= 30
    code = bad_inputs.main([])
    out = capsys.readouterr().out
    assert code == 0, out[-6000:]
    assert f"{len(cases)} case(s); {len(cases)} answered as documented, 0 did not." in out
