"""The built-in reference cases diagnosed as `cnndoctor demo` does: the must-haves of CASES.md.

Static and data checks (and the evaluation probe, which needs no training) run at the "static"
budget in seconds; case 3's dynamic symptom needs the "quick" training probes.
"""
import json

import pytest

import cnndoctor
from cnndoctor import cases
from cnndoctor.cli import main

STATIC_CASES = [c for c in cases.all_cases() if c.number in (1, 2, 3, 4)]


def _errors(report):
    return [f.code for f in report.findings if f.severity == "error"]


@pytest.fixture(scope="module")
def static_reports():
    out = {}
    for case in STATIC_CASES:
        setup = case.build(0)
        out[case.id] = cnndoctor.diagnose(setup.model, **setup.diagnose_kwargs(),
                                          budget="static", seed=0)
    return out


@pytest.mark.parametrize("case_id", [c.id for c in STATIC_CASES])
def test_case_gives_its_expected_diagnosis(static_reports, case_id):
    case = next(c for c in STATIC_CASES if c.id == case_id)
    report = static_reports[case_id]
    errors = _errors(report)
    for code in case.expect_errors:
        assert code in errors, (case_id, report.codes)
    passed = {p.code for p in report.passed}
    for code in case.expect_passed:
        assert code in passed, (case_id, passed)
    if case.variant == "healthy":
        assert errors == [], (case_id, errors)
    else:
        assert case.expect_errors, "a broken case must say what it expects"
        # the expected root causes rank first
        top = [f.code for f in report.findings[:len(case.expect_errors)]]
        assert set(top) == set(case.expect_errors), (case_id, report.codes)


def test_case1_colour_is_measured_and_passes(static_reports):
    passed = {p.code: p for p in static_reports["1-colored-mnist"].passed}
    figure = passed["spurious-correlation"].figures["dominant color channel"]
    assert figure["cramers_v"] < 0.1  # random colours: no link with the digit
    assert "dominant color channel" in passed["spurious-correlation"].measured


@pytest.mark.parametrize("number", [1, 2])
def test_torch_translations_give_the_same_errors(static_reports, number):
    keras_id = next(c.id for c in STATIC_CASES if c.number == number and c.framework == "keras"
                    and c.variant == "broken")
    torch_id = next(c.id for c in STATIC_CASES if c.number == number and c.framework == "torch"
                    and c.variant == "broken")
    assert set(_errors(static_reports[keras_id])) == set(_errors(static_reports[torch_id]))


@pytest.mark.parametrize("case_id", ["3-lane-head", "3-mnist-head"])
def test_case3_oversized_layer_evidence(static_reports, case_id):
    f = static_reports[case_id].get("oversized-layer")
    assert f.severity == "error"
    assert f.evidence["share_of_params"] > 0.95  # the whole-map convolution holds nearly all
    assert f.evidence["fan_in"] >= 14 * 14 * 32
    assert f"{f.evidence['share_of_params']:.1%} of the parameters" in f.title
    assert "GlobalAveragePooling2D" in f.fix.code


def test_case4_evaluation_findings_with_statistics(static_reports):
    report = static_reports["4-cifar-eval"]
    pm = report.get("preprocessing-mismatch")
    assert pm.severity == "error"
    pc = report.get("prediction-collapse")
    assert pc is not None and "preprocessing-mismatch" in pc.explained_by
    assert report.get("train-eval-discrepancy") is not None
    assert "confusion_matrix" in json.dumps(report.to_json())


def test_case3_dynamic_symptom_below_its_cause():
    """The probe trains the giant head briefly: its units die or the loss stays at ln(2)."""
    case = cases.find("3-lane-head")[0]
    setup = case.build(0)
    report = cnndoctor.diagnose(setup.model, **setup.diagnose_kwargs(), budget="quick", seed=0)
    symptoms = [f for f in report.findings
                if f.code in ("dead-relu", "no-learning", "loss-plateau", "prediction-collapse")]
    assert symptoms, report.codes
    codes = report.codes
    for f in symptoms:
        assert "oversized-layer" in f.explained_by
        assert codes.index("oversized-layer") < codes.index(f.code)
    dead = report.get("dead-relu")
    if dead is not None:  # where it fires, it is the giant layer that dies
        assert any(d["layer"] == "conv7" for d in dead.evidence["dead_layers"])
    # training bore the prediction out: the oversized layer stays an error, with what was seen
    big = report.get("oversized-layer")
    assert big.severity == "error"
    assert {f.code for f in symptoms} <= set(big.evidence["symptoms_in_training"])


