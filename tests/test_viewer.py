"""`camkit view` without a browser: the JSON API, the PNGs, security, reading a growing store, the export, the CLI."""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from _viewer_common import CATEGORIES, RECORDS, XSS, serving, write_store
from camkit import open_store, ops
from camkit.cli import main
from camkit.runner.writer import PartWriter, RecordRow
from camkit.viewer import ExplainSource, Filters, StoreSource, agreement, export_site, open_source, spearman
from camkit.viewer._server import api_url
from camkit.viz.colormaps import apply_colormap
from camkit.viz.page import heatmap_png

KEYS = sorted(key for key, _, _ in RECORDS)


def get(
    server: Any, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    """A request with the path sent exactly as given (no client-side normalisation)."""
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=headers is not None and "Host" in headers)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.endheaders()
        reply = conn.getresponse()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
    finally:
        conn.close()


def get_json(server: Any, path: str) -> Any:
    status, _, body = get(server, path)
    assert status == 200, body
    return json.loads(body)


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return write_store(tmp_path / "store", root=tmp_path / "images", parts=2)


@pytest.mark.parametrize("parts", [1, 3])
def test_pages_cover_every_record_in_order(tmp_path: Path, parts: int) -> None:
    store = write_store(tmp_path / "store", parts=parts)
    source = StoreSource(store)
    for filters, expected in [
        (Filters(), KEYS),
        (Filters(descending=True), KEYS[::-1]),
    ]:
        seen = []
        for offset in range(0, 9, 2):
            total, records = source.page(filters, offset, 2)
            assert total == len(KEYS)
            seen += [r["key"] for r in records]
        assert seen == expected
    with open_store(store) as opened:
        confidence = sorted(opened, key=lambda k: (opened[k].pred[0][1], k))
    assert [r["key"] for r in source.page(Filters(sort="confidence"), 0, 50)[1]] == confidence
    paged = [
        r["key"] for o in range(0, 7, 3) for r in source.page(Filters(sort="confidence", descending=True), o, 3)[1]
    ]
    assert paged == confidence[::-1]


def test_filters(store: Path) -> None:
    source = StoreSource(store)

    def keys(**given: Any) -> list[str]:
        return [r["key"] for r in source.page(Filters(**given), 0, 100)[1]]

    assert keys(show="mistakes") == ["cat/002.png", "dog/004.png"]
    assert keys(show="correct") == ["cat/001.png", f"cat/{XSS}", "dog/003.png", "dog/005.png"]
    assert keys(label="1") == ["dog/003.png", "dog/004.png", "dog/005.png"]
    assert keys(pred="2") == ["dog/004.png", "loose.png"]
    assert keys(q="onerror") == [f"cat/{XSS}"]
    assert keys(q="dog/00", show="mistakes") == ["dog/004.png"]
    assert keys(q="%") == []
    assert keys(q="_") == []
    assert source.count(Filters(show="mistakes")) == 2


def test_summary_and_info(store: Path) -> None:
    source = StoreSource(store)
    record = source.page(Filters(q="cat/002"), 0, 1)[1][0]
    assert record["label"] == "0"
    assert record["label_name"] == "cat"
    assert record["mistake"] is True
    assert record["pred"][0][0] == 1
    assert record["pred"][0][2] == "dog"
    assert len(record["pred"]) == 3
    assert record["targets"] == [[1, "dog"], [0, "cat"]]
    info = source.info()
    assert info["records"] == len(RECORDS)
    assert info["failed"] == 0
    assert info["methods"] == ["gradcam", "layercam"]
    assert info["labels"] == [["0", "cat", 3], ["1", "dog", 3]]
    assert info["preds"] == [["0", "cat", 2], ["1", "dog", 3], ["2", "fox", 2]]


