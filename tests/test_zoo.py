"""The model zoo and its mutations: healthy architectures get no error, injected bugs are named.

A subset of ``benchmarks/mutations.py`` (which runs every operator on every model): the
smallest clean models over three seeds, a few operators on two models (one per framework), the
batch-norm and frozen-weight cases that misfired before, and the zoo's own contract.
"""
import numpy as np
import pytest
import torch

import cnndoctor
from cnndoctor import runtime as rt
from cnndoctor.zoo import ZOO
from cnndoctor.zoo.config import Config
from cnndoctor.zoo.mutations import BY_NAME, OPERATORS
from tests.conftest import same_weights, weights_of

TWO_MODELS = ("keras-cnn", "torch-cnn")
SMALLEST = [name for name, e in ZOO.items() if e.smallest]
SEEDS = (0, 1, 2)


def _diagnose(setup, seed=0, budget="quick"):
    return cnndoctor.diagnose(setup.model, **setup.diagnose_kwargs(), budget=budget, seed=seed)


def _errors(report):
    return [f.code for f in report.findings if f.severity == "error"]


def _probe_failures(report):
    """Checks skipped because a probe crashed (a hole, not a pass)."""
    return [(s.code, s.reason) for s in report.skipped if "probe failed" in s.reason]


# --- the zoo's contract ---------------------------------------------------------------------

def test_every_operator_names_known_codes_and_applies_to_both_frameworks():
    from cnndoctor.checks import load_all

    known = {c.code for c in load_all()}
    for op in OPERATORS:
        assert set(op.expect) <= known, op.name
        frameworks = {e.framework for e in ZOO.values() if op.applies(e)}
        assert frameworks == {"keras", "torch"}, op.name
    assert {"torch", "keras"} == {ZOO[n].framework for n in SMALLEST}


def test_builds_are_seeded_and_give_what_diagnose_takes():
    for name in ("keras-bn-gap", "torch-resnet18"):
        a, b, c = ZOO[name].build(0), ZOO[name].build(0), ZOO[name].build(1)
        xa, xb, xc = (rt.to_numpy(s.train[0]) for s in (a, b, c))
        assert np.array_equal(xa, xb) and not np.array_equal(xa, xc)
        assert xa.dtype == np.float32 and 0.0 <= xa.min() and xa.max() <= 1.0
        out = rt.predict(a.model, a.train[0][:4])
        assert out.shape == (4, 4)  # four bar orientations


# --- clean models: no error -----------------------------------------------------------------

@pytest.mark.parametrize("name", SMALLEST)
def test_smallest_clean_models_get_no_error_over_seeds(name):
    for seed in SEEDS:
        setup = ZOO[name].build(seed)
        before = weights_of(setup.model)
        report = _diagnose(setup, seed)
        assert _errors(report) == [], (name, seed, [(f.code, f.title) for f in report.findings])
        assert _probe_failures(report) == []
        assert same_weights(before, weights_of(setup.model))


@pytest.mark.parametrize("name", ["keras-bn-gap", "torch-bn-gap"])
def test_batchnorm_gap_model_fits_its_batch(name):
    """Conv-BN-ReLU + GAP: the batch is fitted in training mode while the running statistics
    still trail; judged after re-estimating them, the overfit test passes."""
    report = _diagnose(ZOO[name].build(0))
    assert _errors(report) == [], [(f.code, f.title) for f in report.findings]
    assert "cannot-overfit-batch" in {p.code for p in report.passed}


def test_reestimating_batchnorm_reads_the_fitted_batch():
    setup = ZOO["keras-bn-gap"].build(0)
    model = rt.clone(setup.model)
    xb, yb = setup.train[0][:16], setup.train[1][:16]
    rt.fit(model, xb, yb, epochs=60, batch_size=16, max_steps=60, seed=0, lr=1e-2)
    inference = rt.accuracy(rt.predict(model, xb), yb)
    assert rt.reestimate_batchnorm(model, xb) == 3
    refreshed = rt.accuracy(rt.predict(model, xb), yb)
    assert refreshed == 1.0 and refreshed > inference
    assert rt.reestimate_batchnorm(ZOO["keras-cnn"].build(0).model, xb[..., :1]) == 0


# --- frozen weights -------------------------------------------------------------------------

@pytest.mark.parametrize("name", TWO_MODELS)
def test_every_weight_frozen_by_mistake_is_no_learning(name):
    setup = BY_NAME["freeze-all"].build(ZOO[name])
    report = _diagnose(setup)
    first = report.findings[0]
    assert first.code == "no-learning" and first.severity == "error"
    total = sum(int(np.prod(p.shape)) for p in (
        setup.model.parameters() if isinstance(setup.model, torch.nn.Module)
        and not hasattr(setup.model, "get_weights") else setup.model.weights))
    assert first.evidence["trainable_weights"] == 0
    assert first.evidence["frozen_weights"] == total == 9930
    assert "frozen" in first.title and "9,930" in first.title


