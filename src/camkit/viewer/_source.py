"""What the viewer shows, read lazily: a store of ``camkit run`` or a folder of ``camkit explain`` outputs.

A source answers the server's questions one page at a time: :meth:`StoreSource.page` runs one
SQL query per part of the store with the filter, the order and ``LIMIT``, so a request costs the
page it returns, never the store's size in memory. Every connection is read-only (SQLite
``mode=ro``) and is closed before the request ends, so a ``camkit run`` that is still writing the
store is never blocked for longer than a query, and the next request sees its new records.

Example:
    >>> Filters.parse({"q": ["Cat"], "show": ["mistakes"]}).q
    'cat'
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

__all__ = ["Filters", "Source", "label_map", "open_source", "spearman"]

#: the longest side of the PNGs the viewer draws (originals and heatmaps)
DISPLAY_SIZE = 256
#: shown values of ``show`` (which records a page lists)
SHOW = ("all", "mistakes", "correct")
#: orders a page can be sorted by
SORTS = ("name", "confidence", "metric")
#: the most records one page may hold
MAX_LIMIT = 500


@dataclass(frozen=True)
class Filters:
    """Which records a page lists and in which order (the query string of ``/api/records``).

    Attributes:
        q: a substring of the file name (key), compared case-insensitively; ``""``: any.
        show: ``"all"``, ``"mistakes"`` (top-1 prediction differs from the folder label) or ``"correct"``.
        label: only records whose folder label is this (its value as a string); ``""``: any.
        pred: only records whose top-1 predicted class is this (as a string); ``""``: any.
        sort: ``"name"``, ``"confidence"`` (top-1 probability) or ``"metric"`` (the value of
            :attr:`metric`; a record without one sorts as minus infinity).
        descending: reverse the order.
        metric: with ``sort="metric"``: the metric column ``"method:name"`` (e.g. ``"gradcam:drop"``);
            a column the source does not have sorts by name.
    """

    q: str = ""
    show: str = "all"
    label: str = ""
    pred: str = ""
    sort: str = "name"
    descending: bool = False
    metric: str = ""

    @classmethod
    def parse(cls, query: Mapping[str, Sequence[str]]) -> Filters:
        """Read the filters from a parsed query string (``urllib.parse.parse_qs``); unknown values fall back.

        Args:
            query: name → values.

        Returns:
            The filters.

        Example:
            >>> Filters.parse({"sort": ["confidence"], "order": ["desc"], "show": ["bogus"]})
            Filters(q='', show='all', label='', pred='', sort='confidence', descending=True, metric='')
            >>> Filters.parse({"sort": ["metric"], "metric": ["gradcam:drop"]}).metric
            'gradcam:drop'
        """

        def one(name: str) -> str:
            values = query.get(name) or [""]
            return str(values[0])[:200]

        show = one("show") if one("show") in SHOW else "all"
        sort = one("sort") if one("sort") in SORTS else "name"
        metric = one("metric") if sort == "metric" and ":" in one("metric") else ""
        if sort == "metric" and not metric:
            sort = "name"
        return cls(one("q").lower(), show, one("label"), one("pred"), sort, one("order") == "desc", metric)


def spearman(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    """Spearman's rank correlation of two maps (flattened), with average ranks for ties.

    Args:
        a: a map.
        b: a map with as many values.

    Returns:
        ρ in ``[-1, 1]``; NaN when a map is constant.

    Example:
        >>> spearman(np.array([0.0, 0.5, 1.0]), np.array([0.1, 0.2, 0.9]))
        1.0
        >>> spearman(np.array([0.0, 0.0, 1.0]), np.array([1.0, 1.0, 0.0]))
        -1.0
    """
    ra, rb = _ranks(a.ravel()), _ranks(b.ravel())
    ra -= ra.mean()
    rb -= rb.mean()
    scale = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / scale) if scale > 0 else float("nan")


def _ranks(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Average ranks (ties share the mean of their positions)."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    average = ends - (counts - 1) / 2.0
    ranks: np.ndarray[Any, Any] = average[inverse].astype(np.float64)
    return ranks


def _display(height: int, width: int) -> tuple[int, int]:
    """``(height, width)`` shrunk so that the longest side is at most :data:`DISPLAY_SIZE`."""
    scale = min(1.0, DISPLAY_SIZE / max(height, width, 1))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _table(colormap: str) -> Any:
    """The colormap's lookup table, built once (building it from its knots costs more than drawing a map)."""
    from camkit.viz.colormaps import get_colormap

    return get_colormap(colormap)


