"""The lean capture path: no graph before the target layers, and exactly the maps of the full path."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torchvision.models import resnet18

from camkit.compat.gradcam import CAMMethod
from camkit.engine import Capture
from conftest import METHODS, calibrated, make_extractor, tiny_cnn


def _options() -> dict[str, Any]:
    return {"generator": torch.Generator().manual_seed(0)}


def _maps(name: str, model: nn.Module, layer: Any, x: Tensor, lean: bool) -> list[Tensor]:
    with make_extractor(name, model, layer, **_options()) as extractor:
        if lean:
            with extractor.lean():
                scores = model(x)
        else:
            scores = model(x)
        return extractor([1, 3], scores)


def _reached_parameters(output: Tensor) -> set[int]:
    """ids of the leaf tensors (parameters) reachable from ``output`` through its autograd graph."""
    seen, found, stack = set(), set(), [output.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        variable = getattr(fn, "variable", None)
        if variable is not None:
            found.add(id(variable))
        stack.extend(next_fn for next_fn, _ in fn.next_functions)
    return found


@pytest.mark.parametrize("name", METHODS)
def test_lean_equals_full_tiny(name: str) -> None:
    model = tiny_cnn(inplace=True).eval()
    x = torch.rand(2, 3, 8, 8)
    full = _maps(name, model, "3", x, lean=False)
    lean = _maps(name, model, "3", x, lean=True)
    for a, b in zip(full, lean, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0)


@pytest.mark.parametrize("name", METHODS)
def test_lean_equals_full_with_skip_connection(name: str) -> None:
    # layer4.0.conv2's output joins a shortcut that starts before it; ReLUs are in-place
    model = calibrated(resnet18(num_classes=10), size=32)
    x = torch.rand(2, 3, 32, 32)
    layers = ["layer4.0.conv2", "layer4"] if name != "fullgrad" else None
    full = _maps(name, model, layers, x, lean=False)
    lean = _maps(name, model, layers, x, lean=True)
    for a, b in zip(full, lean, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0)


def test_lean_records_no_graph_before_the_target() -> None:
    model = tiny_cnn().eval()
    with Capture(model, ["3"]) as capture:
        with capture.lean():
            out = model(torch.rand(2, 3, 8, 8))
        reached = _reached_parameters(out)
        assert id(model[3].weight) not in reached  # the target layer's own parameters: before its output
        assert id(model[0].weight) not in reached
        assert id(model[8].weight) in reached  # the head, after the target, is recorded
        (grad,) = capture.gradients(out[:, 0].sum())
        assert grad.shape == (2, 8, 8, 8)
    with Capture(model, ["3"]) as capture:  # the full path, for contrast
        out = model(torch.rand(2, 3, 8, 8))
        assert id(model[0].weight) in _reached_parameters(out)


def test_lean_restores_grad_mode_also_after_an_exception() -> None:
    model = tiny_cnn().eval()
    with Capture(model, ["3"]) as capture:
        for mode in (True, False):
            with torch.set_grad_enabled(mode):
                with capture.lean():
                    model(torch.rand(1, 3, 8, 8))
                assert torch.is_grad_enabled() is mode
                with pytest.raises(RuntimeError), capture.lean():
                    model(torch.rand(1, 4, 8, 8))
                assert torch.is_grad_enabled() is mode
                assert not capture._lean


def test_lean_with_input_gradient_records_everything() -> None:
    model = tiny_cnn().eval()
    with Capture(model, ["3"], input_grad=True) as capture:
        with torch.no_grad(), capture.lean():
            out = model(torch.rand(1, 3, 8, 8))
        capture.gradients(out[:, 0].sum())
        assert capture.input_grad is not None
        assert capture.input_grad.shape == (1, 3, 8, 8)


def test_lean_hook_off_when_paused_leaves_no_gradients() -> None:
    model = tiny_cnn().eval()
    with Capture(model, ["3"]) as capture:
        capture.enabled = False
        with capture.lean():
            out = model(torch.rand(1, 3, 8, 8))
        assert not out.requires_grad  # nothing turned gradients on: the block stayed under no_grad


def test_grad_cam_front_door_runs_lean() -> None:
    model = tiny_cnn().eval()
    seen: list[bool] = []
    handle = model[0].register_forward_hook(lambda _m, _i, out: seen.append(torch.is_grad_enabled()))
    try:
        with CAMMethod(model, ["3"], method="gradcam") as cam:
            maps = cam(input_tensor=torch.rand(2, 3, 8, 8), targets=None)
    finally:
        handle.remove()
    assert seen == [False]  # the first conv ran without recording a graph
    assert maps.shape == (2, 8, 8)
