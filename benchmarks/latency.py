"""Speed and memory of camkit's CAM methods against a plain forward, the floor, TorchCAM and pytorch-grad-cam.

Models (``--models``, default all four; the cases live in ``benchmarks/benchcases.py``):
resnet18 at ``layer4``, mobilenet_v2 at ``features.18`` (both torchvision, random weights),
EfficientNet-Lite0 with its ImageNet weights (``camkit.models.load_default()``) at ``bn2``, and a
ViT, timm's ``deit_tiny_patch16_224`` (random weights) at ``blocks.11.norm1``, whose token output
camkit reads as a 14x14 grid by itself (pytorch-grad-cam gets the usual ``reshape_transform``;
TorchCAM cannot read tokens, so it has no ViT rows; no FullGrad there: both libraries' FullGrad
read convolution and BatchNorm biases). Inputs 3x224x224, random, seeded; random classes.

**Timing** (one table per model and batch, ``--batch``, default 1 and 8). Everything is timed in
ONE process and in alternation: every round times each case once, in a new seeded random order,
so no case always follows the same one. Rows:

* ``forward (inference_mode)``; ``plain forward`` (grad mode, the reference of the first ratio);
* ``floor``: the least a gradient CAM can do: the forward with no graph before the target layer
  (grad off, turned on by a hook at the layer, whose output becomes a fresh leaf), then
  ``torch.autograd.grad(score, output)`` (what camkit's lean path does);
* ``floor (full graph)``: the same gradient after a grad-mode forward (graph of every layer), the
  floor of a forward the user runs in grad mode (TorchCAM-style default);
* TorchCAM-style rows: camkit (``camkit.methods``), the same with the forward in ``with
  extractor.lean():``, and TorchCAM 0.5 (``torchcam.methods``): ``scores = model(x); cams =
  extractor(class_idx, scores)`` (maps at the layer's size, tensors);
* pytorch-grad-cam-style pairs, camkit's front door (``camkit.compat.gradcam``, lean by itself) and
  pytorch-grad-cam 1.5.7, each through its own API: ``cam = Method(model=m, target_layers=[...])``
  created outside the timed region, then ``cam(input_tensor=x, targets=[ClassifierOutputTarget(c)
  ...])``; both run their own forward and return numpy maps at the input size. Methods: GradCAM,
  GradCAMPlusPlus, XGradCAM, LayerCAM, HiResCAM, GradCAMElementWise, EigenGradCAM, ShapleyCAM,
  FullGrad, and gradient-free EigenCAM;
* ``camkit.compare`` of the six gradient methods GradCAM, ++, XGrad, LayerCAM, HiRes and
  ElementWise (one forward, one backward), when this camkit has it.

**Perturbation** (batch 1, input ``--ablation-size``, ``--ablation-rounds`` rounds, one call per
sample). AblationCAM on ``--perturbation-model`` (default resnet18/layer4): camkit's front door at
``batch_size`` 32 and ``--ablation-batch-sizes`` against pytorch-grad-cam's (``batch_size`` 32).
ScoreCAM (unless ``--no-score-cam``), one table per ``--score-models`` (default resnet18, random
weights, where every library forwards one masked input per channel, and EfficientNet-Lite0, trained,
where most of ``bn2``'s channels are flat on an image and camkit forwards no masked input for them):
camkit's front door against pytorch-grad-cam (16 masked inputs per forward, fixed), camkit's
TorchCAM-style class against TorchCAM (``batch_size`` 32 both), and camkit with
``max_channels=--score-budget`` against its own full run.

**Memory** (``--memory``; models ``--memory-models``, batches ``--memory-batch``): peak memory
growth of ONE call of each case (setup included) in its own process (see ``benchmarks/peakmem.py``:
the peak RSS (``VmHWM``, what ``ru_maxrss`` reports) over a baseline taken after model load and a
warm-up forward under ``inference_mode``, with the peak reset to the current RSS;
``torch.cuda.max_memory_allocated`` over ``memory_allocated`` on a GPU), for the references,
``--memory-method`` (default GradCAM) in every library and front door, and compare.

Each timed case runs on its own deep copy of the model (hooks of one library never sit on a model
another case runs). With glibc (Linux), the timing process pins the allocator (``--malloc pinned``,
the default): ``mallopt`` fixes the mmap threshold at 1 GiB and the trim threshold at 2 GiB. By
default glibc hands a large freed buffer (a batch-8 activation) back to the OS and the next
allocation faults it in again, at a cost that depends on what the case timed before had freed, not
on the case itself: at batch 8 on mobilenet_v2 two copies of the same floor drifted 0.8-1.1x apart
that way. Pinned, every case reuses the heap, as a long-running process does. The memory children
pin the other way (``MALLOC_MMAP_THRESHOLD_=131072``, see ``benchmarks/peakmem.py``) so that freed
tensors leave the RSS. ``--malloc default`` keeps glibc's behaviour.

pytorch-grad-cam's progress bars are off (``TQDM_DISABLE=1``); ``--threads``
also sets OpenCV's thread count. pytorch-grad-cam's numpy work leaves worker threads spinning for
~0.1 s after a call, so the script sleeps ``--settle-ms`` (untimed) after each of its samples.

A CPU sample is the best of ``--inner`` calls (default: 3 when the table's plain forward takes
under 60 ms, else 1) on the wall clock, or with ``--clock thread`` the CPU time of the calling
thread (use with ``--threads 1`` on a shared machine; it misses the peers' worker threads, so
speed-ups over them come out low). A case whose first two warm-up calls exceed ``--slow-ms`` is
timed with one call in ``--slow-rounds`` rounds spread over the run (†). A case whose setup or
warm-up raises is dropped from its table with the error printed under it.

On CPU only ratios are printed: a ratio is the median over rounds of ``t_case / t_reference``
measured in the same round, with its interquartile range; "speed-up vs peer" is the median of
``t_peer / t_camkit``. On a GPU (one command: ``python benchmarks/latency.py``, CUDA is used when
available) CUDA events time each sample (mean of ``--inner``, default 10, calls) and the absolute
median milliseconds are printed beside the ratios, with the GPU's name.

Goals (issue 13), each printed as PASS / FAIL / INCONCLUSIVE (the IQR straddles the goal or fewer
than 3 rounds) / NOT JUDGED (measured off the goal's setting):

* camkit gradient methods <= 1.05x the floor (TorchCAM-style rows against the full-graph floor,
  lean and front-door rows against the lean floor), and no slower than TorchCAM;
* every gradient method of the front door >= 2x faster than pytorch-grad-cam's;
* ``compare`` with 6 gradient methods <= 1.3x the floor;
* EigenCAM <= 1.2x a plain forward; AblationCAM (resnet18/layer4, 3x224x224) >= 50x faster than
  pytorch-grad-cam's; ScoreCAM without a budget <= 1.0x the faster peer;
* memory: a gradient CAM on the lean path <= 1.2x the floor's peak growth, >= 2.5x below
  TorchCAM's and >= 5x below pytorch-grad-cam's.

Usage::

    python benchmarks/latency.py                    # everything; ~1 h on 2 idle cores, minutes on a GPU
    python benchmarks/latency.py --quick            # < 2 min: GradCAM rows, batch 1, small perturbation run
    python benchmarks/latency.py --models resnet18 --json out/latency.json
    python benchmarks/latency.py --threads 1 --clock thread   # on a busy machine
"""