@pytest.mark.parametrize("name", ["keras-frozen-backbone", "torch-frozen-backbone"])
def test_frozen_backbone_with_trainable_head_is_not_no_learning(name):
    report = _diagnose(ZOO[name].build(0))
    assert report.get("no-learning") is None
    assert _errors(report) == []
    passed = next(p for p in report.passed if p.code == "no-learning")
    assert passed.figures["frozen_weights"] == 4800 and passed.figures["trainable_weights"] > 0


# --- mutations on two models ----------------------------------------------------------------

@pytest.mark.parametrize("op", ["activation-before-softmax", "double-softmax", "shuffled-labels"])
@pytest.mark.parametrize("name", TWO_MODELS)
def test_injected_bug_is_ranked_first(op, name):
    operator = BY_NAME[op]
    report = _diagnose(operator.build(ZOO[name]))
    assert report.findings and report.findings[0].code in operator.expect, \
        [(f.code, f.severity) for f in report.findings]
    if op != "shuffled-labels":  # a warning or an error, by the probe's p-value
        assert report.findings[0].severity == "error"


@pytest.mark.parametrize("name", TWO_MODELS)
def test_too_few_output_units_refused_naming_the_output_layer(name):
    setup = BY_NAME["output-size"].build(ZOO[name])
    with pytest.raises(cnndoctor.InputError) as info:
        _diagnose(setup)
    message = str(info.value)
    assert message.startswith("output-size-mismatch: the model has 7 output units but the "
                              "labels name 10 classes")
    assert "invalid-values" in message


def test_fit_one_batch_turns_augmentation_off_on_the_copy_only():
    setup = ZOO["keras-augmented"].build(0)
    copy = rt.clone(setup.model)
    assert len(rt.disable_augmentation(copy)) == 2  # RandomRotation, RandomTranslation
    xb = torch.from_numpy(setup.train[0][:16])
    with torch.no_grad():
        a, b = copy(xb, training=True), copy(xb, training=True)
        c, d = setup.model(xb, training=True), setup.model(xb, training=True)
    assert torch.equal(a, b)  # the copy sees the same batch every step
    assert not torch.equal(c, d)  # the user's model still augments


# --- torch: augmentation in a Dataset, OneCycle and cosine schedules ------------------------

@pytest.mark.parametrize("name", ["torch-onecycle", "torch-augmented"])
def test_scheduled_torch_models_get_no_error_over_seeds(name):
    for seed in SEEDS:
        setup = ZOO[name].build(seed)
        sched, opt = setup.scheduler, setup.optimizer
        state = (sched.last_epoch, opt.param_groups[0]["lr"])
        before = weights_of(setup.model)
        report = _diagnose(setup, seed)
        assert _errors(report) == [], (name, seed, [(f.code, f.title) for f in report.findings])
        assert _probe_failures(report) == [], (name, seed)
        # the user's scheduler, optimizer and weights are as they were
        assert (sched.last_epoch, opt.param_groups[0]["lr"]) == state
        assert same_weights(before, weights_of(setup.model))
        if name == "torch-augmented":  # read from the Dataset, every image through __getitem__
            assert "torch AugmentedImages" in " ".join(report.notes)


def test_onecycle_schedule_is_followed_over_the_short_training():
    setup = ZOO["torch-onecycle"].build(0)
    assert setup.optimizer.param_groups[0]["lr"] == pytest.approx(0.004)  # max_lr / 25
    report = _diagnose(setup)
    lrs = report.figures["loss_curve"]["lr"]
    top = int(np.argmax(lrs))
    assert lrs[0] == pytest.approx(0.004, rel=0.05)
    assert max(lrs) == pytest.approx(0.1, rel=0.05)  # the peak the user set, reached ...
    assert 0.2 < top / len(lrs) < 0.4  # ... 30% of the way in, as in the user's run
    assert lrs[-1] < 0.01
    # without the scheduler the copy trains at the optimizer's rate now: a constant 0.004
    plain = cnndoctor.diagnose(setup.model, **{**setup.diagnose_kwargs(), "scheduler": None},
                               budget="quick")
    assert "lr" not in plain.figures["loss_curve"]


