"""`camkit view` in headless Chromium: the served page and the exported folder, clicked and read back.

Chromium is driven over the DevTools pipe with the report test's client (tests/test_report_browser.py:
no Python package, nothing downloaded); without Chromium the tests skip and say how to install it.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _viewer_common import RECORDS, XSS, serving, sorted_by_drop, write_store
from camkit.viewer import export_site, open_source, source_page
from test_report_browser import DevTools, chromium_path

DOCS_IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"
#: set to 1 to re-shoot docs/images/viewer.png (test_cli_run_then_view_of_the_bundled_photos); a plain
#: test run writes nothing into the checkout
SHOOT_DOCS = os.environ.get("CAMKIT_SHOOT_DOCS") == "1"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevTools]:
    folder = tmp_path_factory.mktemp("chromium-viewer")
    devtools = DevTools(chromium_path(), folder / "profile", folder / "chromium.log")
    try:
        yield devtools
    finally:
        devtools.close()


#: wait until the images that can show have decoded: in a scrolling list, those in its box (the others are
#: lazy and never load), each at most 5 s
SHOWN_DECODED = """Promise.all(Array.from(document.images).filter(i => {
  if (!i.src) { return false; }
  const box = i.closest('.scroller');
  if (!box) { return true; }
  const r = i.getBoundingClientRect(), b = box.getBoundingClientRect();
  return r.bottom > b.top && r.top < b.bottom && r.top < innerHeight;
}).map(i => Promise.race([i.decode().catch(() => null), new Promise(done => setTimeout(done, 5000))])))"""


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
        self.run(SHOWN_DECODED)

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
  const rows = Array.from(document.querySelectorAll('#grid-body tr:not(.spacer)'));
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


def sort_by_metric(tab: Tab) -> None:
    """A store with a stored metric: the values under the maps, the sort menu's choices, and sorting by one."""
    choices = tab.run("Array.from(document.getElementById('sort').options, o => o.value)")
    assert [c for c in choices if c.startswith("metric=")] == [
        "metric=gradcam:drop:desc",
        "metric=gradcam:drop:asc",
        "metric=layercam:drop:desc",
        "metric=layercam:drop:asc",
    ]
    set_value(tab, "sort", "metric=gradcam:drop:desc")
    assert tab.run(READ)["names"] == sorted_by_drop("gradcam", descending=True)
    set_value(tab, "sort", "metric=layercam:drop:asc")
    assert tab.run(READ)["names"] == sorted_by_drop("layercam")
    scores = tab.run(
        "Array.from(document.querySelectorAll('#grid-body tr'), r => Array.from(r.querySelectorAll('td.map .score'),"
        " s => s.textContent))"
    )
    assert scores[0] == ["drop 0.9", "drop 0.1"]  # cat/002.png: the lowest layercam drop
    summary = tab.run("Array.from(document.querySelectorAll('#summary-table td'), c => c.textContent)")
    assert summary == ["0.45", "0.4143"]  # the means over the records with a value
    set_value(tab, "sort", "name:desc")


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
    if tab.run("(window.CAMKIT_VIEW.metrics || []).length"):
        sort_by_metric(tab)

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
    store = write_store(tmp_path / "store", root=tmp_path / "images", parts=2, metrics=True)
    with serving(store) as server:
        tab = Tab(browser, server.url)
        try:
            exercise(tab)
            assert tab.errors() == []
            requested = tab.requested()  # this server, and the colour scale inline
            assert all(url.startswith((server.url, "data:image/png;base64,")) for url in requested), requested
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
    store = write_store(tmp_path / "store", root=tmp_path / "images", metrics=True)
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
    store = write_store(tmp_path / "store", root=tmp_path / "images", metrics=True)
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

    The folders are ImageNet class names, so the page can tell the mistakes. The test takes a
    screenshot into its temporary folder, or with ``CAMKIT_SHOOT_DOCS=1`` into
    docs/images/viewer.png (the figure of docs/viewer.md); a plain run leaves the checkout as it was.
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
            shot = (DOCS_IMAGES if SHOOT_DOCS else tmp_path) / "viewer.png"
            tab.screenshot(shot)
            assert shot.read_bytes().startswith(b"\x89PNG")
            assert tab.errors() == []
        finally:
            tab.close()


