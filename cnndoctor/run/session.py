"""A ``cnndoctor run`` session: run the user's scripts unmodified, with instrumentation, then put
together what they did for ``cnndoctor.diagnose``.

    session = Session()
    session.run(["train.py", "evaluate.py"], args=["--epochs", "3"])
    report = session.diagnose(budget="quick")

Scripts run one after the other in this process, as ``python SCRIPT ARGS`` would run them:
``__name__ == "__main__"``, ``sys.argv`` = the script and its arguments, the script's directory
first on ``sys.path``, each starting in the working directory of the session (a script's
``os.chdir`` is undone after it, as are a replaced ``sys.stdout``/``sys.stderr``), their output
untouched (written as it comes, never held). A script that raises, exits with a non-zero status,
calls ``os._exit`` or is stopped (``timeout=``, Ctrl-C; see ``stopping``) ends the run (as
``python a.py && python b.py`` would); what it did until then is diagnosed, and its error is kept
for the report (its traceback shown once, labelled, without cnndoctor's own frames).
"""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import runpy
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from . import cache
from .capture import Stream
from .explain import explain
from .stopping import ScriptStopped, Stopper
from .records import (EVAL_PHASES, EVALUATION, PREDICTION, TRAINING, VALIDATION,
                      ModelRecord)

# Lines of a script's traceback kept for the report (the last ones: where it failed).
TRACEBACK_LINES = 12
# Frames of a script's error shown when it fails (the innermost ones), as Python shows them.
TRACEBACK_FRAMES = 10
# An error message is shown up to this many lines of at most this many characters (a script can
# raise with megabytes of text: a whole array printed).
MESSAGE_LINES, LINE_CHARS = 20, 500
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # cnndoctor/
# Fewer training samples than this in the fed stream, and the arrays given to fit() are used
# instead (a script that crashed in its first steps).
MIN_STREAM_SAMPLES = 256


class NothingToDiagnose(Exception):
    """The scripts ran but gave nothing to diagnose (no training, no model): say why."""


@dataclass
class ScriptResult:
    path: str
    args: list[str]
    status: str = "not run"  # "ok", "error", "exit", "stopped", "not run"
    seconds: float = 0.0
    exit_code: int | None = None
    error: dict | None = None
    ended_by: str | None = None  # "sys.exit(0)", "os._exit(3)", "--timeout 5", "Ctrl-C"
    stopped_at: str | None = None  # the script's line it was at when it ended or was stopped

    @property
    def finished(self) -> bool:
        """Ran to its end, or chose to exit with status 0."""
        return self.status == "ok"

    def to_dict(self) -> dict:
        return {"path": self.path, "args": list(self.args), "status": self.status,
                "seconds": round(self.seconds, 3), "exit_code": self.exit_code,
                "ended_by": self.ended_by, "stopped_at": self.stopped_at, "error": self.error}


