"""Replace attributes of library classes and modules for a session, and put them back after."""
from __future__ import annotations


class Patches:
    """Records each replaced attribute so that ``restore`` undoes them in reverse order."""

    def __init__(self) -> None:
        self.undo: list = []

    def _patch(self, owner, name, new) -> None:
        had = name in vars(owner)
        self.undo.append((owner, name, had, vars(owner).get(name)))
        setattr(owner, name, new)

    def restore(self) -> None:
        for owner, name, had, old in reversed(self.undo):
            if had:
                setattr(owner, name, old)
            else:
                delattr(owner, name)
        self.undo = []
