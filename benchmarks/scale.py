"""Time and peak memory of a quick diagnosis from image folders of 1,000, 10,000 and 50,000 PNGs.

    python benchmarks/scale.py [--dir DIR] [--sizes 1000 10000 50000] [--budget quick]

Writes 32x32 RGB PNGs in 10 class folders (a bar whose orientation is the class, on noise: learnable, no colour shortcut) under
DIR (default: a folder in the system temp dir, kept and reused by later runs, since writing 50,000
files takes a while), a small Keras CNN that rescales its input, then runs
``cnndoctor check model.keras --train-dir DIR/N`` in a fresh subprocess per size and prints its
wall time and peak RSS (``resource.getrusage(RUSAGE_CHILDREN)`` of a wrapper process that runs
only that diagnosis). cnndoctor reads a bounded, stratified sample of each folder
(``cnndoctor/pipelines/sampling.py``), so both figures should stay flat past the sample size.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIDE, CLASSES = 32, 10

WRAPPER = """
import resource, subprocess, sys, time
t = time.perf_counter()
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
wall = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
print(rc.returncode, wall, peak)
if rc.returncode == 2:
    print(rc.stderr[-500:], file=sys.stderr)
"""


def write_images(folder: str, n: int, seed: int = 0) -> None:
    """n PNGs, class c: a bar at c x 18 degrees, of a random colour, at a random place, on noise.

    Colour, brightness and contrast do not depend on the class (so no shortcut for the
    spurious-correlation check to find); the orientation does.
    """
    from PIL import Image

    done = os.path.join(folder, ".complete")
    if os.path.exists(done):
        return
    rng = np.random.default_rng(seed)
    t = time.perf_counter()
    yy, xx = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
    for c in range(CLASSES):
        os.makedirs(os.path.join(folder, f"class_{c}"), exist_ok=True)
    for i in range(n):
        c = i % CLASSES
        angle = np.deg2rad(c * 180 / CLASSES)
        cy, cx = rng.uniform(10, SIDE - 10, size=2)
        along = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
        across = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
        bar = (np.abs(along) <= 9) & (np.abs(across) <= 1.5)
        img = rng.integers(0, 110, size=(SIDE, SIDE, 3), dtype=np.uint8)
        img[bar] = rng.integers(140, 256, size=3)
        Image.fromarray(img).save(os.path.join(folder, f"class_{c}", f"{i:06d}.png"),
                                  compress_level=1)
    open(done, "w").close()
    print(f"  wrote {n:,} PNGs to {folder} in {time.perf_counter() - t:.0f} s", flush=True)


def write_model(path: str) -> None:
    if os.path.exists(path):
        return
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((SIDE, SIDE, 3)), keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(16, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(CLASSES, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.save(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "cnndoctor-scale"))
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000])
    p.add_argument("--budget", default="quick")
    args = p.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    model = os.path.join(args.dir, "model.keras")
    write_model(model)
    env = dict(os.environ, PYTHONPATH=ROOT, KERAS_BACKEND="torch")
    print(f"{'images':>8} {'wall s':>8} {'peak RSS MB':>12} {'exit':>5}")
    for n in args.sizes:
        folder = os.path.join(args.dir, f"bars-{n}")
        write_images(folder, n)
        cmd = [sys.executable, "-c", WRAPPER, sys.executable, "-m", "cnndoctor", "check", model,
               "--train-dir", folder, "--budget", args.budget, "-q"]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        rc, wall, peak = out.stdout.split()
        print(f"{n:>8,} {float(wall):>8.1f} {int(peak) / 1024:>12.0f} {rc:>5}", flush=True)
        if out.stderr.strip():
            print(out.stderr.strip()[-500:], file=sys.stderr)


if __name__ == "__main__":
    main()
