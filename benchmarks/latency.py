"""Latency of camkit's CAM methods against a plain forward, the floor, TorchCAM and pytorch-grad-cam.

Everything is timed in ONE process and in alternation (interleaved repetitions: every round times
each case once, in a new seeded random order, so no case always follows the same one), in two
sections.

**Gradient section**, for every batch size (``--batch``, default 1 and 8):

* ``forward (inference_mode)``: ``model(x)`` under :func:`torch.inference_mode` (for scale);
* ``plain forward``: ``model(x)`` in grad mode, the reference of the first ratio column;
* ``floor``: one grad-mode forward with a hook keeping the target layer's output, then
  ``torch.autograd.grad(score, output)`` with ``score = logits[rows, c].sum()``: the minimum any
  gradient CAM must do (the backward stops at the target layer);
* TorchCAM-style rows, camkit (``camkit.methods``) and TorchCAM 0.5.0 (``torchcam.methods``):
  ``scores = model(x); cams = extractor(class_idx, scores)`` (maps at the layer's size, tensors);
* pytorch-grad-cam-style rows, camkit's front door (``camkit.compat.gradcam``) and
  pytorch-grad-cam 1.5.7 (``pytorch_grad_cam``), through each library's own API:
  ``cam = Method(model=m, target_layers=[m.layer4[-1]])`` created once outside the timed region,
  then ``cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in classes])``. Both run
  their own forward and return numpy ``(N, H, W)`` maps at the input size, so they do the same
  work. Methods: GradCAM, GradCAMPlusPlus, XGradCAM, LayerCAM, HiResCAM, GradCAMElementWise,
  EigenGradCAM, ShapleyCAM, FullGrad (those camkit's front door has, see
  ``camkit.compat.gradcam.available()``), and gradient-free EigenCAM.

**Perturbation section** (batch 1, ``--ablation-rounds`` rounds, default 3, one call per sample):
AblationCAM on the target layer, camkit's front door with ``batch_size`` 32 (its default) and
``--ablation-batch-sizes`` more, against pytorch-grad-cam's (default ``batch_size`` 32; it re-runs
the whole network for each batch of ablated channels); ScoreCAM, camkit (``batch_size`` 32)
against pytorch-grad-cam (16 masked inputs per forward, fixed), unless ``--no-score-cam``.

Each case runs on its own deep copy of the model (same weights), so the hooks of one library
never sit on a model another case runs (pytorch-grad-cam also calls ``model.eval()`` and fills
``.grad`` through ``backward()`` on its copy). pytorch-grad-cam's progress bars are switched off
(``TQDM_DISABLE=1``); ``--threads`` also sets OpenCV's thread count (it resizes with cv2).
pytorch-grad-cam's numpy work (OpenBLAS SVD, cv2) leaves worker threads spinning for about 0.1 s
after a call, which slowed whatever ran next by up to 30% on 2 cores (measured: a batch-8
forward right after its EigenGradCAM took 1.3x as long); so the script sleeps ``--settle-ms``
(default 100, untimed) after each pytorch-grad-cam sample, and the next case starts on a quiet CPU.

A CPU sample is the best of ``--inner`` calls (default: 3 when the batch's plain forward takes
under 60 ms, else 1; the same for every case of a table) on the wall clock, or with ``--clock
thread`` the CPU time of the calling thread, which ignores preemption by other processes: use it
with ``--threads 1`` on a shared machine (it does not count the time of pytorch-grad-cam's
OpenBLAS and cv2 worker threads, so the speed-ups it gives are on the low side). A case whose
first two warm-up calls both exceed ``--slow-ms`` (e.g. pytorch-grad-cam's FullGrad at batch 8)
is timed with one call in only ``--slow-rounds`` rounds spread over the run (marked †); its
ratios pair it with the other cases of those rounds.

On CPU only ratios are printed (absolute times drift too much to mean anything): a ratio is the
median over rounds of ``t_case / t_reference`` measured in the same round, with its interquartile
range (IQR); "speed-up vs peer" is the median of ``t_peer / t_camkit``. A verdict is INCONCLUSIVE
when the IQR straddles the goal or fewer than 3 rounds paired the two cases, NOT JUDGED when
measured off the goal's setting (``--quick``'s smaller ablation input). On a GPU the absolute
medians (CUDA events) are printed too, with the device name. ``--json PATH`` writes the raw
medians and samples.

Goals (issue):

* camkit's gradient methods (TorchCAM-style) <= 1.10x the floor;
* every gradient method of camkit's pytorch-grad-cam-style front door >= 2x faster than
  pytorch-grad-cam's;
* camkit's EigenCAM (front door) <= 1.2x a plain (grad-mode) forward;
* camkit's AblationCAM on resnet18/layer4 (front door, default ``batch_size``, batch 1,
  3x224x224) >= 50x faster than pytorch-grad-cam's.

Usage::

    python benchmarks/latency.py                 # resnet18/layer4, batch 1 and 8; about 9 min on 2 cores
    python benchmarks/latency.py --quick         # about 2 min: fewer rounds, ablation at 3x112x112, no ScoreCAM
    python benchmarks/latency.py --rounds 40 --json out/latency.json
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
from torch import Tensor, nn

GOAL = 1.10  # camkit gradient methods must stay within this factor of the floor
GOAL_SPEEDUP = 2.0  # every gradient method of the front door at least this much faster than pytorch-grad-cam's
GOAL_EIGEN = 1.2  # camkit's EigenCAM within this factor of a plain forward
GOAL_ABLATION = 50.0  # camkit's AblationCAM at least this much faster than pytorch-grad-cam's
PLAIN = "plain forward"
FLOOR = "floor"
INFERENCE = "forward (inference_mode)"

Call = Callable[[], object]


# -- what is benchmarked ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSpec:
    """A model to benchmark and the layer the CAMs explain.

    ``layer`` is what the TorchCAM-style extractors and the floor hook (a dotted name);
    ``gradcam_layer`` the module pytorch-grad-cam's convention passes in ``target_layers=[...]``
    (``model.layer4[-1]``: the last block, whose output is ``layer4``'s).
    """

    name: str
    build: Callable[[], nn.Module]
    layer: str
    gradcam_layer: str
    input_shape: tuple[int, ...] = (3, 224, 224)
    num_classes: int = 1000


def _resnet18() -> nn.Module:
    from torchvision.models import resnet18  # type: ignore[import-untyped]

    model: nn.Module = resnet18(weights=None)
    return model


MODELS: dict[str, ModelSpec] = {
    "resnet18": ModelSpec("resnet18", _resnet18, "layer4", "layer4.1"),
}


@dataclass(frozen=True)
class Library:
    """A CAM library with a TorchCAM-style API: ``Method(model, layer)`` then ``ex(class_idx, scores)``."""

    name: str
    module: str
    methods: tuple[str, ...]


@dataclass(frozen=True)
class GradCamLibrary:
    """A CAM library with pytorch-grad-cam's API: ``Method(model=, target_layers=)``, ``cam(input_tensor=)``."""

    name: str
    module: str
    targets_module: str  # where its ClassifierOutputTarget lives


GRADIENT_METHODS = ("GradCAM", "GradCAMpp", "XGradCAM", "LayerCAM")
OURS = "camkit"  # camkit's TorchCAM-style rows (the floor goal)
OURS_GC = "camkit (grad-cam-style)"  # camkit's pytorch-grad-cam-style front door
REFERENCE = "reference"
LIBRARIES: tuple[Library, ...] = (
    Library(OURS, "camkit.methods", GRADIENT_METHODS),
    Library("torchcam", "torchcam.methods", GRADIENT_METHODS),
)
CAMKIT_GC = GradCamLibrary(OURS_GC, "camkit.compat.gradcam", "camkit.compat.gradcam.utils.model_targets")
PEER_GC = GradCamLibrary("pytorch-grad-cam", "pytorch_grad_cam", "pytorch_grad_cam.utils.model_targets")
#: pytorch-grad-cam's gradient methods compared with camkit's front door (if it has them).
GC_GRADIENT_METHODS = (
    "GradCAM",
    "GradCAMPlusPlus",
    "XGradCAM",
    "LayerCAM",
    "HiResCAM",
    "GradCAMElementWise",
    "EigenGradCAM",
    "ShapleyCAM",
    "FullGrad",
)
EIGEN = "EigenCAM"


@dataclass
class Env:
    """What a case's setup may use: the input, the classes to explain and the target layer."""

    spec: ModelSpec
    x: Tensor
    class_idx: list[int]

    @property
    def rows(self) -> Tensor:
        """The class indices as a ``(B, 1)`` index tensor on the input's device."""
        return torch.tensor(self.class_idx, device=self.x.device).view(-1, 1)


# A setup gets its own copy of the model and returns the call to time (extractors created here).
Setup = Callable[[nn.Module, Env], Call]


@dataclass(frozen=True)
class Case:
    """One timed row: a label, the group it belongs to, and its setup.

    ``peer`` is the label of the case it is compared with (speed-up = t_peer / t_case), ``kind``
    which goal it counts for ("gradient", "eigencam", "ablation" or "" for none).
    """

    label: str
    group: str
    setup: Setup
    peer: str | None = None
    kind: str = ""
    settle: bool = False  # its library leaves worker threads spinning: pause after its samples


def _inference_forward(model: nn.Module, env: Env) -> Call:
    def call() -> object:
        with torch.inference_mode():
            return model(env.x)

    return call


def _plain_forward(model: nn.Module, env: Env) -> Call:
    def call() -> object:
        return model(env.x)

    return call


def _floor(model: nn.Module, env: Env) -> Call:
    kept: list[Tensor] = []
    layer = dict(model.named_modules())[env.spec.layer]
    layer.register_forward_hook(lambda _m, _i, out: kept.append(out))  # stays for the model copy's life
    rows = env.rows

    def call() -> object:
        kept.clear()
        score = model(env.x).gather(1, rows).sum()
        return torch.autograd.grad(score, kept[0])

    return call


def _extractor_case(library: Library, method: str) -> Setup:
    def setup(model: nn.Module, env: Env) -> Call:
        cls = getattr(importlib.import_module(library.module), method)
        extractor = cls(model, env.spec.layer)  # hooks stay on this model copy until the process ends

        def call() -> object:
            scores = model(env.x)
            return extractor(env.class_idx, scores)

        return call

    return setup


def _gradcam_case(library: GradCamLibrary, method: str, **options: Any) -> Setup:
    def setup(model: nn.Module, env: Env) -> Call:
        cls = getattr(importlib.import_module(library.module), method)
        target = importlib.import_module(library.targets_module).ClassifierOutputTarget
        layer = dict(model.named_modules())[env.spec.gradcam_layer]
        with contextlib.redirect_stdout(io.StringIO()):  # pytorch-grad-cam's FullGrad prints a warning here
            cam = cls(model=model, target_layers=[layer], **options)  # its hooks stay on this model copy

        def call() -> object:
            return cam(input_tensor=env.x, targets=[target(c) for c in env.class_idx])

        return call

    return setup


def _has(module: str, name: str) -> bool:
    try:
        return hasattr(importlib.import_module(module), name)
    except (ImportError, NotImplementedError):
        return False


def _gc_methods(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """The methods of ``names`` both pytorch-grad-cam-style libraries have, and the missing ones."""
    from camkit.compat.gradcam import available

    ours = set(available())
    have = [m for m in names if m in ours and _has(PEER_GC.module, m)]
    return have, [m for m in names if m not in have]


def _pair(method: str, kind: str, **options: Any) -> list[Case]:
    mine = f"camkit {method} (grad-cam-style)"
    theirs = f"pytorch-grad-cam {method}"
    return [
        Case(mine, OURS_GC, _gradcam_case(CAMKIT_GC, method, **options), peer=theirs, kind=kind),
        Case(theirs, PEER_GC.name, _gradcam_case(PEER_GC, method, **options), settle=True),
    ]


def default_cases(libraries: Sequence[Library] = LIBRARIES) -> list[Case]:
    """The reference rows, every TorchCAM-style method, then the pytorch-grad-cam-style pairs."""
    cases = [
        Case(INFERENCE, REFERENCE, _inference_forward),
        Case(PLAIN, REFERENCE, _plain_forward),
        Case(FLOOR, REFERENCE, _floor),
    ]
    ours, *peers = libraries
    for m in ours.methods:
        peer = next((lib for lib in peers if m in lib.methods), None)
        cases.append(
            Case(
                f"{ours.name} {m} (torchcam-style)",
                ours.name,
                _extractor_case(ours, m),
                peer=f"{peer.name} {m}" if peer else None,
            )
        )
        if peer is not None:
            cases.append(Case(f"{peer.name} {m}", peer.name, _extractor_case(peer, m)))
    methods, _ = _gc_methods(GC_GRADIENT_METHODS)
    for m in methods:
        cases += _pair(m, "gradient")
    if _gc_methods([EIGEN])[0]:
        cases += _pair(EIGEN, "eigencam")
    return cases


def perturbation_cases(batch_sizes: Sequence[int], score_cam: bool) -> list[Case]:
    """The references, AblationCAM (camkit at several ``batch_size``, the peer at 32) and ScoreCAM."""
    cases = [Case(INFERENCE, REFERENCE, _inference_forward), Case(PLAIN, REFERENCE, _plain_forward)]
    peer_ablation = "pytorch-grad-cam AblationCAM (batch_size 32)"
    if _gc_methods(["AblationCAM"])[0]:
        for bs in dict.fromkeys([32, *batch_sizes]):  # 32 = both libraries' default, first
            cases.append(
                Case(
                    f"camkit AblationCAM (grad-cam-style, batch_size {bs})",
                    OURS_GC,
                    _gradcam_case(CAMKIT_GC, "AblationCAM", batch_size=bs),
                    peer=peer_ablation,
                    kind="ablation" if bs == 32 else "ablation-variant",
                )
            )
        cases.append(
            Case(peer_ablation, PEER_GC.name, _gradcam_case(PEER_GC, "AblationCAM", batch_size=32), settle=True)
        )
    if score_cam and _gc_methods(["ScoreCAM"])[0]:
        peer_score = "pytorch-grad-cam ScoreCAM (16 per forward, fixed)"
        cases += [
            Case(
                "camkit ScoreCAM (grad-cam-style, batch_size 32)",
                OURS_GC,
                _gradcam_case(CAMKIT_GC, "ScoreCAM"),
                peer=peer_score,
                kind="scorecam",
            ),
            Case(peer_score, PEER_GC.name, _gradcam_case(PEER_GC, "ScoreCAM"), settle=True),
        ]
    return cases


# -- timing ----------------------------------------------------------------------------------------
class Timer:
    """CPU timer: the best of ``inner`` individually timed calls, in milliseconds.

    The best of a few calls shrugs off a preemption by another process; ``clock`` is
    :func:`time.perf_counter_ns` (wall) or :func:`time.thread_time_ns` (CPU time of the calling
    thread, which ignores time spent descheduled; meaningful with ``--threads 1``, where the
    forward and the CPU autograd backward both run on the calling thread).
    """

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


@dataclass
class Result:
    """Per-case samples (ms) of one model/batch, in round order (``None``: not timed that round)."""

    section: str
    model: str
    layer: str
    batch: int
    input_shape: tuple[int, ...]
    inner: int
    rounds: int
    samples: dict[str, list[float | None]] = field(default_factory=dict)
    slow: set[str] = field(default_factory=set)

    def timed(self, label: str) -> list[float]:
        return [t for t in self.samples[label] if t is not None]

    def median(self, label: str) -> float:
        return statistics.median(self.timed(label))

    def ratios(self, label: str, reference: str) -> list[float]:
        """``t_label / t_reference`` of every round where both were timed."""
        pairs = zip(self.samples[label], self.samples[reference], strict=True)
        return [t / ref for t, ref in pairs if t is not None and ref is not None]

    def ratio(self, label: str, reference: str) -> float:
        """Median over rounds of the paired ratio."""
        return statistics.median(self.ratios(label, reference))

    def quartiles(self, label: str, reference: str) -> tuple[float, float]:
        """First and third quartiles of the paired ratio (its spread tells the noise)."""
        values = self.ratios(label, reference)
        if len(values) < 2:
            return values[0], values[0]
        q1, _, q3 = statistics.quantiles(values, n=4)
        return q1, q3


def _spread(count: int, rounds: int) -> set[int]:
    """``count`` round indices spread evenly over ``rounds`` (all of them when ``count >= rounds``)."""
    count = max(1, min(count, rounds))
    return {math.floor((i + 0.5) * rounds / count) for i in range(count)}


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
) -> Result:
    """Time every case on its own copy of ``base``, interleaved over ``rounds`` rounds.

    ``inner=None`` picks 3 calls per sample when the plain forward's fastest of 3 calls (after the
    warm-up) is under 60 ms, else 1 (same for every case). A case whose first two warm-up calls
    both exceed ``slow_ms`` (a second one is made even when ``warmup`` is 1) gets no further
    warm-up and is timed with one call in ``slow_rounds`` of the rounds. After a call or sample of
    a case marked ``settle`` the run sleeps ``settle_s`` seconds (untimed).
    """
    gen = torch.Generator().manual_seed(batch)
    x = torch.rand((batch, *spec.input_shape), generator=gen).to(device)
    classes = torch.randint(spec.num_classes, (batch,), generator=gen).tolist()
    env = Env(spec, x, classes)
    calls = [case.setup(copy.deepcopy(base), env) for case in cases]

    def wall_ms(call: Call) -> float:
        timer.sync()
        start = time.perf_counter()
        call()
        timer.sync()
        return (time.perf_counter() - start) * 1e3

    warm_ms: dict[str, list[float]] = {}
    for case, call in zip(cases, calls, strict=True):
        times = warm_ms.setdefault(case.label, [])
        for _ in range(warmup):
            times.append(wall_ms(call))
            if case.settle:
                time.sleep(settle_s)
            if min(times) > slow_ms and len(times) >= 2:
                break  # slow twice (a first call can be slow for one-off reasons): no more warm-up
        if warmup and len(times) == 1 and times[0] > slow_ms:
            times.append(wall_ms(call))  # a second call before calling a case slow
            if case.settle:
                time.sleep(settle_s)
    slow = {label for label, times in warm_ms.items() if times and min(times) > slow_ms}
    if inner is None:
        labels = [c.label for c in cases]
        fastest = min(wall_ms(calls[labels.index(PLAIN)]) for _ in range(3)) if PLAIN in labels else 0.0
        inner = 3 if fastest < 60.0 else 1
    slow_picks = _spread(slow_rounds, rounds)
    result = Result(section, spec.name, spec.layer, batch, spec.input_shape, inner, rounds)
    result.slow = slow
    samples: list[list[float | None]] = [[None] * rounds for _ in cases]
    rng = random.Random(f"{section}/{batch}")
    for r in range(rounds):
        gc.collect()
        gc.disable()
        try:
            for i in rng.sample(range(len(cases)), len(cases)):  # a new order every round
                label = cases[i].label
                if label in slow and r not in slow_picks:
                    continue
                samples[i][r] = timer.measure(calls[i], 1 if label in slow else inner)
                if cases[i].settle:
                    time.sleep(settle_s)
        finally:
            gc.enable()
    result.samples = {case.label: samples[i] for i, case in enumerate(cases)}
    del calls
    gc.collect()
    return result


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

    @property
    def status(self) -> str:
        """PASS, FAIL or INCONCLUSIVE; NOT JUDGED when measured off the goal's setting."""
        return self._outcome() if self.judged else "NOT JUDGED"

    def _outcome(self) -> str:
        if self.samples < MIN_SAMPLES:
            return "INCONCLUSIVE"
        if self.q1 < self.target < self.q3 or (self.q1 != self.q3 and self.target in (self.q1, self.q3)):
            return "INCONCLUSIVE"
        ok = self.value >= self.target if self.at_least else self.value <= self.target
        return "PASS" if ok else "FAIL"

    def line(self) -> str:
        status = self._outcome()
        if status == "INCONCLUSIVE" and self.samples < MIN_SAMPLES:
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
        text = (
            f"{self.goal}: {self.case} at {self.value:.3f}x (interquartile range {self.q1:.3f}-{self.q3:.3f}, "
            f"{self.samples} rounds), goal {sign} {self.target:g}x: {status}"
        )
        return text + (f"; {self.note}" if self.note else "")


def verdicts(result: Result, cases: Sequence[Case]) -> list[Verdict]:
    """The goals a table decides: floor, speed-up of the gradient methods, EigenCAM, AblationCAM."""

    def check(goal: str, case: str, num: str, den: str, target: float, at_least: bool, note: str = "") -> Verdict:
        value, (q1, q3) = result.ratio(num, den), result.quartiles(num, den)
        return Verdict(goal, case, value, q1, q3, len(result.ratios(num, den)), target, at_least, note)

    out: list[Verdict] = []
    labels = {c.label for c in cases}
    ours = [c.label for c in cases if c.group == OURS]
    if ours and FLOOR in labels:
        worst = max(ours, key=lambda label: result.ratio(label, FLOOR))
        out.append(check("worst camkit method (torchcam-style) × floor", worst, worst, FLOOR, GOAL, False))
    gradient = [c for c in cases if c.kind == "gradient" and c.peer]
    if gradient:
        low = min(gradient, key=lambda c: result.ratio(str(c.peer), c.label))
        goal = "smallest speed-up vs pytorch-grad-cam (gradient methods)"
        out.append(check(goal, low.label, str(low.peer), low.label, GOAL_SPEEDUP, True))
    for case in cases:
        if case.kind == "eigencam":
            note = (
                f"{result.ratio(case.label, INFERENCE):.3f}x the forward under inference_mode (camkit's front door "
                "runs gradient-free methods without autograd); the verdict uses the grad-mode plain forward, "
                "as the issue says 'a plain forward'"
            )
            out.append(check("EigenCAM × plain forward", case.label, case.label, PLAIN, GOAL_EIGEN, False, note))
        if case.kind == "ablation" and case.peer:
            variants = [c for c in cases if c.kind == "ablation-variant" and c.peer]
            note = ", ".join(
                f"{c.label.rsplit(', ', 1)[-1].rstrip(')')}: {result.ratio(str(c.peer), c.label):.1f}x"
                for c in variants
            )
            judged = result.input_shape == (3, 224, 224)
            if not judged:
                shape = "x".join(map(str, result.input_shape))
                note += ("; " if note else "") + f"measured at {shape}: indicative only (the goal is at 3x224x224)"
            goal = "AblationCAM speed-up vs pytorch-grad-cam"
            verdict = check(goal, case.label, case.peer, case.label, GOAL_ABLATION, True, note)
            out.append(dataclasses.replace(verdict, judged=judged))
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
    exe = sys.executable
    rel = os.path.relpath(exe)
    shown = rel if not rel.startswith("..") else exe
    return shlex.join([shown, *sys.argv])


def _load() -> str:
    try:
        load = os.getloadavg()
    except OSError:
        return "n/a"
    return f"{load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}"


def header(device: torch.device, args: argparse.Namespace) -> list[str]:
    where = (
        f"GPU {torch.cuda.get_device_name(device)}"
        if device.type == "cuda"
        else f"CPU {_cpu_model()} ({os.cpu_count()} logical cores)"
    )
    if device.type == "cuda":
        per_sample = f"mean of {args.inner or 10} calls per sample (CUDA events)"
    else:
        inner = f"best of {args.inner}" if args.inner else "best of 3 (plain forward < 60 ms) or 1"
        per_sample = f"{inner} calls per sample ({args.clock} clock)"
    lines = [
        "# camkit latency benchmark",
        "",
        f"- command: `{_command()}`",
        f"- device: {where}; torch threads: {torch.get_num_threads()}; load average at the start: {_load()}",
        f"- python {platform.python_version()}, torch {torch.__version__}, "
        + ", ".join(f"{m} {_version(m)}" for m in ("torchvision", "camkit", "torchcam", "pytorch_grad_cam")),
        f"- gradient section: {args.rounds} interleaved rounds after {args.warmup} warm-up call(s) per case, "
        f"{per_sample}; a case slower than {args.slow_ms:g} ms per call (†) is timed with 1 call in "
        f"{args.slow_rounds} of the rounds; {args.settle_ms:g} ms untimed pause after each pytorch-grad-cam "
        "sample (its BLAS/cv2 threads spin after a call)",
        "- ratio = median over rounds of t_case / t_reference within the same round; speed-up vs peer = median "
        "of t_peer / t_camkit (peer: TorchCAM's method for a torchcam-style row, pytorch-grad-cam's class for "
        "a grad-cam-style row); grad-cam-style rows include the forward, the upsampling to the input size "
        "and the numpy conversion, in both libraries",
        f"- goals: camkit gradient methods (torchcam-style) <= {GOAL:.2f}x the floor; every gradient method "
        f">= {GOAL_SPEEDUP:g}x faster than pytorch-grad-cam's; EigenCAM <= {GOAL_EIGEN:g}x a plain forward; "
        f"AblationCAM (resnet18/layer4) >= {GOAL_ABLATION:g}x faster than pytorch-grad-cam's",
    ]
    if args.missing:
        lines.append(f"- not in camkit's pytorch-grad-cam-style front door (skipped): {', '.join(args.missing)}")
    return lines


def _fmt(value: float) -> str:
    return f"{value:.3f}" if value < 100 else f"{value:.1f}"


def table(result: Result, cases: Sequence[Case], absolute: bool) -> list[str]:
    labels = {c.label for c in cases}
    has_floor = FLOOR in labels
    cols = [
        "case",
        *(["median ms"] if absolute else []),
        "× plain forward",
        *(["× floor"] if has_floor else []),
        "speed-up vs peer",
    ]
    shape = "x".join(map(str, result.input_shape))
    if result.section == "gradient":
        title = f"## {result.model}/{result.layer}, batch {result.batch}"
    else:
        title = f"## {result.model}/{result.layer}, perturbation methods, batch {result.batch}, input {shape}"
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
        mark = " †" if case.label in result.slow else ""
        cells = [case.label + mark]
        if absolute:
            cells.append(f"{result.median(case.label):.2f}")
        cells.append(_fmt(result.ratio(case.label, PLAIN)))
        if has_floor:
            cells.append(_fmt(result.ratio(case.label, FLOOR)))
        cells.append(f"{result.ratio(case.peer, case.label):.2f}×" if case.peer else "")
        lines.append("| " + " | ".join(cells) + " |")
    if result.slow:
        counts = {len(result.timed(label)) for label in result.slow}
        lines += ["", f"† timed with 1 call in {'/'.join(map(str, sorted(counts)))} of the {result.rounds} rounds"]
    found = verdicts(result, cases)
    if found:
        lines.append("")
        lines += [v.line() for v in found]
    for case in cases:
        if case.kind == "scorecam" and case.peer:
            q1, q3 = result.quartiles(case.peer, case.label)
            lines.append(
                f"ScoreCAM speed-up vs pytorch-grad-cam (no goal): {result.ratio(case.peer, case.label):.2f}x "
                f"(interquartile range {q1:.2f}-{q3:.2f})"
            )
    return lines


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


def to_json(
    runs: Sequence[tuple[Result, Sequence[Case]]], device: torch.device, args: argparse.Namespace, seconds: float
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
        if FLOOR in labels:
            entry["x_floor"] = r.ratio(c.label, FLOOR)
            entry["x_floor_quartiles"] = r.quartiles(c.label, FLOOR)
        if c.peer:
            entry["speedup_vs_peer"] = r.ratio(c.peer, c.label)
            entry["speedup_vs_peer_quartiles"] = r.quartiles(c.peer, c.label)
        entry["slow"] = c.label in r.slow
        entry["samples_ms"] = r.samples[c.label]
        return entry

    return {
        "command": _command(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_model(),
        "device_type": device.type,
        "torch": torch.__version__,
        "versions": {m: _version(m) for m in ("torchvision", "camkit", "torchcam", "pytorch_grad_cam")},
        "threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "warmup": args.warmup,
        "inner": args.inner,
        "clock": "cuda events" if device.type == "cuda" else args.clock,
        "goals": {
            "x_floor_max": GOAL,
            "speedup_vs_pytorch_grad_cam_min": GOAL_SPEEDUP,
            "eigencam_x_plain_forward_max": GOAL_EIGEN,
            "ablationcam_speedup_min": GOAL_ABLATION,
        },
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
                "verdicts": [{**dataclasses.asdict(v), "status": v.status} for v in verdicts(r, cases)],
            }
            for r, cases in runs
        ],
    }


# -- entry point -----------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="resnet18")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes (default: 1 8)")
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
        "--ablation-rounds",
        type=int,
        default=None,
        help="rounds of the perturbation section, 0 skips it (default 3)",
    )
    parser.add_argument(
        "--ablation-size",
        type=int,
        default=None,
        help="input height = width of the perturbation section (default 224, --quick 112)",
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
        help="time ScoreCAM in the perturbation section (default: yes, --quick: no)",
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds, smaller ablation input: about 2 min")
    parser.add_argument("--cpu", action="store_true", help="stay on CPU even when CUDA is available")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the raw medians")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (3 if args.quick else 20)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    args.slow_rounds = args.slow_rounds or (1 if args.quick else 5)
    if args.ablation_rounds is None:
        args.ablation_rounds = 3
    args.ablation_size = args.ablation_size or (112 if args.quick else 224)
    if args.score_cam is None:
        args.score_cam = not args.quick
    if (
        args.rounds < 1
        or args.warmup < 0
        or (args.inner or 1) < 1
        or any(b < 1 for b in args.batch)
        or args.slow_rounds < 1
        or args.ablation_rounds < 0
        or args.ablation_size < 32
        or args.settle_ms < 0
        or any(b < 1 for b in args.ablation_batch_sizes)
    ):
        parser.error(
            "--rounds, --inner, --batch, --slow-rounds and --ablation-batch-sizes must be >= 1, --warmup and "
            "--ablation-rounds >= 0, --ablation-size >= 32, --settle-ms >= 0"
        )
    return args


class _DropFullGradLayerWarning(logging.Filter):
    """camkit's FullGrad front door warns on every call that ``target_layers`` is ignored (as the peer does once)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("FullGrad uses every layer with a bias")


def main(argv: Sequence[str] | None = None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
        with contextlib.suppress(ImportError):
            import cv2  # type: ignore[import-not-found]  # pytorch-grad-cam resizes with it

            cv2.setNumThreads(args.threads)
    logging.getLogger("camkit").addFilter(_DropFullGradLayerWarning())
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    if device.type == "cuda":
        args.inner = args.inner or 10
    timer = CudaTimer() if device.type == "cuda" else Timer(CLOCKS[args.clock])
    spec = MODELS[args.model]
    torch.manual_seed(0)
    base = spec.build().eval().to(device)
    cases = default_cases()
    args.missing = _gc_methods(GC_GRADIENT_METHODS)[1] + _gc_methods([EIGEN, "AblationCAM", "ScoreCAM"])[1]

    print("\n".join(header(device, args)), flush=True)
    runs: list[tuple[Result, Sequence[Case]]] = []
    for batch in args.batch:
        result = run_batch(
            spec,
            base,
            batch,
            cases,
            rounds=args.rounds,
            warmup=args.warmup,
            inner=args.inner,
            timer=timer,
            device=device,
            slow_ms=args.slow_ms,
            slow_rounds=args.slow_rounds,
            settle_s=args.settle_ms / 1e3,
        )
        runs.append((result, cases))
        print("\n" + "\n".join(table(result, cases, absolute=device.type == "cuda")), flush=True)

    if args.ablation_rounds:
        small = dataclasses.replace(spec, input_shape=(spec.input_shape[0], args.ablation_size, args.ablation_size))
        pcases = perturbation_cases(args.ablation_batch_sizes, args.score_cam)
        notes = [
            f"perturbation section: {args.ablation_rounds} interleaved rounds, 1 warm-up call per case, 1 call per "
            "sample" + ("" if device.type == "cpu" else " (CUDA events)")
        ]
        if args.quick:
            notes.append(
                f"--quick: input 3x{args.ablation_size}x{args.ablation_size} and {args.ablation_rounds} rounds; "
                "the AblationCAM verdict is only indicative there (the goal is judged at 3x224x224 by the default run)"
            )
        if not args.score_cam:
            notes.append("ScoreCAM skipped (--no-score-cam, the default with --quick)")
        print("\n" + "\n".join(f"- {n}" for n in notes), flush=True)
        result = run_batch(
            small,
            base,
            1,
            pcases,
            rounds=args.ablation_rounds,
            warmup=1,
            inner=args.inner if device.type == "cuda" else 1,
            timer=timer,
            device=device,
            section="perturbation",
            settle_s=args.settle_ms / 1e3,
        )
        runs.append((result, pcases))
        print("\n" + "\n".join(table(result, pcases, absolute=device.type == "cuda")), flush=True)

    seconds = time.perf_counter() - started
    print(f"\n{load_note(device, args.clock)}; total {seconds:.0f} s", flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(to_json(runs, device, args, seconds), indent=2) + "\n")
        print(f"\nraw medians written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