from __future__ import annotations

import os

# pytorch-grad-cam's AblationCAM and ScoreCAM draw a tqdm bar per call; tqdm reads TQDM_* when it is
# imported (torch imports it), so this must come first.
os.environ.setdefault("TQDM_DISABLE", "1")

import argparse
import contextlib
import copy
import ctypes
import dataclasses
import gc
import importlib
import importlib.metadata
import io
import json
import logging
import math
import platform
import random
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchcases import (
    FLOOR,
    FLOOR_COPY,
    FLOOR_FULL,
    INFERENCE,
    MODELS,
    PEER_GC,
    PLAIN,
    Call,
    Case,
    ModelSpec,
    build_model,
    gc_methods,
    gradient_cases,
    make_env,
    memory_cases,
    perturbation_cases,
    score_cases,
)
from peakmem import CHILD_FLAG, Measured, measure, run_child

GOAL_FLOOR = 1.05  # camkit gradient methods within this factor of the floor
GOAL_TORCHCAM = 1.0  # ... and no slower than TorchCAM (speed-up >= 1)
GOAL_SPEEDUP = 2.0  # every gradient method of the front door at least this much faster than pytorch-grad-cam's
GOAL_COMPARE = 1.3  # compare with 6 gradient methods within this factor of the floor
GOAL_EIGEN = 1.2  # camkit's EigenCAM within this factor of a plain forward
GOAL_ABLATION = 50.0  # camkit's AblationCAM at least this much faster than pytorch-grad-cam's
GOAL_SCORE = 1.0  # camkit's ScoreCAM (no budget) at most this factor of the faster peer
GOAL_MEM_FLOOR = 1.2  # peak memory of a lean gradient CAM within this factor of the floor's
GOAL_MEM_TORCHCAM = 2.5  # ... and this much below TorchCAM's
GOAL_MEM_PEER = 5.0  # ... and this much below pytorch-grad-cam's
#: the front-door methods the floor goal applies to (the six that need only A and G)
FLOOR_GC_METHODS = ("GradCAM", "GradCAMPlusPlus", "XGradCAM", "LayerCAM", "HiResCAM", "GradCAMElementWise")
TORCHCAM_METHODS = ("GradCAM", "GradCAMpp", "XGradCAM", "LayerCAM")
GC_GRADIENT_METHODS = (*FLOOR_GC_METHODS, "EigenGradCAM", "ShapleyCAM", "FullGrad")
PEERS = ("torchcam", PEER_GC)


# -- timing ----------------------------------------------------------------------------------------
class Timer:
    """CPU timer: the best of ``inner`` individually timed calls, in milliseconds."""

    def __init__(self, clock: Callable[[], int] = time.perf_counter_ns) -> None:
        self.clock = clock

    def measure(self, call: Call, inner: int) -> float:
        best = float("inf")
        for _ in range(inner):
            start = self.clock()
            call()
            best = min(best, (self.clock() - start) / 1e6)
        return best

    def sync(self) -> None:
        """Wait for queued device work (nothing to wait for on CPU)."""


class CudaTimer(Timer):
    """CUDA-event timer: the mean GPU time of ``inner`` back-to-back calls between two events."""

    def measure(self, call: Call, inner: int) -> float:
        torch.cuda.synchronize()
        start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        start.record()
        for _ in range(inner):
            call()
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end)) / inner

    def sync(self) -> None:
        torch.cuda.synchronize()


