"""Latency of camkit's gradient CAM methods against a plain forward, the floor and TorchCAM.

For every model and batch size this script times, in ONE process and in alternation (round-robin
interleaved repetitions, the case order rotated every round), these cases:

* ``forward (inference_mode)``: ``model(x)`` under :func:`torch.inference_mode` (for scale);
* ``plain forward``: ``model(x)`` in grad mode, the reference of the first ratio column;
* ``floor``: one grad-mode forward with a hook keeping the target layer's output, then
  ``torch.autograd.grad(score, output)`` with ``score = logits[rows, c].sum()``: the minimum any
  gradient CAM must do (the backward stops at the target layer);
* every gradient method of every library (camkit, TorchCAM), TorchCAM-style:
  ``scores = model(x); cams = extractor(class_idx, scores)``.

Each case runs on its own deep copy of the model (same weights), so the hooks of one library
never sit on a model another case runs: the extractors are created once, outside the timed region.

A CPU sample is the best of ``--inner`` calls (wall clock, or with ``--clock thread`` the CPU
time of the calling thread, which ignores preemption by other processes: use it with
``--threads 1`` on a shared machine). On CPU only ratios are printed (absolute times drift too
much to mean anything): a ratio is the median over rounds of ``t_case / t_reference`` measured in
the same round. On a GPU the absolute medians (CUDA events) are printed too, with the device
name. ``--json PATH`` writes the raw medians and samples.

Goal (issue): camkit's gradient methods <= 1.10x the floor.

Usage::

    python benchmarks/latency.py                 # resnet18/layer4, batch 1 and 8
    python benchmarks/latency.py --quick         # about a minute
    python benchmarks/latency.py --rounds 40 --json out/latency.json
    python benchmarks/latency.py --threads 1 --clock thread   # on a busy machine
"""

from __future__ import annotations

import argparse
import copy
import gc
import importlib
import json
import os
import platform
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
PLAIN = "plain forward"
FLOOR = "floor"
INFERENCE = "forward (inference_mode)"

Call = Callable[[], object]


# -- what is benchmarked ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSpec:
    """A model to benchmark and the layer the CAMs explain."""

    name: str
    build: Callable[[], nn.Module]
    layer: str
    input_shape: tuple[int, ...] = (3, 224, 224)
    num_classes: int = 1000


def _resnet18() -> nn.Module:
    from torchvision.models import resnet18  # type: ignore[import-untyped]

    model: nn.Module = resnet18(weights=None)
    return model


MODELS: dict[str, ModelSpec] = {
    "resnet18": ModelSpec("resnet18", _resnet18, "layer4"),
}


@dataclass(frozen=True)
class Library:
    """A CAM library with a TorchCAM-style API: ``Method(model, layer)`` then ``ex(class_idx, scores)``."""

    name: str
    module: str
    methods: tuple[str, ...]


GRADIENT_METHODS = ("GradCAM", "GradCAMpp", "XGradCAM", "LayerCAM")
OURS = "camkit"
LIBRARIES: tuple[Library, ...] = (
    Library(OURS, "camkit.methods", GRADIENT_METHODS),
    Library("torchcam", "torchcam.methods", GRADIENT_METHODS),
)


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
    """One timed row: a label, the group it belongs to, and its setup."""

    label: str
    group: str
    setup: Setup


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


def default_cases(libraries: Sequence[Library] = LIBRARIES) -> list[Case]:
    """The reference rows, then every method of every library."""
    cases = [
        Case(INFERENCE, "reference", _inference_forward),
        Case(PLAIN, "reference", _plain_forward),
        Case(FLOOR, "reference", _floor),
    ]
    for library in libraries:
        cases += [Case(f"{library.name} {m}", library.name, _extractor_case(library, m)) for m in library.methods]
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


CLOCKS: dict[str, Callable[[], int]] = {"wall": time.perf_counter_ns, "thread": time.thread_time_ns}


