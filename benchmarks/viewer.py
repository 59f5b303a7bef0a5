"""`camkit view` on a large store: time to the first page, and the server's memory, for 1,000 vs 20,000 records.

The stores are synthetic: ``--records`` records (default 1,000 and 20,000) with two methods' 7x7
maps (two explained classes each, as ``--target topk:2`` writes them), predictions and folder
labels, and a stored "drop" per method (as ``camkit run --metric drop`` writes it), written with
the store's own writer (:class:`camkit.runner.writer.PartWriter`, 500 records per shard) — no
model runs. Each store gets 256 small PNG source images (the first
records' keys), so the first page also draws originals.

For each store, ``camkit view STORE --port 0`` runs in its own process (the numbers are that
process's alone), and the benchmark measures:

* **first page (API)**: wall time of what the page asks first: ``/data/info.js``,
  ``/api/records?limit=24`` and the 24 x (1 image + 2 heatmaps) PNGs, over fresh connections,
  cold (first request to the server) and the median of 5 warm rounds;
* **deep page (API)**: ``/api/records`` at the last page (``offset = records - 24``) sorted by
  confidence, the same sorted by the stored metric, and a page of the mistakes filter (the worst
  cases of the SQL paging), median of 5;
* **server RSS**: the server's resident memory (``VmRSS`` of ``/proc/PID/status``) after start-up,
  after the first page, and its peak (``VmHWM``) after the deep pages and a 64-record method
  agreement table;
* **first page (browser)**, where headless Chromium is installed: navigation start to the grid
  filled and every image in the first screen (1280 x 900) decoded (the rest load lazily as one
  scrolls), with the browser cache off, median of 3 (``tests/test_report_browser.py``'s DevTools client).

The claim is the ratios 20k / 1k: the first page costs the page, not the store, and the server's
memory does not grow with the store. Usage::

    python benchmarks/viewer.py                    # 1,000 and 20,000 records
    python benchmarks/viewer.py --records 1000 100000
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from camkit.runner.writer import PartWriter, RecordRow, prepare_store

ROOT = Path(__file__).resolve().parents[1]
PAGE = 24
SIDE = 7
METHODS = ("gradcam", "layercam")
CLASSES = ["cat", "dog", "fox", "owl"]


def write_store(path: Path, count: int, seed: int = 0) -> Path:
    """A store of ``count`` synthetic records (500 per shard), with source images for the first 256."""
    rng = np.random.default_rng(seed)
    images = path.parent / f"{path.name}-images"
    options = {
        "source": f"folder:{images.as_posix()}",
        "model": "synthetic",
        "weights": "0",
        "methods": list(METHODS),
        "layer": ["bn2"],
        "target": "topk:2",
        "dtype": "float16",
        "metrics": ["drop"],
        "preprocess": {"resize": 64, "crop": 64, "mean": [0.5] * 3, "std": [0.5] * 3},
    }
    info = {"categories": CLASSES, "classes": CLASSES, "root": images.as_posix()}
    prepare_store(path, options, info, overwrite=False)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    with PartWriter(path, 0) as writer:
        for start in range(0, count, 500):
            rows, maps = [], []
            for i in range(start, min(count, start + 500)):
                label = i % len(CLASSES)
                top = label if rng.random() < 0.8 else (label + 1) % len(CLASSES)
                key = f"{CLASSES[label]}/{i:07d}.png"
                p = 0.3 + 0.7 * rng.random()
                pred = [(top, p), ((top + 1) % 4, (1 - p) / 2)]
                drops = {m: {"drop": round(100 * rng.random(), 3)} for m in METHODS}
                rows.append(RecordRow(key, label, [top, (top + 1) % 4], pred, 64, 64, drops))
                bumps = []
                for _ in range(len(METHODS) * 2):
                    cy, cx = rng.uniform(0, SIDE - 1, 2)
                    bump = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 4.0)
                    bumps.append(((bump - bump.min()) / (bump.max() - bump.min())).ravel())
                maps.append(np.concatenate(bumps))
                if i < 256:
                    file = images / key
                    file.parent.mkdir(parents=True, exist_ok=True)
                    picture = Image.new("RGB", (64, 64), (236, 232, 222))
                    ImageDraw.Draw(picture).ellipse((16, 16, 48, 48), fill=(60 * label, 120, 200 - 40 * label))
                    picture.save(file)
            writer.commit(rows, np.asarray(maps, np.float16), [(m, 2, SIDE, SIDE) for m in METHODS])
    return path


def rss(pid: int) -> dict[str, float]:
    """The process's resident memory now and at its peak, MiB."""
    text = Path(f"/proc/{pid}/status").read_text()
    found = {name: int(re.search(rf"{name}:\s+(\d+) kB", text).group(1)) / 1024 for name in ("VmRSS", "VmHWM")}  # type: ignore[union-attr]
    return found


def get(port: int, path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path)
        reply = conn.getresponse()
        body = reply.read()
        assert reply.status == 200, (path, reply.status, body[:200])
        return body
    finally:
        conn.close()


def first_page(port: int) -> float:
    tick = time.perf_counter()
    get(port, "/")
    get(port, "/data/info.js")
    page = json.loads(get(port, f"/api/records?limit={PAGE}"))
    for record in page["records"]:
        get(port, record["image"])
        for urls in record["maps"].values():
            get(port, urls[0])
    return time.perf_counter() - tick


