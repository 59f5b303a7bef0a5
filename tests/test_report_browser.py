"""The HTML report (the viewer's page in one file), end to end in headless Chromium.

The page loads, its script draws every image and method, the metrics and the sanity verdicts show,
sorting by a metric reorders the rows, nothing is requested from the network, and the console is clean.

Chromium is driven through the DevTools protocol over ``--remote-debugging-pipe`` (JSON messages
ended by NUL bytes on fds 3 and 4), so the test needs no Python package and no chromedriver, and
nothing is ever downloaded. Chromium itself comes from Debian's ``chromium`` package
(``scripts/ensure_chromium.sh``); without it the test skips and says how to install it.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image, ImageDraw

from camkit.viz import ReportRow, write_report

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--mute-audio",
    "--remote-debugging-pipe",
]
TIMEOUT_S = 60.0


def chromium_path() -> str:
    candidates = [os.environ.get("CAMKIT_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium"]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.skip(
        "Chromium is not installed, so the report's browser test cannot run: install it with "
        "`sh scripts/ensure_chromium.sh` (as root; it runs `apt-get install -y chromium chromium-driver`) "
        "or point CAMKIT_CHROMIUM at a Chromium binary"
    )


class DevTools:
    """A minimal DevTools-protocol client over Chromium's debugging pipe."""

    def __init__(self, binary: str, profile: Path, log: Path) -> None:
        # The shell moves our stdin/stdout pipes to fds 3 (commands in) and 4 (replies out).
        script = 'exec "$0" "$@" 3<&0 4>&1 </dev/null >/dev/null'
        with log.open("wb") as stderr:
            self.process = subprocess.Popen(
                ["sh", "-c", script, binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.stdin, self.stdout = self.process.stdin, self.process.stdout
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.stdout, selectors.EVENT_READ)
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        self.log = log

    def _message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not self.selector.select(timeout=left):
                raise TimeoutError(f"Chromium did not answer in time; its log:\n{self.log.read_text()[-3000:]}")
            chunk = os.read(self.stdout.fileno(), 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium closed the pipe; its log:\n{self.log.read_text()[-3000:]}")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        self.next_id += 1
        request: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session is not None:
            request["sessionId"] = session
        self.stdin.write(json.dumps(request).encode() + b"\0")
        self.stdin.flush()
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            message = self._message(deadline)
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method} failed: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self.events.append(message)

    def wait_for(self, method: str, session: str) -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT_S
        for event in self.events:
            if event.get("method") == method and event.get("sessionId") == session:
                return event
        while True:
            event = self._message(deadline)
            self.events.append(event)
            if event.get("method") == method and event.get("sessionId") == session:
                return event

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):  # the process is ended below either way
            self.call("Browser.close")
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.selector.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevTools]:
    folder = tmp_path_factory.mktemp("chromium")
    devtools = DevTools(chromium_path(), folder / "profile", folder / "chromium.log")
    try:
        yield devtools
    finally:
        devtools.close()