def test_api_and_pngs(store: Path) -> None:
    with serving(store) as server:
        page = get_json(server, "/api/records?offset=2&limit=3&sort=name")
        assert page["total"] == len(KEYS)
        assert [r["key"] for r in page["records"]] == KEYS[2:5]
        record = page["records"][0]
        assert record["key"] == f"cat/{XSS}"
        status, headers, body = get(server, record["maps"]["layercam"][1])
        assert status == 200
        assert headers["content-type"] == "image/png"
        with open_store(store) as opened:
            cam = opened[record["key"]].maps["layercam"][1]
        assert body == heatmap_png(cam, (32, 32))
        drawn = np.asarray(Image.open(io.BytesIO(body)))
        values = ops.normalize(ops.upsample(cam[None], (32, 32)))[0]
        assert (drawn == apply_colormap(values.square(), "jet").numpy()).all()  # overlay_mask's colours
        status, _, body = get(server, record["image"])
        assert status == 200
        assert Image.open(io.BytesIO(body)).size == (32, 32)
        assert get(server, "/api/map?key=nope.png&method=gradcam&k=0")[0] == 404
        assert get(server, "/api/map?key=cat%2F001.png&method=nope&k=0")[0] == 404
        assert get(server, "/api/map?key=cat%2F001.png&method=gradcam&k=2")[0] == 404
        assert get(server, "/api/records?limit=abc&offset=-5")[0] == 200
        status, headers, body = get(server, "/data/info.js")
        assert status == 200
        assert body.startswith(b"window.CAMKIT_VIEW = ")
        assert json.loads(body.decode().split("=", 1)[1].rstrip().rstrip(";"))["mode"] == "api"
        status, headers, body = get(server, "/")
        assert status == 200
        assert b"viewer.js" in body
        assert "script-src 'self'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    "path",
    [
        "/../camkit-store.json",
        "/%2e%2e/camkit-store.json",
        "/%2E%2E/%2E%2E/etc/passwd",
        "/..%2fcamkit-store.json",
        "/viewer.js/../../camkit-store.json",
        "/camkit-store.json",
        "/parts/rank-00000/manifest.sqlite",
        "/static/viewer.js",
        "/api/image?key=..%2F..%2F..%2Fetc%2Fpasswd",
        "/api/image?key=%2Fetc%2Fpasswd",
        "/api/map?key=..%2Fcamkit-store.json&method=gradcam&k=0",
        "/%5c..%5ccamkit-store.json",
        "/nothing",
    ],
)
def test_traversal_and_unknown_paths_are_404(store: Path, path: str) -> None:
    with serving(store) as server:
        status, _, body = get(server, path)
    assert status == 404, (path, body[:200])
    assert b"camkit-store" not in body
    assert b"root:" not in body


def test_read_only_server(store: Path) -> None:
    before = snapshot(store)
    with serving(store) as server:
        for method in ("POST", "PUT", "DELETE"):
            assert get(server, "/api/records", method=method)[0] == 405
        get_json(server, "/api/records?limit=100")
        get_json(server, "/api/agreement?sample=10")
        for key in KEYS:
            assert get(server, api_url("/api/map", key=key, method="gradcam", k=0))[0] == 200
            assert get(server, api_url("/api/image", key=key))[0] == 200
    assert snapshot(store) == before


def test_host_header_of_another_site_is_refused(store: Path) -> None:
    with serving(store) as server:
        assert get(server, "/api/info", {"Host": "evil.example:8765"})[0] == 403
        assert get(server, "/api/info", {"Host": "localhost:8765"})[0] == 200


def test_a_store_being_written_grows_on_reload(store: Path) -> None:
    with serving(store) as server:
        assert get_json(server, "/api/info")["records"] == len(RECORDS)
        with PartWriter(store, 7) as writer:  # a rank of a run still writing, with its part's lock held
            row = RecordRow("dog/zzz.png", 1, [1], [(1, 0.9), (0, 0.1)], 32, 32)
            writer.commit([row], np.zeros((1, 2 * 49), np.float32), [("gradcam", 1, 7, 7), ("layercam", 1, 7, 7)])
            writer.commit([], None, [], failures=[("bad.png", "OSError: truncated")])
            page = get_json(server, "/api/records?limit=100")
            assert page["total"] == len(RECORDS) + 1
            assert "dog/zzz.png" in [r["key"] for r in page["records"]]
            info = get_json(server, "/api/info")
            assert info["records"] == len(RECORDS) + 1
            assert info["failed"] == 1
            assert get(server, "/api/map?key=dog%2Fzzz.png&method=gradcam&k=0")[0] == 200


