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

import heapq
import io
import json
import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Protocol

import numpy as np

__all__ = ["ExplainSource", "Filters", "Source", "StoreSource", "open_source", "spearman"]

#: the longest side of the PNGs the viewer draws (originals and heatmaps)
DISPLAY_SIZE = 256
#: shown values of ``show`` (which records a page lists)
SHOW = ("all", "mistakes", "correct")
#: orders a page can be sorted by
SORTS = ("name", "confidence")
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
        sort: ``"name"`` or ``"confidence"`` (top-1 probability).
        descending: reverse the order.
    """

    q: str = ""
    show: str = "all"
    label: str = ""
    pred: str = ""
    sort: str = "name"
    descending: bool = False

    @classmethod
    def parse(cls, query: Mapping[str, Sequence[str]]) -> Filters:
        """Read the filters from a parsed query string (``urllib.parse.parse_qs``); unknown values fall back.

        Args:
            query: name → values.

        Returns:
            The filters.

        Example:
            >>> Filters.parse({"sort": ["confidence"], "order": ["desc"], "show": ["bogus"]})
            Filters(q='', show='all', label='', pred='', sort='confidence', descending=True)
        """

        def one(name: str) -> str:
            values = query.get(name) or [""]
            return str(values[0])[:200]

        show = one("show") if one("show") in SHOW else "all"
        sort = one("sort") if one("sort") in SORTS else "name"
        return cls(one("q").lower(), show, one("label"), one("pred"), sort, one("order") == "desc")


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


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=3)
    return buffer.getvalue()


def _display(height: int, width: int) -> tuple[int, int]:
    """``(height, width)`` shrunk so that the longest side is at most :data:`DISPLAY_SIZE`."""
    scale = min(1.0, DISPLAY_SIZE / max(height, width, 1))
    return max(1, round(height * scale)), max(1, round(width * scale))


def heatmap_png(cam: Any, size: tuple[int, int], colormap: Any = "jet") -> bytes:
    r"""One map as a coloured PNG of ``size`` ``(height, width)``, as the overlays colour it (squared map).

    Stacked over the image with CSS opacity ``1 - alpha`` it gives :func:`camkit.viz.overlay_mask`'s
    blend with image weight ``alpha``.

    Args:
        cam: a ``(h, w)`` float tensor in ``[0, 1]``.
        size: ``(height, width)`` of the PNG.
        colormap: a colormap name or ``(K, 3)`` uint8 table (a table resolved once with
            :func:`camkit.viz.get_colormap` saves rebuilding it per map).

    Returns:
        The PNG file's bytes.

    Example:
        >>> import torch
        >>> heatmap_png(torch.eye(2), (4, 4))[:4]
        b'\x89PNG'
    """
    from PIL import Image

    from camkit import ops

    table = np.asarray(_table(colormap) if isinstance(colormap, str) else colormap)
    resized = ops.normalize(ops.upsample(cam.reshape(1, *cam.shape[-2:]).float(), size))[0].numpy()
    # apply_colormap's rule, table[min(floor(x * K), K - 1)], in numpy: torch's thread pool costs more
    # than the work on maps this small
    index = np.clip(np.floor(np.square(resized) * len(table)), 0, len(table) - 1).astype(np.intp)
    return _png(Image.fromarray(np.ascontiguousarray(table[index])))


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

    def info(self) -> dict[str, Any]:
        """Title, methods, class lists and counts (recomputed on every call: a store may grow)."""

    def page(self, filters: Filters, offset: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
        """The number of records that pass ``filters``, and those at ``offset`` (at most ``limit``)."""

    def image_png(self, key: str) -> bytes | None:
        """The input image as the model saw it, as PNG; ``None`` when it cannot be found."""

    def map_png(self, key: str, method: str, k: int) -> bytes | None:
        """The ``k``-th explained class's heatmap of ``method`` for ``key`` as PNG; ``None``: no such map."""

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