def photo(width: int, height: int, shade: int) -> Image.Image:
    image = Image.new("RGB", (width, height), (shade, 200, 180))
    ImageDraw.Draw(image).ellipse((width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=(140, 80, 30))
    return image


def synthetic_rows() -> list[ReportRow]:
    generator = torch.Generator().manual_seed(0)
    maps = [torch.rand(7, 7, generator=generator) for _ in range(4)]
    return [
        ReportRow(
            "cat <b>one</b>.jpg",
            photo(96, 96, 90),
            [("tabby & co", 0.81), ("tiger cat", 0.12), ("lynx", 0.03)],
            {"gradcam": maps[0], "layercam": maps[1].numpy()},
            {"gradcam": {"drop": 12.5, "increase": 0.4}, "layercam": {"drop": 9.75}},
        ),
        ReportRow(
            "dog.png",
            photo(120, 80, 30).convert("L"),
            [("golden retriever", 0.5)],
            {"gradcam": maps[2], "layercam": maps[3]},
        ),
    ]


PAGE_STATE = """(async () => {
    const deadline = Date.now() + 20000;
    while (window.camkitView && document.body.getAttribute("data-loading") !== "0" && Date.now() < deadline) {
        await new Promise(resolve => setTimeout(resolve, 20));
    }
    const images = Array.from(document.images).filter(img => img.getAttribute("src"));
    await Promise.all(images.map(img => img.decode().catch(() => null)));
    const rows = Array.from(document.querySelectorAll("#grid-body tr"));
    const text = id => (document.getElementById(id) || {}).textContent;
    return {
        title: document.title,
        heading: text("title"),
        subtitle: text("subtitle"),
        names: rows.map(r => r.querySelector(".name").textContent),
        predicted: rows.map(r => (r.querySelector(".top") || {}).textContent || null),
        heads: Array.from(document.querySelectorAll("#grid-head th"), th => th.textContent),
        scores: rows.map(r => Array.from(r.querySelectorAll("td.map"),
                                         td => Array.from(td.querySelectorAll(".score"), s => s.textContent))),
        summaryShown: !!document.getElementById("summary") && !document.getElementById("summary").hidden,
        summary: Array.from(document.querySelectorAll("#summary-table tr"),
                            tr => Array.from(tr.cells, c => c.textContent)),
        summaryNote: text("summary-note"),
        sorts: Array.from((document.getElementById("sort") || {options: []}).options, o => o.textContent),
        injected: document.querySelectorAll("b, img[onerror]").length,
        images: images.map(img => ({complete: img.complete, width: img.naturalWidth,
                                    shown: img.getBoundingClientRect().width, src: img.src.slice(0, 22)})),
    };
})()"""


SORT_BY = """(async () => {
    const select = document.getElementById("sort");
    select.value = %s;
    select.dispatchEvent(new Event("change", {bubbles: true}));
    await new Promise(resolve => setTimeout(resolve, 50));
    while (document.body.getAttribute("data-loading") !== "0") { await new Promise(r => setTimeout(r, 20)); }
    return Array.from(document.querySelectorAll("#grid-body tr .name"), n => n.textContent);
})()"""


def open_page(browser: DevTools, page: Path, sort: str | None = None) -> tuple[dict[str, Any], list[Any], list[str]]:
    """Load ``page`` in a new tab; return its state, its console errors and the URLs it requested.

    With ``sort`` (a value of the sort menu), the state also holds ``sorted``: the row names after
    choosing it.
    """
    target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        browser.call(f"{domain}.enable", session=session)
    browser.call("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
    browser.wait_for("Page.loadEventFired", session)
    reply = browser.call(
        "Runtime.evaluate", {"expression": PAGE_STATE, "awaitPromise": True, "returnByValue": True}, session=session
    )
    assert "exceptionDetails" not in reply, reply
    state = reply["result"]["value"]
    if sort is not None:
        expression = SORT_BY % json.dumps(sort)
        answer = browser.call(
            "Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True}, session=session
        )
        assert "exceptionDetails" not in answer, answer
        state["sorted"] = answer["result"]["value"]
    events = [e for e in browser.events if e.get("sessionId") == session]
    browser.call("Target.closeTarget", {"targetId": target})
    errors = [
        e["params"]
        for e in events
        if (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in {"error", "assert"})
        or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
        or e.get("method") == "Runtime.exceptionThrown"
    ]
    requested = [e["params"]["request"]["url"] for e in events if e.get("method") == "Network.requestWillBeSent"]
    return state, errors, requested


def test_report_renders_in_chromium(browser: DevTools, tmp_path: Path) -> None:
    page = write_report(tmp_path / "out" / "report.html", synthetic_rows(), title="Browser <test>")
    state, errors, requested = open_page(browser, page, sort="metric=gradcam:drop:asc")

    assert state["title"] == "Browser <test>" == state["heading"]
    assert state["names"] == ["cat <b>one</b>.jpg", "dog.png"]  # as given; escaped: text, not markup
    assert state["injected"] == 0
    assert state["predicted"] == ["predicted: tabby & co 81.0%", "predicted: golden retriever 50.0%"]
    assert state["heads"] == ["image", "input", "gradcam", "layercam"]
    assert state["scores"] == [[["drop 12.5", "increase 0.4"], ["drop 9.75"]], [[], []]]
    assert state["summaryShown"]
    assert state["summary"][0] == ["method", "drop", "increase"]
    assert state["summary"][1:] == [["gradcam", "12.5", "0.4"], ["layercam", "9.75", "–"]]
    assert "gradcam drop, low first" in state["sorts"]
    assert state["sorted"] == ["dog.png", "cat <b>one</b>.jpg"]  # no value sorts as -infinity: first
    assert len(state["images"]) == 1 + 2 * (1 + 2 * 2)  # the scale + per image: input, (input + heat) per method
    for image in state["images"]:
        assert image["complete"], image
        assert image["width"] > 0, image
        assert image["shown"] > 0, image
        assert image["src"] == "data:image/png;base64,"

    assert errors == []
    assert requested, "the navigation itself should be seen"
    assert all(url.split(":", 1)[0] in {"file", "data", "about"} for url in requested), requested


def test_checks_catch_a_broken_page(browser: DevTools, tmp_path: Path) -> None:
    """The same checks see a broken image and a console error (so a passing report test means something)."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><head><title>broken</title></head><body><h1>broken</h1>"
        '<img src="data:image/png;base64,AAAA" alt="broken"><script>console.error("boom")</script></body></html>'
    )
    state, errors, _ = open_page(browser, page)
    assert state["images"][0]["width"] == 0
    assert any("boom" in json.dumps(error) for error in errors)


def test_cli_report_of_the_bundled_photos_renders(browser: DevTools, tmp_path: Path) -> None:
    """End to end: `camkit report` on real photos with the default model, then the page in Chromium."""
    import subprocess
    import sys

    assets = Path(__file__).resolve().parents[1] / "assets"
    page = tmp_path / "report.html"
    command = [sys.executable, "-m", "camkit.cli", "report", str(assets / "chelsea.png"), str(assets / "coffee.png")]
    command += ["--method", "gradcam", "--method", "eigencam", "--out", str(page), "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout
    state, errors, requested = open_page(browser, page, sort="metric=gradcam:deletion ↓:desc")
    assert state["names"] == ["chelsea.png", "coffee.png"]
    assert state["heads"] == ["image", "input", "gradcam", "eigencam"]
    assert [len(cells) for cells in state["scores"]] == [2, 2]
    assert all(len(scores) == 4 for cells in state["scores"] for scores in cells)  # drop, increase, deletion, insertion
    assert [row[0] for row in state["summary"]] == ["method", "gradcam", "eigencam"]
    assert sorted(state["sorted"]) == ["chelsea.png", "coffee.png"]
    assert len(state["images"]) == 1 + 2 * (1 + 2 * 2)
    assert all(image["complete"] and image["width"] > 0 for image in state["images"])
    assert errors == []
    assert all(url.split(":", 1)[0] in {"file", "data", "about"} for url in requested), requested
    assert any("espresso" in text for text in state["predicted"])


def test_cli_report_of_detections_renders(browser: DevTools, tmp_path: Path) -> None:
    """`camkit report --task detect` (a random-weight Faster R-CNN): one row per box, every image drawn."""
    import numpy as np

    from camkit.cli import main

    image = tmp_path / "street.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(image)
    page = tmp_path / "report.html"
    command = ["report", str(image), "--task", "detect", "--model", "torchvision:fasterrcnn_mobilenet_v3_large_320_fpn"]
    command += ["--score-threshold", "0.005", "--max-boxes", "2", "--out", str(page)]
    assert main(command) == 0
    state, errors, requested = open_page(browser, page)
    assert [name.split(" · ")[0] for name in state["names"]] == ["street.png: box 0", "street.png: box 1"]
    assert all(text.startswith("predicted: ") for text in state["predicted"])
    assert state["heads"] == ["image", "input", "gradcam"]
    assert len(state["images"]) == 1 + 2 * (1 + 2)  # the scale + per box: input, input + heat
    assert all(image["complete"] and image["width"] > 0 and image["shown"] > 0 for image in state["images"])
    assert errors == []
    assert all(url.split(":", 1)[0] in {"file", "data", "about"} for url in requested), requested
