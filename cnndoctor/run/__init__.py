"""``cnndoctor run``: diagnose a user's unmodified scripts, including what they do at evaluation.

    cnndoctor run train.py evaluate.py -- --epochs 3

From Python::

    from cnndoctor.run import Session
    session = Session()
    session.run(["train.py", "evaluate.py"])
    report = cnndoctor.diagnose(**session.diagnose_kwargs())   # model= included

Modules: ``session`` (running scripts, assembling what was captured), ``keras_hooks`` and
``torch_hooks`` (instrumentation), ``capture`` (bounded samples and statistics), ``cache``
(what training saw, kept in cnndoctor's cache keyed by the saved model file's content),
``stopping`` (--timeout, os._exit, Ctrl-C), ``tfcompat`` (tf.keras scripts on Keras 3),
``explain`` (known causes of script errors), ``cli`` (the ``run`` and ``cache`` subcommands).
"""
from .session import NothingToDiagnose, Session

__all__ = ["Session", "NothingToDiagnose"]
