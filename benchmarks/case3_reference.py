"""Case 3's reference: the Dense model's accuracy in a verification run, beside the giant head
and the pooled head that ``--verify`` tries.

    python benchmarks/case3_reference.py [lane|mnist ...] [--seeds N] [--steps N]

CASES.md case 3's "Verified fix" line asks that the 1x1-conv + global-average-pooling head
"reaches the Dense model's accuracy". ``--verify`` compares the user's model (the giant head)
with the fixed copy; this script adds the third arm, the user's model before the change
(Flatten + Dense(128)), trained the same way: ``verify.run_trial`` at quick (the same steps, time
cap, seeds, training and held-out images as a verification run, through the local pool). It prints, per stand-in and
head, the held-out accuracy per seed, the steps each run reached and its seconds.
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402

from cnndoctor import verify  # noqa: E402
from cnndoctor.cases import lane_head  # noqa: E402
from cnndoctor.executor import Job, run_jobs  # noqa: E402
from cnndoctor.frameworks.keras import surgery  # noqa: E402
from cnndoctor.verify import Trial  # noqa: E402


def _arms(which: str):
    """(train, val, optimizer factory, batch size, {head name: model})."""
    import keras

    if which == "lane":
        setup = lane_head._lane_setup(0, healthy=False)
        giant = setup.model
        shape = setup.train[0].shape[1:]
        dense = lane_head._dense_lane_model(shape)
        opt = lambda: "adam"  # noqa: E731  (the case's optimizer)
        layer = "conv7"
    else:
        setup = lane_head._mnist_setup(0, healthy=False)
        giant = setup.model
        dense = lane_head._dense_mnist_model()
        opt = lambda: keras.optimizers.Adadelta(learning_rate=1.0)  # noqa: E731
        layer = next(lay.name for lay in giant.layers
                     if getattr(lay, "kernel_size", None) == (14, 14))
    filters = giant.get_layer(layer).filters
    pooled = surgery.pooled_head(giant, layer, filters)
    models = {"Dense (before the change)": dense, "giant convolution (the user's)": giant,
              "pooled head (the fix)": pooled}
    for m in models.values():
        m.compile(loss="categorical_crossentropy", optimizer=opt(), metrics=["accuracy"])
    return setup.train, setup.val, setup.batch_size, models


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("which", nargs="*", default=["lane", "mnist"])
    ap.add_argument("--seeds", type=int, default=verify.VERIFY_SEEDS["quick"])
    ap.add_argument("--steps", type=int, default=verify.VERIFY_STEPS["quick"])
    ap.add_argument("--seconds", type=float, default=verify.VERIFY_SECONDS["quick"])
    ap.add_argument("--executor", default="local", choices=("local", "inprocess", "ray"))
    args = ap.parse_args(argv)
    print(f"{args.seeds} seeds, up to {args.steps} steps or {args.seconds:.0f} s per run")
    for which in args.which:
        (xt, yt), (xv, yv), batch, models = _arms(which)
        n_train = min(len(xt), verify.VERIFY_MAX_TRAIN["quick"])
        n_val = min(len(xv), verify.VERIFY_MAX_VAL)
        print(f"\n{which}: {n_train} training and {n_val} held-out images, batch {batch}")
        for name, model in models.items():
            trial = Trial(framework="keras", model=model, loss=None, optimizer=None,
                          x_train=xt[:n_train], y_train=yt[:n_train], x_val=xv[:n_val],
                          y_val=yv[:n_val], batch_size=batch, x_target=xv[:n_val],
                          y_target=yv[:n_val], target_name="validation")
            # through the executor, as --verify runs them (one torch thread per worker)
            runs = run_jobs([Job(fn=verify.run_trial, args=(trial, s, args.steps, args.seconds),
                                 label=f"seed {s}") for s in range(args.seeds)], args.executor)
            scores = [r["score"] for r in runs]
            print(f"  {name:32} {model.count_params():>11,} params  "
                  + " ".join(f"{s:6.1%}" for s in scores)
                  + f"  mean {np.mean(scores):6.1%}  steps "
                  + "/".join(str(r["steps"]) for r in runs)
                  + f"  {np.mean([r['seconds'] for r in runs]):5.1f} s per run")
            sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
