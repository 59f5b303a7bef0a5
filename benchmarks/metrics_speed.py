"""camkit's metric families against Quantus 0.6.0 on the same work: 6 metrics x N images, CPU, one process.

Setup (printed by the run): a small random-init CNN (conv 3x3 1->8, ReLU, max-pool 2, conv 3x3
8->16, ReLU, adaptive average pool 4x4, linear 256->3; 2,019 parameters) on ``--images`` one-channel
``--size`` x ``--size`` inputs (one channel, so that Quantus's features, channel values, are camkit's,
pixels: the same perturbations on both sides); the same maps for both; Quantus with
``normalise=False, abs=False``, each metric with the same perturbation counts and the same score
(logit or softmax) as camkit's call, and max-sensitivity given the clean maps on both sides (Quantus
reads ``a_batch``). camkit's pixel flipping and selectivity also score the clean input (16 rows),
the curve's first point. The model is tiny on purpose: the perturbation metrics are
*forward-bound*, and the smaller the forward the more the libraries' own overhead shows; a larger
model moves every ratio towards 1 (``--size 64`` shows the trend).

Per metric, every library runs once to warm up (imports, allocator, the channels-last probe) and to
count the input rows that go through the model (a forward hook: the same work on both sides must
show the same count), then ``--rounds`` times, alternating camkit / floor / Quantus; the table gives
the median seconds. camkit's ``batch_size`` is its default, 64 (per row, this CPU runs this model
as fast at 16-64 rows a batch as at 256 on 32 px inputs, and twice as fast at 64 px, where 256 rows
spill the cache). The *floor* is the model alone on that many rows of pre-built inputs (uniform
noise; inputs that are largely baseline zeros run up to ~20% faster on this CPU, so camkit can land
a little under it), in camkit's batch size under ``inference_mode``, the faster of contiguous and
channels-last each round (for max-sensitivity: the explanation, forward and backward, on that many
rows): no metric doing that work can beat it by much, so ``Quantus/floor`` is about the
largest speed-up any implementation could show against Quantus on this model and machine.

The CPU count and load average are printed: on a machine shared with other jobs, OpenMP threads that
wait for each other inflate every small op (``--threads 1`` is steadier there). No threshold: this
prints what it measures.

Run: .venv/bin/python benchmarks/metrics_speed.py [--rounds 3] [--threads 2] [--size 32] [--images 16]
     [--batch-size 64]
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from camkit import metrics
from camkit.targets import ClassTarget

QUIET = {"disable_warnings": True, "normalise": False, "abs": False, "return_aggregate": False}


def make_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(16 * 16, 3),
    ).eval()


def model_and_data(images: int = 16, size: int = 32) -> tuple[nn.Module, Tensor, Tensor, np.ndarray]:
    torch.manual_seed(0)
    model = make_model()
    x = torch.rand(images, 1, size, size)
    maps = torch.rand(images, size, size)
    with torch.no_grad():
        y = model(x).argmax(1).numpy()
    return model, x, maps, y


def saliency(model: nn.Module) -> Callable[[Tensor, Tensor], Tensor]:
    def explain(inputs: Tensor, classes: Tensor) -> Tensor:
        inputs = inputs.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(model(inputs).gather(1, classes.view(-1, 1)).sum(), inputs)
        return (grad * inputs).sum(1).detach()

    return explain


@dataclass
class Case:
    """One metric: camkit's run, Quantus's run, camkit's batch size and whether the floor is explain()."""

    ours: Callable[[], Any]
    theirs: Callable[[], Any]
    batch_size: int | None  # None: no model (no floor)
    explains: bool = False


def cases(model: nn.Module, x: Tensor, maps: Tensor, y: np.ndarray, batch: int = 64) -> dict[str, Case]:
    quantus: Any = importlib.import_module("quantus")  # lazily: an optional dependency, untyped

    explain = saliency(model)
    side = x.shape[-1]
    patches = math.ceil(side / 4) ** 2
    steps = math.ceil(side * side / 16)

    def q_explain(model: Any, inputs: np.ndarray, targets: np.ndarray, **kwargs: Any) -> np.ndarray:
        return explain(torch.as_tensor(inputs, dtype=torch.float32), torch.as_tensor(targets)).unsqueeze(1).numpy()

    def q(metric: Any, **call: Any) -> Callable[[], Any]:
        def run() -> Any:
            a = maps.unsqueeze(1).numpy().copy()
            return metric(model=model, x_batch=x.numpy().copy(), y_batch=y, a_batch=a, device="cpu", **call)

        return run

    targets = y.tolist()
    logits = ClassTarget(targets)
    return {
        "faithfulness_correlation (100 runs x 64 px)": Case(
            lambda: metrics.faithfulness_correlation(
                model, x, maps, logits, nr_runs=100, subset_size=64, batch_size=batch
            ),
            q(
                quantus.FaithfulnessCorrelation(nr_runs=100, subset_size=64, perturb_baseline=0.0, **QUIET),
                softmax=False,
            ),
            batch,
        ),
        f"pixel_flipping (16 px a step, {steps} steps)": Case(
            lambda: metrics.pixel_flipping(
                model, x, maps, targets, features_in_step=16, baseline=0.0, batch_size=batch
            ),
            q(quantus.PixelFlipping(features_in_step=16, perturb_baseline=0.0, **QUIET)),
            batch,
        ),
        f"region_perturbation (4x4 patches, {min(patches, 100)} steps)": Case(
            lambda: metrics.region_perturbation(model, x, maps, targets, patch_size=4, baseline=0.0, batch_size=batch),
            q(quantus.RegionPerturbation(patch_size=4, regions_evaluation=100, perturb_baseline=0.0, **QUIET)),
            batch,
        ),
        f"selectivity (4x4 patches, {patches} steps)": Case(
            lambda: metrics.selectivity(model, x, maps, targets, patch_size=4, baseline=0.0, batch_size=batch),
            q(quantus.Selectivity(patch_size=4, perturb_baseline=0.0, **QUIET)),
            batch,
        ),
        "max_sensitivity (20 samples, saliency)": Case(
            lambda: metrics.max_sensitivity(
                model, x, explain, targets, maps=maps, nr_samples=20, normalise=True, batch_size=batch
            ),
            q(quantus.MaxSensitivity(nr_samples=20, **QUIET), explain_func=q_explain),
            batch,
            explains=True,
        ),
        "sparseness": Case(lambda: metrics.sparseness(maps), q(quantus.Sparseness(**{**QUIET, "abs": True})), None),
    }