@dataclass
class Result:
    """Per-case samples (ms) of one model/batch, in round order."""

    model: str
    layer: str
    batch: int
    samples: dict[str, list[float]] = field(default_factory=dict)

    def median(self, label: str) -> float:
        return statistics.median(self.samples[label])

    def ratios(self, label: str, reference: str) -> list[float]:
        """``t_label / t_reference`` of every round (both measured in the same round)."""
        pairs = zip(self.samples[label], self.samples[reference], strict=True)
        return [t / ref for t, ref in pairs]

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


def run_batch(
    spec: ModelSpec,
    base: nn.Module,
    batch: int,
    cases: Sequence[Case],
    *,
    rounds: int,
    warmup: int,
    inner: int,
    timer: Timer,
    device: torch.device,
) -> Result:
    """Time every case on its own copy of ``base``, interleaved over ``rounds`` rounds."""
    gen = torch.Generator().manual_seed(batch)
    x = torch.rand((batch, *spec.input_shape), generator=gen).to(device)
    classes = torch.randint(spec.num_classes, (batch,), generator=gen).tolist()
    env = Env(spec, x, classes)
    calls = [case.setup(copy.deepcopy(base), env) for case in cases]
    for call in calls:
        for _ in range(warmup):
            call()
    result = Result(spec.name, spec.layer, batch, {case.label: [] for case in cases})
    order = list(range(len(cases)))
    for r in range(rounds):
        gc.collect()
        gc.disable()
        try:
            shift = r % len(order)
            for i in order[shift:] + order[:shift]:  # rotate so no case always follows the same one
                result.samples[cases[i].label].append(timer.measure(calls[i], inner))
        finally:
            gc.enable()
    return result


# -- reporting -------------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str:
    try:
        return str(importlib.import_module(module).__version__)
    except (ImportError, AttributeError):
        return "n/a"


def _command() -> str:
    exe = sys.executable
    rel = os.path.relpath(exe)
    shown = rel if not rel.startswith("..") else exe
    return shlex.join([shown, *sys.argv])


def header(device: torch.device, args: argparse.Namespace) -> list[str]:
    where = (
        f"GPU {torch.cuda.get_device_name(device)}"
        if device.type == "cuda"
        else f"CPU {_cpu_model()} ({os.cpu_count()} logical cores)"
    )
    return [
        "# camkit latency benchmark",
        "",
        f"- command: `{_command()}`",
        f"- device: {where}; torch threads: {torch.get_num_threads()}",
        f"- python {platform.python_version()}, torch {torch.__version__}, "
        + ", ".join(f"{m} {_version(m)}" for m in ("torchvision", "camkit", "torchcam")),
        f"- {args.rounds} interleaved rounds after {args.warmup} warm-up calls per case, "
        + (
            f"mean of {args.inner} calls per sample (CUDA events)"
            if device.type == "cuda"
            else f"best of {args.inner} calls per sample ({args.clock} clock)"
        )
        + "; ratio = median over rounds of t_case / t_reference within the same round",
        f"- goal: camkit gradient methods <= {GOAL:.2f}x the floor",
    ]