CLOCKS: dict[str, Callable[[], int]] = {"wall": time.perf_counter_ns, "thread": time.thread_time_ns}

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def pin_malloc() -> str:
    """Fix glibc's mmap and trim thresholds for this process (see the module docstring); what was done."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        pinned = libc.mallopt(M_MMAP_THRESHOLD, 1 << 30) == 1 and libc.mallopt(M_TRIM_THRESHOLD, 1 << 31) == 1
    except (OSError, AttributeError):
        pinned = False
    return "glibc mmap threshold 1 GiB, trim threshold 2 GiB (pinned)" if pinned else "default (could not pin)"


@dataclass
class Result:
    """Per-case samples (ms) of one model/batch, in round order (``None``: not timed that round)."""

    section: str
    model: str
    title: str
    layer: str
    batch: int
    input_shape: tuple[int, ...]
    inner: int
    rounds: int
    samples: dict[str, list[float | None]] = field(default_factory=dict)
    slow: set[str] = field(default_factory=set)
    errors: dict[str, str] = field(default_factory=dict)

    def timed(self, label: str) -> list[float]:
        return [t for t in self.samples[label] if t is not None]

    def median(self, label: str) -> float:
        return statistics.median(self.timed(label))

    def ratios(self, label: str, reference: str | Sequence[str]) -> list[float]:
        """``t_label / t_reference`` of every round where both were timed; several references: their fastest."""
        refs = [reference] if isinstance(reference, str) else list(reference)
        out = []
        for r, t in enumerate(self.samples[label]):
            others = [self.samples[ref][r] for ref in refs]
            if t is not None and all(o is not None for o in others):
                out.append(t / min(o for o in others if o is not None))
        return out

    def ratio(self, label: str, reference: str | Sequence[str]) -> float:
        """Median over rounds of the paired ratio."""
        values = self.ratios(label, reference)
        return statistics.median(values) if values else math.nan

    def pooled(self, pairs: Sequence[tuple[str, str]]) -> tuple[float, float, float]:
        """Median and quartiles of the paired ratios of several ``(label, reference)`` pairs taken together.

        The worst of several noisy medians is biased away from 1 (the maximum of four estimates of
        the same ratio lies above it); pooling the rounds of cases that do the same work is not.
        """
        values = [v for label, reference in pairs for v in self.ratios(label, reference)]
        if len(values) < 2:
            return (values[0],) * 3 if values else (math.nan,) * 3
        q1, median, q3 = statistics.quantiles(values, n=4)
        return median, q1, q3

    def quartiles(self, label: str, reference: str | Sequence[str]) -> tuple[float, float]:
        """First and third quartiles of the paired ratio (its spread tells the noise)."""
        values = self.ratios(label, reference)
        if len(values) < 2:
            return (values[0], values[0]) if values else (math.nan, math.nan)
        q1, _, q3 = statistics.quantiles(values, n=4)
        return q1, q3


def _spread(count: int, rounds: int) -> set[int]:
    """``count`` round indices spread evenly over ``rounds`` (all of them when ``count >= rounds``)."""
    count = max(1, min(count, rounds))
    return {math.floor((i + 0.5) * rounds / count) for i in range(count)}


def _error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return text if len(text) <= 160 else text[:157] + "..."


def run_batch(
    spec: ModelSpec,
    base: nn.Module,
    batch: int,
    cases: Sequence[Case],
    *,
    rounds: int,
    warmup: int,
    inner: int | None,
    timer: Timer,
    device: torch.device,
    section: str = "gradient",
    slow_ms: float = math.inf,
    slow_rounds: int = 1,
    settle_s: float = 0.0,
) -> tuple[Result, list[Case]]:
    """Time every case on its own copy of ``base``, interleaved over ``rounds`` rounds.

    ``inner=None`` picks 3 calls per sample when the plain forward's fastest of 3 calls (after the
    warm-up) is under 60 ms, else 1 (same for every case). A case whose first two warm-up calls
    both exceed ``slow_ms`` gets no further warm-up and is timed with one call in ``slow_rounds`` of
    the rounds. After a sample of a case marked ``settle`` the run sleeps ``settle_s`` seconds
    (untimed). A case whose setup or warm-up raises is dropped (the error is kept in the result).
    Returns the result and the cases that ran.
    """
    env = make_env(spec, batch, device)
    result = Result(section, spec.name, spec.title or spec.name, spec.layer, batch, spec.input_shape, 1, rounds)

    def wall_ms(call: Call) -> float:
        timer.sync()
        start = time.perf_counter()
        call()
        timer.sync()
        return (time.perf_counter() - start) * 1e3

    kept: list[tuple[Case, Call]] = []
    warm_ms: dict[str, list[float]] = {}
    for case in cases:
        times = warm_ms.setdefault(case.label, [])
        call: Call | None = None
        failed = False
        try:
            call = case.setup(copy.deepcopy(base), env)
            for _ in range(warmup):
                times.append(wall_ms(call))
                if case.settle:
                    time.sleep(settle_s)
                if min(times) > slow_ms and len(times) >= 2:
                    break  # slow twice (a first call can be slow for one-off reasons): no more warm-up
            if warmup and len(times) == 1 and times[0] > slow_ms:
                times.append(wall_ms(call))  # a second call before calling a case slow
        except Exception as exc:  # a peer that cannot run this model: report it, time the rest
            result.errors[case.label] = _error(exc)
            failed = True
        if failed or call is None:
            # pytorch-grad-cam's BaseCAM.__del__ raises on an object whose call failed half-way ("Exception
            # ignored in ..."): let it go quietly
            with contextlib.redirect_stderr(io.StringIO()):
                call = None
                gc.collect()
            continue
        kept.append((case, call))
    cases = [case for case, _ in kept]
    calls = [call for _, call in kept]
    result.slow = {label for label, times in warm_ms.items() if times and min(times) > slow_ms}
    if inner is None:
        labels = [c.label for c in cases]
        fastest = min(wall_ms(calls[labels.index(PLAIN)]) for _ in range(3)) if PLAIN in labels else 0.0
        inner = 3 if fastest < 60.0 else 1
    result.inner = inner
    slow_picks = _spread(slow_rounds, rounds)
    samples: list[list[float | None]] = [[None] * rounds for _ in cases]
    rng = random.Random(f"{section}/{spec.name}/{batch}")
    for r in range(rounds):
        gc.collect()
        gc.disable()
        try:
            for i in rng.sample(range(len(cases)), len(cases)):  # a new order every round
                label = cases[i].label
                if label in result.slow and r not in slow_picks:
                    continue
                samples[i][r] = timer.measure(calls[i], 1 if label in result.slow else inner)
                if cases[i].settle:
                    time.sleep(settle_s)
        finally:
            gc.enable()
    result.samples = {case.label: samples[i] for i, case in enumerate(cases)}
    del calls, kept
    gc.collect()
    return result, cases


# -- verdicts --------------------------------------------------------------------------------------
MIN_SAMPLES = 3  # fewer paired samples than this cannot decide a goal


@dataclass(frozen=True)
class Verdict:
    """One goal checked on one table: the deciding case, its ratio, IQR, sample count and the outcome."""

    goal: str
    case: str
    value: float
    q1: float
    q3: float
    samples: int
    target: float
    at_least: bool  # the goal is value >= target (else value <= target)
    note: str = ""
    judged: bool = True  # False: measured off the goal's setting (e.g. --quick's smaller input)
    single: bool = False  # one deterministic measurement (memory): no sample-count or IQR rule

    @property
    def status(self) -> str:
        """PASS, FAIL or INCONCLUSIVE; NOT JUDGED when measured off the goal's setting."""
        return self._outcome() if self.judged else "NOT JUDGED"

    def _outcome(self) -> str:
        if math.isnan(self.value):
            return "INCONCLUSIVE"
        if not self.single:
            if self.samples < MIN_SAMPLES:
                return "INCONCLUSIVE"
            if self.q1 < self.target < self.q3 or (self.q1 != self.q3 and self.target in (self.q1, self.q3)):
                return "INCONCLUSIVE"
        ok = self.value >= self.target if self.at_least else self.value <= self.target
        return "PASS" if ok else "FAIL"

    def line(self) -> str:
        status = self._outcome()
        if status == "INCONCLUSIVE" and self.samples < MIN_SAMPLES and not self.single:
            status += f" (only {self.samples} paired sample(s): rerun with more rounds)"
        elif status == "INCONCLUSIVE":
            status += " (the interquartile range straddles the goal: too noisy, rerun)"
        elif status == "FAIL" and self.at_least:
            status += f" ({(1 - self.value / self.target) * 100:.0f}% short of the goal)"
        elif status == "FAIL":
            status += f" (+{(self.value - self.target) * 100:.1f} points over the goal)"
        if not self.judged:
            status = f"NOT JUDGED (would be {status} here)"
        sign = ">=" if self.at_least else "<="
        spread = "one measurement" if self.single else f"interquartile range {self.q1:.3f}-{self.q3:.3f}"
        rounds = "" if self.single else f", {self.samples} rounds"
        text = (
            f"{self.goal}: {self.case} at {self.value:.3f}x ({spread}{rounds}), goal {sign} {self.target:g}x: {status}"
        )
        return text + (f"; {self.note}" if self.note else "")


