"""The built-in reference cases of CASES.md, on offline stand-in data.

Each case is registered in two or more variants: ``broken`` (as the user built it) and ``healthy``
(the known fix), in Keras and (for some) PyTorch. A case's ``build(seed)`` returns a ``Setup``:
everything ``cnndoctor.diagnose`` needs, exactly as a user would pass it.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Setup:
    model: Any
    train: tuple  # (x, y) as the user feeds them to training
    val: tuple | None = None
    loss: Any = None  # torch: the loss module/function; keras: None when the model is compiled
    optimizer: Any = None  # torch: an optimizer over model.parameters(); keras: compiled
    batch_size: int = 32
    epochs: int = 5  # what the user trained for (probes use their own budget)
    evaluate: tuple | None = None  # (x, y) as fed by the user's evaluation code, when it differs
    reference: tuple | None = None  # real-world samples (x, y)
    description: str = ""
    scheduler: Any = None  # torch: the learning-rate scheduler over ``optimizer``, if any

    def diagnose_kwargs(self) -> dict:
        out = dict(train=self.train, val=self.val, loss=self.loss, optimizer=self.optimizer,
                   batch_size=self.batch_size, epochs=self.epochs)
        if self.evaluate is not None:
            out["evaluate"] = self.evaluate
        if self.reference is not None:
            out["reference"] = self.reference
        if self.scheduler is not None:
            out["scheduler"] = self.scheduler
        return out


@dataclass
class Case:
    key: str  # "colored-mnist"
    number: int  # 1..5, as in CASES.md
    title: str
    framework: str  # "keras" or "torch"
    variant: str  # "broken" or "healthy"
    build: Callable[[int], Setup]
    expect_errors: tuple[str, ...] = ()  # codes demo must show as errors (static + data checks)
    expect_passed: tuple[str, ...] = ()  # codes demo must list as passed
    story: str = ""  # one paragraph: what the user built and saw
    #: False where the stand-in trains despite the reported mistake (measured, and said in the
    #: story): the demo then expects the codes of ``expect_errors`` as findings of any severity
    #: (training lowers a prognosis to a warning) and, with --verify, their fix not verified
    reproduces: bool = True
    extras: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        suffix = "" if self.framework == "keras" else "-torch"
        return f"{self.number}-{self.key}{suffix}" + ("" if self.variant == "broken" else "-healthy")


CASES: list[Case] = []
MODULES = ["colored_mnist", "grid", "lane_head", "cifar_eval", "handwriting"]


def register(case: Case) -> Case:
    CASES.append(case)
    return case


def all_cases() -> list[Case]:
    # every module, always: one imported directly (a test importing a case's builder) must not
    # hide the others
    for name in MODULES:
        importlib.import_module(f"{__name__}.{name}")
    return list(CASES)


def find(name: str) -> list[Case]:
    """Cases matching a name: an id ("1-colored-mnist-torch"), a number ("1"), or a key."""
    cases = all_cases()
    exact = [c for c in cases if c.id == name]
    if exact:
        return exact
    if name.isdigit():
        return [c for c in cases if c.number == int(name)]
    return [c for c in cases if c.key == name or c.id.startswith(name)]
