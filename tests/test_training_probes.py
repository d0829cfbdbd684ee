"""Training probes and checks: real models trained for real, on the reference cases and on digits.

Each test builds a broken setup, diagnoses it, and asserts the training finding, its evidence and
its rank below its root cause; healthy setups must get no training error.
"""
import importlib

import numpy as np
import pytest
import torch

import cnndoctor
from cnndoctor import cases

from conftest import same_weights, weights_of

TRAINING_CODES = {"no-learning", "loss-plateau", "dead-relu", "vanishing-gradient",
                  "exploding-gradient", "nan-loss", "lr-too-high", "lr-too-low",
                  "cannot-overfit-batch", "seed-instability", "overfitting"}


def _case(case_id, module):
    importlib.import_module(f"cnndoctor.cases.{module}")
    found = [c for c in cases.CASES if c.id == case_id]
    assert found, f"no case {case_id}"
    return found[0]


def _diagnose(case_id, module, seed=0, budget="quick"):
    setup = _case(case_id, module).build(seed)
    before = weights_of(setup.model)
    report = cnndoctor.diagnose(setup.model, **setup.diagnose_kwargs(), budget=budget, seed=seed)
    assert same_weights(before, weights_of(setup.model))  # probes trained copies only
    return report


def _below(report, symptom, *causes):
    """The symptom is ranked under each cause and names it in explained_by."""
    f = report.get(symptom)
    for cause in causes:
        c = report.get(cause)
        assert c is not None, f"{cause} missing: {report.codes}"
        assert f.rank > c.rank and cause in f.explained_by, (symptom, cause, report.codes)


def _training_errors(report):
    return [f.code for f in report.findings if f.area == "training" and f.severity == "error"]


# ---------------------------------------------------------------------------------------------
# Reference case 1: ReLU on the logits kills output units, and which ones depends on the seed


@pytest.fixture(scope="module")
def case1_report():
    # "standard": the multi-seed study needs it (at "quick" its runs are too short to judge).
    return _diagnose("1-colored-mnist", "colored_mnist", budget="standard")


def test_case1_dead_output_units_below_activation_before_softmax(case1_report):
    report = case1_report
    dead = report.get("dead-relu")
    assert dead is not None, report.codes
    logits = [d for d in dead.evidence["dead_layers"] if d["logits_layer"]]
    assert logits and 1 <= logits[0]["dead_units"] <= logits[0]["units"] == 10
    assert len(logits[0]["dead_unit_indices"]) == logits[0]["dead_units"]
    _below(report, "dead-relu", "activation-before-softmax")


def test_case1_seed_instability_with_measured_spread(case1_report):
    report = case1_report
    f = report.get("seed-instability")
    assert f is not None, report.codes
    ev = f.evidence
    assert len(ev["val_acc"]) == ev["runs"] == 5
    assert ev["std"] == pytest.approx(np.std(ev["val_acc"], ddof=1))
    assert ev["std"] > 2 * ev["sampling_std"] and ev["p_value"] < 1e-3
    assert ev["std_ci95"][0] < ev["std"] < ev["std_ci95"][1]
    _below(report, "seed-instability", "activation-before-softmax")
    curve = report.figures["loss_curve"]
    assert len(curve["step"]) == len(curve["loss"]) > 10
    assert report.to_json()  # the figures survive the JSON contract


# ---------------------------------------------------------------------------------------------
# Reference case 2: double softmax on 0-255 inputs, the loss does not move


@pytest.mark.parametrize("case_id", ["2-row-column", "2-row-column-torch"])
def test_case2_no_learning_with_loss_and_weight_change(case_id):
    report = _diagnose(case_id, "grid")
    f = report.get("no-learning")
    assert f is not None, report.codes
    ev = f.evidence
    assert ev["loss_relative_change"] < 0.01 or ev["loss_change_second_half"] < 0.01
    assert ev["weight_relative_change"] is not None and ev["weight_relative_change"] < 0.05
    assert ev["steps"] >= 20
    _below(report, "no-learning", "double-softmax", "unnormalized-input")


def test_case2_dead_relu_where_the_probe_saw_it():
    # Seed 2 of the reported setup: both filters are dead from the first step, the loss sits at
    # exactly ln 2 (CASES.md: "two sit at exactly ln 2 with every ReLU dead").
    report = _diagnose("2-row-column", "grid", seed=2)
    dead = report.get("dead-relu")
    assert dead is not None, report.codes
    assert dead.evidence["dead_layers"][0]["dead_share"] == 1.0
    assert report.get("no-learning") is not None and report.get("loss-plateau") is not None
    _below(report, "dead-relu", "unnormalized-input")
    _below(report, "no-learning", "double-softmax", "unnormalized-input", "dead-relu")


@pytest.mark.parametrize("case_id", ["2-row-column-healthy", "2-row-column-torch-healthy"])
def test_case2_healthy_has_no_training_error_over_five_seeds(case_id):
    for seed in range(5):
        report = _diagnose(case_id, "grid", seed=seed)
        assert _training_errors(report) == [], (seed, report.codes)
        assert "cannot-overfit-batch" in report.passed_codes


def test_case1_healthy_has_no_training_error():
    report = _diagnose("1-colored-mnist-healthy", "colored_mnist")
    assert _training_errors(report) == [], report.codes
    assert {"dead-relu", "no-learning", "cannot-overfit-batch"} <= set(report.passed_codes)


