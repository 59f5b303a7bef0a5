"""camkit.compare: one forward and one backward for many methods, exactly the maps of each alone."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torchvision.models import resnet18

import camkit
from camkit.compare import method_name
from camkit.engine import ModelInput
from camkit.explanation import extractor_class
from camkit.passes import run_methods
from camkit.registry import get_method
from conftest import FAST_OPTIONS, METHODS, calibrated, method_options, options_for, tiny_cnn

DETERMINISTIC = [m for m in METHODS if not get_method(m).stochastic]
STOCHASTIC = [m for m in METHODS if get_method(m).stochastic]
GRADIENT_SIX = ["gradcam", "gradcampp", "xgradcam", "layercam", "hirescam", "gradcamelementwise"]


def _alone(name: str, model: nn.Module, layer: Any, x: Tensor, classes: list[int], **options: Any) -> list[Tensor]:
    build = extractor_class(name)
    extra = {"method": name} if build is camkit.CAMExtractor else {}
    layer = layer if get_method(name).layers is None else None
    with build(model, target_layer=layer, **extra, **method_options(name, **options)) as extractor:
        scores = model(x)
        return extractor(classes, scores)


def _model() -> nn.Module:
    return calibrated(resnet18(num_classes=10), size=32)


def test_every_deterministic_method_at_once_equals_each_alone() -> None:
    model, x = _model(), torch.rand(2, 3, 32, 32)
    together = camkit.compare(model, x, DETERMINISTIC, "layer4", class_idx=[1, 7], **FAST_OPTIONS)
    assert list(together) == DETERMINISTIC
    for name in DETERMINISTIC:
        alone = _alone(name, model, "layer4", x, [1, 7])
        assert len(together[name]) == len(alone), name
        for a, b in zip(alone, together[name], strict=True):
            torch.testing.assert_close(b, a, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("name", STOCHASTIC)
def test_stochastic_method_equals_alone_with_the_same_generator(name: str) -> None:
    model, x = tiny_cnn().eval(), torch.rand(2, 3, 8, 8)
    together = camkit.compare(model, x, [name], "3", class_idx=2, generator=torch.Generator().manual_seed(3))
    alone = _alone(name, model, "3", x, [2, 2], generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(together[name][0], alone[0], rtol=0, atol=0)


def test_gradient_methods_share_one_forward_and_one_backward(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x = tiny_cnn().eval(), torch.rand(3, 3, 8, 8)
    forwards: list[int] = []
    handle = model.register_forward_pre_hook(lambda _m, args: forwards.append(args[0].shape[0]))
    backward_calls: list[int] = []
    real_grad = torch.autograd.grad

    def counting(*args: Any, **kwargs: Any) -> Any:
        backward_calls.append(1)
        return real_grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting)
    try:
        maps = camkit.compare(model, x, [*GRADIENT_SIX, "eigencam", "eigengradcam"], "3")
    finally:
        handle.remove()
    assert forwards == [3]
    assert len(backward_calls) == 1
    assert all(m[0].shape == (3, 8, 8) for m in maps.values())


def test_default_target_is_the_top_class_and_layers_are_lists() -> None:
    model, x = tiny_cnn().eval(), torch.rand(2, 3, 8, 8)
    top = model(x).argmax(dim=1).tolist()
    maps = camkit.compare(model, x, ["gradcam"], ["1", "3"])
    alone = _alone("gradcam", model, ["1", "3"], x, top)
    assert len(maps["gradcam"]) == 2
    for a, b in zip(alone, maps["gradcam"], strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0)


def test_targets_objects_and_class_names() -> None:
    model, x = tiny_cnn().eval(), torch.rand(2, 3, 8, 8)
    by_target = camkit.compare(model, x, ["GradCAMpp", "LayerCAM"], "3", targets=camkit.ClassTarget([0, 4]))
    by_index = camkit.compare(model, x, ["gradcampp", "layercam"], "3", class_idx=[0, 4])
    assert list(by_target) == ["GradCAMpp", "LayerCAM"]  # the names as passed
    for mine, theirs in zip(by_target.values(), by_index.values(), strict=True):
        torch.testing.assert_close(mine[0], theirs[0], rtol=0, atol=0)
    assert method_name("SmoothGradCAMpp") == "smoothgradcampp"


def test_model_state_is_restored_and_no_hooks_left() -> None:
    from conftest import all_hooks

    model = tiny_cnn().train()
    before = [p.grad for p in model.parameters()]
    camkit.compare(
        model,
        torch.rand(2, 3, 8, 8),
        ["gradcam", "scorecam", "fullgrad"],
        "3",
        **options_for(["gradcam", "scorecam", "fullgrad"]),
    )
    assert model.training
    assert all(m.training for m in model.modules())
    assert [p.grad for p in model.parameters()] == before
    assert all_hooks(model) == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"methods": "gradcam"}, "non-empty list"),
        ({"methods": []}, "non-empty list"),
        ({"methods": ["nosuchcam"]}, "nosuchcam"),
        ({"methods": ["gradcam"], "class_idx": 1, "targets": camkit.ClassTarget(1)}, "at most one"),
        ({"methods": ["gradcam"], "class_idx": 99}, "out of range"),
        ({"methods": ["gradcam"], "target_layer": "nolayer"}, "nolayer"),
    ],
)
def test_errors_name_the_fix(kwargs: dict[str, Any], match: str) -> None:
    model = tiny_cnn().eval()
    with pytest.raises(ValueError, match=match):
        camkit.compare(model, torch.rand(2, 3, 8, 8), **{"target_layer": "3", **kwargs})


def test_run_methods_groups_by_layer_and_keeps_own_forwards_for_create_graph() -> None:
    # explain's and dataset runs' path: one shared forward per distinct layer choice, top-2 classes
    model, x = _model(), torch.rand(2, 3, 32, 32)
    layer_of = {"gradcam": "layer4", "layercam": "layer3", "xgradcam": "layer4", "eigencam": "layer3"}.__getitem__
    forwards: list[int] = []
    handle = model.register_forward_pre_hook(lambda _m, _a: forwards.append(1))

    def top2(probabilities: Tensor) -> Tensor:
        return probabilities.topk(2, dim=1).indices

    try:
        probs, classes, maps, layers = run_methods(
            model, ModelInput.of(x), ["gradcam", "layercam", "xgradcam", "eigencam"], layer_of, top2, batch_size=8
        )
        assert len(forwards) == 2  # layer4 group and layer3 group
        forwards.clear()
        _, _, graph_maps, _ = run_methods(
            model, ModelInput.of(x), ["gradcam", "xgradcam"], layer_of, top2, batch_size=8, create_graph=True
        )
        assert len(forwards) == 2  # create_graph: each method its own full-graph forward
    finally:
        handle.remove()
    assert layers == {"gradcam": ["layer4"], "layercam": ["layer3"], "xgradcam": ["layer4"], "eigencam": ["layer3"]}
    torch.testing.assert_close(probs, model(x).softmax(dim=1))
    for name, found in maps.items():
        for rank in range(2):
            alone = _alone(name, model, layer_of(name), x, classes[:, rank].tolist())[0]
            assert torch.equal(found[:, rank], alone), (name, rank)
    assert graph_maps["gradcam"].requires_grad
    torch.testing.assert_close(graph_maps["gradcam"].detach(), maps["gradcam"])
