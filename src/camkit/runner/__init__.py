"""Explain a whole dataset into a store you can read back: :func:`run`, :func:`open_store`, :func:`export`.

Example:
    >>> from camkit.runner import parse_target
    >>> parse_target("topk:2")
    ('topk', 2)
"""

from camkit.runner.data import parse_target as parse_target
from camkit.runner.export import export as export
from camkit.runner.job import run as run
from camkit.runner.report import RunReport as RunReport
from camkit.runner.store import Record as Record
from camkit.runner.store import Store as Store
from camkit.runner.store import open_store as open_store

__all__ = ["Record", "RunReport", "Store", "export", "open_store", "parse_target", "run"]