def table(result: Result, cases: Sequence[Case], absolute: bool) -> list[str]:
    cols = ["case", *(["median ms"] if absolute else []), "× plain forward", "× floor"]
    lines = [
        f"## {result.model}/{result.layer}, batch {result.batch}",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "|".join([":---", *["---:"] * (len(cols) - 1)]) + "|",
    ]
    for case in cases:
        cells = [case.label]
        if absolute:
            cells.append(f"{result.median(case.label):.2f}")
        cells += [f"{result.ratio(case.label, PLAIN):.3f}", f"{result.ratio(case.label, FLOOR):.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    ours = [c.label for c in cases if c.group == OURS]
    if ours:
        worst = max(ours, key=lambda label: result.ratio(label, FLOOR))
        ratio = result.ratio(worst, FLOOR)
        q1, q3 = result.quartiles(worst, FLOOR)
        if q1 <= GOAL < q3 or q1 < GOAL <= q3:
            verdict = "INCONCLUSIVE (the interquartile range straddles the goal: too noisy, rerun)"
        elif ratio <= GOAL:
            verdict = "PASS"
        else:
            verdict = f"FAIL (+{(ratio - GOAL) * 100:.1f} points over the goal)"
        lines += [
            "",
            f"worst camkit method: {worst} at {ratio:.3f}x the floor (interquartile range {q1:.3f}-{q3:.3f}), "
            f"goal <= {GOAL:.2f}x: {verdict}",
        ]
    return lines


def load_note(device: torch.device, clock: str) -> str:
    """The load average at the end: more runnable processes than cores means the timings were shared."""
    try:
        load = os.getloadavg()
    except OSError:
        return "load average: n/a"
    cores = os.cpu_count() or 1
    note = f"load average (1/5/15 min) at the end: {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f} on {cores} cores"
    if device.type == "cpu" and load[0] > cores and clock == "thread" and torch.get_num_threads() == 1:
        note += "; other processes competed for the CPU, which the single-thread CPU-time clock ignores"
    elif device.type == "cpu" and load[0] > cores:
        note += (
            "; other processes competed for the CPU, so the ratios are noisy: rerun on an idle machine, "
            "or with --threads 1 --clock thread"
        )
    return note


def to_json(results: Sequence[Result], cases: Sequence[Case], device: torch.device, args: argparse.Namespace) -> Any:
    return {
        "command": _command(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_model(),
        "device_type": device.type,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "warmup": args.warmup,
        "inner": args.inner,
        "clock": "cuda events" if device.type == "cuda" else args.clock,
        "goal_x_floor": GOAL,
        "results": [
            {
                "model": r.model,
                "layer": r.layer,
                "batch": r.batch,
                "cases": {
                    c.label: {
                        "group": c.group,
                        "median_ms": r.median(c.label),
                        "x_plain_forward": r.ratio(c.label, PLAIN),
                        "x_floor": r.ratio(c.label, FLOOR),
                        "x_floor_quartiles": r.quartiles(c.label, FLOOR),
                        "samples_ms": r.samples[c.label],
                    }
                    for c in cases
                },
            }
            for r in results
        ],
    }


# -- entry point -----------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="resnet18")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes (default: 1 8)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 20, --quick 6)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up calls per case (default 3, --quick 2)")
    parser.add_argument(
        "--inner",
        type=int,
        default=None,
        help="calls per sample: CPU takes the best of them (default 3), GPU their mean (default 10)",
    )
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="CPU clock: wall time, or CPU time of the calling thread (use with --threads 1 on a busy host)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="fewer rounds: about a minute on 2 CPU cores")
    parser.add_argument("--cpu", action="store_true", help="stay on CPU even when CUDA is available")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the raw medians")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (6 if args.quick else 20)
    args.warmup = args.warmup if args.warmup is not None else (2 if args.quick else 3)
    if args.rounds < 1 or args.warmup < 0 or (args.inner or 1) < 1 or any(b < 1 for b in args.batch):
        parser.error("--rounds, --inner and --batch must be >= 1, --warmup >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    args.inner = args.inner or (10 if device.type == "cuda" else 3)
    timer = CudaTimer() if device.type == "cuda" else Timer(CLOCKS[args.clock])
    spec = MODELS[args.model]
    torch.manual_seed(0)
    base = spec.build().eval().to(device)
    cases = default_cases()

    print("\n".join(header(device, args)), flush=True)
    results = []
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
        )
        results.append(result)
        print("\n" + "\n".join(table(result, cases, absolute=device.type == "cuda")), flush=True)

    print("\n" + load_note(device, args.clock), flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(to_json(results, cases, device, args), indent=2) + "\n")
        print(f"\nraw medians written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
