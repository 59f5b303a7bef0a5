"""camkit's metric families against Quantus 0.6.0 on the same work: 6 metrics x 16 images, CPU, one process.

Model: a small random-init CNN (two 3x3 convolutions, 3 classes) on 16 one-channel 32 x 32 inputs
(one channel, so that Quantus's features, channel values, are camkit's, pixels); the same maps for
both; Quantus with ``normalise=False, abs=False``. Each metric runs ``--rounds`` times per library,
alternating; the table gives the median seconds and the ratio Quantus / camkit (> 1: camkit faster).
No threshold: this prints what it measures.

Run: .venv/bin/python benchmarks/metrics_speed.py [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from camkit import metrics

QUIET = {"disable_warnings": True, "normalise": False, "abs": False, "return_aggregate": False}


def model_and_data() -> tuple[nn.Module, Tensor, Tensor, np.ndarray]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(16 * 16, 3),
    ).eval()
    x = torch.rand(16, 1, 32, 32)
    maps = torch.rand(16, 32, 32)
    y = model(x).argmax(1).numpy()
    return model, x, maps, y


def saliency(model: nn.Module) -> Callable[[Tensor, Tensor], Tensor]:
    def explain(inputs: Tensor, classes: Tensor) -> Tensor:
        inputs = inputs.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(model(inputs).gather(1, classes.view(-1, 1)).sum(), inputs)
        return (grad * inputs).sum(1).detach()

    return explain


def cases(
    model: nn.Module, x: Tensor, maps: Tensor, y: np.ndarray
) -> dict[str, tuple[Callable[[], Any], Callable[[], Any]]]:
    import quantus

    explain = saliency(model)

    def q_explain(model: Any, inputs: np.ndarray, targets: np.ndarray, **kwargs: Any) -> np.ndarray:
        return explain(torch.as_tensor(inputs, dtype=torch.float32), torch.as_tensor(targets)).unsqueeze(1).numpy()

    def q(metric: Any, **call: Any) -> Callable[[], Any]:
        def run() -> Any:
            a = maps.unsqueeze(1).numpy().copy()
            return metric(model=model, x_batch=x.numpy().copy(), y_batch=y, a_batch=a, device="cpu", **call)

        return run

    targets = y.tolist()
    from camkit.targets import ClassTarget

    logits = ClassTarget(targets)
    return {
        "faithfulness_correlation (100 runs x 64 px)": (
            lambda: metrics.faithfulness_correlation(
                model, x, maps, logits, nr_runs=100, subset_size=64, batch_size=256
            ),
            q(
                quantus.FaithfulnessCorrelation(nr_runs=100, subset_size=64, perturb_baseline=0.0, **QUIET),
                softmax=False,
            ),
        ),
        "pixel_flipping (16 px a step, 64 steps)": (
            lambda: metrics.pixel_flipping(model, x, maps, targets, features_in_step=16, baseline=0.0, batch_size=256),
            q(quantus.PixelFlipping(features_in_step=16, perturb_baseline=0.0, **QUIET)),
        ),
        "region_perturbation (4x4 patches, 64 steps)": (
            lambda: metrics.region_perturbation(model, x, maps, targets, patch_size=4, baseline=0.0, batch_size=256),
            q(quantus.RegionPerturbation(patch_size=4, regions_evaluation=100, perturb_baseline=0.0, **QUIET)),
        ),
        "selectivity (4x4 patches, 64 steps)": (
            lambda: metrics.selectivity(model, x, maps, targets, patch_size=4, baseline=0.0, batch_size=256),
            q(quantus.Selectivity(patch_size=4, perturb_baseline=0.0, **QUIET)),
        ),
        "max_sensitivity (20 samples, saliency)": (
            lambda: metrics.max_sensitivity(model, x, explain, targets, nr_samples=20, normalise=True, batch_size=64),
            q(quantus.MaxSensitivity(nr_samples=20, **QUIET), explain_func=q_explain),
        ),
        "sparseness": (
            lambda: metrics.sparseness(maps),
            q(quantus.Sparseness(**{**QUIET, "abs": True})),
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="timed runs per metric and library (median)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads for both libraries")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    model, x, maps, y = model_and_data()
    print(f"camkit vs Quantus 0.6.0, CPU, torch {torch.__version__}, {args.threads} threads, {len(x)} images 1x32x32")
    print(f"{'metric':46} {'camkit s':>9} {'Quantus s':>10} {'Quantus/camkit':>15}")
    for name, (ours, theirs) in cases(model, x, maps, y).items():
        ours(), theirs()  # warm-up (imports, allocator)
        times: dict[str, list[float]] = {"ours": [], "theirs": []}
        for _ in range(args.rounds):
            for key, run in (("ours", ours), ("theirs", theirs)):
                start = time.perf_counter()
                run()
                times[key].append(time.perf_counter() - start)
        mine, peer = statistics.median(times["ours"]), statistics.median(times["theirs"])
        print(f"{name:46} {mine:9.4f} {peer:10.4f} {peer / mine:14.1f}x")


if __name__ == "__main__":
    main()