def test_case3_mnist_giant_head_that_trains_is_a_warning_not_an_error():
    """The thread's MNIST variant trains in Keras 3: the static prediction is an error, and once
    the training probe has seen the model learn without any symptom it is a warning."""
    case = cases.find("3-mnist-head")[0]
    assert not case.reproduces
    setup = case.build(0)
    static = cnndoctor.diagnose(setup.model, **setup.diagnose_kwargs(), budget="static", seed=0)
    assert static.get("oversized-layer").severity == "error"
    report = cnndoctor.diagnose(setup.model, **setup.diagnose_kwargs(), budget="quick", seed=0)
    assert _errors(report) == [], report.codes
    big = report.get("oversized-layer")
    assert big.severity == "warning"
    assert big.evidence["symptoms_in_training"] == []
    assert big.evidence["share_of_params"] > 0.95  # the evidence of the static check is kept
    assert "trains despite it" in big.explanation
    # the probe's own figures agree that it learned
    assert report.get("no-learning") is None and report.get("dead-relu") is None


def test_case3_healthy_dense_head_trains_without_error():
    case = cases.find("3-lane-head-healthy")[0]
    setup = case.build(0)
    report = cnndoctor.diagnose(setup.model, **setup.diagnose_kwargs(), budget="quick", seed=0)
    assert _errors(report) == [], report.codes


def test_demo_command_prints_case3_share(capsys):
    assert main(["demo", "3-lane-head", "--budget", "static"]) == 0
    out = capsys.readouterr().out
    assert "oversized-layer" in out and "conv7" in out and "%" in out


def test_demo_list_names_every_case(capsys):
    assert main(["demo", "--list"]) == 0
    out = capsys.readouterr().out
    for case in cases.all_cases():
        assert case.id in out


def test_demo_verify_proves_case4_fix_in_terminal_and_json(capsys, tmp_path):
    """`cnndoctor demo 4 --verify`: the training scaling at evaluation restores the training-time
    accuracy, shown as `VERIFIED` with before/after figures, and in --json."""
    import json

    out = tmp_path / "case4.json"
    assert main(["demo", "4-cifar-eval", "--verify", "--quiet", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "VERIFIED (evaluation-preprocessing)" in text
    assert "1 gave their expected diagnosis" in text
    data = json.loads(out.read_text())
    pm = next(f for f in data["findings"] if f["code"] == "preprocessing-mismatch")
    v = pm["verified"]
    assert v["verdict"] == "verified" and v["retrained"] is False
    assert v["after"]["mean"] - v["before"]["mean"] > 0.5
    assert v["before"]["mean"] < 0.1  # the collapse, as the evaluation script fed it
    td = next(f for f in data["findings"] if f["code"] == "train-eval-discrepancy")
    # the same fix restores the accuracy that training reached on those images
    assert abs(v["after"]["mean"] - td["evidence"]["accuracy_training_path"]) < 0.03
    assert pm["fix"]["transform"]["name"] == "evaluation-preprocessing"


def test_demo_never_accepts_a_verified_fix_on_a_case_that_trains(static_reports):
    """3-mnist-head trains despite its giant head: the demo expects the finding, and a fix called
    `verified` there would be a false claim, so it counts as a failed expectation."""
    import copy

    from cnndoctor.cli import _expectation_gaps

    case = cases.find("3-mnist-head")[0]
    report = copy.deepcopy(static_reports["3-mnist-head"])
    assert _expectation_gaps(case, report, verify=False) == []
    big = report.get("oversized-layer")
    big.verified = {"verdict": "not-verified"}
    assert _expectation_gaps(case, report, verify=True) == []
    big.verified = {"verdict": "verified"}
    assert _expectation_gaps(case, report, verify=True) == [
        "the fix of oversized-layer was called verified on a model that trains"]
    report.findings = [f for f in report.findings if f.code != "oversized-layer"]
    assert "expected finding oversized-layer" in _expectation_gaps(case, report)
