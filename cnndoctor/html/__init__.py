"""The report as a self-contained HTML page (``Report.to_html``, ``--html PATH``) and its pictures.

Imported only when a page is made: matplotlib is not loaded by ``import cnndoctor``.
"""
from .page import body, document, index, write, write_index

__all__ = ["body", "document", "index", "write", "write_index"]
