"""Guarantee 1, state: a CAM call leaves the user's model exactly as it found it.

Generated over every registry method and camkit's three front doors. The user's model carries
filled ``.grad`` tensors, a frozen layer, mixed train/eval flags and hooks of every kind (forward,
pre-forward, full backward, tensor and post-accumulate-grad hooks). After a successful call, and
after an exception raised at *each* forward the call runs (in the forward, in a user hook) or at
each call of the target, everything is as before and the user's hooks still fire.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from camkit.targets import ClassTarget
from reliability.support import (
    DOORS,
    METHODS,
    assert_unchanged,
    hook_count,
    maps,
    prepare_user_model,
    small_cnn,
    snapshot,
    torchcam,
    user_training_step,
)


class Boom(Exception):
    """The user's own exception: camkit must let it through unchanged."""


class Faulty(nn.Module):
    """``small_cnn`` whose forward raises at call number ``fail_at`` (after the target layer ran)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = small_cnn()
        self.calls = 0
        self.fail_at: int | None = None

    def forward(self, x: Tensor) -> Tensor:
        features = self.net[:5](x)  # the target layer net.3 has run: lean forwards have turned gradients on
        self.calls += 1
        if self.calls == self.fail_at:
            raise Boom(f"forward {self.calls}")
        return self.net[5:](features)


def _user_model() -> tuple[Faulty, Any]:
    model = Faulty()
    fired = prepare_user_model(model.net)
    return model, fired


def _run(door: str, name: str, model: nn.Module, x: Tensor, **kwargs: Any) -> Tensor:
    return maps(door, name, model, x, class_idx=[0, 2], layer="net.3", **kwargs)


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("door", DOORS)
def test_success_leaves_model_unchanged_and_user_hooks_firing(door: str, name: str) -> None:
    model, fired = _user_model()
    x = torch.rand(2, 3, 8, 8)
    before = snapshot(model)
    cams = _run(door, name, model, x)
    assert cams.shape == (2, 8, 8)
    assert torch.isfinite(cams).all()
    assert_unchanged(before, model)
    assert fired["post_accumulate"] == 0  # camkit never accumulates into .grad
    counts = dict(fired)
    user_training_step(model, x)
    for hook in ("forward", "forward_pre", "backward", "tensor", "post_accumulate"):
        assert fired[hook] > counts.get(hook, 0), f"the user's {hook} hook no longer fires"


def _forwards(door: str, name: str) -> int:
    model, _ = _user_model()
    _run(door, name, model, torch.rand(2, 3, 8, 8))
    return model.calls


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("door", DOORS)
def test_exception_in_any_forward_leaves_model_unchanged(door: str, name: str) -> None:
    x = torch.rand(2, 3, 8, 8)
    total = _forwards(door, name)
    assert total >= 1
    for fail_at in range(1, total + 1):
        model, _ = _user_model()
        model.fail_at = fail_at
        before = snapshot(model)
        with pytest.raises(Boom, match=f"forward {fail_at}"):
            _run(door, name, model, x)
        assert_unchanged(before, model)
    # nothing is stuck (hook gate, grad mode): the next call gives the maps of a pristine model
    model, _ = _user_model()
    expected = _run(door, name, model, x)
    model.calls, model.fail_at = 0, total
    with pytest.raises(Boom):
        _run(door, name, model, x)
    model.fail_at = None
    torch.testing.assert_close(_run(door, name, model, x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("door", DOORS)
def test_exception_in_user_hook_leaves_model_unchanged(door: str, name: str) -> None:
    x = torch.rand(2, 3, 8, 8)
    total = _forwards(door, name)
    for fail_at in range(1, total + 1):
        model, _ = _user_model()
        hook = RaisingHook(fail_at)
        handle = model.net[0].register_forward_pre_hook(hook)  # before the target layer
        before = snapshot(model)
        with pytest.raises(Boom, match=f"hook {fail_at}"):
            _run(door, name, model, x)
        assert_unchanged(before, model)
        handle.remove()


class RaisingHook:
    """A user's forward pre-hook that raises at its call number ``fail_at``."""

    def __init__(self, fail_at: int) -> None:
        self.fail_at = fail_at
        self.calls = 0

    def __call__(self, _module: nn.Module, _args: Any) -> None:
        self.calls += 1
        if self.calls == self.fail_at:
            raise Boom(f"hook {self.calls}")