def test_cosine_schedule_per_epoch_is_followed_in_proportion():
    setup = ZOO["torch-augmented"].build(0)
    from cnndoctor.frameworks.torch import schedules as lr_schedules

    states = lr_schedules.replay(setup.scheduler)
    assert len(states) == 6  # T_max = 5 epochs: the rates before each of the 5 steps and after
    model = rt.clone(setup.model)
    x, y = ZOO["torch-augmented"].build(0).val
    hist = rt.fit(model, x, y, loss=setup.loss, optimizer=setup.optimizer, epochs=10,
                  batch_size=32, max_steps=50, user_schedule=states)
    lrs = hist["lr"]
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(states[4][0]["lr"])
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))  # annealed, never restarted
    # an explicit rate (the differential diagnosis, the range test) overrides the schedule
    hist = rt.fit(rt.clone(setup.model), x, y, loss=setup.loss, optimizer=setup.optimizer,
                  epochs=1, batch_size=32, max_steps=5, user_schedule=states, lr=0.05)
    assert hist["lr"] == [pytest.approx(0.05)] * 5


def test_scheduler_over_another_optimizer_is_refused():
    setup = ZOO["torch-onecycle"].build(0)
    other = torch.optim.SGD(setup.model.parameters(), lr=0.1)
    with pytest.raises(cnndoctor.InputError) as info:
        cnndoctor.diagnose(setup.model, **{**setup.diagnose_kwargs(), "optimizer": other},
                           budget="static")
    assert "made for another optimizer" in str(info.value)
    assert "\n" not in str(info.value)


def test_a_scheduled_optimizer_keeps_the_rate_asked_for():
    """A rate asked for (the differential's candidates) is the first group's rate, whatever the
    scheduler did to the optimizer's groups (OneCycleLR leaves them at max_lr / 25, away from
    the optimizer's ``defaults``)."""
    setup = ZOO["torch-onecycle"].build(0)
    x, y = setup.val
    hist = rt.fit(rt.clone(setup.model), x, y, loss=setup.loss, optimizer=setup.optimizer,
                  epochs=1, batch_size=32, max_steps=3, lr=0.02)
    assert hist["lr"] == [pytest.approx(0.02)] * 3


def test_torch_adamw_trains_the_copy():
    """torch 2.13's AdamW keeps ``decoupled_weight_decay`` in its defaults, which its
    constructor does not take back: the copy's optimizer is still an AdamW with the user's
    weight decay, and the training probe runs."""
    setup = ZOO["torch-vgg-dropout"].build(0)
    model = rt.clone(setup.model)
    from cnndoctor.frameworks.torch.runtime import Trainer

    trainer = Trainer(model, setup.loss, setup.optimizer, None)
    assert type(trainer.optimizer) is torch.optim.AdamW
    assert trainer.optimizer.param_groups[0]["weight_decay"] == 0.05
    report = _diagnose(setup)
    assert _probe_failures(report) == []
    assert report.figures["loss_curve"]["loss"]


# --- killed mutants (DeepCrime): only a bug that hurts counts ---------------------------------

def test_a_mutant_counts_only_when_it_clearly_hurts():
    from cnndoctor.zoo import killed

    entry = ZOO["torch-cnn"]
    clean = killed.measure(entry.build(0))
    assert clean["score"] > 0.85  # digits, trained as the user trains it (5 epochs)
    # training labels permuted: the model learns nothing that holds on the validation set
    op = BY_NAME["shuffled-labels"]
    hit, why = killed.verdict(op.harm, clean, killed.measure(op.build(entry), op.harm))
    assert hit and "balanced accuracy" in why
    # the images in the other layout: the model cannot even take them
    op = BY_NAME["channel-layout"]
    hit, why = killed.verdict(op.harm, clean, killed.measure(op.build(entry), op.harm))
    assert hit and why.startswith("training fails: RuntimeError")
    # validation images copied from training: this model does not memorise its training set in
    # 5 epochs, so the figure the user reads is within the margin of the truth: not killed
    op = BY_NAME["duplicate-leakage"]
    m = killed.measure(op.build(entry), op.harm, clean=entry.build(0))
    hit, why = killed.verdict(op.harm, clean, m)
    assert not hit and abs(m["score"] - m["unseen"]) < killed.KILL_MARGIN
    assert "on unseen images" in why


def test_balanced_accuracy_counts_a_starved_class_as_much_as_the_others():
    from cnndoctor.zoo.killed import balanced_accuracy

    y = np.array([0] * 90 + [1] * 10)
    out = np.zeros((100, 2), np.float32)
    out[:, 0] = 1.0  # always class 0: 90% accuracy, half of the classes never right
    assert rt.accuracy(out, y) == pytest.approx(0.9)
    assert balanced_accuracy(out, y) == pytest.approx(0.5)
    assert balanced_accuracy(np.full((100, 2), np.nan, np.float32), y) == 0.0


