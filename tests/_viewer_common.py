"""Small synthetic stores for the viewer tests, written with the store's own writer (no model run)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from camkit.runner.writer import PartWriter, RecordRow, prepare_store
from camkit.viewer import make_server, open_source
from camkit.viewer._server import ViewerServer

XSS = "<img src=x onerror=alert(1)>.png"
CATEGORIES = ["cat", "dog", "fox"]
CLASSES = ["cat", "dog"]
METHODS = ("gradcam", "layercam")


def options(
    methods: Sequence[str] = METHODS, target: str = "topk:2", side: int = 32, metrics: bool = False
) -> dict[str, object]:
    return ({"metrics": ["drop"]} if metrics else {}) | {
        "source": "folder:/synthetic",
        "model": "synthetic",
        "weights": "0",
        "methods": list(methods),
        "layer": ["4"],
        "target": target,
        "dtype": "float32",
        "preprocess": {"resize": side, "crop": side, "mean": [0.5] * 3, "std": [0.5] * 3},
    }


# key, label, top-1 class: cat/ images labelled 0 (cat), dog/ 1 (dog); mistakes where the top-1 differs
RECORDS = [
    ("cat/001.png", 0, 0),
    ("cat/002.png", 0, 1),  # mistake
    (f"cat/{XSS}", 0, 0),
    ("dog/003.png", 1, 1),
    ("dog/004.png", 1, 2),  # mistake
    ("dog/005.png", 1, 1),
    ("loose.png", None, 2),  # no label
]


#: with ``write_store(..., metrics=True)``: each record's stored "drop" per method, in RECORDS order (None: not finite)
DROPS = {
    "gradcam": [0.3, 0.9, 0.1, 0.7, 0.5, 0.2, None],
    "layercam": [0.6, 0.1, 0.4, 0.2, 0.8, 0.3, 0.5],
}


def sorted_by_drop(method: str, descending: bool = False) -> list[str]:
    """The keys in the order of ``method``'s drop (no value: lowest), ties by name, as the viewer sorts."""
    values = {key: DROPS[method][i] for i, (key, _, _) in enumerate(RECORDS)}
    low = float("-inf")
    shown = {k: low if v is None else v for k, v in values.items()}
    return sorted(shown, key=lambda k: (-shown[k] if descending else shown[k], k))


SIDE = 7
#: a colour per class for the synthetic pictures
COLOURS = [(214, 140, 60), (90, 120, 200), (200, 80, 80)]


def picture(rng: np.random.Generator, cls: int) -> Image.Image:
    """A 32x32 picture: a soft background and a disc of the class's colour somewhere."""
    image = Image.new("RGB", (32, 32), (236, 232, 222))
    x, y = (int(v) for v in rng.integers(4, 20, 2))
    ImageDraw.Draw(image).ellipse((x, y, x + 12, y + 12), fill=COLOURS[cls % len(COLOURS)])
    return image


def blob(rng: np.random.Generator) -> np.ndarray:
    """A SIDE x SIDE map in [0, 1]: a Gaussian bump at a random place."""
    cy, cx = rng.uniform(0, SIDE - 1, 2)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    bump = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * rng.uniform(0.8, 2.0) ** 2))
    return ((bump - bump.min()) / (bump.max() - bump.min())).astype(np.float32)


def write_store(
    path: Path,
    records: Sequence[tuple[str, int | None, int]] = RECORDS,
    *,
    root: Path | None = None,
    parts: int = 1,
    methods: Sequence[str] = METHODS,
    seed: int = 0,
    metrics: bool = False,
) -> Path:
    """A store of ``records`` with synthetic 7x7 maps (two explained classes each), over ``parts`` ranks.

    With ``root``, a 32x32 PNG per record is written there (the run's source folder). With
    ``metrics``, each record stores a "drop" per method (:data:`DROPS`), as ``camkit run --metric drop``.
    """
    rng = np.random.default_rng(seed)
    info = {"categories": CATEGORIES, "classes": CLASSES, "root": None if root is None else root.as_posix()}
    prepare_store(path, options(methods, metrics=metrics), info, overwrite=False)
    position = {key: i for i, (key, _, _) in enumerate(RECORDS)}
    for rank in range(parts):
        mine = [r for i, r in enumerate(records) if i % parts == rank]
        rows = []
        for key, label, top in mine:
            others = [c for c in range(len(CATEGORIES)) if c != top]
            pred = [(top, 0.5 + 0.4 * rng.random()), (others[0], 0.05), (others[1], 0.01)]
            scores = {m: {"drop": DROPS[m][position[key]]} for m in methods} if metrics else None
            rows.append(RecordRow(key, label, [top, others[0]], pred, 32, 32, scores))
            if root is not None:
                file = root / key
                file.parent.mkdir(parents=True, exist_ok=True)
                picture(rng, top).save(file, format="PNG")
        maps = np.stack([np.concatenate([blob(rng).ravel() for _ in range(len(methods) * 2)]) for _ in rows])
        layout = [(m, 2, SIDE, SIDE) for m in methods]
        with PartWriter(path, rank) as writer:
            writer.commit(rows, maps, layout)
    return path


@contextmanager
def serving(path: Path) -> Iterator[ViewerServer]:
    """The viewer's server on a free port, in a thread, for the length of the block."""
    server = make_server(open_source(path), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def page_data(page: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The summary and the records that a one-file page (a report, ``source_page``) carries inline."""
    start = page.index("<script>window.CAMKIT_VIEW = ") + len("<script>window.CAMKIT_VIEW = ")
    end = page.index("</script>", start)
    info_text, chunks_text = page[start:end].split(";\nwindow.CAMKIT_VIEW_CHUNKS = ", 1)
    chunks = json.loads(chunks_text.strip().removesuffix(";"))
    return json.loads(info_text), chunks[0]
