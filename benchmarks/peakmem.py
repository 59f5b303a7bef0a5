"""Peak memory of one call per case, each case in its own process (benchmarks/latency.py's memory section).

The child process builds the model (same seed as the timing tables) and the input, imports the
case's library, runs one warm-up forward under ``torch.inference_mode``, and takes its baseline:

* CPU: the process's peak resident set size right after resetting it to the current RSS (``echo 5 >
  /proc/self/clear_refs``, Linux >= 4.0), so the warm-up forward's own peak is not in the
  baseline. On Linux the peak is read as ``VmHWM`` from ``/proc/self/status``: it is what
  ``getrusage(RUSAGE_SELF).ru_maxrss`` reports for a process started on its own, but ``ru_maxrss``
  of a child keeps the forking parent's RSS as a floor across ``exec`` (measured: 787 MiB from
  the first line of a child of a parent that had imported pytorch-grad-cam), which the reset
  cannot clear. Elsewhere ``ru_maxrss`` is used, without a reset (said in the table). glibc's
  dynamic mmap threshold is pinned (``MALLOC_MMAP_THRESHOLD_=131072``) so that freed tensors go
  back to the OS instead of staying resident and hiding later growth.
* CUDA: ``torch.cuda.memory_allocated`` after ``torch.cuda.reset_peak_memory_stats``.

Then it creates the case (extractors, hooks) and makes ONE call; the result is the peak
(``ru_maxrss`` / ``torch.cuda.max_memory_allocated``) minus the baseline, as one JSON line.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchcases import (
    COMPARE,
    GRADCAM_STYLE,
    OURS,
    OURS_LEAN,
    TORCHCAM_STYLE,
    build_model,
    make_env,
    memory_cases,
)

CHILD_FLAG = "--memory-case"
MIB = 2**20
CHILD_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "TQDM_DISABLE": "1"}


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _hwm_bytes() is not None


def _hwm_bytes() -> int | None:
    """``VmHWM`` of /proc/self/status in bytes (None where there is no such file)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _peak_rss_bytes() -> int:
    found = _hwm_bytes()
    if found is not None:
        return found
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(value) if sys.platform == "darwin" else int(value) * 1024  # bytes on macOS, KiB on Linux


def _library_module(group: str) -> str | None:
    if group in (OURS, OURS_LEAN):
        return TORCHCAM_STYLE[OURS]
    if group in TORCHCAM_STYLE:
        return TORCHCAM_STYLE[group]
    if group in GRADCAM_STYLE:
        return GRADCAM_STYLE[group][0]
    if group == COMPARE:
        return "camkit"
    return None


def child(request: dict[str, Any]) -> dict[str, Any]:
    """Measure one case in this (fresh) process; see the module docstring."""
    from benchcases import MODELS

    if request.get("threads"):
        torch.set_num_threads(int(request["threads"]))
    device = torch.device(request["device"])
    spec = MODELS[request["model"]]
    case = {c.label: c for c in memory_cases(spec, request["method"], check=False)}[request["case"]]
    module = _library_module(case.group)
    if module is not None:
        importlib.import_module(module)  # its import is not part of the call
        if case.group in GRADCAM_STYLE:
            importlib.import_module(GRADCAM_STYLE[case.group][1])
    model = build_model(spec, device)
    env = make_env(spec, int(request["batch"]), device)
    with torch.inference_mode():
        model(env.x)
    gc.collect()
    reset = True
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        reset = _reset_peak()
        base = _peak_rss_bytes()
    out = case.setup(model, env)()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = _peak_rss_bytes()
    del out
    return {"growth_bytes": peak - base, "baseline_bytes": base, "peak_reset": reset}


@dataclass
class Measured:
    """One case's peak growth (bytes), or why it could not be measured."""

    label: str
    growth: int | None
    reset: bool = True
    error: str = ""

    @property
    def mib(self) -> float:
        return float("nan") if self.growth is None else self.growth / MIB


def measure(
    script: Path,
    model: str,
    label: str,
    batch: int,
    method: str,
    device: torch.device,
    threads: int | None,
    timeout_s: float,
) -> Measured:
    """Run ``script --memory-case`` for one case in a child process and read its JSON line."""
    request = {
        "model": model,
        "case": label,
        "batch": batch,
        "method": method,
        "device": str(device),
        "threads": threads,
    }
    env = {**os.environ, **CHILD_ENV}
    try:
        proc = subprocess.run(
            [sys.executable, str(script), CHILD_FLAG, json.dumps(request)],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Measured(label, None, error=f"timed out after {timeout_s:g} s")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return Measured(label, None, error=f"exit {proc.returncode}: {tail}")
    result = json.loads(lines[-1])
    return Measured(label, int(result["growth_bytes"]), bool(result["peak_reset"]))


def run_child(argv: list[str]) -> int:
    """Entry point of the child: ``latency.py --memory-case JSON`` prints one JSON line."""
    print(json.dumps(child(json.loads(argv[argv.index(CHILD_FLAG) + 1]))), flush=True)
    return 0
