"""The HTML report as a user meets it: pages from ``cnndoctor demo --html`` and from
``diagnose``, opened in headless Chromium (Debian's ``chromium``; ``make test`` installs it where
it can): the verdict, every finding code, the plots as decoded images of non-zero size, a
screenshot that is not blank, escaped user strings that run no script, nothing fetched."""
import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn as nn

import cnndoctor
from cnndoctor.cli import main
from cnndoctor.report import Finding, Fix, Passed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (run `make test` as root where apt-get "
                             "exists, or `apt-get install chromium`)")
#: The issue's limit on a page: a few hundred KB per case, at most 2 MB.
MAX_PAGE_BYTES = 2 * 1024 * 1024
#: A rendered page of text, tables and plots has thousands of distinct colors (anti-aliased
#: text alone gives hundreds); a blank or failed render has one or a handful.
MIN_SCREENSHOT_COLORS = 200
#: The payloads of the issue; ``alert`` is replaced in the test copy of a page by a hook that
#: marks the document, so that a script that ran leaves a trace in the dumped DOM.
LAYER_PAYLOAD = "<script>alert(1)</script>"
CLASS_PAYLOAD = "<img src=x onerror=alert(1)>"
TITLE_PAYLOAD = "<script>document.title='PWNED'</script>"
NOTE_PAYLOAD = "<img src=x onerror=\"document.body.setAttribute('data-pwned',1)\">"
ALERT_HOOK = ("<script>window.alert=function(m){document.documentElement.setAttribute("
              "'data-alerted',String(m))};</script>")
#: Written into the test copy only: each image's decoded size, once the page has loaded.
SIZE_PROBE = ("<script>window.addEventListener('load',function(){for(const i of document.images)"
              "{i.setAttribute('data-natural',i.naturalWidth+'x'+i.naturalHeight)}"
              "document.body.setAttribute('data-probed','1')});</script>")


def _chromium(*args, timeout=90):
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True,
                          timeout=timeout)


def rendered_dom(path, tmp_path, hooks=True) -> str:
    """The DOM after Chromium loaded ``path`` (a test copy with the alert hook and the size
    probe when ``hooks``), with scripts of the page itself able to run as they would."""
    target = path
    if hooks:
        text = open(path, encoding="utf-8").read()
        text = text.replace("<head>", "<head>" + ALERT_HOOK, 1)
        text = text.replace("</body>", SIZE_PROBE + "</body>", 1)
        target = tmp_path / ("probe-" + os.path.basename(str(path)))
        target.write_text(text, encoding="utf-8")
    out = _chromium(f"--user-data-dir={tmp_path / 'chromium-profile'}",
                    "--run-all-compositor-stages-before-draw", "--virtual-time-budget=5000",
                    "--dump-dom", f"file://{target}")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "<body" in out.stdout, out.stderr[-2000:]
    return out.stdout


def natural_sizes(dom: str) -> list[tuple[int, int]]:
    return [(int(w), int(h)) for w, h in re.findall(r'data-natural="(\d+)x(\d+)"', dom)]


def assert_offline(text: str) -> None:
    """Nothing on the page can be fetched: no URL of any scheme but data:, no script, no link."""
    assert not re.search(r"https?://", text), re.search(r".{60}https?://.{60}", text)
    assert not re.search(r"<(script|link|iframe|object|embed)\b", text, re.I)
    assert "@import" not in text and "url(" not in text
    for src in re.findall(r'\bsrc="([^"]*)"', text):
        assert src.startswith("data:image/png;base64,"), src[:80]


# ---- cnndoctor demo --html --------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo_pages(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo-html")
    cmd = [sys.executable, "-m", "cnndoctor", "demo", "2-row-column", "2-row-column-healthy",
           "--budget", "static", "--html", str(out / "pages"), "--json", str(out / "demo.json"),
           "--quiet"]
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    cases = json.load(open(out / "demo.json"))["cases"]
    return out / "pages", {c["case"]: c for c in cases}