def test_layer_switch(browser: DevTools, tmp_path: Path) -> None:
    """A store of `camkit run --layer-maps`: the layer menu swaps every map of the grid and the detail panel."""
    import camkit
    from _runner_common import make_images, tiny_net
    from camkit.models import LoadedModel, Preprocess

    make_images(tmp_path / "images", 3)
    model = LoadedModel(tiny_net(), "tiny", Preprocess(32, 32), categories=None, target_layer="2")
    store = tmp_path / "store"
    camkit.run(tmp_path / "images", store, ["gradcam"], model, layer=["0", "2"], layer_maps=True, workers=0)
    with serving(store) as server:
        tab = Tab(browser, server.url)
        try:
            options = tab.run("Array.from(document.getElementById('layer').options, o => o.value)")
            assert options == ["", "0", "2"]
            assert not tab.run("document.getElementById('layer-choice').hidden")
            heat = "Array.from(document.querySelectorAll('#grid-body img.heat'), i => i.getAttribute('src'))"
            assert not any("layer=" in src for src in tab.run(heat))
            tab.run("document.querySelector('#grid-body tr td.map').click()")
            set_value(tab, "layer", "0")
            sources = tab.run(heat)
            assert len(sources) == 3
            assert all(src.endswith("&layer=0") for src in sources)
            state = tab.run(READ)
            assert all(image["ok"] for image in state["images"])
            assert state["heatSrc"].endswith("&layer=0")
            assert state["caption"].startswith("gradcam at 0 · ")
            assert tab.errors() == []
        finally:
            tab.close()


SCROLL_STATE = """(() => {
  const wrap = document.getElementById('grid-wrap');
  const rows = Array.from(document.querySelectorAll('#grid-body tr'));
  const held = rows.filter(r => !r.classList.contains('spacer'));
  return {
    rows: held.length,
    names: held.map(r => r.querySelector('.name').textContent),
    spacers: rows.filter(r => r.classList.contains('spacer')).map(r => r.getBoundingClientRect().height),
    height: held.reduce((sum, r) => sum + r.getBoundingClientRect().height, 0),
    scrollHeight: wrap.scrollHeight,
    pagerHidden: document.querySelector('.pager').hidden,
  };
})()"""


def test_scrolling_list_holds_a_window_of_rows(browser: DevTools, tmp_path: Path) -> None:
    """ "all, scrolling": a virtual list; scrolling to the end shows the last records with a bounded page."""
    records = [(f"cat/{i:04d}.png", 0, i % 3) for i in range(400)]
    store = write_store(tmp_path / "store", records, root=tmp_path / "images")
    with serving(store) as server:
        tab = Tab(browser, server.url)
        try:
            set_value(tab, "page-size", "scroll")
            state = tab.run(SCROLL_STATE)
            assert state["pagerHidden"]
            assert state["rows"] == 80
            assert state["names"][0] == "cat/0000.png"
            mean = state["height"] / state["rows"]
            assert state["spacers"][0] < 2
            assert abs(state["spacers"][1] - 320 * mean) < 2
            tab.run("document.querySelector('#grid-body tr:not(.spacer) td.map').click()")
            for _ in range(3):  # scroll to the end (each answer may move the spacers): the last records load
                tab.run("(() => { const w = document.getElementById('grid-wrap'); w.scrollTop = w.scrollHeight; })()")
                time.sleep(0.3)
                tab.settle()
            state = tab.run(SCROLL_STATE)
            assert state["rows"] == 80
            assert state["names"][-1] == "cat/0399.png"
            assert abs(state["spacers"][0] - 320 * mean) < 2
            assert state["spacers"][1] < 2
            assert abs(state["scrollHeight"] - 400 * mean) < 0.05 * 400 * mean  # the head row besides
            assert tab.run(READ)["detailTitle"] == "cat/0000.png"  # the opened image stays open
            set_value(tab, "page-size", "24")
            state = tab.run(SCROLL_STATE)
            assert state["rows"] == 24
            assert not state["pagerHidden"]
            assert tab.errors() == []
        finally:
            tab.close()