@dataclass
class Session:
    stream_progress: Callable[[str], None] | None = None
    cache_dir: str | None = None  # where training records go (None: cache.directory())
    #: The global random generators are seeded with this before each script (None: left as the
    #: interpreter seeded them), so that the same scripts give the same diagnosis (``seeding``).
    seed: int | None = 0
    records: list[ModelRecord] = field(default_factory=list)
    scripts: list[ScriptResult] = field(default_factory=list)
    saved: dict[str, ModelRecord] = field(default_factory=dict)  # abs path -> record
    records_written: list[str] = field(default_factory=list)  # training records in the cache
    notes: list[str] = field(default_factory=list)
    internal_errors: list[str] = field(default_factory=list)
    active: bool = False
    in_keras_step: int = 0
    orphan_steps: int = 0
    failed_in: str | None = None
    script_name: str = ""

    def __post_init__(self):
        self._by_id: dict[int, ModelRecord] = {}
        self._torch_skip: set[int] = set()
        self._keras = None
        self._torch = None
        self._compat = None
        self._legacy = None
        self._keras_finder = None
        self._stopper: Stopper | None = None
        self._script_path = ""
        self._keys: dict[str, str] = {}  # saved model path -> key of the record written for it
        self.cache_dir = cache.directory(self.cache_dir)

    # ---- running -------------------------------------------------------------------------
    def run(self, scripts: list[str], args: list[str] | None = None,
            timeout: float | None = None) -> list[ScriptResult]:
        """Run the scripts in order; ``timeout``: seconds after which a script is stopped."""
        args = list(args or [])
        self.scripts = [ScriptResult(path=p, args=args) for p in scripts]
        self.install()
        try:
            for i, result in enumerate(self.scripts):
                self._run_one(result, timeout)
                if not result.finished:
                    for later in self.scripts[i + 1:]:
                        later.status = "not run"
                    break
        finally:
            self.uninstall()
        return self.scripts

    def _run_one(self, result: ScriptResult, timeout: float | None = None) -> None:
        path = result.path
        full = os.path.abspath(path)
        self.script_name, self._script_path = os.path.basename(path), full
        self.failed_in = None
        old_argv, old_path0, old_cwd = sys.argv[:], list(sys.path), os.getcwd()
        old_out, old_err = sys.stdout, sys.stderr
        sys.argv = [path] + list(result.args)
        sys.path.insert(0, os.path.dirname(full))
        stopper = self._stopper
        if self.seed is not None:
            from .seeding import seed_generators

            seeded = seed_generators(self.seed)
            if not any(n.startswith("the random generators of") for n in self.notes):
                self.notes.append(
                    f"the random generators of {', '.join(seeded)} were seeded with {self.seed} "
                    f"before each script (--seed N for another), so that the same scripts give "
                    f"the same diagnosis; a script that sets its own seeds keeps them")
        start = time.perf_counter()
        outcome: BaseException | None = None
        self.active = True
        try:
            stopper.begin(timeout, self.script_name)
            try:
                runpy.run_path(full, run_name="__main__")
            finally:
                stopper.armed = False  # one store: no stop is raised after it
        except BaseException as exc:  # the script's own end: sorted out below
            outcome = exc
        stop = self._end_stops()
        self.active = False
        result.seconds = time.perf_counter() - start
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            pass
        sys.stdout, sys.stderr = old_out, old_err
        sys.argv = old_argv
        sys.path[:] = old_path0
        self.in_keras_step = 0
        try:
            os.chdir(old_cwd)
        except OSError as exc:
            self.notes.append(f"could not go back to {old_cwd} after {self.script_name}: "
                              f"{exc.strerror}")
        try:
            self._outcome(result, outcome, stop)
        finally:
            del outcome  # the frames it holds keep the script's objects (DataLoader workers)

    def _end_stops(self) -> ScriptStopped | None:
        """No stop reaches the script (or cnndoctor) any more; the stop asked for, if any."""
        stopper = self._stopper
        for _ in range(3):  # an asynchronous stop can still land once while this runs
            try:
                stop = stopper.end()
                stopper.clear_async()
                return stop
            except ScriptStopped:
                continue
        return None

    def _outcome(self, result: ScriptResult, exc: BaseException | None,
                 stop: ScriptStopped | None) -> None:
        if exc is None:
            result.status, result.exit_code = "ok", 0
            return
        result.stopped_at = self._where(exc)
        if isinstance(exc, KeyboardInterrupt):
            stop = ScriptStopped("interrupt")
        elif isinstance(exc, ScriptStopped):
            stop = stop or exc
        elif not isinstance(exc, SystemExit):
            stop = None
        if stop is not None and stop.kind == "os._exit":
            code = stop.code or 0
            result.ended_by = f"os._exit({code})"
            result.exit_code = code
            if code == 0:
                result.status = "ok"
            else:
                result.status = "exit"
                result.error = self._error_record(
                    exc, f"the script called os._exit({code})", "SystemExit")
            return
        if stop is not None:
            result.status = "stopped"
            result.ended_by = (f"--timeout {stop.detail}" if stop.kind == "timeout" else "Ctrl-C")
            return
        if isinstance(exc, SystemExit):
            code = exc.code
            result.ended_by = f"sys.exit({code!r})" if code is not None else "sys.exit()"
            if code in (None, 0):
                result.status, result.exit_code = "ok", 0
            else:
                result.status = "exit"
                result.exit_code = code if isinstance(code, int) else 1
                if not isinstance(code, int):
                    print(code, file=sys.stderr)
                result.error = self._error_record(exc, f"the script exited with status {code}")
            return
        # the script's own error: shown once, labelled, then kept for the report
        result.status = "error"
        result.error = self._error_record(exc)
        self._show_error(exc, result.error)

    def _frames(self, exc: BaseException) -> list:
        """The traceback's frames without cnndoctor's own (its instrumentation, runpy)."""
        return [f for f in traceback.extract_tb(exc.__traceback__)
                if not os.path.abspath(f.filename).startswith(_PACKAGE + os.sep)
                and os.path.basename(f.filename) != "runpy.py"
                and not f.filename.startswith("<frozen runpy")]

    def _where(self, exc: BaseException) -> str | None:
        frames = [f for f in traceback.extract_tb(exc.__traceback__)
                  if os.path.abspath(f.filename) == self._script_path]
        return f"{self.script_name}:{frames[-1].lineno}" if frames else None

    def _traceback_lines(self, exc: BaseException, msg: str) -> list[str]:
        """The script's traceback as Python prints it, less cnndoctor's frames and the header,
        bounded (the innermost frames, long lines cut)."""
        frames = self._frames(exc)
        left_out = max(0, len(frames) - TRACEBACK_FRAMES)
        lines = [f"  ... {left_out} earlier frame(s) left out"] if left_out else []
        for f in frames[left_out:]:
            lines.append(f'  File "{f.filename}", line {f.lineno}, in {f.name}')
            if f.line:
                lines.append(f"    {f.line.strip()[:LINE_CHARS]}")
        lines += f"{type(exc).__name__}: {msg}".splitlines() if msg else [type(exc).__name__]
        return lines

    def _show_error(self, exc: BaseException, err: dict) -> None:
        """The script's error on stderr, as one labelled block (not a cnndoctor traceback)."""
        print(f"cnndoctor: ---- {err['script']} raised {err['type']} (the script's own error; "
              f"cnndoctor's frames left out) ----", file=sys.stderr)
        print("\n".join(self._traceback_lines(exc, err["message"])), file=sys.stderr)
        print(f"cnndoctor: ---- end of the error of {err['script']} ----", file=sys.stderr,
              flush=True)

    def _error_record(self, exc: BaseException, message: str | None = None,
                      type_name: str | None = None) -> dict:
        tb = traceback.extract_tb(exc.__traceback__)
        where = next((f for f in reversed(tb) if os.path.abspath(f.filename) == self._script_path),
                     None)
        msg = _bounded(message or _safe_str(exc))
        shown = self._traceback_lines(exc, msg)
        context = self._error_context()
        kind = type_name or type(exc).__name__
        expl = explain(kind, msg, context)
        return {
            "script": self.script_name,
            "type": kind,
            "message": msg.strip(),
            "where": f"{os.path.basename(where.filename)}:{where.lineno}" if where else None,
            "line": (where.line or "").strip()[:LINE_CHARS] if where else None,
            "during": self.failed_in,
            "traceback": "\n".join(shown[-TRACEBACK_LINES:]),
            "explanation": expl.to_dict() if expl else None,
        }

    def _error_context(self) -> dict:
        rec = self.records[-1] if self.records else None
        ctx: dict[str, Any] = {}
        if rec is None:
            return ctx
        ctx["framework"] = rec.framework
        ctx["loss"] = rec.compile.get("loss") if rec.framework == "keras" else rec.loss_name
        y = rec.fit_arrays[1] if rec.fit_arrays else None
        if y is None:
            s = next(iter(rec.streams_of(TRAINING)), None)
            y = s.ys[0] if s is not None and s.ys else None
        if y is not None:
            ctx["label_shape"] = tuple(np.shape(y))
        try:
            shape = rec.model.output_shape if rec.framework == "keras" else None
            ctx["output_units"] = shape[-1] if shape else None
        except Exception:
            pass
        return ctx

    # ---- instrumentation -----------------------------------------------------------------
    def install(self) -> None:
        from .legacy import Legacy
        from .tfcompat import TFCompat
        from .torch_hooks import TorchInstrument

        self._stopper = Stopper()
        self._stopper.install()
        self._legacy = Legacy(self)
        self._legacy.install_base()
        self._compat = TFCompat(self._legacy)
        self._compat.install()
        self._torch = TorchInstrument(self)
        self._torch.install()
        if "keras" in sys.modules:
            self._install_keras()
        else:
            self._keras_finder = _AfterImport("keras", self._install_keras)
            sys.meta_path.insert(0, self._keras_finder)

    def _install_keras(self) -> None:
        from .keras_hooks import KerasInstrument

        if self._keras is None:
            self._keras = KerasInstrument(self)
            self._keras.install()
            if self._legacy is not None:  # on top of the instruments: old names reach them new
                self._legacy.install_keras()

    def uninstall(self) -> None:
        if self._keras_finder is not None and self._keras_finder in sys.meta_path:
            sys.meta_path.remove(self._keras_finder)
        for inst in (self._legacy, self._keras, self._torch, self._compat, self._stopper):
            if inst is not None:
                try:
                    inst.uninstall()
                except Exception as exc:  # pragma: no cover - never leave a half-state silently
                    self.internal_errors.append(f"uninstall: {type(exc).__name__}: {exc}")
        if self._compat is not None:
            self.notes += [f"older Keras code ran through an alias: {u}"
                           for u in self._compat.used]
        if self._legacy is not None:
            self.notes += self._legacy.notes
        self._keras = None
        self._legacy = None

    def held(self, deferred: bool = False):
        """A step of the script that a stop must not cut in two (saving a file, starting or
        shutting down DataLoader workers): see ``stopping``."""
        if self._stopper is None or not self.active:
            return contextlib.nullcontext()
        return self._stopper.held(deferred)

    def guard(self, fn):
        """Run an observation; a failure in it is noted, never raised into the user's script."""
        try:
            return fn()
        except Exception as exc:
            self.internal_errors.append(
                f"{type(exc).__name__}: {exc} ({traceback.format_exc(limit=3).splitlines()[-3]})")
            return None

    # ---- records -------------------------------------------------------------------------
    def _new_record(self, model, framework: str) -> ModelRecord:
        layout = "channels_first" if framework == "torch" else _keras_layout()
        rec = ModelRecord(serial=len(self.records) + 1, framework=framework, model=model,
                          script=self.script_name, layout=layout)
        self.records.append(rec)
        self._by_id[id(model)] = rec
        return rec

    def keras_record(self, model) -> ModelRecord:
        rec = self._by_id.get(id(model))
        return rec if rec is not None and rec.model is model else self._new_record(model, "keras")

    def torch_record(self, module) -> ModelRecord | None:
        rec = self._by_id.get(id(module))
        if rec is not None and rec.model is module:
            return rec
        if id(module) in self._torch_skip:
            return None
        if next(module.parameters(), None) is None:  # nothing to train: not a model
            self._torch_skip.add(id(module))
            return None
        return self._new_record(module, "torch")

    def known_torch_record(self, module) -> ModelRecord | None:
        rec = self._by_id.get(id(module))
        return rec if rec is not None and rec.model is module else None

    def stream(self, rec: ModelRecord, phase: str) -> Stream:
        what = {TRAINING: "training batches", VALIDATION: "validation batches",
                EVALUATION: "evaluation batches", PREDICTION: "prediction inputs"}[phase]
        if rec.framework == "keras":
            call = {TRAINING: "model.fit", VALIDATION: "model.fit validation",
                    EVALUATION: "model.evaluate", PREDICTION: "model.predict"}[phase]
        else:
            call = {TRAINING: "model(x) with gradients, model.train()",
                    EVALUATION: "model(x) without gradients or in model.eval()"}.get(phase, phase)
        return rec.stream(phase, self.script_name, f"{what} ({call}) in {self.script_name}")

    def keras_forward_done(self, module, output, depth: int) -> None:
        if self._keras is not None:
            self._keras.forward_done(module, output, depth)

    # ---- saving and loading --------------------------------------------------------------
    def on_saved(self, rec: ModelRecord, path: str) -> None:
        self.saved[path] = rec
        if path not in rec.saved_to:
            rec.saved_to.append(path)
        training = self._training_arrays(rec)
        if training is None:
            return
        meta = {
            "framework": rec.framework,
            "layout": rec.layout,
            "saved_by": self.script_name,
            "model": type(rec.model).__name__,
            "loss": rec.compile.get("loss") if rec.framework == "keras" else rec.loss_name,
            "compile": rec.compile,
            "fits": rec.fits,
            "steps": rec.steps,
            "training": training["summary"],
            "validation": training.get("val_summary"),
        }
        arrays = {"train_x": training["x"], "train_y": training["y"],
                  "val_x": training.get("val_x"), "val_y": training.get("val_y")}
        try:
            written = cache.write(path, meta, arrays, self.cache_dir)
        except OSError as exc:
            self.notes.append(
                f"the training record of {os.path.basename(path)} could not be kept in "
                f"{self.cache_dir} ({exc.strerror or exc}): an evaluation script run later "
                f"cannot be compared with training (--cache-dir or {cache.ENV_VAR} choose "
                f"another folder)")
            return
        previous = self._keys.get(path)
        if previous is not None and previous != written.key:  # saved again: the old bytes
            cache.remove(self.cache_dir, previous)            # are no longer in that file
            old = os.path.join(self.cache_dir, cache.RECORDS, previous + cache.JSON)
            self.records_written = [p for p in self.records_written if p != old]
        self._keys[path] = written.key
        if written.json_path not in self.records_written:
            self.records_written.append(written.json_path)
        if written.evicted:
            self.notes.append(f"{written.evicted} older training record(s) were removed from the "
                              f"cache to stay under {cache.CACHE_LIMIT_BYTES / 1024 ** 2:.0f} MB")

    def on_loaded(self, model, path: str, framework: str) -> None:
        rec = self._by_id.get(id(model))
        if rec is None or rec.model is not model:
            rec = self._new_record(model, framework)
        rec.loaded_from = path
        source = self.saved.get(path)
        if source is not None and source is not rec:
            rec.source = source
            return
        rec.cached, rec.cached_note = cache.read(path, self.cache_dir)

    # ---- what was captured, for diagnose -------------------------------------------------
    def _training_arrays(self, rec: ModelRecord) -> dict | None:
        """The training (and validation) samples of a record: as fed, or from fit()'s arrays."""
        streams = sorted(rec.streams_of(TRAINING), key=lambda s: s.kept, reverse=True)
        out: dict[str, Any] = {}
        s = next((s for s in streams if s.labelled), None)
        fallback = rec.fit_arrays
        if s is not None and (fallback is None or s.kept >= min(MIN_STREAM_SAMPLES,
                                                                len(fallback[0]))):
            out.update(x=s.x, y=s.y, summary=s.summary())
        elif fallback is not None:
            out.update(x=fallback[0], y=fallback[1],
                       summary={"phase": TRAINING, "source": "arrays given to model.fit",
                                "kept": int(len(fallback[0])), "layout": rec.layout,
                                "sample_shape": list(np.shape(fallback[0])[1:]),
                                "dtype": str(np.asarray(fallback[0]).dtype)})
        else:
            return None
        vs = sorted((v for v in rec.streams_of(VALIDATION) if v.labelled),
                    key=lambda v: v.kept, reverse=True)
        if vs:
            out.update(val_x=vs[0].x, val_y=vs[0].y, val_summary=vs[0].summary())
        elif rec.fit_val_arrays is not None:
            out.update(val_x=rec.fit_val_arrays[0], val_y=rec.fit_val_arrays[1])
        return out

    def groups(self) -> list[dict]:
        """Each trained model with the evaluation inputs that reached it (or its saved copy)."""
        out = []
        for rec in self.records:
            if not rec.trained or rec.source is not None:
                continue
            evals, monitoring = [], []
            for s in rec.streams_of(*EVAL_PHASES):
                (monitoring if _ran_before_training_ended(rec, s) else evals).append((rec, s))
            for other in self.records:
                if other.source is rec:
                    evals += [(other, s) for s in other.streams_of(*EVAL_PHASES)]
            out.append({"trained": rec, "model": rec.model, "evals": evals, "cached": None,
                        "monitoring": monitoring})
        for rec in self.records:
            if rec.loaded_from and rec.source is None and rec.cached is not None \
                    and not rec.trained:
                evals = [(rec, s) for s in rec.streams_of(*EVAL_PHASES)]
                out.append({"trained": None, "model": rec.model, "evals": evals,
                            "cached": rec.cached, "loaded": rec})
        return out

    def primary(self) -> dict:
        groups = self.groups()
        with_eval = [g for g in groups if g["evals"]]
        if with_eval:
            return with_eval[-1]
        if groups:
            return groups[-1]
        loaded = [r for r in self.records if r.loaded_from]
        if loaded:
            r = loaded[-1]
            raise NothingToDiagnose(
                f"{r.script} loaded {os.path.basename(r.loaded_from)}, but nothing records how it "
                f"was trained ({r.cached_note}): run the training script under cnndoctor too, "
                f"e.g. cnndoctor run train.py {r.script}")
        ran = [s for s in self.scripts if s.status != "not run"]
        names = ", ".join(os.path.basename(s.path) for s in ran) or "the script"
        stopped = next((s for s in ran if s.status == "stopped"), None)
        if stopped is not None:
            at = f" at {stopped.stopped_at}" if stopped.stopped_at else ""
            raise NothingToDiagnose(
                f"{os.path.basename(stopped.path)} was stopped ({stopped.ended_by}, after "
                f"{stopped.seconds:.1f} s{at}) before any model was trained: nothing to diagnose")
        if any(s.status in ("error", "exit") for s in ran):
            raise NothingToDiagnose(
                f"{names} stopped with an error before any model was trained (see above)")
        raise NothingToDiagnose(
            f"{names} never trained a model, so there is nothing to diagnose: no Keras "
            f"model.fit() and no PyTorch optimizer.step() on a module was seen (training in a "
            f"subprocess or another program is not seen either)")

    def diagnose_kwargs(self) -> dict:
        """The arguments for ``cnndoctor.diagnose`` (captured data included)."""
        g = self.primary()
        trained: ModelRecord | None = g["trained"]
        model = g["model"]
        framework = trained.framework if trained else g["loaded"].framework
        kwargs: dict[str, Any] = {}
        training_info: dict[str, Any] = {}
        if trained is not None:
            arrays = self._training_arrays(trained)
            if arrays is None:
                raise NothingToDiagnose(self._no_labels_reason(trained))
            kwargs["train"] = (arrays["x"], arrays["y"])
            if arrays.get("val_x") is not None:
                kwargs["val"] = (arrays["val_x"], arrays["val_y"])
            training_info.update(
                source=f"this session ({trained.script})", stream=arrays["summary"],
                validation=arrays.get("val_summary"), fits=trained.fits, steps=trained.steps,
                loss=(trained.compile.get("loss") if framework == "keras"
                      else trained.loss_name))
            if framework == "torch":
                kwargs["loss"] = trained.loss
                kwargs["optimizer"] = trained.optimizer
            fit = trained.fits[-1] if trained.fits else {}
            kwargs["batch_size"] = fit.get("batch_size") or self._batch_size(trained)
            kwargs["epochs"] = fit.get("epochs")
        else:
            sc = g["cached"]
            arr = sc["arrays"]
            if "train_x" not in arr or "train_y" not in arr:
                raise NothingToDiagnose(f"the training record {sc['path']} holds no samples")
            self.notes.append(f"training was read from the record kept when "
                              f"{os.path.basename(sc.get('model_file') or '?')} was saved by "
                              f"{sc.get('saved_by')} on {sc.get('written')}: {sc['path']}")
            kwargs["train"] = (arr["train_x"], arr["train_y"])
            if "val_x" in arr and "val_y" in arr:
                kwargs["val"] = (arr["val_x"], arr["val_y"])
            training_info.update(
                source=f"the training record {sc['path']} (saved by {sc.get('saved_by')} on "
                       f"{sc.get('written')})",
                stream=sc.get("training"), validation=sc.get("validation"),
                fits=sc.get("fits") or [], steps=sc.get("steps"), loss=sc.get("loss"))
            fit = (sc.get("fits") or [{}])[-1]
            kwargs["batch_size"] = fit.get("batch_size")
            kwargs["epochs"] = fit.get("epochs")
            if framework == "torch":
                kwargs["loss"] = _torch_loss_from_name(sc.get("loss"))
        evals = g["evals"]
        for rec, s in g.get("monitoring", []):
            self.notes.append(
                f"{s.source} ran after {s.notes.get('steps_before', 0)} of {rec.steps} training "
                f"steps: read as monitoring with the weights of that moment, not compared with "
                f"the trained model")
        shifted = _shifted_evaluation(evals, trained, kwargs.get("val"))
        if shifted is not None:
            (rec, s), why = shifted
            kwargs["reference"] = (s.x, s.y)
            self.notes.append(f"{s.source}: {why}; diagnosed as real-world reference samples")
            evals = [e for e in evals if e[1] is not s]
        evaluation = self._pick_evaluation(evals, trained)
        if evaluation is not None:
            rec, s = evaluation
            kwargs["evaluate"] = (s.x, s.y) if s.labelled else s.x
        captured = {
            "session": True,
            "framework": framework,
            "scripts": [r.to_dict() for r in self.scripts],
            "errors": [dict(r.error) for r in self.scripts if r.error],
            "training": training_info,
            "evaluation": [self._eval_capture(*evaluation)] if evaluation else [],
            "other_evaluations": [self._eval_capture(r, s) for r, s in g["evals"]
                                  if evaluation is None or s is not evaluation[1]],
            "torch": self._torch_capture(trained, g["evals"]) if framework == "torch" else None,
            "records_written": list(self.records_written),
            "cache_dir": self.cache_dir,
            "notes": list(self.notes),
        }
        kwargs["captured"] = captured
        kwargs["model"] = model
        return kwargs

    def observed_loss_report(self):
        """A report judged only from the losses backward() was called on (torch), for a script
        that trained but whose labels or loss could not be read; None when there is nothing."""
        from .handwritten_loss import judge_observed
        from ..report import Report, Skipped
        from ..ranking import rank

        rec = next((r for r in reversed(self.records) if r.framework == "torch" and r.trained
                    and r.observed_losses), None)
        if rec is None:
            return None
        found = judge_observed(rec.observed_losses, rec.loss_name)
        skipped = [Skipped("*", self._no_labels_reason(rec) + ": only the observed losses "
                                "were judged")]
        return Report(framework="torch", findings=rank([found]) if found else [], passed=[],
                      skipped=skipped, title=f"cnndoctor run {rec.script}",
                      notes=[f"{len(rec.observed_losses)} losses observed: first "
                             f"{rec.observed_losses[0]:.4g}, last {rec.observed_losses[-1]:.4g}"])

    def _no_labels_reason(self, rec: ModelRecord) -> str:
        if rec.framework == "torch":
            return ("the training batches were seen, but not their labels: no loss module or "
                    "function (nn.CrossEntropyLoss, F.cross_entropy, ...) was applied to the "
                    "model's output right after the forward pass")
        return "the training data given to model.fit could not be read (no labels were seen)"

    @staticmethod
    def _batch_size(rec: ModelRecord) -> int | None:
        s = next(iter(rec.streams_of(TRAINING)), None)
        return int(s.xs[0].shape[0]) if s is not None and s.xs and s.select is None else None

    @staticmethod
    def _pick_evaluation(evals, trained):
        """The evaluation inputs to compare: those of a separate evaluation script first."""
        if not evals:
            return None

        def key(item):
            rec, s = item
            separate = rec is not trained
            return (separate, s.labelled, s.phase == PREDICTION, s.kept)

        return max(evals, key=key)

    @staticmethod
    def _eval_capture(rec: ModelRecord, s: Stream) -> dict:
        return {
            "name": f"{s.phase} in {s.source.rsplit(' in ', 1)[-1]}",
            "phase": s.phase,
            "source": s.source,
            "model": rec.label,
            "loaded_from": rec.loaded_from,
            "summary": s.summary(),
            "outputs": s.outputs,
            "labels": s.y,
            "labels_captured": s.labelled,
            "evaluate_results": [e.get("result") for e in rec.evaluations if e.get("result")],
        }

    def _torch_capture(self, rec: ModelRecord | None, evals) -> dict | None:
        if rec is None:
            return None
        eval_calls = sum(s.notes.get("calls", 0) for _, s in evals)
        train_mode = sum(s.notes.get("calls_in_training_mode", 0) for _, s in evals)
        mods = list(rec.model.modules())
        torch = sys.modules["torch"]
        dropout = [f"{n or 'model'} ({type(m).__name__})" for n, m in rec.model.named_modules()
                   if isinstance(m, torch.nn.modules.dropout._DropoutNd)]
        norm = [f"{n or 'model'} ({type(m).__name__})" for n, m in rec.model.named_modules()
                if isinstance(m, torch.nn.modules.batchnorm._NormBase)]
        return {
            "optimizer": type(rec.optimizer).__name__ if rec.optimizer is not None else None,
            "optimizer_steps": rec.steps,
            "zero_grad_calls": rec.zero_grad_calls,
            "grad_checks": rec.grad_checks,
            "stale_grad_steps": rec.stale_grad_steps,
            "sentinel_parameter": rec.sentinel_name,
            "grad_norms": list(rec.grad_norms),
            "loss": rec.loss_name,
            "eval_calls": eval_calls,
            "eval_calls_in_training_mode": train_mode,
            "eval_sources": [s.source for _, s in evals],
            "dropout_modules": dropout,
            "norm_modules": norm,
            "modules": len(mods),
        }


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a script's exception whose __str__ fails
        return f"<{type(exc).__name__} whose message could not be read>"