def test_demo_writes_a_page_per_case_and_an_index(demo_pages):
    pages, cases = demo_pages
    assert sorted(os.listdir(pages)) == sorted([f"{c}.html" for c in cases] + ["index.html"])
    for case in cases:
        size = os.path.getsize(pages / f"{case}.html")
        assert 5_000 < size < MAX_PAGE_BYTES, (case, size)
        assert_offline((pages / f"{case}.html").read_text(encoding="utf-8"))
    assert_offline((pages / "index.html").read_text(encoding="utf-8"))


@needs_chromium
def test_demo_pages_in_chromium(demo_pages, tmp_path):
    pages, cases = demo_pages
    index = rendered_dom(pages / "index.html", tmp_path)
    for case, report in cases.items():
        row = re.search(rf'<tr data-case="{re.escape(case)}">(.*?)</tr>', index, re.S)
        assert row, case
        assert f'href="{case}.html"' in row.group(1)
        assert f"v-{report['verdict']}" in row.group(1)
        for f in report["findings"]:
            assert f"<code>{f['code']}</code>" in row.group(1)

    broken = cases["2-row-column"]
    assert broken["verdict"] == "broken" and broken["findings"]
    for case, report in cases.items():
        dom = rendered_dom(pages / f"{case}.html", tmp_path)
        assert "data-alerted=\"" not in dom
        assert f'data-verdict="{report["verdict"]}"' in dom
        shown = re.findall(r'<section class="finding [^"]*" id="[^"]*" data-code="([^"]+)"', dom)
        assert shown == [f["code"] for f in report["findings"]]  # every code, in rank order
        for p in report["passed"]:
            assert f"<code>{p['code']}</code>" in dom
        sizes = natural_sizes(dom)
        # static budget: the example images and the input histograms, decoded by the browser
        assert len(sizes) >= 2 and all(w > 100 and h > 50 for w, h in sizes), sizes
        assert dom.count("<img") == len(sizes)
        for title in ("Example images", "Input values per dataset"):
            assert f"<b>{title}</b>" in dom


@needs_chromium
def test_demo_page_screenshot_is_not_blank(demo_pages, tmp_path):
    from PIL import Image

    pages, _ = demo_pages
    shot = tmp_path / "page.png"
    out = _chromium(f"--user-data-dir={tmp_path / 'chromium-profile'}", f"--screenshot={shot}",
                    "--window-size=1200,2000", f"file://{pages / '2-row-column.html'}")
    assert out.returncode == 0 and shot.exists(), out.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (2000, 1200)
    colors = len(np.unique(img.reshape(-1, 3), axis=0))
    assert colors >= MIN_SCREENSHOT_COLORS, colors
    # the verdict badge of a broken model is drawn in its red (#b3261e) at the top of the page
    top = img[:300].reshape(-1, 3).astype(int)
    assert (np.abs(top - [0xb3, 0x26, 0x1e]).sum(axis=1) < 30).sum() > 200


# ---- a diagnosed model with hostile names ----------------------------------------------------

def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]  # N x 1 x 8 x 8 in [0, 1]
    return x, d.target.astype(np.int64)


def _trained_hostile_model(x, y):
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict([
        (LAYER_PAYLOAD, nn.Conv2d(1, 8, 3)), ("relu", nn.ReLU()), ("flat", nn.Flatten()),
        ("fc", nn.Linear(8 * 6 * 6, 10))]))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for step in range(150):  # ~1 s: well past 80% on the training digits
        i = torch.randint(0, len(xt), (64,))
        opt.zero_grad()
        nn.functional.cross_entropy(model(xt[i]), yt[i]).backward()
        opt.step()
    return model


