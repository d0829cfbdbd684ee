"""Real data pipelines: image folders, torch Dataset/DataLoader, Keras PyDataset, generators.

The data is real (scikit-learn's 1,797 digits, the 5k MNIST subset, case 5's photographed
digits), written as PNG files into temporary folders, one sub-folder per class, as a user keeps
them. Nothing here needs torchvision: the lazily reading Dataset and its Normalize are our own,
shaped like torchvision's.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

import cnndoctor
from cnndoctor import pipelines
from cnndoctor.cli import main
from cnndoctor.pipelines import sampling
from conftest import same_weights, weights_of

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 16  # the digits are 8x8; written as 16x16 RGB PNGs
PER_CLASS = 30  # 300 images over the 10 digit classes


def write_folder(root, images, labels, names=None):
    """PNG files root/<class>/<i>.png from uint8 images (N, H, W[, C])."""
    for i, (img, c) in enumerate(zip(images, labels)):
        d = os.path.join(root, names[c] if names else str(int(c)))
        os.makedirs(d, exist_ok=True)
        Image.fromarray(img).save(os.path.join(d, f"{i:05d}.png"))
    return str(root)


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory):
    """300 real digits (30 per class), raw 0-255 pixels, 16x16 RGB PNGs in class folders."""
    from sklearn.datasets import load_digits

    d = load_digits()
    idx = np.concatenate([np.flatnonzero(d.target == c)[:PER_CLASS] for c in range(10)])
    gray = np.kron(d.images[idx], np.ones((2, 2))) * (255 / 16)
    rgb = np.repeat(np.clip(gray, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
    root = write_folder(tmp_path_factory.mktemp("digits"), rgb, d.target[idx])
    return root, rgb, d.target[idx].astype(np.int64)


def cli(*args, cwd):
    """`python -m cnndoctor ARGS` as a user runs it: (returncode, stdout, stderr)."""
    env = dict(os.environ, PYTHONPATH=ROOT, KERAS_BACKEND="torch", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "cnndoctor", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


# ---- the must-haves ---------------------------------------------------------------------------

def test_raw_png_folder_and_keras_model_without_rescaling(digits_folder, tmp_path):
    root, _, _ = digits_folder
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((SIZE, SIZE, 3)),
        keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    path = str(tmp_path / "model.keras")
    model.save(path)
    report = str(tmp_path / "report.json")
    rc, out, err = cli("check", path, "--train-dir", root, "--json", report, "-q", cwd=tmp_path)
    assert rc == 1, err[-2000:]
    data = json.load(open(report))
    f = next(f for f in data["findings"] if f["code"] == "unnormalized-input")
    assert f["severity"] == "error"
    assert f["evidence"]["max"] == 255 and f["evidence"]["min"] == 0
    assert f["evidence"]["images"] == 10 * PER_CLASS  # the report says what it is based on
    src = data["figures"]["data_sources"]["training"]
    assert src["total_size"] == src["sample_size"] == 10 * PER_CLASS
    assert "300 of 300 images" in out
    # dead units etc. it causes rank below it
    codes = [x["code"] for x in data["findings"]]
    assert codes.index("unnormalized-input") == min(
        codes.index(c) for c in codes if c in ("unnormalized-input", "dead-relu", "no-learning"))


class Normalize:
    """Shaped like torchvision.transforms.Normalize: ``mean``/``std`` per channel."""

    def __init__(self, mean, std):
        self.mean, self.std = list(mean), list(std)

    def __call__(self, t):
        m = torch.tensor(self.mean)[:, None, None]
        s = torch.tensor(self.std)[:, None, None]
        return (t - m) / s


class Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, t):
        for tr in self.transforms:
            t = tr(t)
        return t


class PngFolder(torch.utils.data.Dataset):
    """An ImageFolder-like Dataset that opens each PNG in __getitem__ (nothing held in memory)."""

    def __init__(self, root, transform=None):
        self.classes = sorted(os.listdir(root))
        self.samples = [(os.path.join(root, c, f), i) for i, c in enumerate(self.classes)
                        for f in sorted(os.listdir(os.path.join(root, c)))]
        self.transform = transform
        self.opened = 0

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        self.opened += 1
        img = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
        t = torch.from_numpy(img).permute(2, 0, 1)
        return (self.transform(t) if self.transform else t), label


def torch_cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 4 * 4, 10))


def test_lazy_dataset_and_dataloader_that_normalize_healthy_torch_model(digits_folder):
    root, _, _ = digits_folder
    ds = PngFolder(root, Compose([Normalize([0.2, 0.2, 0.2], [0.35, 0.35, 0.35])]))
    # num_workers=2: cnndoctor reads the items in this process (no workers, no hang)
    loader = torch.utils.data.DataLoader(ds, batch_size=32, shuffle=True, num_workers=2)
    model = torch_cnn()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    loss = nn.CrossEntropyLoss()
    single = torch.utils.data.DataLoader(ds, batch_size=32, shuffle=True)
    for _ in range(2):  # the user trained it a little, from the same pipeline
        for xb, yb in single:
            opt.zero_grad()
            loss(model(xb), yb).backward()
            opt.step()
    before = weights_of(model)
    opened = ds.opened
    report = cnndoctor.diagnose(model, train=loader, loss=loss, optimizer=opt, budget="quick")
    assert not [f.code for f in report.findings if f.severity == "error"], report.render()
    passed = {p.code: p for p in report.passed}
    assert passed["unnormalized-input"].figures["normalized_by"] == "pipeline"
    assert "Normalize(mean=0.2" in passed["unnormalized-input"].measured
    assert any("num_workers=2" in n for n in report.notes)
    assert report.figures["data_sources"]["training"]["source"] == \
        "torch DataLoader over PngFolder"
    assert ds.opened - opened == 10 * PER_CLASS + 1  # each item once, item 0 also for its size
    assert same_weights(before, weights_of(model))


def test_handwriting_folders_give_domain_shift(tmp_path):
    """Seed 004: training digits in one folder, "my handwriting" photos in another."""
    from cnndoctor.cases.handwriting import build_model
    from cnndoctor.cases.handwriting_data import handwriting_photos, mnist_with_inverted

    (x, y), _ = mnist_with_inverted(seed=0)
    keep = np.linspace(0, len(x) - 1, 400).astype(int)
    x, y = x[keep], y[keep]
    xr, yr = handwriting_photos(seed=0, n=100)
    train_dir = write_folder(tmp_path / "train", (x * 255).round().astype(np.uint8), y)
    ref_dir = write_folder(tmp_path / "mine", (xr * 255).round().astype(np.uint8), yr)
    # The user's model read the folders as Keras does (0-255) and rescales itself.
    inner = build_model(0)
    model = keras.Sequential([keras.Input((28, 28, 3)), keras.layers.Rescaling(1 / 255), inner])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x * 255, y, epochs=2, batch_size=32, verbose=0)
    path = str(tmp_path / "digits.keras")
    model.save(path)
    report = str(tmp_path / "r.json")
    rc, out, err = cli("check", path, "--train-dir", train_dir, "--reference-dir", ref_dir,
                       "--budget", "static", "--json", report, "-q", cwd=tmp_path)
    assert rc == 1, err[-2000:]
    data = json.load(open(report))
    f = next(f for f in data["findings"] if f["code"] == "domain-shift")
    assert f["severity"] == "error"
    assert data["figures"]["data_sources"]["reference"]["total_size"] == 100
    assert "unnormalized-input" in data_passed(data)  # the model's Rescaling is seen


def data_passed(data):
    return [p["code"] for p in data["passed"]]


# ---- bounded, deterministic, stratified samples -----------------------------------------------

def test_folder_sample_is_bounded_stratified_and_deterministic(digits_folder, monkeypatch):
    root, _, labels = digits_folder
    monkeypatch.setitem(sampling.SAMPLE_SIZE, "static", 50)
    kw = dict(model=torch_cnn(), framework="torch", data_format="channels_first",
              budget="static", require_labels=True)
    a = pipelines.load("training", root, seed=0, **kw)
    b = pipelines.load("training", root, seed=0, **kw)
    c = pipelines.load("training", root, seed=1, **kw)
    assert len(a) == 50 and a.total_size == 300
    assert np.array_equal(a.images, b.images) and not np.array_equal(a.images, c.images)
    assert np.bincount(a.labels, minlength=10).tolist() == [5] * 10
    assert a.x.shape == (50, 3, SIZE, SIZE)  # the torch model's layout


def test_stratified_keeps_rare_classes():
    labels = np.array([0] * 990 + [1] * 10)
    idx = sampling.stratified(labels, 100, seed=0)
    assert len(idx) == 100 and np.bincount(labels[idx]).tolist() == [99, 1]


def test_mixed_sizes_and_grayscale_are_resized_with_a_note(tmp_path):
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        os.makedirs(tmp_path / c)
        for i in range(6):
            shape = (20, 24) if i % 2 else (16, 16, 3)
            arr = rng.integers(0, 256, size=shape, dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / c / f"{i}.png")
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(2, activation="softmax")])
    ds = pipelines.load("training", str(tmp_path), model=model, framework="keras",
                        data_format="channels_last", budget="static", seed=0,
                        require_labels=True)
    assert ds.x.shape == (12, 16, 16, 3)
    assert any("6 of the 12 images" in n and "resized to 16x16" in n for n in ds.notes)
    assert any("converted to RGB" in n for n in ds.notes)


class Batches(keras.utils.PyDataset):
    """A PyDataset that yields batches in class order (sorted data, no shuffling)."""

    def __init__(self, x, y, batch_size):
        super().__init__()
        order = np.argsort(y, kind="stable")
        self.x, self.y, self.bs = x[order], y[order], batch_size

    def __len__(self):
        return int(np.ceil(len(self.x) / self.bs))

    def __getitem__(self, i):
        s = slice(i * self.bs, (i + 1) * self.bs)
        return self.x[s].astype(np.float32) / 255.0, self.y[s]


def test_pydataset_sample_covers_every_class(digits_folder, monkeypatch):
    _, images, labels = digits_folder
    monkeypatch.setitem(sampling.SAMPLE_SIZE, "static", 100)
    ds = pipelines.load("training", Batches(images, labels, 20), model=None, framework="keras",
                        data_format="channels_last", budget="static", seed=0,
                        require_labels=True)
    assert len(ds) == 100 and ds.total_size == 300
    assert np.bincount(ds.labels, minlength=10).min() >= 5  # not the first five classes only
    assert ds.images.max() <= 1.0


# ---- bad pipelines: one line, exit 2, never a hang --------------------------------------------

def _keras_file(tmp_path):
    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    path = str(tmp_path / "m.keras")
    model.save(path)
    return path


def test_bad_folders_exit_2_with_one_line(tmp_path, capsys):
    path = _keras_file(tmp_path)
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(flat / "0.png")
    broken = tmp_path / "broken" / "cat"
    broken.mkdir(parents=True)
    (broken / "0.png").write_bytes(b"not a png")
    cases = [(str(flat), "no class sub-folders"), (str(broken.parent), "cannot read the image"),
             (str(tmp_path / "nowhere"), "is not a folder")]
    for folder, words in cases:
        rc = main(["check", path, "--train-dir", folder, "--budget", "static", "-q"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len([ln for ln in err if ln.startswith("cnndoctor:")]) == 1
        assert words in err[-1], err


def test_dataset_items_that_are_not_image_label_pairs():
    class ImagesOnly(torch.utils.data.Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, i):
            return torch.zeros(3, SIZE, SIZE)

    with pytest.raises(cnndoctor.InputError, match=r"expected \(image, label\) pairs"):
        cnndoctor.diagnose(torch_cnn(), train=ImagesOnly(), budget="static")


def test_endless_generator_is_bounded_by_the_sample(digits_folder):
    _, images, labels = digits_folder
    x = np.transpose(images, (0, 3, 1, 2)).astype(np.float32) / 255.0

    def forever():
        while True:
            for s in range(0, len(x), 25):
                yield x[s:s + 25], labels[s:s + 25]

    start = time.perf_counter()
    report = cnndoctor.diagnose(torch_cnn(), train=forever(), loss=nn.CrossEntropyLoss(),
                                budget="static")
    assert time.perf_counter() - start < 60
    src = report.figures["data_sources"]["training"]
    assert src["sample_size"] == sampling.SAMPLE_SIZE["static"] and src["total_size"] is None
    assert any("first 2000 images" in n for n in report.notes)


def test_generator_of_nothing_useful_is_refused():
    def empty_batches():
        while True:
            yield np.zeros((0, 3, SIZE, SIZE), np.float32), np.zeros((0,), np.int64)

    with pytest.raises(cnndoctor.InputError, match="yielded no images"):
        cnndoctor.diagnose(torch_cnn(), train=empty_batches(), budget="static")


def test_unknown_device_is_refused():
    with pytest.raises(cnndoctor.InputError, match="device"):
        cnndoctor.diagnose(torch_cnn(), train=(np.zeros((4, 3, SIZE, SIZE), np.float32),
                                               np.arange(4)), device="tpu:7", budget="static")


# ---- cnndoctor run: a script training from a DataLoader over an ImageFolder-style Dataset ------

RUN_SCRIPT = '''
import os, sys
import numpy as np, torch, torch.nn as nn
from PIL import Image

class Normalize:
    def __init__(self, mean, std): self.mean, self.std = mean, std
    def __call__(self, t): return (t - self.mean) / self.std

class Folder(torch.utils.data.Dataset):
    def __init__(self, root, transform):
        self.classes = sorted(os.listdir(root))
        self.samples = [(os.path.join(root, c, f), i) for i, c in enumerate(self.classes)
                        for f in sorted(os.listdir(os.path.join(root, c)))]
        self.transform = transform
    def __len__(self): return len(self.samples)
    def __getitem__(self, i):
        p, c = self.samples[i]
        img = np.asarray(Image.open(p).convert("RGB"), np.float32) / 255
        return self.transform(torch.from_numpy(img).permute(2, 0, 1)), c

loader = torch.utils.data.DataLoader(Folder(sys.argv[1], Normalize(0.2, 0.35)), batch_size=64,
                                     shuffle=False)  # in class order, as ImageFolder lists it
torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(512, 10))
opt = torch.optim.Adam(model.parameters(), 1e-3)
for xb, yb in loader:
    opt.zero_grad(); nn.functional.cross_entropy(model(xb), yb).backward(); opt.step()
'''


def test_run_script_training_from_an_ordered_dataloader(tmp_path):
    """All 1,797 digits in class order: more than the session keeps (1,024), so the kept samples
    must be spread over the pass, or the last classes would be missing from the diagnosis."""
    from sklearn.datasets import load_digits

    from cnndoctor.run.capture import MAX_SAMPLES

    d = load_digits()
    gray = np.clip(d.images * (255 / 16), 0, 255).astype(np.uint8)
    assert len(gray) > MAX_SAMPLES
    root = write_folder(tmp_path / "digits", np.repeat(gray[..., None], 3, -1), d.target)
    (tmp_path / "train.py").write_text(RUN_SCRIPT)
    report = str(tmp_path / "r.json")
    env = dict(os.environ, PYTHONPATH=ROOT, KERAS_BACKEND="torch", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "cnndoctor", "run", "--budget", "quick",
                           "--json", report, str(tmp_path / "train.py"), "--", root],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.load(open(report))
    assert not [f["code"] for f in data["findings"] if f["severity"] != "info"]
    assert {"output-size-mismatch", "class-imbalance", "unnormalized-input"} <= \
        set(data_passed(data))
    stats = data["figures"]["input_statistics"]["training"]
    assert stats["max"] < 3 and stats["min"] < 0  # what the model was fed: normalized