def test_dead_units_are_put_to_the_learning_rate():
    """Adam at 0.1 on the plain CNN: most units die but the short probe still reaches ~87%, so
    nothing but a dead-relu warning shows; put to the interventions, a lower rate recovers the
    model and the learning rate is named first."""
    report = _diagnose(BY_NAME["lr-x100"].build(ZOO["torch-cnn"]))
    first = report.findings[0]
    assert first.code == "lr-too-high" and first.severity == "error", \
        [(f.code, f.severity) for f in report.findings]
    assert first.evidence["user_lr"] == pytest.approx(0.1)
    assert "dead-relu" in first.evidence["symptoms"]
    assert first.evidence["accuracy_with_intervention"] > first.evidence["accuracy_as_trained"] \
        + 0.5


def test_too_few_units_ranks_above_the_softmax_they_break():
    """Keras, one-hot labels of 4 classes, Dense(1) + softmax: the softmax over one unit is a
    consequence of the unit count; the unit count is named first."""
    report = _diagnose(BY_NAME["output-size"].build(ZOO["keras-augmented"]), budget="static")
    codes = [f.code for f in report.findings]
    assert codes[0] == "output-size-mismatch", codes
    mismatch = report.get("output-activation-mismatch")
    assert mismatch is not None and "output-size-mismatch" in mismatch.explained_by
    assert "1 output units for 4 classes" in report.findings[0].title


@pytest.mark.parametrize("name", ["torch-bn-gap", "keras-mobilenet"])
def test_learning_rate_far_too_low_on_batch_norm_models_is_named(name):
    """Adam at 1e-6 on a batch-norm model: the loss at chance wiggles by 2% with each batch,
    more than the flat-loss test allows, but the weights move by under a tenth of a percent
    (the clean zoo moves them by 13% or more); then a higher rate is tried, and its copy is
    measured with batch-norm statistics re-estimated (Keras' trail the weights by far at 150
    steps)."""
    report = _diagnose(BY_NAME["lr-div1000"].build(ZOO[name]))
    codes = [f.code for f in report.findings]
    assert codes[0] == "lr-too-low", codes
    stalled = report.get("no-learning")
    assert stalled.evidence["weight_relative_change"] < 0.001
    assert stalled.evidence["train_accuracy"] < 0.3
    first = report.findings[0]
    assert first.evidence["accuracy_with_intervention"] >= 0.9


def test_too_high_peak_of_a_onecycle_schedule_is_named_with_the_scheduler_fix():
    """OneCycleLR to 10 instead of 0.1: the rate is named as the schedule's peak and the fix
    changes the scheduler's max_lr (setting the optimizer's groups would be overwritten)."""
    report = _diagnose(BY_NAME["lr-x100"].build(ZOO["torch-onecycle"]))
    first = report.findings[0]
    assert first.code == "lr-too-high", [(f.code, f.severity) for f in report.findings]
    assert first.title.startswith("peak learning rate 10 is too high")
    assert "OneCycleLR(optimizer, max_lr=" in first.fix.code


def test_range_test_sets_its_rates_on_a_keras_optimizer_with_a_schedule():
    """keras-augmented compiles AdamW on a CosineDecay schedule, whose rate cannot be set: the
    range test's copy gets the same optimizer with a plain rate, set at every step."""
    setup = ZOO["keras-augmented"].build(0)
    x, y = setup.train
    hist = rt.fit(rt.clone(setup.model), x[:64], y[:64], epochs=1, batch_size=32, max_steps=2,
                  lr_schedule=lambda step: 1e-4 * 10 ** step)
    assert hist["lr"] == [pytest.approx(1e-4), pytest.approx(1e-3)]
    assert type(setup.model.optimizer.learning_rate).__name__ != "float"  # the user's: as it was


def test_seed_runs_of_a_keras_batchnorm_model_are_read_on_what_they_learned():
    """Three seeds of keras-bn-gap, 150 steps each (the standard seed study): with the running
    statistics as they trail after so few steps they read anywhere from chance to 100%."""
    from cnndoctor.probes.training import seed_run

    setup = ZOO["keras-bn-gap"].build(0)
    (xt, yt), (xv, yv) = setup.train, setup.val
    accs = [seed_run(setup.model, xt[:1024], yt[:1024], xv, yv, seed=s, loss=None,
                     optimizer=None, epochs=5, batch_size=32, steps=150, max_seconds=60,
                     num_classes=4)["val_acc"] for s in (100, 101, 102)]
    assert min(accs) >= 0.9, accs
