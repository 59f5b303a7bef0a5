"""Lifecycle tests generated over the registry: hooks, flags, .grad and BatchNorm state."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import METHODS, all_hooks, make_extractor, tiny_cnn


def _snapshot(model: nn.Module) -> dict[str, object]:
    return {
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grad": [p.grad for p in model.parameters()],
        "state": {k: v.clone() for k, v in model.state_dict().items()},
    }


def _assert_same(before: dict[str, object], model: nn.Module) -> None:
    after = _snapshot(model)
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    assert all(g is None for g in after["grad"])  # type: ignore[union-attr]
    for key, value in before["state"].items():  # type: ignore[union-attr]
        torch.testing.assert_close(after["state"][key], value, rtol=0, atol=0)  # type: ignore[index]
    assert all_hooks(model) == 0


def _model() -> nn.Module:
    model = tiny_cnn()
    model[0].weight.requires_grad_(False)  # a frozen layer before the target
    model.train()  # train mode must survive; BatchNorm must not be updated by camkit's forwards
    model[7].eval()  # a mixed per-module flag must survive too
    return model


@pytest.mark.parametrize("name", METHODS)
def test_normal_call_leaves_model_untouched(name: str) -> None:
    model = _model()
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        model(x)  # the user's own forward updates BatchNorm once; compare after it
    with make_extractor(name, model, "3") as extractor:
        scores = model(x)
        # the user's forward in train mode updated BatchNorm again: take the snapshot after it
        before = _snapshot(model)
        cams = extractor([0, 1], scores)
        assert cams[0].shape == (2, 8, 8)
        assert torch.isfinite(cams[0]).all()
    _assert_same(before, model)


@pytest.mark.parametrize("name", METHODS)
def test_exception_in_forward_leaves_no_hook(name: str) -> None:
    model = _model()
    before = _snapshot(model)
    with pytest.raises(RuntimeError), make_extractor(name, model, "3"):
        model(torch.rand(2, 4, 8, 8))  # wrong channel count: the forward raises
    _assert_same(before, model)


@pytest.mark.parametrize("name", METHODS)
def test_bad_class_index_leaves_model_untouched(name: str) -> None:
    model = _model().eval()
    x = torch.rand(2, 3, 8, 8)
    with make_extractor(name, model, "3") as extractor:
        scores = model(x)
        before = _snapshot(model)
        with pytest.raises(ValueError, match="out of range"):
            extractor(99, scores)
    _assert_same(before, model)


@pytest.mark.parametrize("name", METHODS)
def test_remove_hooks_and_reset(name: str) -> None:
    model = tiny_cnn().eval()
    extractor = make_extractor(name, model, "3")
    assert all_hooks(model) > 0
    extractor.remove_hooks()
    assert all_hooks(model) == 0
    extractor.reset_hooks()
    with pytest.raises(ValueError, match=r"no (activation|input) was captured"):  # input: black-box methods
        extractor(0, model(torch.rand(1, 3, 8, 8)))


def test_user_hooks_survive_and_still_fire() -> None:
    model = tiny_cnn().eval()
    calls: list[int] = []
    handle = model[3].register_forward_hook(lambda *_: calls.append(1))
    with make_extractor("gradcam", model, "3") as extractor:
        extractor(0, model(torch.rand(1, 3, 8, 8)))
    model(torch.rand(1, 3, 8, 8))
    assert calls == [1, 1]
    assert all_hooks(model) == 1
    handle.remove()
