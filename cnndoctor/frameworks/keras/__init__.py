"""Keras 3 on the torch backend: see ``cnndoctor/frameworks/__init__.py`` for the modules."""
