"""Engine behaviour generated over the registry: batching, 3D, in-place ops, layer choice."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

import camkit
from camkit.engine import Capture, candidate_layers, eval_mode, resolve_layers
from camkit.methods import GradCAM, LayerCAM, ScoreCAM
from camkit.targets import ClassProbabilityTarget, ClassTarget
from conftest import METHODS, make_extractor, tiny_cnn


def _maps(name: str, model: nn.Module, x: torch.Tensor, classes: list[int] | int, **options: object) -> list:
    with make_extractor(name, model, "3", std=0.0, **options) as extractor:
        scores = model(x)
        return extractor(classes, scores, normalized=False)


@pytest.mark.parametrize("name", METHODS)
def test_batch_equals_single_calls(name: str) -> None:
    if camkit.get_method(name).stochastic:
        pytest.skip(f"{name} draws random weights: batched and single calls differ by design")
    model = tiny_cnn().eval()
    x = torch.rand(3, 3, 8, 8)
    classes = [4, 0, 2]
    batched = _maps(name, model, x, classes)[0]
    singles = torch.cat([_maps(name, model, x[i : i + 1], [c])[0] for i, c in enumerate(classes)])
    assert batched.abs().amax() > 0
    torch.testing.assert_close(batched, singles, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", METHODS)
def test_3d_maps(name: str) -> None:
    model = tiny_cnn(dims=3).eval()
    x = torch.rand(2, 3, 4, 6, 6)
    maps = _maps(name, model, x, [1, 3])
    assert maps[0].shape == (2, 4, 6, 6)
    assert torch.isfinite(maps[0]).all()


@pytest.mark.parametrize("name", METHODS)
def test_inplace_relu_after_layer_does_not_corrupt(name: str) -> None:
    x = torch.rand(2, 3, 8, 8)
    plain = tiny_cnn(inplace=False).eval()
    inplace = tiny_cnn(inplace=True).eval()
    inplace.load_state_dict(plain.state_dict())
    torch.manual_seed(1)  # stochastic methods draw the same weights in both calls
    expected = _maps(name, plain, x, [0, 1])[0]
    torch.manual_seed(1)
    got = _maps(name, inplace, x, [0, 1])[0]
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)
    # the hooked conv's output has negative values: the map was computed before the ReLU
    with Capture(inplace, ["3"]) as capture:
        inplace(x)
        assert capture.activations()[0].amin() < 0


def test_automatic_layer_is_last_spatial_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    model = tiny_cnn()
    with caplog.at_level(logging.WARNING, logger="camkit"):
        names = resolve_layers(model, None, (3, 8, 8))
    assert names == ["4"]  # the ReLU after the last conv: the last output with spatial dims
    assert "'4'" in caplog.text
    shapes = dict(candidate_layers(model, (3, 8, 8)))
    assert shapes["5"] == (1, 8, 1, 1)


def test_automatic_layer_wrong_input_shape() -> None:
    with pytest.raises(ValueError, match="input_shape"):
        GradCAM(tiny_cnn(), input_shape=(4, 8, 8))


def test_second_extractor_does_not_disturb_first() -> None:
    model = tiny_cnn().eval()
    x = torch.rand(1, 3, 8, 8)
    with GradCAM(model, "3") as first, ScoreCAM(model, "3") as other:
        scores = model(x)  # both capture the user's forward
        with GradCAM(model, input_shape=(3, 16, 16)):  # its dummy forward must not reach `first`
            pass
        other(0)  # its masked forwards must not overwrite `first`'s activations either
        first_maps = first(0, scores, normalized=False)
    with GradCAM(model, "3") as fresh:
        expected = fresh(0, model(x), normalized=False)
    torch.testing.assert_close(first_maps[0], expected[0])


def test_frozen_model_still_gets_gradients() -> None:
    model = tiny_cnn().eval().requires_grad_(False)
    with Capture(model, ["3"]) as capture:
        grads = capture.gradients(model(torch.rand(1, 3, 8, 8))[:, 0].sum())
    assert grads[0].abs().amax() > 0
    with LayerCAM(model, "3") as extractor:
        cams = extractor(0, model(torch.rand(1, 3, 8, 8)), normalized=False)
    assert cams[0].shape == (1, 8, 8)
    assert not any(p.requires_grad for p in model.parameters())


def test_multiple_layers_and_fuse() -> None:
    model = tiny_cnn().eval()
    with LayerCAM(model, ["0", model[3]]) as extractor:
        cams = extractor(1, model(torch.rand(2, 3, 8, 8)))
    assert [c.shape for c in cams] == [(2, 8, 8), (2, 8, 8)]
    fused = LayerCAM.fuse_cams(cams)
    torch.testing.assert_close(fused, torch.maximum(torch.tanh(2 * cams[0]), torch.tanh(2 * cams[1])))
    assert LayerCAM.fuse_cams(cams[:1]) is cams[0]


def test_targets_keyword_and_probability_target() -> None:
    model = tiny_cnn().eval()
    x = torch.rand(2, 3, 8, 8)
    with GradCAM(model, "3") as extractor:
        by_index = extractor([1, 2], model(x), normalized=False)
        by_target = extractor(scores=model(x), targets=ClassTarget([1, 2]), normalized=False)
        by_prob = extractor(scores=model(x), targets=ClassProbabilityTarget([1, 2]), normalized=False)
    torch.testing.assert_close(by_index[0], by_target[0])
    assert not torch.allclose(by_prob[0], by_index[0])


def test_half_precision_activations_are_upcast() -> None:
    model = tiny_cnn().eval()
    x = torch.rand(1, 3, 8, 8)
    with GradCAM(model, "3") as extractor:
        expected = extractor(0, model(x), normalized=False)[0]
    half = tiny_cnn().eval()
    half.load_state_dict(model.state_dict())
    half[3].half()
    half[3].register_forward_pre_hook(lambda _m, a: (a[0].half(),))
    half[4].register_forward_pre_hook(lambda _m, a: (a[0].float(),))
    with GradCAM(half, "3") as extractor:
        got = extractor(0, half(x), normalized=False)[0]
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-2, atol=1e-2)


def test_normalized_flat_map_is_zero_not_nan() -> None:
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2)).eval()
    x = torch.ones(1, 3, 4, 4)  # constant input: every map is flat
    with GradCAM(model, "0") as extractor:
        cams = extractor(0, model(x))
    assert torch.equal(cams[0], torch.zeros(1, 4, 4))


def test_disable_hooks_ignores_forwards() -> None:
    model = tiny_cnn().eval()
    with GradCAM(model, "3") as extractor:
        extractor.disable_hooks()
        model(torch.rand(1, 3, 8, 8))
        with pytest.raises(ValueError, match="no activation"):
            extractor(0, model(torch.rand(1, 3, 8, 8)))
        extractor.enable_hooks()
        assert extractor(0, model(torch.rand(1, 3, 8, 8)))[0].shape == (1, 8, 8)


def test_progress_line_for_perturbation_methods(capsys: pytest.CaptureFixture[str]) -> None:
    model = tiny_cnn().eval()
    x = torch.rand(1, 3, 8, 8)
    with ScoreCAM(model, "3", batch_size=2, progress=True) as extractor:
        model(x)
        extractor(0)
    err = capsys.readouterr().err
    assert "masked inputs: 8/8 (100%)" in err
    with ScoreCAM(model, "3", batch_size=2) as extractor:  # default: only on a terminal
        model(x)
        extractor(0)
    assert capsys.readouterr().err == ""


def test_eval_mode_restores_mixed_flags_and_shared_modules() -> None:
    shared = nn.Dropout(0.5)
    model = nn.Sequential(nn.Linear(2, 2), shared, nn.Sequential(shared, nn.BatchNorm1d(2)), nn.Dropout(0.1))
    model.eval()
    shared.train()  # MC dropout: the root is in eval mode, one (shared) child is not
    model[3].train()
    before = [m.training for m in model.modules()]
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == before
    with pytest.raises(RuntimeError, match="boom"), eval_mode(model):
        raise RuntimeError("boom")
    assert [m.training for m in model.modules()] == before


def test_eval_mode_leaves_an_eval_model_untouched() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)).eval()
    calls: list[bool] = []
    model.train = lambda mode=True: calls.append(mode) or model  # type: ignore[method-assign]
    with eval_mode(model):
        pass
    assert calls == []
    assert not model.training


class _Shared(nn.Module):
    """A module called twice in one forward, and a parent that owns a parameter of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.first = nn.Conv2d(3, 4, 3)
        self.twice = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.twice(self.first(self.twice(x))) * self.scale


