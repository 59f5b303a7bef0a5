"""A store of ``camkit run`` as the viewer reads it: one read-only SQL query per part and page.

Example:
    >>> StoreSource.kind
    'store'
"""

from __future__ import annotations

import heapq
import json
import math
import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Generator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from camkit.viewer._source import MAX_LIMIT, Filters, _Cache, _display, _table, label_map
from camkit.viz.page import data_uri, heatmap_png, legend_png, png

__all__ = ["StoreSource"]


def _json_path(method: str, name: str) -> str:
    """The JSON path of one metric value in the ``metrics`` column (names quoted: ``gradcam++`` is fine).

    Example:
        >>> _json_path("gradcam++", "drop")
        '$."gradcam++"."drop"'
    """
    return "$." + ".".join(json.dumps(part, ensure_ascii=False) for part in (method, name))


def _number(value: Any) -> bool:
    """Whether a JSON value is a finite number (a stored similarity; ``null`` where it was not finite)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


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
        #: the metrics ``camkit run --metric`` stored per record and method (none: the column may be absent)
        self.metric_names: list[str] = list(self.options.get("metrics", []))
        self.colormap = _table(colormap)
        self._cache = _Cache()
        self._layouts: dict[tuple[str, str], list[list[Any]]] = {}
        self._counts: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._counts_lock = threading.Lock()

    @property
    def methods(self) -> list[str]:
        """The methods whose maps every record holds."""
        return list(self.options.get("methods", []))

    @property
    def layers(self) -> list[str]:
        """The target layers whose maps the records also hold one by one (``camkit run --layer-maps``)."""
        return list(self.options.get("layer", [])) if self.options.get("layer_maps") else []

    @property
    def metric_columns(self) -> list[str]:
        """The metric columns ``"method:name"`` the records hold (the page's sort choices)."""
        return [f"{method}:{name}" for method in self.methods for name in self.metric_names]

    @property
    def _columns(self) -> str:
        return "key, shard, row, label, target, pred, height, width" + (", metrics" if self.metric_names else "")

    def _order(self, filters: Filters) -> tuple[str, list[Any]]:
        """The SQL expression a page is sorted by, and its parameters."""
        if filters.sort == "confidence":
            return "json_extract(pred, '$[0][1]')", []
        if filters.sort == "metric" and filters.metric in self.metric_columns:
            method, _, name = filters.metric.rpartition(":")
            return "json_extract(metrics, ?)", [_json_path(method, name)]
        return "key", []

    def _signature(self) -> tuple[tuple[str, int, int], ...]:
        """What changes when a writer commits: each manifest's (and the metadata's) name, size and modification time."""
        from camkit.runner.store import MANIFEST, META

        stats = []
        try:
            meta = (self.path / META).stat()  # a resumed run with --sanity adds its verdicts there
            stats.append((META, meta.st_size, meta.st_mtime_ns))
        except OSError:
            pass
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

    def count(self, filters: Filters | None = None) -> int:
        """How many records pass ``filters`` (default: all; over every part; remembered until the store changes)."""
        where, params = self._where(filters or Filters())

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
        order, by = self._order(filters)
        direction = "DESC" if filters.descending else "ASC"
        columns = self._columns
        parts = self._parts()
        total = self.count(filters)
        if len(parts) == 1:  # the common case: the database skips the offset
            sql = f"SELECT {columns} FROM records WHERE {where} ORDER BY {order} {direction}, key LIMIT ? OFFSET ?"
            rows = list(self._rows(parts[0], sql, [*params, *by, limit, offset]))
        else:  # merge the parts' sorted streams; each part yields at most offset + limit rows, lazily
            sql = f"SELECT {order}, {columns} FROM records WHERE {where} ORDER BY {order} {direction}, key LIMIT ?"
            streams = [self._rows(part, sql, [*by, *params, *by, offset + limit]) for part in parts]

            def sort_key(row: tuple[Any, ...]) -> tuple[Any, ...]:
                value = row[0] if row[0] is not None else float("-inf")
                return (-value if filters.descending and not isinstance(value, str) else value, row[1])

            if filters.descending and order == "key":
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
        key, _shard, _row, label, target, pred, height, width = row[:8]
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
            "metrics": json.loads(row[8]) if len(row) > 8 and row[8] else {},
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
        sql = f"SELECT {self._columns} FROM records WHERE key = ? AND status = 'ok'"
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
        sanity, note = self._sanity()
        summary = self._means()
        if sanity:
            summary = summary or {"caption": "", "methods": self.methods, "names": [], "values": {}}
            summary |= {"sanity": sanity, "sanity_header": "sanity (randomised model)", "note": note}
        return {
            "metrics": self.metric_columns,
            "layers": self.layers,
            "sanity": sanity,
            "sanity_note": note,
            "summary": summary,
            "legend": data_uri(legend_png(self.colormap)),
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

    def _sanity(self) -> tuple[dict[str, Any], str]:
        """Method → its stored verdict (``passed``, ``similarity`` per measure, ``title``: a tooltip), and a note.

        Read from ``camkit-store.json`` on every (remembered) summary: a resumed run may add them.
        """
        from camkit.runner.store import read_meta
        from camkit.sanity._command import SHORT

        try:
            entry = read_meta(self.path).get("sanity") or {}
        except (OSError, ValueError):
            entry = {}
        methods = entry.get("methods") if isinstance(entry, dict) else None
        if not isinstance(methods, dict) or not methods:
            return {}, ""
        settings = entry.get("settings") or {}
        mode, threshold = settings.get("mode", "cascading"), settings.get("threshold", 0.5)
        images = [str(key) for key in entry.get("images") or []]
        at = "fully randomised model" if mode == "cascading" else "model at the layer that changes the map most"
        note = (
            f"sanity: {mode} model randomisation (camkit run --sanity) on {len(images)} image"
            f"{'s' if len(images) != 1 else ''} ({', '.join(images[:4])}{', ...' if len(images) > 4 else ''}): "
            f"similarity of the {at}'s maps to the trained model's, mean over the images; pass: |similarity| < "
            f"{threshold:g} by every measure (the map depends on the learned parameters). See docs/sanity.md."
        )
        verdicts: dict[str, Any] = {}
        for method in self.methods:
            found = methods.get(method)
            if not isinstance(found, dict):
                continue
            similarity = found.get("similarity") or {}
            values = {str(k): float(v) if _number(v) else None for k, v in similarity.items()}
            shown = ", ".join(f"{SHORT.get(k, k)} {'n/a' if v is None else f'{v:.2f}'}" for k, v in values.items())
            passed = bool(found.get("passed"))
            title = (
                f"sanity {'pass' if passed else 'fail'} ({mode} model randomisation, {len(images)} image"
                f"{'s' if len(images) != 1 else ''}): {shown}; pass: |similarity| < {threshold:g} by every measure"
            )
            verdicts[method] = {"passed": passed, "similarity": values, "title": title}
        return verdicts, note

    def _means(self) -> dict[str, Any] | None:
        """The summary table: each metric column's mean over the records that have a value (one query per part)."""
        columns = self.metric_columns
        if not columns:
            return None
        paths = [_json_path(*column.rsplit(":", 1)) for column in columns]
        selects = ", ".join("COUNT(json_extract(metrics, ?)), TOTAL(json_extract(metrics, ?))" for _ in paths)
        counts, sums = [0] * len(paths), [0.0] * len(paths)
        for part in self._parts():
            sql = f"SELECT {selects} FROM records WHERE status = 'ok'"
            for values in self._rows(part, sql, [p for path in paths for p in (path, path)]):
                for i in range(len(paths)):
                    counts[i] += int(values[2 * i] or 0)
                    sums[i] += float(values[2 * i + 1] or 0.0)
        means: dict[str, dict[str, float | None]] = {method: {} for method in self.methods}
        for column, count, total in zip(columns, counts, sums, strict=True):
            method, _, name = column.rpartition(":")
            means[method][name] = total / count if count else None
        return {
            "caption": "Mean over the records (missing and non-finite values left out)",
            "methods": self.methods,
            "names": self.metric_names,
            "values": means,
            "note": "",
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
            return png(image.resize((width, height)))

        return self._cache.get(("image", key), make)

    def map_png(self, key: str, method: str, k: int, layer: str = "") -> bytes | None:
        """The heatmap PNG of ``key``'s ``k``-th explained class by ``method`` (of ``layer`` alone; ``None``: none)."""

        def make() -> bytes | None:
            record = self._record(key)
            maps = None if record is None else record.layer_maps.get(layer) if layer else record.maps
            if record is None or maps is None or method not in maps:
                return None
            cam = maps[method]
            cams = cam.reshape(-1, *cam.shape[-2:])
            if not 0 <= k < cams.shape[0]:
                return None
            return heatmap_png(cams[k], _display(*record.size), self.colormap)

        return self._cache.get(("map", key, method, k, layer), make)

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