def _bounded(text: str) -> str:
    """At most MESSAGE_LINES lines of at most LINE_CHARS characters, saying what was cut."""
    lines = text.splitlines() or [""]
    out = [ln if len(ln) <= LINE_CHARS else f"{ln[:LINE_CHARS]}... ({len(ln):,} characters)"
           for ln in lines[:MESSAGE_LINES]]
    if len(lines) > MESSAGE_LINES:
        out.append(f"... ({len(lines) - MESSAGE_LINES:,} more lines)")
    return "\n".join(out)


def _ran_before_training_ended(rec: ModelRecord, s) -> bool:
    """An evaluate/predict call of a model that was trained further after it: it ran with other
    weights than the model that is diagnosed (step-0 checks, per-epoch monitoring)."""
    before = s.notes.get("steps_before")
    return rec.trained and before is not None and before < rec.steps


# A labelled evaluation set this many points of accuracy below the model's best labelled set
# (validation) is "far below". The case-5 report: 98% vs 76% (22 points); on 50 photos the
# binomial standard error of 76% is 6 points, so 15 points is 2.5 standard errors, well above the
# noise of such small sets.
SHIFT_ACCURACY_GAP = 0.15
# ... and it is a domain shift (not a pipeline bug, which preprocessing-mismatch judges) only when
# its value range is of the training range's scale: within this factor either way. A factor of
# 255 is the /255 forgotten; photos on gray paper still range 0..1.
SHIFT_RANGE_FACTOR = 3.0
# Image properties compared with training: a mean or standard deviation that moved by this share
# of the training standard deviation (or ratio) is "different". A quarter of a standard deviation
# is what a gray background instead of black paper moves easily; noise between two random splits
# of one dataset is a few hundredths.
SHIFT_PROPERTY_DELTA = 0.25


