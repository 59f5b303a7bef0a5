"""``camkit view``: a local, offline explorer of a store (``camkit run``) or of ``camkit explain`` outputs.

The server is the standard library's, read-only, and listens on ``127.0.0.1`` unless told
otherwise; the page is plain HTML/CSS/JS shipped in the package (:mod:`camkit.viz.page`, whose
``static/`` it shares with ``camkit report``) that loads nothing from the network.
:func:`export_site` writes the same page as a folder that works from ``file://``, and
:func:`single_page` / :func:`source_page` as one self-contained file.

Example:
    >>> import tempfile
    >>> from camkit.viewer import open_source
    >>> open_source(tempfile.mkdtemp())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    FileNotFoundError: '...' is neither a camkit store (no camkit-store.json) nor ...
"""

from camkit.viewer._explain import ExplainSource as ExplainSource
from camkit.viewer._export import export_site as export_site
from camkit.viewer._export import source_page as source_page
from camkit.viewer._server import ViewerServer as ViewerServer
from camkit.viewer._server import agreement as agreement
from camkit.viewer._server import make_server as make_server
from camkit.viewer._source import Filters as Filters
from camkit.viewer._source import Source as Source
from camkit.viewer._source import open_source as open_source
from camkit.viewer._source import spearman as spearman
from camkit.viewer._store import StoreSource as StoreSource
from camkit.viz.page import single_page as single_page

__all__ = [
    "ExplainSource",
    "Filters",
    "Source",
    "StoreSource",
    "ViewerServer",
    "agreement",
    "export_site",
    "make_server",
    "open_source",
    "single_page",
    "source_page",
    "spearman",
]