class StoreSource:
    """A store of ``camkit run``, read page by page with read-only SQL (see the module docstring).

    Args:
        path: the store folder.
        colormap: the heatmaps' colormap.

    Raises:
        FileNotFoundError: when ``path`` holds no store.
        ValueError: when the store is damaged or of another version.
    """

    kind = "store"

    def __init__(self, path: str | os.PathLike[str], colormap: str = "jet") -> None:
        from camkit.runner.store import read_meta

        self.path = Path(path)
        meta = read_meta(self.path)
        self.options: dict[str, Any] = meta["options"]
        self.categories: list[str] | None = meta.get("categories")
        self.classes: list[str] | None = meta.get("classes")
        self.root: Path | None = Path(meta["root"]) if meta.get("root") else None
        self.labels = label_map(self.classes, self.categories)
        self.colormap = _table(colormap)
        self._cache = _Cache()
        self._layouts: dict[tuple[str, str], list[list[Any]]] = {}
        self._counts: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._counts_lock = threading.Lock()

    @property
    def methods(self) -> list[str]:
        """The methods whose maps every record holds."""
        return list(self.options.get("methods", []))

    def _signature(self) -> tuple[tuple[str, int, int], ...]:
        """What changes when a writer commits: each manifest's name, size and modification time."""
        from camkit.runner.store import MANIFEST

        stats = []
        for part in self._parts():
            try:
                stat = (part / MANIFEST).stat()
            except OSError:
                continue
            stats.append((part.name, stat.st_size, stat.st_mtime_ns))
        return tuple(stats)

    def _memo(self, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
        """``make()``, remembered until the store changes (counts and summaries scan every record)."""
        full = (self._signature(), *key)
        with self._counts_lock:
            if full in self._counts:
                self._counts.move_to_end(full)
                return self._counts[full]
        value = make()
        with self._counts_lock:
            self._counts[full] = value
            while len(self._counts) > 64:
                self._counts.popitem(last=False)
        return value

    # -- SQL --------------------------------------------------------------------------------------

    def _parts(self) -> list[Path]:
        from camkit.runner.store import MANIFEST, PARTS

        folder = self.path / PARTS
        if not folder.is_dir():
            return []
        return [part for part in sorted(folder.iterdir()) if (part / MANIFEST).is_file()]

    @staticmethod
    def _connect(part: Path) -> sqlite3.Connection:
        from camkit.runner.store import BUSY_TIMEOUT, MANIFEST

        uri = f"file:{(part / MANIFEST).as_posix()}?mode=ro"
        return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT, check_same_thread=False)

    def _rows(self, part: Path, sql: str, params: Sequence[Any]) -> Generator[tuple[Any, ...], None, None]:
        """Stream the rows of one query on one part (nothing when the part has no table yet)."""
        conn = self._connect(part)
        try:
            try:
                cursor = conn.execute(sql, params)
            except sqlite3.OperationalError as error:
                if "no such table" in str(error):
                    return
                raise
            yield from cursor
        finally:
            conn.close()

    def _where(self, filters: Filters) -> tuple[str, list[Any]]:
        clauses = ["status = 'ok'"]
        params: list[Any] = []
        if filters.q:
            clauses.append("instr(lower(key), ?) > 0")
            params.append(filters.q)
        if filters.show != "all":
            if self.labels is None:
                clauses.append("0")  # no labels: nothing is a mistake, nothing is known correct
            else:
                compare = "!=" if filters.show == "mistakes" else "="
                clauses.append(
                    f"label IS NOT NULL AND json_extract(pred, '$[0][0]') {compare} "
                    "json_extract(?, '$[' || label || ']')"
                )
                params.append(json.dumps(self.labels))
        if filters.label:
            clauses.append("CAST(label AS TEXT) = ?")
            params.append(filters.label)
        if filters.pred:
            clauses.append("CAST(json_extract(pred, '$[0][0]') AS TEXT) = ?")
            params.append(filters.pred)
        return " AND ".join(clauses), params

    def count(self, filters: Filters = Filters()) -> int:
        """How many records pass ``filters`` (over every part; remembered until the store changes)."""
        where, params = self._where(filters)

        def make() -> int:
            total = 0
            for part in self._parts():
                for (value,) in self._rows(part, f"SELECT COUNT(*) FROM records WHERE {where}", params):
                    total += int(value)
            return total

        count: int = self._memo(("count", where, *params), make)
        return count

    def page(self, filters: Filters, offset: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
        """The count of matching records and the summaries of those at ``offset`` (at most ``limit``).

        Args:
            filters: which records and in which order.
            offset: how many matching records to skip.
            limit: the most records to return (at most :data:`MAX_LIMIT`).

        Returns:
            ``(total, records)``; each record is a JSON-ready dict (see :meth:`summary`).
        """
        offset, limit = max(0, int(offset)), max(0, min(int(limit), MAX_LIMIT))
        where, params = self._where(filters)
        order = "key" if filters.sort == "name" else "json_extract(pred, '$[0][1]')"
        direction = "DESC" if filters.descending else "ASC"
        columns = "key, shard, row, label, target, pred, height, width"
        parts = self._parts()
        total = self.count(filters)
        if len(parts) == 1:  # the common case: the database skips the offset
            sql = f"SELECT {columns} FROM records WHERE {where} ORDER BY {order} {direction}, key LIMIT ? OFFSET ?"
            rows = list(self._rows(parts[0], sql, [*params, limit, offset]))
        else:  # merge the parts' sorted streams; each part yields at most offset + limit rows, lazily
            sql = f"SELECT {order}, {columns} FROM records WHERE {where} ORDER BY {order} {direction}, key LIMIT ?"
            streams = [self._rows(part, sql, [*params, offset + limit]) for part in parts]

            def sort_key(row: tuple[Any, ...]) -> tuple[Any, ...]:
                value = row[0] if row[0] is not None else float("-inf")
                return (-value if filters.descending and not isinstance(value, str) else value, row[1])

            if filters.descending and filters.sort == "name":
                merged = heapq.merge(*streams, key=lambda row: row[1], reverse=True)
            else:
                merged = heapq.merge(*streams, key=sort_key)
            rows = [row[1:] for row in islice(merged, offset, offset + limit)]
            for stream in streams:
                stream.close()
        return total, [self.summary(row) for row in rows]

    def summary(self, row: Sequence[Any]) -> dict[str, Any]:
        """One manifest row ``(key, shard, row, label, target, pred, height, width)`` as the page's JSON.

        Returns:
            ``key``, ``label`` / ``label_name``, ``pred`` (``[class, probability, name]`` best first),
            ``targets`` (the explained classes), ``size``, ``mistake`` (``None`` without a label).
        """
        key, _shard, _row, label, target, pred, height, width = row
        predictions = [[int(c), float(p), self._class_name(int(c))] for c, p in json.loads(pred)]
        targets = [int(t) for t in json.loads(target)]
        mistake = None
        truth = self.labels[label] if label is not None and self.labels and 0 <= label < len(self.labels) else None
        if truth is not None and predictions:
            mistake = predictions[0][0] != truth
        return {
            "key": key,
            "label": None if label is None else str(label),
            "label_name": None if label is None else self._label_name(int(label)),
            "pred": predictions,
            "targets": [[t, self._class_name(t)] for t in targets],
            "size": [int(height), int(width)],
            "mistake": mistake,
        }

    def _class_name(self, index: int) -> str:
        if self.categories and 0 <= index < len(self.categories):
            return str(self.categories[index])
        return f"class {index}"

    def _label_name(self, label: int) -> str:
        if self.classes and 0 <= label < len(self.classes):
            return str(self.classes[label])
        return f"label {label}"

    def _row(self, key: str) -> tuple[Path, tuple[Any, ...]] | None:
        sql = "SELECT key, shard, row, label, target, pred, height, width FROM records WHERE key = ? AND status = 'ok'"
        for part in self._parts():
            for row in self._rows(part, sql, [key]):
                return part, row
        return None

    def _record(self, key: str) -> Any:
        """The :class:`~camkit.runner.store.Record` of ``key``, or ``None``."""
        from camkit.runner.store import decode_record

        found = self._row(key)
        if found is None:
            return None
        part, row = found
        shard = (str(part), str(row[1]))
        if shard not in self._layouts:
            for (text,) in self._rows(part, "SELECT layout FROM shards WHERE name = ?", [row[1]]):
                self._layouts[shard] = json.loads(text)
        return decode_record(part, row, self._layouts[shard])

    # -- questions of the server ------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """What the page shows above the grid, and the choices of its filters (remembered until the store changes)."""
        info: dict[str, Any] = self._memo(("info",), self._info)
        return dict(info)

    def _info(self) -> dict[str, Any]:
        tops: dict[int, int] = {}
        labels: dict[int, int] = {}
        failed = 0
        sql = (
            "SELECT json_extract(pred, '$[0][0]'), label, status, COUNT(*) FROM records "
            "GROUP BY json_extract(pred, '$[0][0]'), label, status"
        )
        for part in self._parts():
            for top, label, status, count in self._rows(part, sql, []):
                if status != "ok":
                    failed += int(count)
                    continue
                tops[int(top)] = tops.get(int(top), 0) + int(count)
                if label is not None:
                    labels[int(label)] = labels.get(int(label), 0) + int(count)
        model = self.options.get("model", "")
        return {
            "kind": self.kind,
            "title": f"camkit view: {self.path.name}",
            "subtitle": f"model {model}, target {self.options.get('target', 'pred')}",
            "methods": list(self.options.get("methods", [])),
            "records": sum(tops.values()),
            "failed": failed,
            "labels": [[str(i), self._label_name(i), n] for i, n in sorted(labels.items())],
            "preds": [[str(c), self._class_name(c), n] for c, n in sorted(tops.items())],
            "has_labels": self.labels is not None,
        }

    def image_png(self, key: str) -> bytes | None:
        """The source image of ``key`` resized and cropped as the model saw it (``None``: not found).

        Only a key that is a record of the store is looked up, under the folder the run read.
        """

        def make() -> bytes | None:
            from camkit.explanation import open_image
            from camkit.models import Preprocess

            if self.root is None or self._row(key) is None:
                return None
            root = self.root.resolve()
            file = (root / key).resolve()
            if not file.is_relative_to(root) or not file.is_file():
                return None
            pre = self.options["preprocess"]
            preprocess = Preprocess(pre["resize"], pre["crop"], tuple(pre["mean"]), tuple(pre["std"]))
            try:
                image = preprocess.view(open_image(file))
            except (OSError, ValueError):
                return None
            height, width = _display(image.height, image.width)
            return _png(image.resize((width, height)))

        return self._cache.get(("image", key), make)

    def map_png(self, key: str, method: str, k: int) -> bytes | None:
        """The heatmap PNG of ``key``'s ``k``-th explained class by ``method`` (``None``: no such map)."""

        def make() -> bytes | None:
            record = self._record(key)
            if record is None or method not in record.maps:
                return None
            cam = record.maps[method]
            cams = cam.reshape(-1, *cam.shape[-2:])
            if not 0 <= k < cams.shape[0]:
                return None
            return heatmap_png(cams[k], _display(*record.size), self.colormap)

        return self._cache.get(("map", key, method, k), make)

    def maps(self, key: str) -> dict[str, np.ndarray[Any, Any]] | None:
        """Method → the first explained class's map, all upsampled to the largest map's size."""
        from camkit import ops

        record = self._record(key)
        if record is None:
            return None
        firsts = {name: cam.reshape(-1, *cam.shape[-2:])[:1] for name, cam in record.maps.items()}
        height = max(c.shape[-2] for c in firsts.values())
        width = max(c.shape[-1] for c in firsts.values())
        return {name: ops.upsample(c.float(), (height, width))[0].numpy() for name, c in firsts.items()}

    def sample_keys(self, count: int) -> list[str]:
        """Up to ``count`` keys spread evenly over the records in name order (one query per key)."""
        total = self.count()
        if total == 0 or count <= 0:
            return []
        step = max(1.0, total / count)
        keys = []
        for i in range(min(count, total)):
            _, rows = self.page(Filters(), int(i * step), 1)
            keys += [row["key"] for row in rows]
        return keys


class ExplainSource:
    """A folder written by ``camkit explain --out`` (its ``predictions.json``, maps as ``.npy`` files).

    An image's label is its sub-folder's name. Without the model's class list, a mistake is known
    only when that name is one of the image's top predictions (it is a mistake unless it is the
    first); otherwise the image is neither a mistake nor correct.

    The folder's ``predictions.json`` is one document that ``camkit explain`` wrote in one go, so it
    is read whole (once, and again when it changes); maps and images are read on request.

    Args:
        path: the folder.
        colormap: the heatmaps' colormap.

    Raises:
        FileNotFoundError: when the folder has no ``predictions.json``.
        ValueError: when it is not valid JSON.
    """

    kind = "explain"

    def __init__(self, path: str | os.PathLike[str], colormap: str = "jet") -> None:
        self.path = Path(path)
        self.colormap = _table(colormap)
        self._file = self.path / "predictions.json"
        if not self._file.is_file():
            raise FileNotFoundError(f"no predictions.json in {str(self.path)!r}")
        self._stamp: float = -1.0
        self._doc: dict[str, Any] = {}
        self._records: list[dict[str, Any]] = []
        self._by_key: dict[str, dict[str, Any]] = {}
        self._cache = _Cache()
        self._lock = threading.Lock()
        self._load()

    @property
    def methods(self) -> list[str]:
        """The methods of the outputs."""
        self._load()
        return list(self._doc.get("methods", []))

    def _load(self) -> None:
        with self._lock:
            stamp = self._file.stat().st_mtime
            if stamp == self._stamp:
                return
            try:
                doc: dict[str, Any] = json.loads(self._file.read_text(encoding="utf-8"))
            except ValueError as error:
                raise ValueError(f"{str(self._file)!r} is not valid JSON ({error})") from None
            records = []
            for entry in doc.get("images", []):
                if entry.get("error") is None:
                    records.append(entry)
            self._doc, self._stamp = doc, stamp
            self._records = sorted(records, key=lambda e: str(e.get("key")))
            self._by_key = {str(e.get("key")): e for e in self._records}

    @staticmethod
    def _label(entry: dict[str, Any]) -> str | None:
        key = str(entry.get("key", ""))
        return key.rsplit("/", 2)[-2] if "/" in key else None

    def summary(self, entry: dict[str, Any]) -> dict[str, Any]:
        """One image of ``predictions.json`` as the page's JSON (see :meth:`StoreSource.summary`)."""
        predictions = [[int(p["class"]), float(p["probability"]), str(p["name"])] for p in entry.get("top", [])]
        label = self._label(entry)
        mistake = None
        names = [_norm(str(p[2])) for p in predictions]
        if label is not None and _norm(label) in names:  # a folder that names no class shown: unknown
            mistake = names[0] != _norm(label)
        explained = entry.get("explained", [])
        return {
            "key": str(entry["key"]),
            "label": label,
            "label_name": label,
            "pred": predictions,
            "targets": [[int(e["class"]), str(e["name"])] for e in explained],
            "size": None,
            "mistake": mistake,
        }

    def _matches(self, record: dict[str, Any], filters: Filters) -> bool:
        if filters.q and filters.q not in record["key"].lower():
            return False
        if filters.show == "mistakes" and record["mistake"] is not True:
            return False
        if filters.show == "correct" and record["mistake"] is not False:
            return False
        if filters.label and record["label"] != filters.label:
            return False
        return not (filters.pred and (not record["pred"] or str(record["pred"][0][0]) != filters.pred))

    def page(self, filters: Filters, offset: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
        """As :meth:`StoreSource.page`."""
        self._load()
        offset, limit = max(0, int(offset)), max(0, min(int(limit), MAX_LIMIT))
        chosen = [r for r in (self.summary(e) for e in self._records) if self._matches(r, filters)]
        if filters.sort == "confidence":
            chosen.sort(key=lambda r: (r["pred"][0][1] if r["pred"] else -1.0, r["key"]))
        if filters.descending:
            chosen.reverse()
        return len(chosen), chosen[offset : offset + limit]

    def info(self) -> dict[str, Any]:
        """As :meth:`StoreSource.info`."""
        self._load()
        records = [self.summary(e) for e in self._records]
        labels: dict[str, int] = {}
        tops: dict[tuple[int, str], int] = {}
        for r in records:
            if r["label"] is not None:
                labels[r["label"]] = labels.get(r["label"], 0) + 1
            if r["pred"]:
                top = (r["pred"][0][0], r["pred"][0][2])
                tops[top] = tops.get(top, 0) + 1
        failed = sum(1 for e in self._doc.get("images", []) if e.get("error") is not None)
        return {
            "kind": self.kind,
            "title": f"camkit view: {self.path.name}",
            "subtitle": f"model {self._doc.get('model', '')}, layers {', '.join(self._doc.get('layers', []))}",
            "methods": list(self._doc.get("methods", [])),
            "records": len(records),
            "failed": failed,
            "labels": [[name, name, n] for name, n in sorted(labels.items())],
            "preds": [[str(c), name, n] for (c, name), n in sorted(tops.items())],
            "has_labels": bool(labels),
        }

    def _npy(self, key: str, method: str, k: int) -> Path | None:
        self._load()
        entry = self._by_key.get(key)
        if entry is None:
            return None
        explained = entry.get("explained", [])
        if not 0 <= k < len(explained):
            return None
        relative = explained[k].get("overlays", {}).get(method)
        if not isinstance(relative, str):
            return None
        root = self.path.resolve()
        file = (root / relative).with_suffix(".npy").resolve()
        return file if file.is_relative_to(root) and file.is_file() else None

    def image_png(self, key: str) -> bytes | None:
        """The image ``camkit explain`` read for ``key`` (the path it recorded, an image file), or ``None``."""

        def make() -> bytes | None:
            from camkit.explanation import open_image

            self._load()
            entry = self._by_key.get(key)
            if entry is None:
                return None
            from camkit.runner.data import IMAGE_SUFFIXES

            file = Path(str(entry.get("image", "")))
            if file.suffix.lower() not in IMAGE_SUFFIXES or not file.is_file():
                return None
            try:
                image = open_image(file)
            except (OSError, ValueError):
                return None
            if not self._doc.get("full_image"):
                image = _center_view(image, self._map_size(key))
            height, width = _display(image.height, image.width)
            return _png(image.resize((width, height)))

        return self._cache.get(("image", key), make)

    def _map_size(self, key: str) -> tuple[int, int] | None:
        methods = self._doc.get("methods", [])
        file = self._npy(key, methods[0], 0) if methods else None
        if file is None:
            return None
        shape = np.load(file, mmap_mode="r").shape
        return int(shape[-2]), int(shape[-1])

    def map_png(self, key: str, method: str, k: int) -> bytes | None:
        """The heatmap PNG of the ``.npy`` map ``camkit explain`` wrote (``None``: no such map)."""

        def make() -> bytes | None:
            import torch

            file = self._npy(key, method, k)
            if file is None:
                return None
            cam = torch.from_numpy(np.load(file).astype(np.float32))
            return heatmap_png(cam, _display(int(cam.shape[-2]), int(cam.shape[-1])), self.colormap)

        return self._cache.get(("map", key, method, k), make)

    def maps(self, key: str) -> dict[str, np.ndarray[Any, Any]] | None:
        """Method → the first explained class's map (``.npy``)."""
        out = {}
        for method in self._doc.get("methods", []):
            file = self._npy(key, method, 0)
            if file is not None:
                out[method] = np.load(file).astype(np.float32)
        shapes = {m.shape for m in out.values()}
        return out if out and len(shapes) == 1 else None

    def sample_keys(self, count: int) -> list[str]:
        """Up to ``count`` keys spread evenly over the records."""
        self._load()
        keys = [str(e["key"]) for e in self._records]
        if count <= 0 or not keys:
            return []
        step = max(1.0, len(keys) / count)
        return [keys[int(i * step)] for i in range(min(count, len(keys)))]


def _center_view(image: Any, size: tuple[int, int] | None) -> Any:
    """The centre square crop that ``camkit explain`` maps cover (the model's crop; no resize needed for display)."""
    side = min(image.width, image.height)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side))


def open_source(path: str | os.PathLike[str], colormap: str = "jet") -> StoreSource | ExplainSource:
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