def test_spearman_matches_scipy() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a = np.round(rng.random(49), 1)  # many ties
    b = np.round(a + rng.normal(0, 0.3, 49), 1)
    assert spearman(a, b) == pytest.approx(scipy_stats.spearmanr(a, b).statistic, abs=1e-12)
    assert np.isnan(spearman(np.zeros(4), np.arange(4.0)))


def test_agreement_of_a_method_with_itself_is_one(tmp_path: Path) -> None:
    store = write_store(tmp_path / "store", methods=("gradcam", "layercam", "gradcampp"))
    source = StoreSource(store)
    table = agreement(source, 5)
    assert table["methods"] == ["gradcam", "layercam", "gradcampp"]
    assert table["sample"] == 5
    assert [table["rho"][i][i] for i in range(3)] == [1.0, 1.0, 1.0]
    assert table["rho"][0][1] == table["rho"][1][0]
    assert -1 <= table["rho"][0][1] <= 1
    first = source.maps(KEYS[0])
    assert first is not None
    expected = spearman(first["gradcam"], first["layercam"])
    one = agreement(_OneKey(source, KEYS[0]), 1)
    assert one["rho"][0][1] == pytest.approx(expected)


class _OneKey:
    def __init__(self, source: StoreSource, key: str) -> None:
        self.source, self.key, self.path = source, key, source.path
        self.methods = source.methods

    def info(self) -> dict[str, Any]:
        return self.source.info()

    def sample_keys(self, count: int) -> list[str]:
        return [self.key]

    def maps(self, key: str) -> Any:
        return self.source.maps(key)


def test_export_is_self_contained(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    before = snapshot(store)
    assert export_site(open_source(store), out) == len(RECORDS)
    assert snapshot(store) == before
    assert {"index.html", "viewer.js", "viewer.css"} <= {p.name for p in out.iterdir()}
    info = json.loads((out / "data" / "info.js").read_text().split("=", 1)[1].rstrip().rstrip(";"))
    assert info["mode"] == "static"
    assert info["records"] == len(RECORDS)
    assert info["chunks"] == 1
    assert info["agreement"]["methods"] == ["gradcam", "layercam"]
    chunk = (out / "data" / "records-0000.js").read_text()
    assert "<img" not in chunk
    assert "\\u003cimg src=x onerror=alert(1)\\u003e" in chunk
    rows = json.loads(chunk.split("=", 1)[1].rstrip().rstrip(";"))
    assert [r["key"] for r in rows] == KEYS
    for row in rows:
        assert (out / row["image"]).is_file()
        for urls in row["maps"].values():
            assert len(urls) == 2
            assert all((out / url).is_file() for url in urls)
    assert len(list((out / "maps").rglob("*.png"))) == len(RECORDS) * 2 * 2
    assert export_site(open_source(store), tmp_path / "part", limit=3) == 3
    with pytest.raises(ValueError, match="never writes into"):
        export_site(open_source(store), store / "site")


def _explain_folder(folder: Path, images: Path) -> Path:
    """A folder as `camkit explain --out` writes it: predictions.json, overlays and .npy maps."""
    rng = np.random.default_rng(0)
    entries = []
    for key, label_top in (("cat/a.png", 0), ("dog/b.png", 0), (XSS, 2)):
        file = images / key
        file.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 30), (200, 100, 50)).save(file, format="PNG")
        base = folder / key.removesuffix(".png")
        base.parent.mkdir(parents=True, exist_ok=True)
        overlays = {}
        for method in ("gradcam", "scorecam"):
            png = base.with_name(f"{base.name}_{method}_{label_top}.png")
            Image.new("RGB", (30, 30)).save(png)
            np.save(png.with_suffix(".npy"), rng.random((30, 30)).astype(np.float32))
            overlays[method] = png.relative_to(folder).as_posix()
        top = [{"rank": 1, "class": label_top, "name": CATEGORIES[label_top], "probability": 0.7}]
        top.append({"rank": 2, "class": 1, "name": "dog", "probability": 0.2})
        explained = [
            {"rank": 1, "class": label_top, "name": CATEGORIES[label_top], "probability": 0.7, "overlays": overlays}
        ]
        entries.append(
            {"image": str(file), "key": key, "top": top, "explained": explained, "grid": None, "error": None}
        )
    entries.append({"image": "gone.png", "key": "gone.png", "top": [], "explained": [], "error": "OSError: gone"})
    about = {"model": "m", "methods": ["gradcam", "scorecam"], "layers": ["bn2"], "full_image": False}
    (folder / "predictions.json").write_text(json.dumps({**about, "images": entries}))
    return folder


