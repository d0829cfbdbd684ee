"""How torch modules are named in what cnndoctor writes: "nn.Conv2d", "MyConv(nn.Conv2d)"."""
from __future__ import annotations

import torch.nn as nn

#: modules that only hold others
CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def module_source(m: nn.Module) -> str:
    """"nn.Conv2d" for torch classes, "MyConv(nn.Conv2d)" for a user subclass, else the name."""
    cls = type(m)
    if cls.__module__.startswith(("torch.nn", "torch.ao.nn")):
        return f"nn.{cls.__name__}"
    for base in cls.__mro__[1:]:
        if base.__module__.startswith("torch.nn") and base not in (nn.Module,) + CONTAINERS:
            return f"{cls.__name__}(nn.{base.__name__})"
    return cls.__name__