class RowCounter:
    """Counts the input rows (and calls) that go through ``model`` while installed."""

    def __init__(self, model: nn.Module) -> None:
        self.rows = self.calls = 0
        self.handle = model.register_forward_hook(self.hook)

    def hook(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        self.rows += int(args[0].shape[0])
        self.calls += 1


def counted(model: nn.Module, run: Callable[[], Any]) -> tuple[int, int]:
    counter = RowCounter(model)
    try:
        run()
    finally:
        counter.handle.remove()
    return counter.rows, counter.calls


def floor_run(model: nn.Module, example: Tensor, rows: int, batch_size: int, explains: bool) -> Callable[[], float]:
    """The model alone (or the saliency explanation) on ``rows`` pre-built inputs, ``batch_size`` at a time."""
    sizes = [min(batch_size, rows - start) for start in range(0, rows, batch_size)]
    batches = {size: torch.rand(size, *example.shape[1:]) for size in set(sizes)}
    classes = {size: torch.zeros(size, dtype=torch.long) for size in set(sizes)}
    explain = saliency(model)
    last = {size: batch.contiguous(memory_format=torch.channels_last) for size, batch in batches.items()}

    def run_with(layout: bool) -> None:
        if explains:
            for size in sizes:
                explain(batches[size], classes[size])
            return
        with torch.inference_mode():
            for size in sizes:
                model(last[size] if layout else batches[size])

    def run() -> float:
        """Seconds of the faster of the two memory layouts, both run (camkit probes channels-last on CPU)."""
        best = math.inf
        for layout in (False,) if explains else (False, True):
            start = time.perf_counter()
            run_with(layout)
            best = min(best, time.perf_counter() - start)
        return best

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="timed runs per metric and library (median)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads for both libraries")
    parser.add_argument("--size", type=int, default=32, help="input side in pixels")
    parser.add_argument("--images", type=int, default=16, help="number of images")
    parser.add_argument(
        "--batch-size", type=int, default=64, help="camkit's inputs per forward (its default; Quantus: the 16 images)"
    )
    args = parser.parse_args()
    quantus: Any = importlib.import_module("quantus")

    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    model, x, maps, y = model_and_data(args.images, args.size)
    params = sum(p.numel() for p in model.parameters())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print(
        f"camkit vs Quantus {quantus.__version__}, CPU ({cores} cores usable, load average "
        f"{os.getloadavg()[0]:.1f} at start), torch {torch.__version__}, {args.threads} threads, one process"
    )
    print(
        f"model: small random-init CNN, {params} parameters (conv1-8, maxpool, conv8-16, avgpool 4x4, linear 256-3); "
        f"{len(x)} images 1x{args.size}x{args.size}; camkit batch_size {args.batch_size}; "
        f"median of {args.rounds} rounds after a warm-up"
    )
    print(
        "rows: inputs through the model (camkit / Quantus); floor: the model alone on camkit's rows, batched; "
        "Q/floor: the best ratio any implementation could reach"
    )
    header = (
        f"{'metric':46} {'rows':>11} {'camkit s':>9} {'floor s':>8} {'Quantus s':>10} {'Q/camkit':>9} {'Q/floor':>8}"
    )
    print(header)
    for name, case in cases(model, x, maps, y, args.batch_size).items():
        mine_rows, _ = counted(model, case.ours)  # also the warm-up
        peer_rows, _ = counted(model, case.theirs)
        runs: dict[str, Callable[[], Any]] = {"ours": case.ours, "theirs": case.theirs}
        if case.batch_size is not None:
            runs["floor"] = floor_run(model, x, mine_rows, case.batch_size, case.explains)
            runs["floor"]()  # warm-up
        times: dict[str, list[float]] = {key: [] for key in runs}
        for _ in range(args.rounds):
            for key, run in runs.items():
                start = time.perf_counter()
                got = run()
                times[key].append(got if key == "floor" else time.perf_counter() - start)
        mine, peer = statistics.median(times["ours"]), statistics.median(times["theirs"])
        floor = statistics.median(times["floor"]) if "floor" in times else float("nan")
        rows = f"{mine_rows}/{peer_rows}" if case.batch_size is not None else "-"
        floor_text = f"{floor:8.4f}" if "floor" in times else f"{'-':>8}"
        ceiling = f"{peer / floor:7.1f}x" if "floor" in times else f"{'-':>8}"
        print(f"{name:46} {rows:>11} {mine:9.4f} {floor_text} {peer:10.4f} {peer / mine:8.1f}x {ceiling}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
