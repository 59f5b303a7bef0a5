"""Two ranks under torchrun (gloo, CPU) write one store equal to a single-process run's."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import camkit
from _runner_common import PYTHON, assert_same_store, make_images, tiny_model, write_script
from camkit.runner.store import MANIFEST, PARTS, connect

COUNT = 64


def _records_per_part(store: Path) -> dict[str, int]:
    counts = {}
    for part in sorted((store / PARTS).iterdir()):
        conn = connect(part / MANIFEST)
        (counts[part.name],) = conn.execute("SELECT COUNT(*) FROM records WHERE status = 'ok'").fetchone()
        conn.close()
    return counts


def test_two_gloo_ranks_under_torchrun_equal_one_process(tmp_path: Path) -> None:
    source = tmp_path / "images"
    make_images(source, COUNT)
    single = tmp_path / "single"
    report = camkit.run(source, single, ["gradcam", "layercam"], model=tiny_model(), workers=0, progress=False)
    assert report.computed == COUNT
    script = write_script(tmp_path)
    out = tmp_path / "two"
    command = [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run(
        [*command, str(source), str(out), "0"], capture_output=True, text=True, timeout=300, env=env, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1  # rank 0 alone prints, with the totals of both ranks
    assert json.loads(lines[0]) == {"computed": COUNT, "skipped": 0, "failed": [], "ranks": 2}
    assert _records_per_part(out) == {"rank-00000": COUNT // 2, "rank-00001": COUNT // 2}  # each rank its own part
    assert_same_store(camkit.open_store(out), camkit.open_store(single), atol=1e-5)
    # resumed by one process (another world size): the records of both parts count as done
    again = camkit.run(source, out, ["gradcam", "layercam"], model=tiny_model(), workers=0, progress=False)
    assert (again.computed, again.skipped) == (0, COUNT)