def _accuracy(s) -> float | None:
    out, y = s.outputs, s.y
    if out is None or y is None or len(out) != len(y) or np.ndim(out) != 2:
        return None
    y = np.asarray(y)
    labels = y.argmax(-1) if y.ndim == 2 and y.shape[1] == out.shape[1] else y.reshape(-1)
    if out.shape[1] == 1:
        pred = (np.asarray(out).reshape(-1) > 0.5).astype(int)
    else:
        pred = np.asarray(out).argmax(-1)
    return float(np.mean(pred == labels.astype(int)))


def _properties(x) -> dict:
    x = np.asarray(x, dtype=np.float64)
    return {"mean": float(x.mean()), "std": float(x.std()), "min": float(x.min()),
            "max": float(x.max())}


def _shifted_evaluation(evals, trained, val):
    """The evaluation set that scores far below the best one and whose images differ from the
    training images: real-world samples (``reference=``), with a sentence saying why."""
    scored = [(e, _accuracy(e[1])) for e in evals if e[1].labelled]
    scored = [(e, a) for e, a in scored if a is not None]
    if len(scored) < 2 or trained is None:
        return None
    train_x = trained.fit_arrays[0] if trained.fit_arrays else None
    if train_x is None:
        s = next(iter(trained.streams_of(TRAINING)), None)
        train_x = s.x if s is not None else None
    if train_x is None:
        return None
    best = max(a for _, a in scored)
    worst_e, worst = min(scored, key=lambda t: t[1])
    if best - worst < SHIFT_ACCURACY_GAP:
        return None
    t, r = _properties(train_x), _properties(worst_e[1].x)
    t_range, r_range = t["max"] - t["min"], r["max"] - r["min"]
    if t_range <= 0 or not (1 / SHIFT_RANGE_FACTOR <= r_range / t_range <= SHIFT_RANGE_FACTOR):
        return None
    moved = []
    if abs(r["mean"] - t["mean"]) >= SHIFT_PROPERTY_DELTA * max(t["std"], 1e-8):
        moved.append(f"mean {t['mean']:.2f} in training vs {r['mean']:.2f}")
    if t["std"] > 0 and abs(np.log(max(r["std"], 1e-8) / t["std"])) >= np.log1p(
            SHIFT_PROPERTY_DELTA):
        moved.append(f"contrast (std) {t['std']:.2f} vs {r['std']:.2f}")
    if not moved:
        return None
    why = (f"scored {worst:.0%} where the best evaluated set scored {best:.0%}, and its images "
           f"differ from the training images ({'; '.join(moved)})")
    return worst_e, why


def _torch_loss_from_name(name: str | None):
    from ..frameworks.torch.losses import by_name

    return by_name(name)


def _keras_layout() -> str:
    try:
        import keras

        return keras.config.image_data_format()
    except Exception:  # pragma: no cover
        return "channels_last"


class _AfterImport(importlib.abc.MetaPathFinder):
    """Call ``callback`` right after ``name`` is imported (to instrument keras only if used)."""

    def __init__(self, name: str, callback):
        self.name, self.callback, self.busy = name, callback, False

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name or self.busy:
            return None
        self.busy = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self.busy = False
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _CallbackLoader(spec.loader, self.callback)
        return spec


class _CallbackLoader(importlib.abc.Loader):
    def __init__(self, loader, callback):
        self.loader, self.callback = loader, callback

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        self.callback()

    def __getattr__(self, name):
        return getattr(self.loader, name)
