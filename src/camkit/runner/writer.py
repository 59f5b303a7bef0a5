"""Writing a store: creating it or checking its options (rank 0), and one rank's part writer.

See :mod:`camkit.runner.store` for the layout. The order of a commit is what makes a store safe to
kill at any moment: (1) the shard goes to a temporary name, is flushed and synced, (2) it is renamed
into place, (3) one SQLite transaction adds the shard and its records to the manifest. A kill
before (3) leaves at most an unreferenced file, which the next writer of that part deletes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, NamedTuple

import numpy as np

from camkit.runner.store import (
    COLUMNS,
    FORMAT,
    MANIFEST,
    META,
    PARTS,
    SCHEMA,
    VERSION,
    connect,
    part_name,
    read_meta,
    scan_parts,
)

__all__ = ["PartWriter", "RecordRow", "differences", "prepare_store", "read_status", "update_meta"]


class RecordRow(NamedTuple):
    """What the manifest keeps of a finished image besides its maps."""

    key: str
    label: int | None
    target: list[int]
    pred: list[tuple[int, float]]
    height: int
    width: int
    metrics: dict[str, dict[str, float | None]] | None = None


def _show(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The options that differ, as ``"name: store X, this run Y"``.

    Example:
        >>> differences({"methods": ["gradcam"], "dtype": "float32"}, {"methods": ["layercam"], "dtype": "float32"})
        ['methods: store ["gradcam"], this run ["layercam"]']
    """
    names = sorted(set(old) | set(new))
    return [f"{n}: store {_show(old.get(n))}, this run {_show(new.get(n))}" for n in names if old.get(n) != new.get(n)]