class _Cache:
    """A small thread-safe LRU of rendered PNGs (bounded by count, so memory stays flat)."""

    def __init__(self, size: int = 128) -> None:
        self.size = size
        self.items: OrderedDict[tuple[Any, ...], bytes | None] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple[Any, ...], make: Callable[[], bytes | None]) -> bytes | None:
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        value = make()
        with self.lock:
            self.items[key] = value
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return value


class Source(Protocol):
    """What the server and the export read: a store or a folder of explain outputs."""

    path: Path

    @property
    def methods(self) -> list[str]:
        """The methods whose maps the records hold."""

    @property
    def layers(self) -> list[str]:
        """The layers whose maps the records also hold one by one (``camkit run --layer-maps``); often none."""

    def info(self) -> dict[str, Any]:
        """Title, methods, class lists and counts (recomputed on every call: a store may grow)."""

    def page(self, filters: Filters, offset: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
        """The number of records that pass ``filters``, and those at ``offset`` (at most ``limit``)."""

    def image_png(self, key: str) -> bytes | None:
        """The input image as the model saw it, as PNG; ``None`` when it cannot be found."""

    def map_png(self, key: str, method: str, k: int, layer: str = "") -> bytes | None:
        """The ``k``-th explained class's heatmap of ``method`` (of ``layer`` alone) for ``key``; ``None``: none."""

    def maps(self, key: str) -> dict[str, np.ndarray[Any, Any]] | None:
        """Method → the first explained class's map at a common resolution (for the agreement view)."""

    def sample_keys(self, count: int) -> list[str]:
        """Up to ``count`` keys spread evenly over the records (name order)."""


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", " ").replace("-", " ")


def label_map(classes: Sequence[str] | None, categories: Sequence[str] | None) -> list[int | None] | None:
    """Folder label index → model class index, for telling a mistake from a correct prediction.

    A class sub-folder named after one of the model's classes (``tabby``, ``golden_retriever``;
    case, ``_`` and ``-`` ignored) maps to that class. When none is, and there are as many folders
    as classes (ImageNet's synset folders ``n01440764``, ... sorted in class order), folder ``i``
    is class ``i`` (the convention of ``camkit run --target label``). Otherwise a folder that
    names no class maps to ``None``: its images are neither mistakes nor correct.

    Args:
        classes: the class sub-folder names by label (``None``: no folders).
        categories: the model's class names (``None``: unknown; then folder ``i`` is class ``i``).

    Returns:
        One model class index (or ``None``) per folder label, or ``None`` when the store has no
        folder classes.

    Example:
        >>> label_map(["dog", "tabby"], ["tabby", "x", "dog"])
        [2, 0]
        >>> label_map(["a", "b"], ["tabby", "dog"])
        [0, 1]
        >>> label_map(["cat", "tabby"], ["tabby", "x", "dog"])
        [None, 0]
    """
    if not classes:
        return None
    if not categories:
        return list(range(len(classes)))
    index = {_norm(name): i for i, name in enumerate(categories)}
    named: list[int | None] = [index.get(_norm(c)) for c in classes]
    if all(n is None for n in named) and len(classes) == len(categories):
        return list(range(len(classes)))
    return named


def open_source(path: str | os.PathLike[str], colormap: str = "jet") -> Source:
    """The viewer's source for ``path``: a store of ``camkit run`` or a folder of ``camkit explain`` outputs.

    Args:
        path: the folder.
        colormap: the heatmaps' colormap.

    Returns:
        A :class:`StoreSource` or an :class:`ExplainSource`.

    Raises:
        FileNotFoundError: when ``path`` does not exist, or holds neither.
        ValueError: when ``path`` is a file, or the store is damaged.

    Example:
        >>> open_source("/no/such/folder")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        FileNotFoundError: '/no/such/folder' does not exist: ...
    """
    from camkit.runner.store import META
    from camkit.viewer._explain import ExplainSource
    from camkit.viewer._store import StoreSource

    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(
            f"{str(folder)!r} does not exist: pass the --out folder of `camkit run` or `camkit explain`"
        )
    if not folder.is_dir():
        raise ValueError(
            f"{str(folder)!r} is a file: pass the folder of a store (`camkit run --out`) "
            "or of `camkit explain --out` outputs"
        )
    if (folder / META).is_file():
        return StoreSource(folder, colormap)
    if (folder / "predictions.json").is_file():
        return ExplainSource(folder, colormap)
    raise FileNotFoundError(
        f"{str(folder)!r} is neither a camkit store (no {META}) nor a `camkit explain` output "
        "folder (no predictions.json)"
    )
