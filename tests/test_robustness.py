"""Robustness and domain shift: reference case 5, the healthy negative, reference folders.

Case 5 (CASES.md): a small CNN trained on MNIST plus its inverted copy validates well and fails on
photographed handwriting. cnndoctor must name the properties that differ (with train vs
reference figures), the perturbations the model cannot tolerate, the accuracy on the photos vs
validation, and prove the augmentation fix over 3 seeds. Sizes are cut down to stay within a few
minutes on 2 CPU cores: 3,000 training images, 600 photos, 3 epochs.
"""
import numpy as np
import pytest

import cnndoctor
from cnndoctor.cases.handwriting import build_setup
from cnndoctor import augment as A
from cnndoctor.probes import robustness as R
from cnndoctor.reference import InputSpec, from_arrays, load_folder

N_TRAIN = 3000
N_REFERENCE = 600


@pytest.fixture(scope="module")
def case5():
    setup = build_setup(0, n_train=N_TRAIN, n_reference=N_REFERENCE, epochs=3)
    report = cnndoctor.diagnose(setup.model, budget="quick", verify=True,
                                **setup.diagnose_kwargs())
    return setup, report


def test_case5_domain_shift_names_background_and_contrast_with_figures(case5):
    _, report = case5
    f = report.get("domain-shift")
    assert f is not None and f.severity == "error"
    assert f.rank == 1
    rows = {r["property"]: r for r in f.evidence["differing_properties"]}
    assert "contrast" in rows
    assert {"background level", "background unevenness"} & set(rows)
    contrast = rows["contrast"]
    # MNIST: white ink on black (or its inverse) spans the whole range; the photos ~0.4 of it
    assert contrast["train_median"] > 0.9 and contrast["reference_median"] < 0.6
    assert contrast["effect"] >= R.SHIFT_EFFECT
    level = rows.get("background level")
    if level is not None:  # training paper is 0 or 1, photographed paper gray
        assert 0.3 < level["reference_median"] < 0.9
    for r in rows.values():
        assert r["train"] and r["reference"]  # figures, as text for the report
    assert "contrast" in f.explanation and "in training vs" in f.explanation


def test_case5_reference_accuracy_vs_validation(case5):
    _, report = case5
    acc = report.get("domain-shift").evidence["accuracy"]
    assert acc["validation"] > 0.85
    assert acc["reference"] < acc["validation"] - 0.3
    assert acc["loss_ratio"] > 3
    assert acc["n_reference"] == N_REFERENCE


def test_case5_fragile_findings_follow_the_sweep(case5):
    _, report = case5
    fragile = {f.code: f for f in report.findings if f.code.startswith("fragile-to-")}
    # shifting a digit by 20% of the image is the clearest failure of an MNIST model
    assert "fragile-to-shift" in fragile
    for code, f in fragile.items():
        worst = f.evidence["worst"]
        assert worst["drop"] >= R.FRAGILE_DROP
        assert f.evidence["clean_accuracy"] - worst["accuracy"] == pytest.approx(worst["drop"])
        assert "domain-shift" in f.explained_by and f.rank > 1
    # every perturbation that costs the threshold has its finding, and nothing else does
    sweep_codes = set()
    for name, res in report.figures["perturbation_sweep"].items():
        clean = next(iter(fragile.values())).evidence["clean_accuracy"]
        if clean - min(r["accuracy"] for r in res) >= R.FRAGILE_DROP:
            sweep_codes.add(f"fragile-to-{name}")
    assert sweep_codes == set(fragile)
    # at least one fragility is what the reference differs in: one story with domain-shift
    assert any(f.evidence.get("reference_differs_in") for f in fragile.values())


def test_case5_verified_fix_raises_reference_accuracy_over_3_seeds(case5):
    _, report = case5
    f = report.get("domain-shift")
    assert "Normalize(" in f.fix.code and "normalize(x_train)" in f.fix.code
    v = f.verified
    assert v is not None and len(v["seeds"]) == 3
    before, after = v["before"], v["after"]
    assert len(before["values"]) == len(after["values"]) == 3
    # a clear margin: at least 15 points on the mean, and every seed better than the best without
    assert after["mean"] - before["mean"] >= 0.15
    assert min(after["values"]) > max(before["values"])
    assert after["spread"] is not None and before["spread"] is not None
    # the augmentations do not cost the validation accuracy much
    assert v["validation_after"]["mean"] > v["validation_before"]["mean"] - 0.05


