"""Helpers shared by the runner tests (tests/test_runner_*.py) and the subprocess scripts they start."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from camkit.models import LoadedModel, Preprocess
from camkit.runner.store import Store

TESTS = Path(__file__).resolve().parent
SIZE = 32


def make_images(folder: Path, count: int, classes: tuple[str, ...] = ("cat", "dog"), seed: int = 0) -> list[str]:
    """``count`` random RGB PNGs (40x48) spread over class sub-folders; returns their keys."""
    rng = np.random.default_rng(seed)
    keys = []
    for i in range(count):
        key = f"{classes[i % len(classes)]}/{i:03d}.png" if classes else f"{i:03d}.png"
        file = folder / key
        file.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(file)
        keys.append(key)
    return sorted(keys)


def tiny_net() -> nn.Sequential:
    """A seeded CNN: conv, ReLU, conv (target layer "2", 8x32x32), ReLU, pool, linear head (5 classes)."""
    generator = torch.Generator().manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    )
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    return net.eval()


class Slow(nn.Module):
    """Sleeps before each forward (so that a subprocess run can be watched and killed mid-way)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return x


def tiny_model(slow: float = 0.0) -> LoadedModel:
    """The tiny net with a 32 px preprocessing, optionally behind a :class:`Slow` first module."""
    net = tiny_net()
    if slow:
        net = nn.Sequential(Slow(slow), *net).eval()
    layer = "3" if slow else "2"
    return LoadedModel(net, "tiny", Preprocess(SIZE, SIZE), categories=None, target_layer=layer)


def assert_same_store(a: Store, b: Store, atol: float = 1e-5) -> None:
    """Same keys, failures, predictions, targets, labels and maps (within ``atol``)."""
    assert list(a) == list(b)
    assert a.failed.keys() == b.failed.keys()
    for key in a:
        x, y = a[key], b[key]
        assert (x.target, x.label, x.size) == (y.target, y.label, y.size), key
        assert [c for c, _ in x.pred] == [c for c, _ in y.pred], key
        assert np.allclose([p for _, p in x.pred], [p for _, p in y.pred], atol=1e-6), key
        assert x.maps.keys() == y.maps.keys()
        for name in x.maps:
            torch.testing.assert_close(x.maps[name], y.maps[name], atol=atol, rtol=0)


# A script for subprocess runs: ``python SCRIPT SOURCE OUT SLOW_SECONDS``; prints the report as JSON.
SCRIPT = f"""
import json, sys
sys.path.insert(0, {str(TESTS)!r})
import torch
torch.set_num_threads(1)
import camkit
from _runner_common import tiny_model
source, out, slow = sys.argv[1], sys.argv[2], float(sys.argv[3])
report = camkit.run(source, out, ["gradcam", "layercam"], model=tiny_model(slow), batch_size=4, workers=1,
                    progress=False)
import os
if int(os.environ.get("RANK", "0")) == 0:
    print(json.dumps({{"computed": report.computed, "skipped": report.skipped, "failed": report.failed,
                      "ranks": report.ranks}}))
"""


def write_script(folder: Path) -> Path:
    """Write :data:`SCRIPT` into ``folder``; returns its path."""
    file = folder / "run_store.py"
    file.write_text(SCRIPT, encoding="utf-8")
    return file


PYTHON = sys.executable