def test_module_calls_records_every_call_in_order_and_leaves_no_hook() -> None:
    from camkit.engine import module_calls, output_shapes

    net = _Shared()
    x = torch.randn(1, 3, 6, 6)
    with module_calls(net, keep=lambda out: tuple(out.shape)) as calls:
        net(x)
    assert calls == [("twice", (1, 3, 6, 6)), ("first", (1, 4, 4, 4)), ("twice", (1, 4, 4, 4))]  # the model: by name
    with module_calls(net, ["", "first"], before=True, keep=lambda args: tuple(args[0].shape)) as calls:
        net(x)
    assert calls == [("", (1, 3, 6, 6)), ("first", (1, 3, 6, 6))]  # a parent starts before its children
    with output_shapes(net) as shapes:
        net(x)
    assert list(shapes) == ["first", "twice"]  # the last call's shape, at its place in the order
    assert shapes["twice"] == (1, 4, 4, 4)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())
    with pytest.raises(ValueError, match="has no submodule 'nope'"), module_calls(net, ["nope"]):
        pass
    with pytest.raises(RuntimeError), module_calls(net):
        net(torch.randn(1, 5, 6, 6))  # wrong channels: the hooks still go
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())


def test_module_calls_pauses_camkit_hooks_unless_asked_not_to() -> None:
    from camkit.engine import module_calls

    net = tiny_cnn()
    with Capture(net, ["3"]) as capture:
        with module_calls(net, keep=lambda _out: None):
            net(torch.randn(1, 3, 16, 16))
        assert capture.input_size is None  # a dummy forward: camkit's own hooks ignored it
        with module_calls(net, keep=lambda _out: None, pause=False):
            net(torch.randn(1, 3, 16, 16))
        assert capture.input_size == (16, 16)