def _small_mnist_model(train):
    """A small Keras CNN trained for 3 epochs on ``train`` (seed 0)."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((28, 28, 1)),
                              keras.layers.Conv2D(8, 3, activation="relu"),
                              keras.layers.MaxPooling2D(2),
                              keras.layers.Conv2D(16, 3, activation="relu"),
                              keras.layers.MaxPooling2D(2), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(*train, epochs=3, batch_size=32, verbose=0)
    return model


def test_healthy_mnist_model_against_held_out_mnist_has_no_domain_shift(mnist):
    x, y = mnist
    x = x[..., None]
    train, val, held_out = (x[:1500], y[:1500]), (x[1500:1800], y[1500:1800]), \
        (x[1800:2400], y[1800:2400])
    model = _small_mnist_model(train)
    report = cnndoctor.diagnose(model, train=train, val=val, reference=held_out, budget="static")
    assert "domain-shift" not in report.codes
    passed = {p.code: p for p in report.passed}
    assert "domain-shift" in passed
    effects = passed["domain-shift"].figures["effects"]
    assert max(effects.values()) < R.SHIFT_EFFECT / 2  # calibration margin
    acc = passed["domain-shift"].figures["accuracy"]
    assert abs(acc["reference"] - acc["validation"]) < R.ACCURACY_DROP


def test_quick_sweep_runs_only_when_an_evaluation_scores_below_validation(mnist):
    """At quick, without reference samples, the perturbation sweep (a third of a small script's
    diagnosis) runs only when an evaluation scores EVAL_BELOW_VALIDATION under validation."""
    x, y = mnist
    x = x[..., None]
    train, val, held_out = (x[:1500], y[:1500]), (x[1500:1800], y[1500:1800]), \
        (x[1800:2100], y[1800:2100])
    model = _small_mnist_model(train)
    # an evaluation as good as validation: nothing for the sweep to explain
    same = cnndoctor.diagnose(model, train=train, val=val, evaluate=held_out, budget="quick")
    assert "perturbation_sweep" not in same.figures
    assert not any(c.startswith("fragile-to-") for c in same.codes)
    reasons = [s.reason for s in same.skipped if s.code.startswith("fragile-to")]
    assert reasons and "scores below validation" in reasons[0]
    # the same digits inverted score far below validation: the sweep runs and names inversion
    inverted = (1.0 - held_out[0], held_out[1])
    worse = cnndoctor.diagnose(model, train=train, val=val, evaluate=inverted, budget="quick")
    assert "perturbation_sweep" in worse.figures
    assert "fragile-to-inversion" in worse.codes

def _write_png(path, img):
    import matplotlib.image as mpimg

    mpimg.imsave(path, img, cmap="gray", vmin=0, vmax=1)


def test_reference_folder_is_prepared_like_the_training_data(tmp_path, mnist):
    x, y = mnist
    train = (x[:300, ..., None], y[:300])  # MNIST: 1 channel, 0-1, bright digits on black
    digits = {3: x[300:303], 7: x[303:305]}
    for label, imgs in digits.items():
        (tmp_path / str(label)).mkdir()
        for i, img in enumerate(imgs):
            # a "photo": dark ink on white paper, 56 x 70 pixels, RGB
            big = np.kron(1.0 - img, np.ones((2, 2)))
            big = np.pad(big, ((0, 0), (7, 7)), constant_values=1.0)
            _write_png(tmp_path / str(label) / f"{i}.png", big)
    ref = load_folder(str(tmp_path), like=train)
    assert ref.x.shape == (5, 28, 28, 1) and ref.x.dtype == np.float32
    assert ref.y.tolist() == [3, 3, 3, 7, 7]
    assert ref.classes[3] == "3" and ref.classes[7] == "7"
    assert 0.0 <= ref.x.min() and ref.x.max() <= 1.0
    assert any("inverted" in n for n in ref.notes)  # dark ink turned into MNIST's bright ink
    assert any("resized" in n for n in ref.notes)
    # borders are background (dark after inversion), the centre holds ink
    assert ref.x[:, :2].mean() < 0.2 and ref.x[:, 8:20, 8:20].max() > 0.5
    # the same folder for a channels-first 3-channel 0-255 model
    spec = InputSpec(height=32, width=32, channels=3, layout="channels_first", low=(0.0,) * 3,
                     high=(255.0,) * 3, bright_share=0.0)
    ref2 = load_folder(str(tmp_path), spec=spec)
    assert ref2.x.shape == (5, 3, 32, 32) and ref2.x.max() > 200
    assert not any("inverted" in n for n in ref2.notes)


def test_reference_arrays_are_kept_or_converted(mnist):
    x, y = mnist
    train = (x[:300, ..., None], y[:300])
    same = from_arrays(x[300:310, ..., None], y[300:310], like=train)
    assert same.x.shape == (10, 28, 28, 1) and "kept" in same.notes[0]
    raw = from_arrays((x[300:310] * 255).astype(np.uint8), y[300:310], like=train)
    assert raw.x.max() <= 1.0 and raw.x.shape == (10, 28, 28, 1)
    np.testing.assert_allclose(raw.x[..., 0], x[300:310], atol=1 / 255 + 1e-6)


def test_perturbations_keep_shape_range_and_layout():
    rng = np.random.default_rng(0)
    u = rng.random((6, 28, 28, 3)).astype(np.float32)
    for name, p in A.PERTURBATIONS.items():
        for level in p.levels:
            out = A.apply(u, name, level, np.random.default_rng(1))
            assert out.shape == u.shape and out.dtype == np.float32, name
            assert 0.0 <= out.min() and out.max() <= 1.0, name
    aug = A.Augment({"shift": 0.2, "contrast": 0.4, "blur": 1.0}, value_range=((0,), (255,)),
                    layout="channels_first")
    xb = (rng.random((8, 3, 28, 28)) * 255).astype(np.float32)
    out = aug(xb, np.random.default_rng(0))
    assert out.shape == xb.shape and out.max() <= 255.0
    np.testing.assert_array_equal(out, aug(xb, np.random.default_rng(0)))  # deterministic