VERIFIED = {
    "fix": "relu-in-conv-stack", "metric": "validation accuracy",
    "measured_on": "validation data (500 images)", "seeds": [0, 1, 2],
    "before": {"values": [0.49, 0.66, 0.85], "mean": 0.667, "spread": 0.18},
    "after": {"values": [0.95, 0.96, 0.96], "mean": 0.957, "spread": 0.006},
    "difference": {"mean": 0.29, "low": 0.10, "high": 0.48}, "verdict": "verified",
    "curves": {"before": [[2.3, 2.2, 2.1, 2.05], [2.3, 2.0, 1.9, 1.8]],
               "after": [[2.3, 1.2, 0.6, 0.3], [2.3, 1.1, 0.5, 0.25]]},
    "steps": 300, "seconds": 12.4,
}


@pytest.fixture(scope="module")
def hostile_report():
    x, y = _digits()
    model = _trained_hostile_model(x[:1200], y[:1200])
    # the evaluation path forgets the scaling: raw 0-16 digits, as in case 4 (0-255 CIFAR)
    report = cnndoctor.diagnose(model, train=(x[:1200], y[:1200]), val=(x[1200:], y[1200:]),
                                evaluate=(x[1200:] * 16.0, y[1200:]),
                                loss=nn.CrossEntropyLoss(), budget="quick", progress=False,
                                title=TITLE_PAYLOAD)
    report.notes.append(NOTE_PAYLOAD)
    report.findings.append(Finding(
        code="class-imbalance", area="data", severity="warning",
        title=f"class {CLASS_PAYLOAD} is rare", explanation=f"the class {CLASS_PAYLOAD} has few "
        "images", evidence={"rare_classes": [CLASS_PAYLOAD], "share": 0.01},
        fix=Fix(f"collect more images of {CLASS_PAYLOAD}", f"weights = {{'{CLASS_PAYLOAD}': 5}}",
                transform={"name": "balance-classes", "params": {}}),
        verified=dict(VERIFIED), rank=len(report.findings) + 1))
    report.passed.append(Passed("layer-names", f"layer {LAYER_PAYLOAD} looked at"))
    report.figures["verification"] = {"combined": {**VERIFIED, "fix": "all fixes"}}
    return report


@pytest.fixture(scope="module")
def hostile_page(hostile_report, tmp_path_factory):
    """The page, written by ``to_html(path)`` (plots are drawn once for all the tests)."""
    path = tmp_path_factory.mktemp("hostile") / "hostile.html"
    text = hostile_report.to_html(str(path))
    return path, text


def test_diagnosis_finds_the_evaluation_scale_and_keeps_the_layer_name(hostile_report):
    assert "preprocessing-mismatch" in hostile_report.codes
    names = [layer["name"] for layer in hostile_report.model["layers"]]
    assert LAYER_PAYLOAD in names


@needs_chromium
def test_hostile_names_run_no_script_and_show_as_text(hostile_page, tmp_path):
    path, text = hostile_page
    assert path.read_text(encoding="utf-8") == text
    assert_offline(text)
    assert len(text.encode()) < MAX_PAGE_BYTES
    dom = rendered_dom(path, tmp_path)
    assert "data-alerted=\"" not in dom  # neither <script>alert(1)</script> nor onerror=alert(1)
    assert "data-pwned=\"" not in dom
    assert "<title>cnndoctor: &lt;script&gt;document.title='PWNED'&lt;/script&gt;" in dom
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom  # the layer, shown as text
    assert "&lt;img src=x onerror=alert(1)&gt;" in dom  # the class, shown as text
    assert not re.search(r"<img[^>]*src=\"?x\b", dom)
    # the pictures the issue asks for, decoded by the browser at a non-zero size
    captions = re.findall(r"<figcaption><b>([^<]+)</b>", dom)
    for title in ("Confusion matrix", "Input values per dataset", "Example images",
                  "Before and after the fix", "Loss curve", "Per-layer activity and gradients"):
        assert title in captions, captions
    sizes = natural_sizes(dom)
    assert len(sizes) == dom.count("<img") >= 5 and min(w for w, _ in sizes) > 100, sizes


