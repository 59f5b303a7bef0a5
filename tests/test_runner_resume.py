"""A run killed with SIGKILL resumes to the same store; a store read while it is written is never partial."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

import camkit
from _runner_common import PYTHON, assert_same_store, make_images, tiny_model, write_script
from camkit.runner.store import PARTS

COUNT = 64
SLOW = 0.04  # seconds per forward of the subprocess runs (16 batches of 4)


def _start(script: Path, source: Path, out: Path, slow: float = SLOW) -> subprocess.Popen[str]:
    command = [PYTHON, str(script), str(source), str(out), str(slow)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _records(out: Path) -> int:
    try:
        store = camkit.open_store(out)
    except FileNotFoundError:  # not created yet
        return 0
    return len(store) + len(store.failed)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    make_images(tmp_path / "images", COUNT)
    reference = tmp_path / "reference"
    camkit.run(tmp_path / "images", reference, ["gradcam", "layercam"], model=tiny_model(), workers=0, progress=False)
    return tmp_path / "images", reference, write_script(tmp_path)


def test_sigkill_mid_run_then_rerun_gives_the_uninterrupted_store(
    setup: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    source, reference, script = setup
    out = tmp_path / "store"
    process = _start(script, source, out)
    deadline = time.monotonic() + 120
    while _records(out) < 12 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    before = _records(out)
    assert 12 <= before < COUNT, f"the run was not killed mid-way ({before} of {COUNT} records)"
    again = _start(script, source, out)
    stdout, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr
    report = json.loads(stdout.strip().splitlines()[-1])
    assert report["skipped"] == before  # every record in the store before the rerun, and no other
    assert report["computed"] == COUNT - before
    assert report["failed"] == []
    assert_same_store(camkit.open_store(out), camkit.open_store(reference))
    leftovers = [p.name for p in (out / PARTS).glob("*/*") if p.suffix not in (".npy", ".sqlite", ".lock")]
    assert leftovers == []


def test_reading_while_a_run_writes_never_returns_a_partial_record(
    setup: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    source, _, script = setup
    out = tmp_path / "store"
    process = _start(script, source, out)
    seen: dict[str, dict[str, torch.Tensor]] = {}
    counts = []
    while process.poll() is None:
        try:
            store = camkit.open_store(out)
        except FileNotFoundError:
            continue
        with store:
            counts.append(len(store))
            for key in store:
                record = store[key]
                assert set(record.maps) == {"gradcam", "layercam"}
                for cam in record.maps.values():
                    assert cam.shape == (32, 32)
                    assert torch.isfinite(cam).all()
                    assert cam.min() >= 0
                    assert cam.max().item() in (0.0, 1.0)  # min-max normalized (all zeros when flat)
                seen.setdefault(key, record.maps)
    assert process.returncode == 0, process.stderr.read() if process.stderr else ""
    assert any(0 < n < COUNT for n in counts), f"never saw the store mid-run: {counts}"
    assert counts == sorted(counts)  # records only ever appear
    final = camkit.open_store(out)
    assert len(final) == COUNT
    for key, maps in seen.items():
        for name, cam in maps.items():
            assert torch.equal(cam, final[key].maps[name])  # what was read mid-run is the finished record