SANITY_READ = """(() => {
  const badge = b => b ? {text: b.textContent, title: b.getAttribute('title'), cls: b.className} : null;
  return {
    heads: Array.from(document.querySelectorAll('#grid-head th'),
                      th => [th.querySelector('.method-name') ? th.querySelector('.method-name').textContent
                                                              : th.textContent, badge(th.querySelector('.badge'))]),
    switch: Array.from(document.querySelectorAll('#detail-methods button'),
                       b => [b.getAttribute('data-value'), badge(b.querySelector('.badge'))]),
    summary: Array.from(document.querySelectorAll('#summary-table tbody tr'),
                        r => Array.from(r.children, c => c.textContent)),
    note: document.getElementById('summary-note').textContent,
    injected: document.querySelectorAll('img[src="x"], img[onerror]').length,
  };
})()"""


def test_sanity_badges(browser: DevTools, tmp_path: Path) -> None:
    """`camkit run --sanity`: each method's verdict as a badge by its name (grid header, method switch), in the
    served page, the exported folder and the single page; the image names of the check shown as text."""
    import shutil

    import camkit
    from _runner_common import make_images, tiny_net
    from camkit.models import LoadedModel, Preprocess

    images = tmp_path / "images"
    make_images(images, 5)
    shutil.copy(images / "cat/000.png", images / f"cat/{XSS}")  # among the check's images
    model = LoadedModel(tiny_net(), "tiny", Preprocess(32, 32), categories=None, target_layer="2")
    store = tmp_path / "store"
    camkit.run(images, store, ["gradcam", "layercam"], model, sanity=True, workers=0, progress=False)
    verdicts = camkit.open_store(store).sanity
    assert f"cat/{XSS}" in verdicts["images"]
    info = open_source(store).info()
    expected = [
        [
            m,
            {
                "text": f"sanity {'pass' if v['passed'] else 'fail'}",
                "title": info["sanity"][m]["title"],
                "cls": f"badge sanity {'pass' if v['passed'] else 'fail'}",
            },
        ]
        for m, v in verdicts["methods"].items()
    ]

    def check(tab: Tab) -> None:
        state = tab.run(SANITY_READ)
        assert state["heads"] == [["image", None], ["input", None], *expected]
        assert "SSIM" in state["heads"][2][1]["title"]
        tab.run("document.querySelector('#grid-body tr td.map[data-method=layercam]').click()")
        tab.settle()
        state = tab.run(SANITY_READ)
        assert state["switch"] == expected
        rows = state["summary"]
        assert [row[0] for row in rows] == ["gradcam", "layercam"]
        assert [row[-1].split(" ")[0] for row in rows] == [
            "pass" if verdicts["methods"][m]["passed"] else "fail" for m in ("gradcam", "layercam")
        ]
        assert f"cat/{XSS}" in state["note"]
        assert state["injected"] == 0
        assert tab.errors() == []

    with serving(store) as server:
        tab = Tab(browser, server.url)
        try:
            check(tab)
        finally:
            tab.close()
    out = tmp_path / "site"
    export_site(open_source(store), out)
    tab = Tab(browser, (out / "index.html").as_uri())
    try:
        check(tab)
    finally:
        tab.close()
    page = tmp_path / "one.html"
    page.write_text(source_page(open_source(store)), encoding="utf-8")
    tab = Tab(browser, page.as_uri())
    try:
        check(tab)
    finally:
        tab.close()