def test_explain_folder(tmp_path: Path) -> None:
    folder = _explain_folder(tmp_path / "out", tmp_path / "images")
    source = open_source(folder)
    assert isinstance(source, ExplainSource)
    info = source.info()
    assert info["records"] == 3
    assert info["failed"] == 1
    assert info["methods"] == ["gradcam", "scorecam"]
    assert [r["key"] for r in source.page(Filters(show="mistakes"), 0, 10)[1]] == ["dog/b.png"]
    assert [r["key"] for r in source.page(Filters(show="correct"), 0, 10)[1]] == ["cat/a.png"]
    with serving(folder) as server:
        page = get_json(server, "/api/records")
        assert [r["key"] for r in page["records"]] == sorted(["cat/a.png", "dog/b.png", XSS])
        assert get(server, page["records"][0]["maps"]["scorecam"][0])[0] == 200
        status, _, body = get(server, page["records"][0]["image"])
        assert status == 200
        assert Image.open(io.BytesIO(body)).size == (30, 30)
        assert get(server, "/api/map?key=cat%2Fa.png&method=gradcam&k=1")[0] == 404
    assert export_site(source, tmp_path / "site") == 3


def test_cli_errors(tmp_path: Path, store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["view", str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err
    file = tmp_path / "file.txt"
    file.write_text("x")
    assert main(["view", str(file)]) == 1
    assert "is a file" in capsys.readouterr().err
    assert main(["view", str(tmp_path / "images")]) == 1
    assert "neither a camkit store" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["view", str(store), "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 is in use" in err
    assert "--port" in err
    assert main(["view", str(store), "--colormap", "jte"]) == 1
    assert "did you mean 'jet'" in capsys.readouterr().err
    assert main(["view", str(store), "--export", str(tmp_path / "site")]) == 0
    assert "wrote the viewer for 7 records" in capsys.readouterr().out
    assert (tmp_path / "site" / "index.html").is_file()


def test_an_empty_store_and_head_requests(tmp_path: Path) -> None:
    from _viewer_common import options
    from camkit.runner.writer import prepare_store
    from camkit.viewer import make_server

    store = tmp_path / "store"
    prepare_store(store, options(), {}, overwrite=False)  # a run that has not committed anything yet
    source = StoreSource(store)
    assert source.info()["records"] == 0
    assert source.page(Filters(show="mistakes"), 0, 10) == (0, [])
    with serving(store) as server:
        status, headers, body = get(server, "/api/records", method="HEAD")
        assert status == 200
        assert body == b""
        assert int(headers["content-length"]) > 0
    with pytest.raises(ValueError, match=r"cannot listen on 203\.0\.113\.7"):
        make_server(source, "203.0.113.7", 0)  # an address of no interface here (TEST-NET-3)