class FaultyTarget(ClassTarget):
    """A class target that raises at its call number ``fail_at``."""

    def __init__(self, class_idx: list[int], fail_at: int | None) -> None:
        super().__init__(class_idx)
        self.fail_at = fail_at
        self.calls = 0

    def __call__(self, output: Any, rows: Tensor | None = None) -> Tensor:
        self.calls += 1
        if self.calls == self.fail_at:
            raise Boom(f"target {self.calls}")
        return super().__call__(output, rows)


class FaultyImageTarget:
    """A pytorch-grad-cam-style per-image target (logit 1) that raises at its call number ``fail_at``."""

    def __init__(self, fail_at: int | None) -> None:
        self.fail_at = fail_at
        self.calls = 0

    def __call__(self, output: Tensor) -> Tensor:
        self.calls += 1
        if self.calls == self.fail_at:
            raise Boom(f"target {self.calls}")
        return output[..., 1]


def _with_target(door: str, name: str, model: nn.Module, x: Tensor, target: Any) -> Tensor:
    from camkit.compat.gradcam import CAMMethod
    from reliability.support import options

    if door == "torchcam":
        with torchcam(name, model, "net.3") as extractor:
            return extractor(scores=model(x), targets=target)[0]
    return CAMMethod(model, ["net.3"], method=name, **options(name)).compute(x, [target])


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("door", ["torchcam", "gradcam"])  # explain() takes class indices, not targets
def test_exception_in_target_leaves_model_unchanged(door: str, name: str) -> None:
    x = torch.rand(2, 3, 8, 8)
    make: Callable[[int | None], Any] = (
        (lambda fail_at: FaultyTarget([0, 2], fail_at)) if door == "torchcam" else FaultyImageTarget
    )
    probe = make(None)
    model, _ = _user_model()
    before = snapshot(model)
    refusal = ""
    try:
        _with_target(door, name, model, x, probe)
    except (ValueError, TypeError) as error:  # a method that takes class indices only (CAM) says so
        refusal = str(error)
    assert refusal == "" or "class" in refusal
    assert_unchanged(before, model)
    for fail_at in range(1, probe.calls + 1):
        model, _ = _user_model()
        before = snapshot(model)
        with pytest.raises(Boom, match=f"target {fail_at}"):
            _with_target(door, name, model, x, make(fail_at))
        assert_unchanged(before, model)


@pytest.mark.parametrize("name", METHODS)
def test_extractor_used_twice_and_after_an_error(name: str) -> None:
    model = small_cnn()
    x1, x2 = torch.rand(2, 3, 8, 8), torch.rand(3, 3, 8, 8)
    expected = [maps("torchcam", name, model, x, class_idx=1) for x in (x1, x2)]
    with torchcam(name, model) as extractor:
        for x, want in zip((x1, x2), expected, strict=True):
            scores = model(x)
            with pytest.raises(ValueError, match="out of range"):
                extractor(7, scores)  # a misuse first: the extractor stays usable
            extractor.options["generator"] = torch.Generator().manual_seed(0)  # the noise of the fresh call
            torch.testing.assert_close(extractor(1, scores)[0], want, rtol=0, atol=0)


@pytest.mark.parametrize("name", METHODS)
def test_gradcam_door_object_used_twice(name: str) -> None:
    from camkit.compat.gradcam import CAMMethod
    from camkit.targets import ClassifierOutputTarget
    from reliability.support import options

    model = small_cnn()
    cam = CAMMethod(model, [model[3]], method=name, **options(name))
    targets = [ClassifierOutputTarget(1)]
    for x in (torch.rand(2, 3, 8, 8), torch.rand(3, 3, 8, 8)):
        if "generator" in cam.options:
            cam.options["generator"] = torch.Generator().manual_seed(0)  # the same noise as the fresh object's
        fresh = CAMMethod(model, [model[3]], method=name, **options(name))
        torch.testing.assert_close(cam.compute(x, targets), fresh.compute(x, targets), rtol=0, atol=0)