def test_verified_fix_shows_seeds_means_interval_and_verdict(hostile_page):
    page = hostile_page[1]
    section = page[page.index('data-code="class-imbalance"'):]
    section = section[:section.index("</section>")]
    assert 'data-verdict="verified"' in section and "Verified" in section
    assert "relu-in-conv-stack" in section and "balance-classes" in section
    rows = re.findall(r"<tr><td>(\d+)</td><td class=\"num\">([\d.]+%)</td>"
                      r"<td class=\"num\">([\d.]+%)</td></tr>", section)
    assert rows == [("0", "49.0%", "95.0%"), ("1", "66.0%", "96.0%"), ("2", "85.0%", "96.0%")]
    assert "66.7%" in section and "95.7%" in section  # the means
    assert "+29.0%" in section and "+10.0% to +48.0%" in section
    assert section.count("<img") == 1
    combined = page[page.index('id="all-fixes"'):]
    assert "All fixes together" in combined[:2000]


def test_healthy_model_page(tmp_path):
    x, y = _digits()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    report = cnndoctor.diagnose(model, train=(x[:800], y[:800]), val=(x[800:1100], y[800:1100]),
                                loss=nn.CrossEntropyLoss(), budget="quick", progress=False)
    assert not [f.code for f in report.findings if f.severity == "error"]
    page = report.to_html()
    assert f'data-verdict="{report.verdict}"' in page
    assert page.count("data-code=") == len(report.findings)
    captions = re.findall(r"<figcaption><b>([^<]+)</b>", page)
    assert {"Loss curve", "Per-layer activity and gradients"} <= set(captions), captions
    assert_offline(page)


def test_each_plot_draws_what_its_probe_stored_and_skips_what_is_absent():
    from PIL import Image

    from cnndoctor.html import plots

    figures = {  # the shapes the probes store (probes/training.py, robustness.py)
        "seeds": {"val_acc": [0.49, 0.66, 0.85, 0.9, 0.11], "mean": 0.602, "std": 0.31},
        "perturbation_sweep": {"inversion": [{"level": 1.0, "accuracy": 0.02}],
                               "noise": [{"level": 0.05, "accuracy": 0.9},
                                         {"level": 0.1, "accuracy": 0.7},
                                         {"level": 0.2, "accuracy": 0.3}]},
        "lr_range": {"lr": [1e-5, 1e-4, 1e-3, 1e-2, 1e-1], "loss": [2.3, 2.2, 1.5, 1.0, None],
                     "user_lr": 1e-4, "suggested_lr": 3e-3},
    }
    for fn in (plots.seeds, plots.perturbation_sweep, plots.lr_range):
        plot = fn(figures)
        img = Image.open(io.BytesIO(base64.b64decode(plot.png_base64)))
        assert img.size == (plot.width, plot.height) and plot.width > 150
        assert len(img.convert("RGB").getcolors(1 << 16)) > 20  # lines and text, not blank
        assert fn({}) is None
    assert plots.seeds({"seeds": {"val_acc": [0.5]}}) is None  # one seed is no spread
    for fn in plots.REPORT_PLOTS + (plots.confusion_matrix,):
        assert fn({}) is None


def test_repr_html_is_the_page_body_without_external_resources(hostile_report, hostile_page):
    body = hostile_report._repr_html_()
    assert not re.search(r"<(html|head|body)\b", body)
    assert_offline(body)
    assert body in hostile_page[1]
    assert body.count("data-code=") == len(hostile_report.findings)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body and LAYER_PAYLOAD not in body
    assert str(hostile_report).startswith("cnndoctor:")  # the terminal view stays


def test_import_does_not_load_matplotlib():
    code = "import cnndoctor, sys; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": ROOT}, timeout=120)
    assert out.stdout.strip() == "False", out.stderr[-1000:]


# ---- the command line ------------------------------------------------------------------------

