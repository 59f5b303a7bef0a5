"""`camkit view` in headless Chromium: the served page and the exported folder, clicked and read back.

Chromium is driven over the DevTools pipe with the report test's client (tests/test_report_browser.py:
no Python package, nothing downloaded); without Chromium the tests skip and say how to install it.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _viewer_common import RECORDS, XSS, serving, write_store
from camkit.viewer import export_site, open_source, source_page
from test_report_browser import DevTools, chromium_path

DOCS_IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevTools]:
    folder = tmp_path_factory.mktemp("chromium-viewer")
    devtools = DevTools(chromium_path(), folder / "profile", folder / "chromium.log")
    try:
        yield devtools
    finally:
        devtools.close()


class Tab:
    """One tab: navigate, run script, wait for the page to settle, collect errors."""

    def __init__(self, browser: DevTools, url: str) -> None:
        self.browser = browser
        self.target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = browser.call("Target.attachToTarget", {"targetId": self.target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.call(f"{domain}.enable", session=self.session)
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False},
            session=self.session,
        )
        browser.call("Page.navigate", {"url": url}, session=self.session)
        browser.wait_for("Page.loadEventFired", self.session)
        self.settle()

    def run(self, expression: str) -> Any:
        reply = self.browser.call(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True, "userGesture": True},
            session=self.session,
        )
        assert "exceptionDetails" not in reply, reply
        return reply["result"].get("value")

    def settle(self) -> None:
        """Wait until the page has loaded its records and every image has decoded."""
        deadline = time.monotonic() + 30
        while self.run("document.body.getAttribute('data-loading')") != "0":
            assert time.monotonic() < deadline, "the page did not finish loading"
            time.sleep(0.05)
        self.run("Promise.all(Array.from(document.images).filter(i => i.src).map(i => i.decode().catch(() => null)))")

    def events(self) -> list[dict[str, Any]]:
        return [e for e in self.browser.events if e.get("sessionId") == self.session]

    def errors(self) -> list[Any]:
        return [
            e["params"]
            for e in self.events()
            if (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in {"error", "assert"})
            or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
            or e.get("method") == "Runtime.exceptionThrown"
            or e.get("method") == "Page.javascriptDialogOpening"
        ]

    def requested(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events() if e.get("method") == "Network.requestWillBeSent"]

    def screenshot(self, file: Path) -> None:
        data = self.browser.call("Page.captureScreenshot", {"format": "png"}, session=self.session)["data"]
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        self.browser.call("Target.closeTarget", {"targetId": self.target})


READ = """(() => {
  const rows = Array.from(document.querySelectorAll('#grid-body tr'));
  const detail = document.getElementById('detail');
  const pressed = id => Array.from(document.querySelectorAll('#' + id + ' button[aria-pressed=true]'),
                                   b => b.textContent);
  return {
    names: rows.map(r => r.querySelector('.name').textContent),
    mistakes: rows.map(r => !!r.querySelector('.badge.mistake')),
    heads: Array.from(document.querySelectorAll('#grid-head th'), th => th.textContent),
    counts: document.getElementById('counts').textContent,
    images: Array.from(document.querySelectorAll('#grid-body img'),
                       i => ({ok: i.complete && i.naturalWidth > 0, src: i.src})),
    heatOpacity: getComputedStyle(document.querySelector('#grid-body img.heat')).opacity,
    injected: document.querySelectorAll('img[src="x"], img[onerror]').length,
    detailShown: !detail.hidden,
    detailTitle: document.getElementById('detail-title').textContent,
    detailLabel: document.getElementById('detail-label').textContent,
    method: pressed('detail-methods'),
    cls: pressed('detail-classes'),
    heatSrc: document.getElementById('detail-heat').getAttribute('src'),
    caption: document.getElementById('detail-caption').textContent,
    detailOpacity: document.getElementById('detail-heat').style.opacity,
    preds: Array.from(document.querySelectorAll('#detail-preds li .label'), l => l.textContent),
  };
})()"""


def set_value(tab: Tab, element: str, value: str, event: str = "change") -> None:
    tab.run(
        f"(() => {{ const e = document.getElementById({json.dumps(element)}); e.value = {json.dumps(value)};"
        f" e.dispatchEvent(new Event({json.dumps(event)}, {{bubbles: true}})); }})()"
    )
    time.sleep(0.05)
    tab.settle()


def exercise(tab: Tab) -> dict[str, Any]:
    """Everything a user does on the page; asserts what it shows after each step."""
    keys = sorted(key for key, _, _ in RECORDS)
    state = tab.run(READ)
    assert state["names"] == keys  # every record, in name order, on the first page
    assert state["heads"] == ["image", "input", "gradcam", "layercam"]
    assert all(image["ok"] for image in state["images"]), state["images"]
    assert len(state["images"]) == len(keys) * 5  # the input + per method the input under its heatmap
    assert f"cat/{XSS}" in state["names"]  # the file name shown as text
    assert state["injected"] == 0
    assert state["counts"].startswith(f"{len(keys)} of {len(keys)} images shown")
    assert state["mistakes"] == [key in ("cat/002.png", "dog/004.png") for key in keys]

    # open the XSS-named image by clicking its layercam cell; switch method and class by clicking
    index = keys.index(f"cat/{XSS}")
    tab.run(
        f"document.querySelectorAll('#grid-body tr')[{index}].querySelector('td.map[data-method=layercam]').click()"
    )
    state = tab.run(READ)
    assert state["detailShown"]
    assert state["detailTitle"] == f"cat/{XSS}"
    assert state["method"] == ["layercam"]
    assert state["cls"] == ["cat (0)"]
    assert state["detailLabel"] == "folder label: cat · correct"
    assert state["preds"][0] == "cat (0)"
    assert len(state["preds"]) == 3
    tab.run("document.querySelector('#detail-methods button[data-value=gradcam]').click()")
    tab.run("document.querySelector('#detail-classes button[data-value=\"1\"]').click()")
    tab.settle()
    state = tab.run(READ)
    assert state["method"] == ["gradcam"]
    assert state["cls"] == ["dog (1)"]
    assert state["caption"] == "gradcam · dog (1)"
    expected = tab.run(
        "(() => { const v = window.camkitView.state;"
        " return v.records.find(r => r.key === v.selected).maps.gradcam[1]; })()"
    )
    assert state["heatSrc"] == expected
    assert expected.endswith(("method=gradcam&k=1", "/000002/00-01.png")) or expected.startswith("data:image/png")

    # move the sliders: the grid's heatmaps and the image's
    set_value(tab, "opacity", "80", "input")
    state = tab.run(READ)
    assert float(state["heatOpacity"]) == pytest.approx(0.8)
    assert float(state["detailOpacity"]) == pytest.approx(0.8)
    set_value(tab, "detail-opacity", "20", "input")
    assert float(tab.run(READ)["detailOpacity"]) == pytest.approx(0.2)

    # filter the mistakes, then by label, then search, then sort
    set_value(tab, "show", "mistakes")
    state = tab.run(READ)
    assert state["names"] == ["cat/002.png", "dog/004.png"]
    assert state["counts"].startswith(f"2 of {len(keys)} images shown")
    assert not state["detailShown"]  # the opened image is filtered out
    set_value(tab, "label", "1")
    assert tab.run(READ)["names"] == ["dog/004.png"]
    set_value(tab, "show", "all")
    set_value(tab, "label", "")
    set_value(tab, "search", "ONERROR", "input")
    time.sleep(0.3)
    tab.settle()
    assert tab.run(READ)["names"] == [f"cat/{XSS}"]
    set_value(tab, "search", "", "input")
    time.sleep(0.3)
    tab.settle()
    set_value(tab, "pred", "2")
    assert tab.run(READ)["names"] == ["dog/004.png", "loose.png"]
    set_value(tab, "pred", "")
    set_value(tab, "page-size", "12")
    set_value(tab, "sort", "name:desc")
    assert tab.run(READ)["names"] == keys[::-1]

    # the agreement table
    tab.run("document.getElementById('agreement-button').click()")
    deadline = time.monotonic() + 20
    while tab.run("document.querySelectorAll('#agreement-table tbody tr').length") != 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cells = tab.run("Array.from(document.querySelectorAll('#agreement-table td'), c => c.textContent)")
    assert cells[0] == "1.00"
    assert cells[3] == "1.00"
    assert cells[1] == cells[2]
    return state


def test_served_page(browser: DevTools, tmp_path: Path) -> None:
    store = write_store(tmp_path / "store", root=tmp_path / "images", parts=2)
    with serving(store) as server:
        tab = Tab(browser, server.url)
        try:
            exercise(tab)
            assert tab.errors() == []
            assert all(url.startswith(server.url) for url in tab.requested()), tab.requested()
        finally:
            tab.close()


def test_served_page_shows_new_records_on_reload(browser: DevTools, tmp_path: Path) -> None:
    from camkit.runner.writer import PartWriter, RecordRow

    store = write_store(tmp_path / "store", RECORDS[:3])
    with serving(store) as server:
        tab = Tab(browser, server.url)
        try:
            assert len(tab.run(READ)["names"]) == 3
            import numpy as np

            with PartWriter(store, 5) as writer:  # another rank of a run that is still writing
                row = RecordRow("dog/new.png", 1, [1, 0], [(1, 0.9), (0, 0.1)], 32, 32)
                writer.commit(
                    [row], np.zeros((1, 2 * 2 * 16), np.float32), [("gradcam", 2, 4, 4), ("layercam", 2, 4, 4)]
                )
            tab.browser.call("Page.reload", {}, session=tab.session)
            tab.browser.wait_for("Page.loadEventFired", tab.session)
            time.sleep(0.1)
            tab.settle()
            assert "dog/new.png" in tab.run(READ)["names"]
        finally:
            tab.close()


def test_exported_folder_from_file_url(browser: DevTools, tmp_path: Path) -> None:
    store = write_store(tmp_path / "store", root=tmp_path / "images")
    out = tmp_path / "site"
    assert export_site(open_source(store), out) == len(RECORDS)
    tab = Tab(browser, (out / "index.html").as_uri())
    try:
        exercise(tab)
        assert tab.errors() == []
        assert all(url.split(":", 1)[0] in {"file", "data", "about"} for url in tab.requested()), tab.requested()
    finally:
        tab.close()


def test_single_file_page(browser: DevTools, tmp_path: Path) -> None:
    """The page as one HTML file (what `camkit report` can become): the same clicks, no other file."""
    store = write_store(tmp_path / "store", root=tmp_path / "images")
    page = tmp_path / "one.html"
    page.write_text(source_page(open_source(store)), encoding="utf-8")
    tab = Tab(browser, page.as_uri())
    try:
        exercise(tab)
        assert tab.errors() == []
        requested = tab.requested()
        assert all(url.split(":", 1)[0] in {"data", "about"} or url == page.as_uri() for url in requested), requested
    finally:
        tab.close()


def test_cli_run_then_view_of_the_bundled_photos(browser: DevTools, tmp_path: Path) -> None:
    """End to end: `camkit run` on the bundled photos (the default model), then the store in Chromium.

    The folders are ImageNet class names, so the page can tell the mistakes; this test takes the
    screenshot of docs/viewer.md.
    """
    import shutil
    import subprocess
    import sys

    assets = Path(__file__).resolve().parents[1] / "assets"
    source = tmp_path / "photos"
    for folder, name in [
        ("tabby", "chelsea.png"),
        ("espresso", "coffee.png"),
        ("military_uniform", "grace_hopper.jpg"),
        ("missile", "rocket.jpg"),
    ]:
        (source / folder).mkdir(parents=True)
        shutil.copy(assets / name, source / folder / name)
    store = tmp_path / "store"
    command = [sys.executable, "-m", "camkit.cli", "run", str(source), "--out", str(store), "--workers", "0"]
    command += ["--method", "gradcam", "--method", "layercam", "--method", "eigencam", "--target", "topk:2", "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    with serving(store) as server:
        tab = Tab(browser, server.url)
        try:
            state = tab.run(READ)
            assert state["names"] == [
                "espresso/coffee.png",
                "military_uniform/grace_hopper.jpg",
                "missile/rocket.jpg",
                "tabby/chelsea.png",
            ]
            assert state["heads"] == ["image", "input", "gradcam", "layercam", "eigencam"]
            assert all(image["ok"] for image in state["images"])
            assert state["mistakes"] == [False, True, False, True]
            set_value(tab, "show", "mistakes")
            assert tab.run(READ)["names"] == ["military_uniform/grace_hopper.jpg", "tabby/chelsea.png"]
            set_value(tab, "show", "all")
            tab.run("document.querySelectorAll('#grid-body tr')[3].querySelector('td.map').click()")
            tab.settle()
            state = tab.run(READ)
            assert state["detailLabel"] == "folder label: tabby · mistake"
            assert state["preds"][:3] == ["Egyptian cat (285)", "tiger cat (282)", "tabby (281)"]
            tab.run("document.getElementById('agreement-button').click()")
            deadline = time.monotonic() + 60
            while tab.run("document.querySelectorAll('#agreement-table tbody tr').length") != 3:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            tab.settle()
            if DOCS_IMAGES.is_dir():
                tab.screenshot(DOCS_IMAGES / "viewer.png")
            assert tab.errors() == []
        finally:
            tab.close()
