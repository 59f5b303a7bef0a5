"""Guarantee 4, odd models: in-place ops, shared modules, layers called twice, DataParallel,
torch.compile, and hooked layers that return tuples, for every method and front door.

Each odd model is compared with a plain twin that has the same weights (no in-place ops, one
module per call), so the expected maps are those of an ordinary model.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock

import camkit
from reliability.support import DOORS, METHODS, maps, small_cnn

#: Registry methods that replace the target layer's output and re-run the rest (AblationCAM, Recipro-CAM).
REPLACING = [n for n in METHODS if camkit.get_method(n).weights.__module__ == "camkit.methods.ablation"]


class PlainBlock(nn.Module):
    """torchvision's BasicBlock without in-place ops and with a second ReLU module for the second call."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu_out = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out)) + x
        return self.relu_out(out)


def _resnet(plain: bool) -> nn.Sequential:
    """A two-block ResNet; torchvision's blocks use ``ReLU(inplace=True)``, ``out += identity`` and reuse ``relu``."""
    block = PlainBlock if plain else (lambda c: BasicBlock(c, c))
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), block(4), block(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    )
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, value in model.state_dict().items():
            if name.endswith("running_var"):
                value.copy_(torch.rand(value.shape, generator=generator) + 0.5)
            elif value.is_floating_point():
                value.copy_(torch.randn(value.shape, generator=generator) * 0.4)
    return model.eval()


# (layer in the torchvision model, the same place in the plain twin)
RESNET_LAYERS = [("1.conv2", "1.conv2"), ("2", "2"), ("1.relu", "1.relu_out")]


@pytest.mark.parametrize(("layer", "plain_layer"), RESNET_LAYERS, ids=["before_inplace_add", "block", "shared_relu"])
@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("door", DOORS)
def test_inplace_relu_shared_module_called_twice(door: str, name: str, layer: str, plain_layer: str) -> None:
    """In-place ReLU and add after the layer, and a ReLU module called twice: its last call is explained."""
    odd, plain = _resnet(plain=False), _resnet(plain=True)
    plain.load_state_dict(odd.state_dict())
    x = torch.rand(2, 3, 8, 8)
    expected = maps(door, name, plain, x, class_idx=[0, 2], layer=plain_layer)
    if not (door == "gradcam" and name == "fullgrad"):  # CAMMethod(method="fullgrad"): a bias-free layer term, 0
        assert expected.amax() > 0
    got = maps(door, name, odd, x, class_idx=[0, 2], layer=layer)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


class CalledTwice(nn.Module):
    """``block`` runs twice; its first output also skips past the second call (``y2 = block(y1) + y1``)."""

    def __init__(self, separate: bool) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(5)
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.block = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
        with torch.no_grad():
            for param in self.parameters():
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
        self.second = copy.deepcopy(self.block) if separate else self.block

    def forward(self, x: Tensor) -> Tensor:
        y1 = torch.relu(self.block(torch.relu(self.stem(x))))
        return self.head(torch.relu(self.second(y1) + y1))


def _skip_own_layers(door: str, name: str) -> None:
    if camkit.get_method(name).black_box:
        pytest.skip(f"{name} is black-box: it reads no layer")
    if door == "gradcam" and camkit.get_method(name).layers is not None:
        pytest.skip(f"the pytorch-grad-cam-style {name} uses its own layers and ignores target_layers")


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("door", ["torchcam", "gradcam"])
def test_layer_called_twice_explains_its_last_call(door: str, name: str) -> None:
    _skip_own_layers(door, name)
    shared, separate = CalledTwice(separate=False).eval(), CalledTwice(separate=True).eval()
    x = torch.rand(2, 3, 8, 8)
    expected = maps(door, name, separate, x, class_idx=[0, 1], layer="second")
    assert expected.amax() > 0
    got = maps(door, name, shared, x, class_idx=[0, 1], layer="block")
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("door", DOORS)
def test_data_parallel_gives_the_whole_batch(door: str, name: str) -> None:
    model = small_cnn()
    wrapped = nn.DataParallel(model)  # no GPU here: DataParallel calls the module itself
    x = torch.rand(5, 3, 8, 8)
    expected = maps(door, name, model, x, class_idx=1)
    got = maps(door, name, wrapped, x, class_idx=1, layer="module.3")
    assert got.shape == (5, 8, 8)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    by_module = maps(door, name, wrapped, x, class_idx=1, layer=model[3])  # a module of the wrapped model
    torch.testing.assert_close(by_module, expected, rtol=0, atol=0)