# ---------------------------------------------------------------------------------------------
# Learning rate, NaN and overfitting on real 8x8 digits with a small CNN


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]  # N x 1 x 8 x 8, in [0, 1]
    y = d.target.astype(np.int64)
    return (x[:1200], y[:1200]), (x[1200:], y[1200:])


def _small_cnn(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(16 * 4 * 4, 64), torch.nn.ReLU(),
        torch.nn.Linear(64, 10))


def test_healthy_digits_model_passes_every_training_check(digits):
    model = _small_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    report = cnndoctor.diagnose(model, train=digits[0], val=digits[1],
                                loss=torch.nn.CrossEntropyLoss(), optimizer=opt, batch_size=32,
                                budget="standard")
    assert not TRAINING_CODES & set(report.codes), report.codes
    assert {"lr-too-high", "lr-too-low", "cannot-overfit-batch"} <= set(report.passed_codes)
    assert len(opt.state) == 0


def test_learning_rate_far_too_high(digits):
    model = _small_cnn()
    opt = torch.optim.SGD(model.parameters(), lr=20.0)
    report = cnndoctor.diagnose(model, train=digits[0], val=digits[1],
                                loss=torch.nn.CrossEntropyLoss(), optimizer=opt, batch_size=32,
                                budget="standard")
    assert "lr-too-high" in report.codes, report.codes
    f = report.get("lr-too-high")
    assert f.evidence["user_lr"] == 20.0 and f.evidence["suggested_lr"] < 1.0
    assert {"nan-loss", "no-learning", "loss-plateau", "exploding-gradient", "dead-relu"} \
        & set(report.codes)


def test_learning_rate_far_too_low(digits):
    model = _small_cnn()
    opt = torch.optim.SGD(model.parameters(), lr=1e-5)
    report = cnndoctor.diagnose(model, train=digits[0], val=digits[1],
                                loss=torch.nn.CrossEntropyLoss(), optimizer=opt, batch_size=32,
                                budget="standard")
    f = report.get("lr-too-low")
    assert f is not None, report.codes
    assert f.evidence["steepest_lr"] / f.evidence["user_lr"] >= 100
    _below(report, "no-learning", "lr-too-low") if report.get("no-learning") else None


def test_nan_loss_from_corrupt_scaling(digits):
    (x, y), val = digits
    model = _small_cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    report = cnndoctor.diagnose(model, train=(x * 1e6, y), loss=torch.nn.CrossEntropyLoss(),
                                optimizer=opt, batch_size=32, budget="quick")
    assert {"nan-loss", "no-learning", "dead-relu", "loss-plateau"} & set(report.codes), \
        report.codes
    if report.get("nan-loss"):
        _below(report, "nan-loss", "unnormalized-input")


def test_overfitting_on_a_tiny_training_set(digits):
    (x, y), val = digits
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 512), torch.nn.ReLU(),
                                torch.nn.Linear(512, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    report = cnndoctor.diagnose(model, train=(x[:40], y[:40]), val=val,
                                loss=torch.nn.CrossEntropyLoss(), optimizer=opt, batch_size=8,
                                budget="quick")
    f = report.get("overfitting")
    assert f is not None, report.codes
    assert f.evidence["gap"][-1] >= 0.15 and f.evidence["gap"][-1] > f.evidence["gap"][0]


# ---------------------------------------------------------------------------------------------
# A model too slow for the budget: the run is cut by time, and what it saw is not proof


class _Slow(torch.nn.Module):
    """The user's model, made slow to train (as a giant layer on a CPU is)."""

    def __init__(self, inner, seconds):
        super().__init__()
        self.inner, self.seconds = inner, seconds

    def forward(self, x):
        import time

        time.sleep(self.seconds)
        return self.inner(x)


def test_probe_cut_by_its_time_limit_is_inconclusive_not_an_error(monkeypatch):
    from cnndoctor.probes import training as tp

    setup = _case("2-row-column-torch", "grid").build(0)
    kwargs = setup.diagnose_kwargs()
    model = _Slow(setup.model, 0.02)
    if kwargs.get("optimizer") is not None:  # the optimizer must belong to the wrapped model
        kwargs["optimizer"] = type(kwargs["optimizer"])(model.parameters(),
                                                        **kwargs["optimizer"].defaults)
    # 80 planned steps of >= 20 ms cannot finish in 1 s: the run stops after ~30-45 steps
    monkeypatch.setitem(tp.TRAIN_SECONDS, "quick", 1.0)
    monkeypatch.setitem(tp.OVERFIT_SECONDS, "quick", 0.5)
    report = cnndoctor.diagnose(model, **kwargs, budget="quick")
    assert "double-softmax" in {f.code for f in report.findings if f.severity == "error"}
    flat = report.get("no-learning") or report.get("loss-plateau")
    assert flat is not None, report.codes
    assert flat.severity == "info"
    assert "time limit" in flat.explanation and "--budget standard" in flat.explanation
    overfit = report.get("cannot-overfit-batch")
    if overfit is not None:  # cut after a few steps: inconclusive
        assert overfit.severity == "info" and "time limit" in overfit.explanation
    # the same model given the time it needs: the flat loss is an error again
    monkeypatch.setitem(tp.TRAIN_SECONDS, "quick", 60.0)
    full = cnndoctor.diagnose(model, **kwargs, budget="quick")
    assert full.get("no-learning") is not None and full.get("no-learning").severity == "error"