def _by_kind(cases: Sequence[Case], kind: str) -> list[Case]:
    return [c for c in cases if c.kind == kind]


def verdicts(result: Result, cases: Sequence[Case]) -> list[Verdict]:
    """The goals a timing table decides."""

    def check(goal: str, case: str, num: str, den: str | Sequence[str], target: float, at_least: bool) -> Verdict:
        value, (q1, q3) = result.ratio(num, den), result.quartiles(num, den)
        return Verdict(goal, case, value, q1, q3, len(result.ratios(num, den)), target, at_least)

    def pooled(pairs: Sequence[tuple[str, str]]) -> str:
        if len(pairs) < 2:
            return ""
        median, q1, q3 = result.pooled(pairs)
        return f"all {len(pairs)} methods pooled: {median:.3f}x (interquartile range {q1:.3f}-{q3:.3f})"

    def worst(goal: str, rows: Sequence[Case], floor: str, target: float) -> None:
        if rows and floor in labels:
            row = max(rows, key=lambda c: result.ratio(c.label, floor))
            verdict = check(goal, row.label, row.label, floor, target, False)
            out.append(dataclasses.replace(verdict, note=pooled([(c.label, floor) for c in rows])))

    out: list[Verdict] = []
    labels = {c.label for c in cases}
    worst(
        "worst camkit method (torchcam-style) × floor (full graph)",
        _by_kind(cases, "torchcam-style"),
        FLOOR_FULL,
        GOAL_FLOOR,
    )
    worst("worst camkit method (torchcam-style, lean) × floor", _by_kind(cases, "lean"), FLOOR, GOAL_FLOOR)
    front = [c for c in _by_kind(cases, "gradient") if c.label.split(" ")[1] in FLOOR_GC_METHODS]
    worst("worst camkit method (grad-cam-style: + resize to the input + numpy) × floor", front, FLOOR, GOAL_FLOOR)
    torchcam_pairs = [c for c in _by_kind(cases, "torchcam-style") if c.peer in labels]
    if torchcam_pairs:
        low = min(torchcam_pairs, key=lambda c: result.ratio(str(c.peer), c.label))
        verdict = check("smallest speed-up vs TorchCAM", low.label, str(low.peer), low.label, GOAL_TORCHCAM, True)
        note = pooled([(str(c.peer), c.label) for c in torchcam_pairs])
        out.append(dataclasses.replace(verdict, note=note))
    gradient = [c for c in _by_kind(cases, "gradient") if c.peer in labels]
    if gradient:
        low = min(gradient, key=lambda c: result.ratio(str(c.peer), c.label))
        goal = "smallest speed-up vs pytorch-grad-cam (gradient methods)"
        out.append(check(goal, low.label, str(low.peer), low.label, GOAL_SPEEDUP, True))
    for case in cases:
        if case.kind == "compare" and FLOOR in labels:
            out.append(check("compare × floor", case.label, case.label, FLOOR, GOAL_COMPARE, False))
        if case.kind == "eigencam":
            verdict = check("EigenCAM × plain forward", case.label, case.label, PLAIN, GOAL_EIGEN, False)
            note = f"{result.ratio(case.label, INFERENCE):.3f}x the forward under inference_mode"
            out.append(dataclasses.replace(verdict, note=note))
        if case.kind == "ablation" and case.peer in labels:
            variants = [c for c in _by_kind(cases, "ablation-variant") if c.peer in labels]
            note = ", ".join(
                f"{c.label.rsplit(', ', 1)[-1].rstrip(')')}: {result.ratio(str(c.peer), c.label):.1f}x"
                for c in variants
            )
            judged = result.input_shape == (3, 224, 224) and result.model == "resnet18"
            if not judged:
                shape = "x".join(map(str, result.input_shape))
                note += ("; " if note else "") + f"measured on {result.model} at {shape}: indicative only"
            verdict = check(
                "AblationCAM speed-up vs pytorch-grad-cam", case.label, str(case.peer), case.label, GOAL_ABLATION, True
            )
            out.append(dataclasses.replace(verdict, note=note, judged=judged))
        if case.kind == "scorecam":
            rivals = [r for r in case.rivals if r in labels]
            if rivals:
                goal = f"ScoreCAM × the faster peer ({' / '.join(rivals)}, per round)"
                out.append(check(goal, case.label, case.label, rivals, GOAL_SCORE, False))
    return out