@pytest.fixture
def fresh_dynamo() -> Iterator[None]:
    """Forget compiled code, so every test compiles its model (no cache-size-limit fallback to eager)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _compiled_maps(door: str, name: str, backend: str, x: Tensor) -> tuple[Tensor, Any]:
    """Maps of ``small_cnn`` uncompiled, and of a compiled twin (or the exception it raised)."""
    model = small_cnn()
    expected = maps(door, name, model, x)
    compiled = torch.compile(small_cnn(), backend=backend)
    try:
        return expected, maps(door, name, compiled, x, layer="_orig_mod.3")
    except Exception as error:
        return expected, error


@pytest.mark.usefixtures("fresh_dynamo")
@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("door", ["torchcam", "gradcam"])
def test_torch_compile_dynamo_gives_the_same_maps(door: str, name: str) -> None:
    expected, got = _compiled_maps(door, name, "eager", torch.rand(2, 3, 8, 8))  # dynamo tracing, hooks included
    assert isinstance(got, Tensor), got
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def _needs_user_graph(name: str) -> bool:
    spec = camkit.get_method(name)
    return spec.needs_gradients and spec.needs_scores


@pytest.mark.usefixtures("fresh_dynamo")
@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("door", ["torchcam", "gradcam"])
def test_torch_compile_aot_autograd_works_or_fails_clearly(door: str, name: str) -> None:
    """AOTAutograd (what the default inductor backend runs) hides intermediate tensors from autograd."""
    expected, got = _compiled_maps(door, name, "aot_eager", torch.rand(2, 3, 8, 8))
    if door == "torchcam" and _needs_user_graph(name):
        assert isinstance(got, ValueError), got  # the layer's gradient is unreachable: an error, never wrong maps
    elif isinstance(got, Exception):
        assert "compile" in str(got), got
    else:
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.usefixtures("fresh_dynamo")
def test_torch_compile_gradient_error_names_the_fix() -> None:
    messages = {}
    for name in [n for n in METHODS if _needs_user_graph(n)]:
        _, got = _compiled_maps("torchcam", name, "aot_eager", torch.rand(2, 3, 8, 8))
        messages[name] = str(got)
    assert all("compile" in m and ("_orig_mod" in m or "lean" in m) for m in messages.values()), messages


def _cpp_compiler() -> str | None:
    return next((found for cc in ("g++", "c++", "clang++") if (found := shutil.which(cc))), None)


@pytest.mark.heavy
@pytest.mark.usefixtures("fresh_dynamo")
@pytest.mark.skipif(_cpp_compiler() is None, reason="torch.compile's inductor backend needs a C++ compiler on CPU")
@pytest.mark.parametrize("name", ["gradcam", "scorecam", "layercam"])
def test_torch_compile_inductor(name: str) -> None:
    x = torch.rand(2, 3, 8, 8)
    expected, got = _compiled_maps("gradcam", name, "inductor", x)
    assert isinstance(got, Tensor), got
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    expected, got = _compiled_maps("torchcam", name, "inductor", x)
    if _needs_user_graph(name):
        assert isinstance(got, ValueError), got
    else:
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


class Pair(nn.Module):
    """A layer that returns ``(features, aux)``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = self.conv(x)
        return y, y.mean(dim=(2, 3))


class TupleLayerNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.pair = Pair()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))

    def forward(self, x: Tensor) -> Tensor:
        features, _ = self.pair(torch.relu(self.stem(x)))
        return self.head(features)


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("door", DOORS)
def test_layer_returning_a_tuple_fails_clearly(door: str, name: str) -> None:
    _skip_own_layers(door, name)
    model = TupleLayerNet().eval()
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"'pair' returns a tuple, not a tensor; choose a submodule"):
        maps(door, name, model, x, layer="pair")
    torch.testing.assert_close(  # its submodule works
        maps(door, name, model, x, layer="pair.conv"), maps(door, name, model, x, layer=model.pair.conv)
    )