def test_check_html_and_an_unwritable_path(tmp_path, capsys):
    x, y = _digits()
    script = tmp_path / "model.py"
    script.write_text("import torch.nn as nn\n"
                      "def build():\n    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), "
                      "nn.Flatten(), nn.Linear(4 * 6 * 6, 10))\n")
    np.savez(tmp_path / "train.npz", x=x[:300], y=y[:300])
    out = tmp_path / "report.html"
    args = ["check", f"{script}:build", "--train", str(tmp_path / "train.npz"), "--loss",
            "cross_entropy", "--budget", "static", "--quiet"]
    rc = main(args + ["--html", str(out), "--json", str(tmp_path / "r.json")])
    report = json.load(open(tmp_path / "r.json"))
    assert rc == (1 if report["verdict"] == "broken" else 0)
    page = out.read_text(encoding="utf-8")
    assert f'data-verdict="{report["verdict"]}"' in page
    assert "model.py" in page  # the title
    capsys.readouterr()
    rc = main(args + ["--html", str(tmp_path / "no-such-folder" / "r.html")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("cnndoctor: error: cannot write the HTML report")
    assert len(err.splitlines()) == 1


def test_demo_html_refuses_a_file_as_folder(tmp_path, capsys):
    f = tmp_path / "pages"
    f.write_text("")
    assert main(["demo", "2-row-column", "--budget", "static", "--html", str(f), "-q"]) == 2
    assert "expected a folder" in capsys.readouterr().err


# ---- progress bars ---------------------------------------------------------------------------

class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _diagnose_small(progress):
    x, y = _digits()
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    return cnndoctor.diagnose(model, train=(x[:200], y[:200]), evaluate=(x[200:300], y[200:300]),
                              loss=nn.CrossEntropyLoss(), budget="static", progress=progress)


def test_progress_bar_on_a_terminal_only(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    _diagnose_small(True)
    err = term.getvalue()
    from cnndoctor.probes import load_all

    static = sum("static" in p.budgets for p in load_all())
    # the bar, drawn up to its end
    assert re.search(rf"cnndoctor probes: +\d+%\|.*\| {static}/{static} ", err), err
    assert "cnndoctor: comparing the evaluation path with training" in err  # the log line stays

    for env, progress in (("1", True), (None, False)):
        term = _Terminal()
        monkeypatch.setattr(sys, "stderr", term)
        if env:
            monkeypatch.setenv("TQDM_DISABLE", env)
        else:
            monkeypatch.delenv("TQDM_DISABLE", raising=False)
        _diagnose_small(progress)
        assert "cnndoctor probes" not in term.getvalue(), (env, progress)

    pipe = io.StringIO()  # not a terminal: a log gets the lines, never a bar
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setattr(sys, "stderr", pipe)
    _diagnose_small(True)
    assert "cnndoctor probes" not in pipe.getvalue()
    assert "cnndoctor: comparing the evaluation path with training" in pipe.getvalue()


def test_sample_images_round_trip():
    from cnndoctor.probes.samples import SAMPLE_IMAGES, THUMB_SIDE, thumbnails

    imgs = np.random.default_rng(0).uniform(0, 255, (10, 64, 48, 3)).astype(np.float32)
    t = thumbnails(imgs)
    arr = np.frombuffer(base64.b64decode(t["uint8_base64"]), np.uint8).reshape(t["shape"])
    assert arr.shape == (SAMPLE_IMAGES, THUMB_SIDE, 24, 3)
    assert t["range"][0] >= 0 and t["range"][1] <= 255 and arr.max() == 255 and arr.min() == 0


def test_verification_runs_get_a_bar(monkeypatch):
    import cnndoctor.verify as verify
    from cnndoctor.probes import ProbeContext

    lines = []
    ran = []
    monkeypatch.setattr(verify, "run_trial", lambda t, s, steps, secs: ran.append(s) or {"s": s})
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    ctx = ProbeContext(budget="quick", progress=lines.append)
    ctx.executor = "inprocess"  # where the executor exists: these jobs run here, one by one
    out = verify._run_many([(None, 0), (None, 1), (None, 2)], "quick", ctx)
    assert [r["s"] for r in out] == [0, 1, 2] == ran
    assert re.search(r"cnndoctor verification runs: +\d+%\|.*\| 3/3 ", term.getvalue())