# -- reporting -------------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


DISTRIBUTIONS = {"pytorch_grad_cam": "grad-cam"}  # import name -> distribution name (no __version__)
VERSIONED = ("torchvision", "timm", "camkit", "torchcam", "pytorch_grad_cam")


def _version(module: str) -> str:
    try:
        return str(importlib.import_module(module).__version__)
    except (ImportError, AttributeError):
        pass
    try:
        return importlib.metadata.version(DISTRIBUTIONS.get(module, module))
    except importlib.metadata.PackageNotFoundError:
        return "n/a"


def _command() -> str:
    rel = os.path.relpath(sys.executable)
    return shlex.join([rel if not rel.startswith("..") else sys.executable, *sys.argv])


def _load() -> str:
    try:
        load = os.getloadavg()
    except OSError:
        return "n/a"
    return f"{load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}"


def device_name(device: torch.device) -> str:
    return f"GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else f"CPU {_cpu_model()}"


def header(device: torch.device, args: argparse.Namespace) -> list[str]:
    if device.type == "cuda":
        per_sample = f"mean of {args.inner} calls per sample (CUDA events)"
    else:
        inner = f"best of {args.inner}" if args.inner else "best of 3 (plain forward < 60 ms) or 1"
        per_sample = f"{inner} calls per sample ({args.clock} clock)"
    cores = "" if device.type == "cuda" else f" ({os.cpu_count()} logical cores)"
    lines = [
        "# camkit latency and memory benchmark",
        "",
        f"- command: `{_command()}`",
        f"- device: {device_name(device)}{cores}; torch threads: {torch.get_num_threads()}; load average at the "
        f"start: {_load()}",
        f"- python {platform.python_version()}, torch {torch.__version__}, "
        + ", ".join(f"{m} {_version(m)}" for m in VERSIONED),
        f"- timing: {args.rounds} interleaved rounds after {args.warmup} warm-up call(s) per case, {per_sample}; "
        f"a case slower than {args.slow_ms:g} ms per call (†) is timed with 1 call in {args.slow_rounds} of the "
        f"rounds; {args.settle_ms:g} ms untimed pause after each pytorch-grad-cam sample; allocator: "
        f"{getattr(args, 'allocator', 'default')}",
        "- ratio = median over rounds of t_case / t_reference within the same round; speed-up vs peer = median of "
        "t_peer / t_camkit; floor = forward without a graph before the target layer + gradient of the score w.r.t. "
        "the layer's output; floor (full graph) = the same after a grad-mode forward",
        f"- goals: camkit gradient methods <= {GOAL_FLOOR:g}x the floor and no slower than TorchCAM; >= "
        f"{GOAL_SPEEDUP:g}x faster than pytorch-grad-cam; compare (6 methods) <= {GOAL_COMPARE:g}x the floor; "
        f"EigenCAM <= {GOAL_EIGEN:g}x a plain forward; AblationCAM >= {GOAL_ABLATION:g}x faster than "
        f"pytorch-grad-cam's; ScoreCAM <= {GOAL_SCORE:g}x the faster peer; memory of a lean gradient CAM <= "
        f"{GOAL_MEM_FLOOR:g}x the floor, >= {GOAL_MEM_TORCHCAM:g}x below TorchCAM, >= {GOAL_MEM_PEER:g}x below "
        "pytorch-grad-cam",
    ]
    if args.quick:
        lines.append(
            "- --quick: GradCAM rows only (+ compare), batch 1, few rounds, memory of resnet18 only, AblationCAM at "
            f"3x{args.ablation_size}x{args.ablation_size}, no ScoreCAM: a smoke run, not the README figures"
        )
    return lines


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}" if value < 100 else f"{value:.1f}"


