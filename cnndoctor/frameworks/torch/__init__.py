"""PyTorch: see ``cnndoctor/frameworks/__init__.py`` for the modules."""