def deep_page(port: int, total: int) -> float:
    tick = time.perf_counter()
    page = json.loads(get(port, f"/api/records?limit={PAGE}&offset={max(0, total - PAGE)}&sort=confidence&order=desc"))
    json.loads(get(port, "/api/records?limit=24&offset=100&show=mistakes"))
    assert page["total"] == total
    last = f"/api/records?limit={PAGE}&offset={max(0, total - PAGE)}&sort=metric&metric=gradcam%3Adrop&order=desc"
    assert json.loads(get(port, last))["records"][-1]["metrics"]["gradcam"]["drop"] is not None
    return time.perf_counter() - tick


def browser_first_page(url: str, rounds: int = 3) -> float | None:
    """Median seconds from navigation to a filled grid with decoded images, or None without Chromium."""
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        import pytest

        from test_report_browser import DevTools, chromium_path

        try:
            binary = chromium_path()
        except pytest.skip.Exception:
            return None
    except ImportError:
        return None
    folder = Path(tempfile.mkdtemp(prefix="camkit-viewer-bench-"))
    browser = DevTools(binary, folder / "profile", folder / "chromium.log")
    times = []
    ready = (
        "(async () => { while (document.body.getAttribute('data-loading') !== '0') "
        "{ await new Promise(r => setTimeout(r, 5)); }"
        " const shown = Array.from(document.images).filter(i => i.src && i.getBoundingClientRect().top < innerHeight);"
        " await Promise.all(shown.map(i => i.decode().catch(() => null)));"
        " return performance.now(); })()"
    )
    try:
        for _ in range(rounds):
            target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            browser.call("Page.enable", session=session)
            browser.call("Network.enable", session=session)
            browser.call("Network.setCacheDisabled", {"cacheDisabled": True}, session=session)
            size = {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False}
            browser.call("Emulation.setDeviceMetricsOverride", size, session=session)
            browser.call("Page.navigate", {"url": url}, session=session)
            browser.wait_for("Page.loadEventFired", session)
            reply = browser.call(
                "Runtime.evaluate", {"expression": ready, "awaitPromise": True, "returnByValue": True}, session=session
            )
            times.append(float(reply["result"]["value"]) / 1000)  # performance.now() counts from navigation start
            browser.call("Target.closeTarget", {"targetId": target})
    finally:
        browser.close()
    return statistics.median(times)


def measure(store: Path, count: int, browser: bool) -> dict[str, Any]:
    command = [sys.executable, "-m", "camkit.cli", "view", str(store), "--port", "0"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, (line, server.stderr.read() if server.stderr else "")
        port = int(match.group(1))
        started = rss(server.pid)
        cold = first_page(port)
        after_first = rss(server.pid)
        warm = statistics.median(first_page(port) for _ in range(5))
        deep = statistics.median(deep_page(port, count) for _ in range(5))
        get(port, "/api/agreement?sample=64")
        peak = rss(server.pid)
        seconds = browser_first_page(f"http://127.0.0.1:{port}/") if browser else None
        return {
            "records": count,
            "cold": cold,
            "warm": warm,
            "deep": deep,
            "rss_start": started["VmRSS"],
            "rss_first": after_first["VmRSS"],
            "rss_peak": peak["VmHWM"],
            "browser": seconds,
        }
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, nargs="+", default=[1000, 20000])
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium measurement")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="camkit-viewer-bench-"))
    results = []
    for count in args.records:
        tick = time.perf_counter()
        store = write_store(folder / f"store-{count}", count)
        size = sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) / 2**20
        print(f"wrote {count:,} records ({size:.1f} MiB) in {time.perf_counter() - tick:.1f} s", flush=True)
        results.append(measure(store, count, not args.no_browser))
    cpu = platform.processor() or platform.machine()
    print(f"\ncamkit view, {os.cpu_count()} CPU cores ({cpu}), Python {platform.python_version()}")
    print(
        "| records | first page, API cold | warm | last page, sorted + filtered | browser first page "
        "| server RSS: start | after first page | peak |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        shown = f"{1000 * r['browser']:.0f} ms" if r["browser"] is not None else "n/a (no Chromium)"
        print(
            f"| {r['records']:,} | {1000 * r['cold']:.0f} ms | {1000 * r['warm']:.0f} ms | {1000 * r['deep']:.0f} ms "
            f"| {shown} | {r['rss_start']:.0f} MiB | {r['rss_first']:.0f} MiB | {r['rss_peak']:.0f} MiB |"
        )
    if len(results) >= 2:
        small, large = results[0], results[-1]
        versus = f"{large['records']:,} vs {small['records']:,} records"
        print(
            f"\n{versus}: first page (warm) x{large['warm'] / small['warm']:.2f}, "
            f"last page x{large['deep'] / small['deep']:.2f}, peak RSS x{large['rss_peak'] / small['rss_peak']:.2f}"
            + (
                f", browser first page x{large['browser'] / small['browser']:.2f}"
                if large["browser"] is not None and small["browser"] is not None
                else ""
            )
        )


if __name__ == "__main__":
    main()