def table(result: Result, cases: Sequence[Case], absolute: bool) -> list[str]:
    labels = {c.label for c in cases}
    floors = [f for f in (FLOOR, FLOOR_FULL) if f in labels]
    cols = [
        "case",
        *(["median ms"] if absolute else []),
        "× plain forward",
        *[f"× {f}" for f in floors],
        "speed-up vs peer",
    ]
    shape = "x".join(map(str, result.input_shape))
    if result.section == "gradient":
        title = f"## {result.title}, {result.layer}, batch {result.batch}"
    else:
        what = result.section.split(": ", 1)[-1]
        title = f"## {result.title}, {result.layer}, {what}, batch {result.batch}, input {shape}"
    per_sample = "mean of" if absolute else "best of"
    lines = [
        title,
        "",
        f"{result.rounds} rounds, {per_sample} {result.inner} call(s) per sample",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "|".join([":---", *["---:"] * (len(cols) - 1)]) + "|",
    ]
    for case in cases:
        cells = [case.label + (" †" if case.label in result.slow else "")]
        if absolute:
            cells.append(f"{result.median(case.label):.2f}")
        cells.append(_fmt(result.ratio(case.label, PLAIN)))
        cells += [_fmt(result.ratio(case.label, f)) for f in floors]
        cells.append(f"{result.ratio(case.peer, case.label):.2f}×" if case.peer in labels else "")
        lines.append("| " + " | ".join(cells) + " |")
    if result.slow:
        counts = {len(result.timed(label)) for label in result.slow}
        lines += ["", f"† timed with 1 call in {'/'.join(map(str, sorted(counts)))} of the {result.rounds} rounds"]
    if result.errors:
        lines += ["", *[f"- not timed, {label}: {error}" for label, error in result.errors.items()]]
    found = verdicts(result, cases)
    if found:
        lines += ["", *[f"- {v.line()}" for v in found]]
    if FLOOR in labels and FLOOR_COPY in labels:
        q1, q3 = result.quartiles(FLOOR_COPY, FLOOR)
        lines.append(
            f"- control (no goal): the floor on a second model copy is {result.ratio(FLOOR_COPY, FLOOR):.3f}x the "
            f"floor (interquartile range {q1:.3f}-{q3:.3f}): two identical cases differ this much on this machine"
        )
    for case in _by_kind(cases, "scorecam-budget"):
        if case.peer in labels:
            q1, q3 = result.quartiles(str(case.peer), case.label)
            lines.append(
                f"- ScoreCAM channel budget (no goal here, see benchmarks/score_budget.py): {case.label} is "
                f"{result.ratio(str(case.peer), case.label):.2f}x faster than the full run (IQR {q1:.2f}-{q3:.2f})"
            )
    return lines


# -- memory ------------------------------------------------------------------------------------------
@dataclass
class MemoryTable:
    """Peak growth per case of one model and batch."""

    model: str
    title: str
    layer: str
    batch: int
    rows: list[Measured]
    cases: list[Case]

    def growth(self, label: str) -> float:
        found = [r for r in self.rows if r.label == label and r.growth is not None]
        return float(found[0].growth) if found and found[0].growth is not None else math.nan

    def ratio(self, label: str, reference: str) -> float:
        den = self.growth(reference)
        return self.growth(label) / den if den and den > 0 else math.nan


def memory_verdicts(t: MemoryTable) -> list[Verdict]:
    out: list[Verdict] = []
    lean = [c.label for c in t.cases if c.kind in ("lean", "gradient") and not math.isnan(t.growth(c.label))]
    if not lean:
        return out
    top = max(lean, key=t.growth)

    def add(goal: str, case: str, value: float, target: float, at_least: bool) -> None:
        out.append(Verdict(goal, case, value, value, value, 1, target, at_least, single=True))

    add("peak memory of a lean gradient CAM × floor (worst)", top, t.ratio(top, FLOOR), GOAL_MEM_FLOOR, False)
    for group, goal, target in (
        ("torchcam", "TorchCAM", GOAL_MEM_TORCHCAM),
        ("pytorch-grad-cam", "pytorch-grad-cam", GOAL_MEM_PEER),
    ):
        peers = [c.label for c in t.cases if c.group == group and not math.isnan(t.growth(c.label))]
        if peers:
            value = t.growth(peers[0]) / t.growth(top) if t.growth(top) > 0 else math.nan
            add(f"{goal} peak memory / camkit lean (worst)", top, value, target, True)
    return out


def memory_table(t: MemoryTable, device: torch.device) -> list[str]:
    unit = "peak CUDA memory growth (MiB)" if device.type == "cuda" else "peak RSS growth (MiB)"
    refs = [r for r in (FLOOR, PLAIN) if not math.isnan(t.growth(r))]
    lines = [
        f"## Memory: {t.title}, {t.layer}, batch {t.batch}",
        "",
        "one call per case (setup included), each case in its own process",
        "",
        "| " + " | ".join(["case", unit, *[f"× {r}" for r in refs]]) + " |",
        "|" + "|".join([":---", *["---:"] * (1 + len(refs))]) + "|",
    ]
    for row in t.rows:
        if row.growth is not None:
            cells = [row.label, f"{row.mib:.1f}", *[_fmt(t.ratio(row.label, r)) for r in refs]]
            lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- not measured, {r.label}: {r.error}" for r in t.rows if r.growth is None]
    if any(not r.reset for r in t.rows if r.growth is not None):
        notes.append("- the peak RSS could not be reset here: growth is over the warm-up's peak (an underestimate)")
    lines += ["", *notes] if notes else []
    found = memory_verdicts(t)
    lines += ["", *[f"- {v.line()}" for v in found]] if found else []
    return lines


def run_memory(spec: ModelSpec, batch: int, args: argparse.Namespace, device: torch.device) -> MemoryTable:
    cases = memory_cases(spec, args.memory_method)
    if args.quick:
        # the floor and the rows of the memory goals
        cases = [c for c in cases if c.label == FLOOR or c.kind in ("lean", "gradient") or c.group in PEERS]
    script = Path(__file__).resolve()
    rows = [
        measure(script, spec.name, c.label, batch, args.memory_method, device, args.threads, args.memory_timeout)
        for c in cases
    ]
    return MemoryTable(spec.name, spec.title or spec.name, spec.layer, batch, rows, cases)