@pytest.mark.parametrize("name", METHODS)
def test_nested_extractors_on_one_model(name: str) -> None:
    model = small_cnn()
    x = torch.rand(2, 3, 8, 8)
    expected = maps("torchcam", name, model, x, class_idx=1)
    other_expected = maps("torchcam", "layercam", model, x, class_idx=2, layer="0")
    with torchcam(name, model) as outer:
        with torchcam("layercam", model, "0") as inner, torchcam(name, model):  # same layer twice, and another
            scores = model(x)
            torch.testing.assert_close(inner(2, scores, retain_graph=True)[0], other_expected, rtol=0, atol=0)
        assert hook_count(model) > 0  # the outer extractor's hooks are still there
        torch.testing.assert_close(outer(1, scores)[0], expected, rtol=0, atol=0)
    assert hook_count(model) == 0


@pytest.mark.parametrize("name", METHODS)
def test_call_after_with_block_fails_clearly(name: str) -> None:
    model = small_cnn()
    with torchcam(name, model) as extractor:
        extractor(0, model(torch.rand(1, 3, 8, 8)))
    with pytest.raises(ValueError, match=r"no (activation|input) was captured"):  # input: black-box methods
        extractor(0, model(torch.rand(1, 3, 8, 8)))
    assert hook_count(model) == 0


def test_call_after_remove_hooks_fails_clearly() -> None:
    wrong = []
    for name in METHODS:
        model = small_cnn()
        extractor = torchcam(name, model)
        extractor(0, model(torch.rand(1, 3, 8, 8)))
        extractor.remove_hooks()
        try:
            extractor(0, model(torch.rand(1, 3, 8, 8)))
            wrong.append(f"{name}: stale maps")
        except ValueError as error:
            if "remove" not in str(error) and "captured" not in str(error):
                wrong.append(f"{name}: {error}")
    assert not wrong, wrong


@pytest.mark.parametrize("door", ["gradcam", "explain"])
def test_other_front_door_does_not_overwrite_an_open_extractor(door: str) -> None:
    model = small_cnn()
    x, other = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    expected = {name: maps("torchcam", name, model, x, class_idx=1) for name in ("eigencam", "gradcam")}
    with torchcam("eigencam", model) as silent, torchcam("gradcam", model) as loud:
        scores = model(x)
        maps(door, "scorecam", model, other)  # a notebook cell in between
        torch.testing.assert_close(silent(1, scores)[0], expected["eigencam"], rtol=0, atol=0)
        torch.testing.assert_close(loud(1, scores)[0], expected["gradcam"], rtol=0, atol=0)


def test_explain_keeps_batchnorm_statistics_of_a_training_model() -> None:
    model = small_cnn().train()
    before = snapshot(model)
    maps("explain", "gradcam", model, torch.rand(2, 3, 8, 8))
    assert_unchanged(before, model)


def test_open_fullgrad_extractor_keeps_the_users_input_gradient() -> None:
    model = small_cnn()
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    expected = torch.autograd.grad(model(x).sum(), x)[0]
    with torchcam("fullgrad", model):
        grad = torch.autograd.grad(model(x).sum(), x, allow_unused=True)[0]
    assert grad is not None
    torch.testing.assert_close(grad, expected)


def test_eval_mode_restores_flags_when_model_eval_raises() -> None:
    """A model whose ``eval()`` fails half-way (flags already flipped) gets its flags back, and the error is its own."""
    from camkit.engine import candidate_layers

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).train()
    model[1].eval()
    before = [m.training for m in model.modules()]

    def failing_eval() -> nn.Module:
        for module in model.modules():
            module.training = False
        raise RuntimeError("eval failed")

    model.eval = failing_eval  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="eval failed"):  # not turned into the dummy-forward ValueError
        candidate_layers(model, (3, 8, 8))
    assert [m.training for m in model.modules()] == before
