"""``camkit view PATH --export DIR``: the page as a folder that works from ``file://``.

Browsers do not let a ``file://`` page ``fetch`` its neighbours, but they run the scripts it
names: the data goes into ``data/*.js`` files that set globals, which the page loads as it
needs them (``data/info.js``, then ``data/records-NNNN.js`` chunks). Images and maps are PNG files
named by the record's position, never by its (user-chosen) file name.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

from camkit.viewer._server import SAMPLE, agreement, script_json, static_file
from camkit.viewer._source import Filters, Source

__all__ = ["CHUNK", "export_site", "single_page", "source_page"]

#: records per ``data/records-NNNN.js`` file
CHUNK = 500


def _write(path: Path, body: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)


def export_site(
    source: Source,
    out: str | os.PathLike[str],
    *,
    limit: int | None = None,
    sample: int = SAMPLE,
) -> int:
    """Write the viewer's page with every record's data, image and maps into ``out``.

    Args:
        source: what to export (:func:`~camkit.viewer.open_source`).
        out: the folder to write (created; the page's own files in it are replaced).
        limit: export at most this many records (name order); default: all.
        sample: records in the method-agreement sample.

    Returns:
        The number of records written.

    Raises:
        ValueError: when ``out`` is a file or inside the source folder (the viewer never writes there).
    """
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--export {str(folder)!r} is a file: name a folder to write the page into")
    if folder.resolve().is_relative_to(source.path.resolve()):
        raise ValueError(
            f"--export {str(folder)!r} is inside {str(source.path)!r}: the viewer never writes into "
            "the folder it shows; pick a folder outside it"
        )
    folder.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(folder / "data", ignore_errors=True)
    shutil.rmtree(folder / "maps", ignore_errors=True)
    shutil.rmtree(folder / "images", ignore_errors=True)
    for name in ("index.html", "viewer.js", "viewer.css"):
        _write(folder / name, static_file(name))
    info = source.info()
    methods: list[str] = info["methods"]
    total = info["records"] if limit is None else min(limit, info["records"])
    written = 0
    chunk = 0
    while written < total:
        _, records = source.page(Filters(), written, min(CHUNK, total - written))
        if not records:
            break
        rows = [_files(source, folder, written + i, record, methods) for i, record in enumerate(records)]
        body = f"window.CAMKIT_VIEW_CHUNKS[{chunk}] = {script_json(rows)};\n"
        _write(folder / "data" / f"records-{chunk:04d}.js", body.encode())
        written += len(records)
        chunk += 1
    table = agreement(source, sample)
    static = {**info, "mode": "static", "records": written, "chunks": chunk, "agreement": table}
    _write(folder / "data" / "info.js", f"window.CAMKIT_VIEW = {script_json(static)};\n".encode())
    return written


def _files(source: Source, folder: Path, index: int, record: dict[str, Any], methods: list[str]) -> dict[str, Any]:
    """Write one record's PNGs; return its summary with their relative paths as URLs."""
    key = record["key"]
    image = source.image_png(key)
    image_url = None
    if image is not None:
        image_url = f"images/{index:06d}.png"
        _write(folder / image_url, image)
    maps: dict[str, list[str | None]] = {}
    for m_index, method in enumerate(methods):
        urls: list[str | None] = []
        for k in range(max(1, len(record["targets"]))):
            body = source.map_png(key, method, k)
            url = f"maps/{index:06d}/{m_index:02d}-{k:02d}.png" if body is not None else None
            if body is not None and url is not None:
                _write(folder / url, body)
            urls.append(url)
        maps[method] = urls
    return {**record, "image": image_url, "maps": maps}


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def single_page(info: dict[str, Any], records: list[dict[str, Any]]) -> str:
    """The viewer's page as ONE self-contained HTML document: stylesheet, script and data inline.

    This is how a report can be the viewer's page: ``records`` carry their images and maps as
    ``data:`` URIs, the data is JSON with ``<``, ``>`` and ``&`` escaped (it cannot close its
    ``<script>``), and the Content-Security-Policy allows exactly the page's inline blocks (by
    their SHA-256) and ``data:`` images: no other script, and no network request.

    Args:
        info: the summary (:meth:`~camkit.viewer.StoreSource.info`: ``title``, ``methods``,
            ``labels``, ``preds``, ``has_labels``, ...; ``agreement`` optional).
        records: the records' summaries, each with ``image`` and ``maps`` URLs (``data:`` URIs).

    Returns:
        The HTML document.

    Example:
        >>> page = single_page({"title": "t", "methods": []}, [])
        >>> page.startswith("<!DOCTYPE html>"), "<script src=" in page
        (True, False)
    """
    template = static_file("index.html").decode()
    css = static_file("viewer.css").decode()
    script = static_file("viewer.js").decode()
    meta = {**info, "mode": "static", "records": len(records), "chunks": 0}
    data = f"window.CAMKIT_VIEW = {script_json(meta)};\nwindow.CAMKIT_VIEW_CHUNKS = [{script_json(records)}];\n"
    policy = (
        f"default-src 'none'; script-src {_csp_hash(data)} {_csp_hash(script)}; style-src {_csp_hash(css)}; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )
    start = template.index('<meta http-equiv="Content-Security-Policy"')
    end = template.index(">", start) + 1
    page = template[:start] + f'<meta http-equiv="Content-Security-Policy" content="{policy}">' + template[end:]
    page = page.replace('<link rel="stylesheet" href="viewer.css">', f"<style>{css}</style>")
    page = page.replace('<script src="data/info.js"></script>', f"<script>{data}</script>")
    return page.replace('<script src="viewer.js"></script>', f"<script>{script}</script>")


def _data_uri(png: bytes | None) -> str | None:
    return None if png is None else "data:image/png;base64," + base64.b64encode(png).decode()


def source_page(source: Source, *, limit: int | None = None, sample: int = SAMPLE) -> str:
    """:func:`single_page` of a source's records (at most ``limit``), images and maps inline.

    Example:
        >>> import tempfile, torch
        >>> from camkit.runner.writer import PartWriter, RecordRow, prepare_store
        >>> from camkit.viewer import open_source
        >>> store = Path(tempfile.mkdtemp()) / "store"
        >>> prepare_store(store, {"methods": ["gradcam"]}, {}, overwrite=False)
        >>> with PartWriter(store, 0) as writer:
        ...     writer.commit([RecordRow("a.png", None, [0], [(0, 0.9)], 8, 8)], torch.rand(1, 4).numpy(),
        ...                   [("gradcam", 1, 2, 2)])
        >>> page = source_page(open_source(store))
        >>> page.count("data:image/png;base64,")  # the one map (the store has no source images)
        1
    """
    info = source.info()
    total = info["records"] if limit is None else min(limit, info["records"])
    records: list[dict[str, Any]] = []
    while len(records) < total:
        _, page = source.page(Filters(), len(records), min(CHUNK, total - len(records)))
        if not page:
            break
        for record in page:
            key = record["key"]
            count = max(1, len(record["targets"]))
            maps = {m: [_data_uri(source.map_png(key, m, k)) for k in range(count)] for m in source.methods}
            records.append({**record, "image": _data_uri(source.image_png(key)), "maps": maps})
    return single_page({**info, "agreement": agreement(source, sample)}, records)