# -- JSON --------------------------------------------------------------------------------------------
def to_json(
    runs: Sequence[tuple[Result, Sequence[Case]]],
    memory: Sequence[MemoryTable],
    device: torch.device,
    args: argparse.Namespace,
    seconds: float,
) -> Any:
    def case_json(r: Result, c: Case) -> dict[str, Any]:
        labels = r.samples.keys()
        entry: dict[str, Any] = {
            "group": c.group,
            "peer": c.peer,
            "median_ms": r.median(c.label),
            "x_plain_forward": r.ratio(c.label, PLAIN),
            "x_plain_forward_quartiles": r.quartiles(c.label, PLAIN),
        }
        for key, floor in (("x_floor", FLOOR), ("x_floor_full_graph", FLOOR_FULL)):
            if floor in labels:
                entry[key] = r.ratio(c.label, floor)
                entry[key + "_quartiles"] = r.quartiles(c.label, floor)
        if c.peer in labels:
            entry["speedup_vs_peer"] = r.ratio(str(c.peer), c.label)
            entry["speedup_vs_peer_quartiles"] = r.quartiles(str(c.peer), c.label)
        entry["slow"] = c.label in r.slow
        entry["samples_ms"] = r.samples[c.label]
        return entry

    return {
        "command": _command(),
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "versions": {m: _version(m) for m in VERSIONED},
        "threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "warmup": args.warmup,
        "inner": args.inner,
        "clock": "cuda events" if device.type == "cuda" else args.clock,
        "allocator": getattr(args, "allocator", "default"),
        "seconds": seconds,
        "load_average_end": _load(),
        "results": [
            {
                "section": r.section,
                "model": r.model,
                "layer": r.layer,
                "batch": r.batch,
                "input_shape": list(r.input_shape),
                "rounds": r.rounds,
                "inner": r.inner,
                "cases": {c.label: case_json(r, c) for c in cases},
                "errors": r.errors,
                "verdicts": [{**dataclasses.asdict(v), "status": v.status} for v in verdicts(r, cases)],
            }
            for r, cases in runs
        ],
        "memory": [
            {
                "model": t.model,
                "layer": t.layer,
                "batch": t.batch,
                "growth_mib": {r.label: (None if r.growth is None else r.mib) for r in t.rows},
                "errors": {r.label: r.error for r in t.rows if r.error},
                "verdicts": [{**dataclasses.asdict(v), "status": v.status} for v in memory_verdicts(t)],
            }
            for t in memory
        ],
    }


# -- entry point -----------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=None, help="default: all four")
    parser.add_argument("--model", choices=sorted(MODELS), default=None, help="one model (same as --models NAME)")
    parser.add_argument("--batch", type=int, nargs="+", default=None, help="batch sizes (default: 1 8; --quick 1)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 20, --quick 3)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up calls per case (default 3, --quick 1)")
    parser.add_argument(
        "--inner",
        type=int,
        default=None,
        help="calls per sample: CPU takes the best of them (default 3 if the plain forward is under 60 ms, "
        "else 1), GPU their mean (default 10)",
    )
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="CPU clock: wall time, or CPU time of the calling thread (use with --threads 1 on a busy host)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads and cv2.setNumThreads (default: torch's)"
    )
    parser.add_argument(
        "--slow-ms",
        type=float,
        default=2000.0,
        help="a case whose first two warm-up calls take longer is timed in fewer rounds (default 2000)",
    )
    parser.add_argument(
        "--slow-rounds", type=int, default=None, help="rounds that time a slow case (default 5, --quick 1)"
    )
    parser.add_argument(
        "--settle-ms",
        type=float,
        default=100.0,
        help="untimed pause after each pytorch-grad-cam sample, for its spinning BLAS/cv2 threads (default 100)",
    )
    parser.add_argument(
        "--malloc",
        choices=("pinned", "default"),
        default="pinned",
        help="pinned: fix glibc's mmap/trim thresholds in the timing process (see above); default: leave them",
    )
    parser.add_argument(
        "--perturbation-model",
        choices=sorted(MODELS),
        default="resnet18",
        help="model of the AblationCAM table (default resnet18: the goal is set there)",
    )
    parser.add_argument(
        "--ablation-rounds",
        type=int,
        default=None,
        help="rounds of the perturbation tables, 0 skips them (default 3, --quick 2)",
    )
    parser.add_argument(
        "--ablation-size",
        type=int,
        default=None,
        help="input height = width of the perturbation tables (default 224, --quick 112)",
    )
    parser.add_argument(
        "--ablation-batch-sizes",
        type=int,
        nargs="*",
        default=[64, 128],
        help="camkit AblationCAM batch_size values timed besides the default 32 (default: 64 128)",
    )
    parser.add_argument(
        "--score-cam",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="ScoreCAM tables (default: yes, --quick: no)",
    )
    parser.add_argument(
        "--score-models",
        nargs="+",
        choices=sorted(MODELS),
        default=["resnet18", "efficientnet_lite0"],
        help="models of the ScoreCAM tables (default: resnet18, random weights: every library forwards one masked "
        "input per channel; efficientnet_lite0, trained: most channels of bn2 are flat, camkit forwards none for them)",
    )
    parser.add_argument(
        "--score-budget", type=int, default=64, help="max_channels of the budgeted ScoreCAM row, 0: none (default 64)"
    )
    parser.add_argument(
        "--memory", action=argparse.BooleanOptionalAction, default=True, help="measure peak memory (default: yes)"
    )
    parser.add_argument(
        "--memory-models", nargs="+", choices=sorted(MODELS), default=None, help="default: the timed models"
    )
    parser.add_argument("--memory-batch", type=int, nargs="+", default=None, help="default: 8 (--quick: 8)")
    parser.add_argument("--memory-method", default="GradCAM", help="method of the memory table (default GradCAM)")
    parser.add_argument("--memory-timeout", type=float, default=600.0, help="seconds per memory case (default 600)")
    parser.add_argument("--quick", action="store_true", help="a smoke run in under two minutes (see the header)")
    parser.add_argument("--cpu", action="store_true", help="stay on CPU even when CUDA is available")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the raw numbers")
    args = parser.parse_args(argv)
    quick = args.quick
    args.models = [args.model] if args.model else args.models or list(MODELS)
    args.batch = args.batch or ([1] if quick else [1, 8])
    args.rounds = args.rounds or (3 if quick else 20)
    args.warmup = args.warmup if args.warmup is not None else (1 if quick else 3)
    args.slow_rounds = args.slow_rounds or (1 if quick else 5)
    args.ablation_rounds = args.ablation_rounds if args.ablation_rounds is not None else (2 if quick else 3)
    args.ablation_size = args.ablation_size or (112 if quick else 224)
    args.score_cam = (not quick) if args.score_cam is None else args.score_cam
    args.memory_models = args.memory_models or (["resnet18"] if quick else args.models)
    args.memory_batch = args.memory_batch or [8]
    if quick:
        args.ablation_batch_sizes = []
    if (
        args.rounds < 1
        or args.warmup < 0
        or (args.inner or 1) < 1
        or any(b < 1 for b in [*args.batch, *args.memory_batch, *args.ablation_batch_sizes])
        or args.slow_rounds < 1
        or args.ablation_rounds < 0
        or args.ablation_size < 32
        or args.settle_ms < 0
        or args.score_budget < 0
    ):
        parser.error(
            "--rounds, --inner, --batch, --memory-batch, --slow-rounds and --ablation-batch-sizes must be >= 1, "
            "--warmup, --ablation-rounds and --score-budget >= 0, --ablation-size >= 32, --settle-ms >= 0"
        )
    return args