def _write_json(file: Path, value: Any) -> None:
    tmp = file.with_name(f".{file.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(value, indent=1), encoding="utf-8")
    os.replace(tmp, file)


def prepare_store(path: Path, options: dict[str, Any], info: dict[str, Any], overwrite: bool) -> None:
    """Create the store at ``path``, or check that it was made with ``options`` (or replace it).

    Args:
        path: the store folder.
        options: what the maps depend on; a store made with others is refused.
        info: recorded too, never compared (class names, camkit and torch versions).
        overwrite: delete an existing store made with other options (a store only: never other files).

    Raises:
        ValueError: for a store made with other options (naming each difference), or a folder
            that is not empty and not a store.

    Example:
        >>> import tempfile
        >>> store = Path(tempfile.mkdtemp()) / "store"
        >>> prepare_store(store, {"dtype": "float32"}, {}, overwrite=False)
        >>> prepare_store(store, {"dtype": "float16"}, {}, overwrite=False)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: store ... was made with other options (dtype: store "float32", this run "float16"): ...
        >>> read_status(store)
        {}
    """
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {str(path)!r} is a file: pass a folder for the store")
    if (path / META).is_file():
        found = read_meta(path)["options"]
        changed = differences(found, options)
        if not changed:
            return
        if not overwrite:
            raise ValueError(
                f"store {str(path)!r} was made with other options ({'; '.join(changed)}): run with the same options, "
                "write to another --out, or replace the store with --overwrite (overwrite=True)"
            )
        shutil.rmtree(path / PARTS, ignore_errors=True)
        (path / META).unlink()
    elif path.is_dir() and any(path.iterdir()):
        raise ValueError(f"--out {str(path)!r} is a folder that is not a camkit store and not empty: pick a new folder")
    (path / PARTS).mkdir(parents=True, exist_ok=True)
    _write_json(path / META, {"format": FORMAT, "version": VERSION, "options": options, **info})


def update_meta(path: Path, name: str, value: Any) -> None:
    """Set one top-level entry of the store's ``camkit-store.json`` (rank 0 only; written atomically).

    The options the store was made with are never changed here (:func:`prepare_store` owns them).
    """
    if name in ("format", "version", "options"):
        raise ValueError(f"update_meta does not change {name!r}")
    meta = read_meta(path)
    meta[name] = value
    _write_json(path / META, meta)


def read_status(path: Path) -> dict[str, str]:
    """Key → ``"ok"`` or ``"failed"`` over every part of the store (``"ok"`` wins)."""
    status: dict[str, str] = {}
    for _part, rows in scan_parts(path):
        for key, state, _reason in rows:
            if status.get(key) != "ok":
                status[key] = state
    return status


#: parts this process is writing (POSIX record locks do not exclude the process that holds them)
_HELD: set[str] = set()


def _busy(file: Path) -> ValueError:
    return ValueError(
        f"another camkit run is writing {str(file.parent)!r}: wait for it to finish, or write to another --out"
    )


def _lock(file: Path) -> IO[bytes]:
    """Hold an exclusive lock on ``file`` until the returned handle is closed (see :func:`_unlock`).

    A POSIX record lock (``lockf``): it belongs to this process only, so DataLoader workers forked
    later do not inherit it, the kernel drops it the moment the process dies (SIGKILL included),
    and NFS passes it to the server.
    """
    name = str(file.resolve())
    if name in _HELD:
        raise _busy(file)
    handle = open(file, "ab")  # noqa: SIM115 - the handle is the lock; PartWriter.close releases it
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; one writer per part is the caller's promise
        _HELD.add(name)
        return handle
    try:
        fcntl.lockf(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise _busy(file) from None
    _HELD.add(name)
    return handle


def _unlock(handle: IO[bytes]) -> None:
    _HELD.discard(str(Path(handle.name).resolve()))
    handle.close()


def _sync_dir(folder: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # some file systems cannot sync a directory; the rename still happened
            os.fsync(fd)
    finally:
        os.close(fd)


class PartWriter:
    """Appends batches to one rank's part of a store (a context manager).

    Args:
        path: the store folder (prepared by :func:`prepare_store`).
        rank: the writing process's rank; its part is ``parts/rank-<rank>``.

    Raises:
        ValueError: when another process is writing the same part.
    """

    def __init__(self, path: Path, rank: int) -> None:
        self.part = path / PARTS / part_name(rank)
        self.part.mkdir(parents=True, exist_ok=True)
        self._lock = _lock(self.part / "writer.lock")
        try:
            self._conn = connect(self.part / MANIFEST, write=True)
            with self._conn:
                self._conn.executescript(SCHEMA)
                names = {row[1] for row in self._conn.execute("PRAGMA table_info(records)")}
                if "metrics" not in names:  # a part written by a camkit from before the column
                    self._conn.execute("ALTER TABLE records ADD COLUMN metrics TEXT")
            self._clean()
        except BaseException:
            _unlock(self._lock)
            raise

    def _clean(self) -> None:
        """Delete what a killed writer left: temporary files and shards no record references."""
        referenced = {name for (name,) in self._conn.execute("SELECT name FROM shards")}
        for file in self.part.iterdir():
            if file.name.endswith(".tmp") or (file.suffix == ".npy" and file.name not in referenced):
                file.unlink()

    def commit(
        self,
        rows: Sequence[RecordRow],
        maps: np.ndarray[Any, Any] | None,
        layout: Sequence[tuple[Any, ...]],
        failures: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Write one batch: the shard of ``maps`` (row ``i`` belongs to ``rows[i]``), then its records.

        Args:
            rows: the finished images.
            maps: ``(len(rows), values)``: each image's maps flattened in ``layout`` order.
            layout: ``(method, K, h, w)`` per method, then ``(method, K, h, w, layer)`` per method
                and layer for the maps of one layer alone (``camkit run --layer-maps``).
            failures: ``(key, reason)`` of the images that failed.
        """
        records: list[tuple[Any, ...]] = []
        shard = None
        if rows:
            assert maps is not None
            assert maps.shape[0] == len(rows)
            shard = f"{uuid.uuid4().hex}.npy"
            tmp = self.part / f"{shard}.tmp"
            with open(tmp, "wb") as handle:
                np.save(handle, np.ascontiguousarray(maps))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.part / shard)
            _sync_dir(self.part)
            records = [
                (
                    *(r.key, "ok", shard, i, r.label, json.dumps(r.target), json.dumps(r.pred), r.height, r.width),
                    *(None, None if r.metrics is None else json.dumps(r.metrics, allow_nan=False)),
                )
                for i, r in enumerate(rows)
            ]
        records += [(key, "failed", *[None] * 7, reason, None) for key, reason in failures]
        if not records:
            return
        with self._conn:  # one transaction: the shard and its records appear together or not at all
            if shard is not None:
                assert maps is not None
                self._conn.execute(
                    "INSERT INTO shards VALUES (?, ?, ?, ?)",
                    (shard, json.dumps([list(entry) for entry in layout]), str(maps.dtype), len(rows)),
                )
            marks = ", ".join("?" * len(COLUMNS.split(", ")))
            self._conn.executemany(f"INSERT OR REPLACE INTO records ({COLUMNS}) VALUES ({marks})", records)

    def close(self) -> None:
        """Close the manifest and release the part's lock."""
        self._conn.close()
        _unlock(self._lock)

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
