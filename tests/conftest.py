"""Shared tiny models and helpers for camkit's tests."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

import camkit
from camkit.engine import CAMExtractor
from camkit.registry import ENGINE_SWITCHES

# Options for every method (each gets those it declares: method_options); std=0 makes noise methods
# deterministic, so batched and per-sample calls can be compared exactly.
FAST_OPTIONS: dict[str, Any] = {"num_samples": 2, "batch_size": 64}


def tiny_cnn(inplace: bool = False, dims: int = 2) -> nn.Module:
    """A small CNN with BatchNorm, Dropout and one Linear head (so CAM applies)."""
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    bn = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
    pool = nn.AdaptiveAvgPool2d if dims == 2 else nn.AdaptiveAvgPool3d
    return nn.Sequential(
        conv(3, 6, 3, padding=1),
        bn(6),
        nn.ReLU(inplace=inplace),
        conv(6, 8, 3, padding=1),
        nn.ReLU(inplace=inplace),
        pool(1),
        nn.Flatten(),
        nn.Dropout(0.1),
        nn.Linear(8, 5),
    )


def calibrated(model: nn.Module, size: int = 64) -> nn.Module:
    """Give BatchNorm layers the running statistics of random inputs, then eval.

    Random-init torchvision nets otherwise shrink activations towards 1e-9, where the peers'
    epsilons dominate their maps.
    """
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.rand(8, 3, size, size, generator=generator))
    return model.eval()


def method_options(name: str, **options: Any) -> dict[str, Any]:
    """FAST_OPTIONS and ``options``, less those the method does not declare (engine switches kept)."""
    spec = camkit.get_method(name)
    merged = {**FAST_OPTIONS, **options}
    return {k: v for k, v in merged.items() if k in spec.options or k in ENGINE_SWITCHES}


def options_for(names: list[str], **options: Any) -> dict[str, Any]:
    """FAST_OPTIONS and ``options``, less those none of the methods declares (engine switches kept)."""
    merged = {**FAST_OPTIONS, **options}
    declared = {key for name in names for key in camkit.get_method(name).options}
    return {k: v for k, v in merged.items() if k in declared or k in ENGINE_SWITCHES}


def make_extractor(name: str, model: nn.Module, layer: Any, **options: Any) -> CAMExtractor:
    return CAMExtractor(model, layer, method=name, **method_options(name, **options))


def all_hooks(model: nn.Module) -> int:
    count = 0
    for m in model.modules():
        count += len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        count += len(getattr(m, "_backward_pre_hooks", {}))
    return count


METHODS = camkit.list_methods()


@pytest.fixture(autouse=True, scope="session")
def _single_thread() -> Iterator[None]:
    """The test models are tiny: one thread is fastest and avoids OpenMP spin-waits on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _process_state_kept() -> Iterator[None]:
    """Importing ultralytics changes process-wide settings (PIL.Image.open, numpy and torch print
    options, ...); a test that imports it must not change how later tests read images or print arrays."""
    from camkit.detect._adapters import process_state_kept

    with process_state_kept():
        yield


@functools.cache
def sharp_tiny_cnn() -> nn.Module:
    """tiny_cnn with larger weights, so that its probabilities depend on the input (metrics tests)."""
    torch.manual_seed(0)
    model = tiny_cnn().eval()
    with torch.no_grad():
        model[0].weight.mul_(3)
        model[3].weight.mul_(3)
        model[-1].weight.mul_(30)
    return model


class RegionMean(nn.Module):
    """Logit 0 is the mean of the input over rows 2..5, columns 2..5 (16 of 64 pixels); logit 1 is 0."""

    def __init__(self) -> None:
        super().__init__()
        region = torch.zeros(8, 8)
        region[2:6, 2:6] = 1
        self.register_buffer("region", region)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = (self.drop(x) * self.region).sum(dim=(1, 2, 3)) / (self.region.sum() * x.shape[1])
        return torch.stack([score, torch.zeros_like(score)], dim=1)