class _DropFullGradLayerWarning(logging.Filter):
    """camkit's FullGrad front door warns on every call that ``target_layers`` is ignored (as the peer does once)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("FullGrad uses every layer with a bias")


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    if CHILD_FLAG in raw:
        return run_child(raw)
    started = time.perf_counter()
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
        with contextlib.suppress(ImportError):
            import cv2  # pytorch-grad-cam resizes with it

            cv2.setNumThreads(args.threads)
    logging.getLogger("camkit").addFilter(_DropFullGradLayerWarning())
    args.allocator = pin_malloc() if args.malloc == "pinned" else "default"
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    if device.type == "cuda":
        args.inner = args.inner or 10
    timer = CudaTimer() if device.type == "cuda" else Timer(CLOCKS[args.clock])
    absolute = device.type == "cuda"
    print("\n".join(header(device, args)), flush=True)
    common = {
        "timer": timer,
        "device": device,
        "slow_ms": args.slow_ms,
        "slow_rounds": args.slow_rounds,
        "settle_s": args.settle_ms / 1e3,
    }

    runs: list[tuple[Result, Sequence[Case]]] = []
    torchcam_methods = ("GradCAM",) if args.quick else TORCHCAM_METHODS
    gc_names = ("GradCAM",) if args.quick else GC_GRADIENT_METHODS
    for name in args.models:
        spec = MODELS[name]
        base = build_model(spec, device)
        cases = gradient_cases(spec, torchcam_methods, gc_names, eigen=not args.quick)
        missing = gc_methods(gc_names, spec)[1]
        for method in missing:
            why = spec.skip.get(method, "missing in a library")
            print(f"\n- {spec.name}: {method} not compared: {why}")
        for batch in args.batch:
            result, ran = run_batch(
                spec, base, batch, cases, rounds=args.rounds, warmup=args.warmup, inner=args.inner, **common
            )
            runs.append((result, ran))
            print("\n" + "\n".join(table(result, ran, absolute)), flush=True)
        del base
        gc.collect()

    perturbation: list[tuple[str, list[Case], str]] = []
    if args.ablation_rounds:
        perturbation.append((args.perturbation_model, perturbation_cases(args.ablation_batch_sizes), "AblationCAM"))
        if args.score_cam:
            for name in args.score_models:
                perturbation.append((name, score_cases(args.score_budget or None), "ScoreCAM"))
        notes = [
            f"perturbation tables: {args.ablation_rounds} interleaved rounds, 1 warm-up call per case, 1 call per "
            "sample" + ("" if device.type == "cpu" else " (CUDA events)") + f", input 3x{args.ablation_size}"
            f"x{args.ablation_size}, batch 1"
        ]
        if args.ablation_size != 224:
            notes.append("not at 224 px: the AblationCAM verdict is only indicative (its goal is at 224)")
        if not args.score_cam:
            notes.append("ScoreCAM skipped (--no-score-cam, the default with --quick)")
        print("\n" + "\n".join(f"- {n}" for n in notes), flush=True)
    for name, pcases, what in perturbation:
        spec = MODELS[name]
        size = args.ablation_size
        small = dataclasses.replace(spec, input_shape=(spec.input_shape[0], size, size))
        result, ran = run_batch(
            small,
            build_model(spec, device),
            1,
            pcases,
            rounds=args.ablation_rounds,
            warmup=1,
            inner=args.inner if device.type == "cuda" else 1,
            section=f"perturbation: {what}",
            **common,
        )
        runs.append((result, ran))
        print("\n" + "\n".join(table(result, ran, absolute)), flush=True)

    memory: list[MemoryTable] = []
    if args.memory:
        for name in args.memory_models:
            for batch in args.memory_batch:
                found = run_memory(MODELS[name], batch, args, device)
                memory.append(found)
                print("\n" + "\n".join(memory_table(found, device)), flush=True)

    seconds = time.perf_counter() - started
    print(f"\n{load_note(device, args.clock)}; total {seconds:.0f} s", flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(to_json(runs, memory, device, args, seconds), indent=2) + "\n")
        print(f"\nraw numbers written to {args.json}")
    return 0


def load_note(device: torch.device, clock: str) -> str:
    """The load average at the end: more runnable processes than cores means the timings were shared."""
    try:
        load = os.getloadavg()
    except OSError:
        return "load average: n/a"
    cores = os.cpu_count() or 1
    note = f"load average (1/5/15 min) at the end: {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f} on {cores} cores"
    busy = load[0] > cores + 0.5  # the benchmark itself keeps up to `threads` runnable
    if device.type == "cpu" and busy and clock == "thread" and torch.get_num_threads() == 1:
        note += "; other processes competed for the CPU, which the single-thread CPU-time clock ignores"
    elif device.type == "cpu" and busy:
        note += (
            "; other processes competed for the CPU, so the ratios are noisy: rerun on an idle machine, "
            "or with --threads 1 --clock thread"
        )
    return note


if __name__ == "__main__":
    sys.exit(main())
