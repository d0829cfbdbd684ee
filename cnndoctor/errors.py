"""Errors the user can act on. The CLI prints their message on one line and exits with 2."""


class InputError(ValueError):
    """Bad input: says what happened, what was expected, and how to fix it."""


class NotAModelError(InputError, TypeError):
    """The object given as a model is neither a Keras 3 model nor a torch.nn.Module."""


class CannotApply(Exception):
    """A fix does not fit this model or setup; the message says why, in plain words."""
