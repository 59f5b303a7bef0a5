"""Class-agnostic methods (Eigen-CAM, KPCA-CAM, FEM, Random-CAM) need no target on any model output."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import camkit
from camkit import methods
from camkit.compat import gradcam

AGNOSTIC = [("EigenCAM", "eigencam"), ("KPCA_CAM", "kpcacam"), ("FEM", "fem"), ("RandomCAM", "randomcam")]


class Headed(nn.Module):
    """A conv body and a head whose output is a tuple, a dict or a list of dicts (never class scores)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(4, 6, 1)

    def forward(self, x: torch.Tensor) -> Any:
        y = self.head(self.body(x))
        if self.kind == "tuple":
            return y.flatten(2), [y]
        if self.kind == "dict":
            return {"pred": y.flatten(2)}
        return [{"boxes": torch.zeros(0, 4), "scores": y[i].mean((1, 2))} for i in range(x.shape[0])]


@pytest.fixture(params=["tuple", "dict", "list"])
def model(request: pytest.FixtureRequest) -> Headed:
    torch.manual_seed(0)
    return Headed(request.param).eval()


@pytest.mark.parametrize(("class_name", "name"), AGNOSTIC)
def test_registry_marks_them_class_agnostic(class_name: str, name: str) -> None:
    assert not camkit.get_method(name).needs_target
    assert camkit.get_method("gradcam").needs_target
    assert camkit.get_method("cam").needs_target


@pytest.mark.parametrize(("class_name", "name"), AGNOSTIC)
def test_gradcam_door_without_targets(model: Headed, class_name: str, name: str) -> None:
    x = torch.rand(2, 3, 16, 16)
    with getattr(gradcam, class_name)(model=model, target_layers=[model.body]) as cam:
        maps = cam(input_tensor=x)
    assert isinstance(maps, np.ndarray)
    assert maps.shape == (2, 16, 16)
    assert np.isfinite(maps).all()
    assert maps.min() >= 0
    assert maps.max() <= 1


def test_eigencam_map_is_the_same_whatever_the_output(model: Headed) -> None:
    x = torch.rand(2, 3, 16, 16)
    plain = nn.Sequential(model.body, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    with gradcam.EigenCAM(model=plain, target_layers=[model.body]) as cam:
        reference = cam(input_tensor=x)
    with gradcam.EigenCAM(model=model, target_layers=[model.body]) as cam:
        np.testing.assert_allclose(cam(input_tensor=x), reference, atol=1e-6)


def test_gradient_methods_still_ask_for_targets(model: Headed) -> None:
    with (
        gradcam.GradCAM(model=model, target_layers=[model.body]) as cam,
        pytest.raises(ValueError, match="targets=None picks the top class"),
    ):
        cam(input_tensor=torch.rand(1, 3, 16, 16))


@pytest.mark.parametrize(("class_name", "name"), AGNOSTIC)
def test_torchcam_door_without_class_idx(model: Headed, class_name: str, name: str) -> None:
    with getattr(methods, class_name)(model, "body") as extractor:
        out = model(torch.rand(2, 3, 16, 16))
        cams = extractor(scores=out)
    assert cams[0].shape == (2, 16, 16)


def test_torchcam_door_gradient_method_still_needs_class_idx(model: Headed) -> None:
    with methods.GradCAM(model, "body") as extractor:
        out = model(torch.rand(1, 3, 16, 16))
        with pytest.raises(ValueError, match="pass exactly one of class_idx"):
            extractor(scores=out)


def test_explain_without_class_scores(model: Headed) -> None:
    result = camkit.explain(model, torch.rand(2, 3, 40, 40), method=["eigencam", "fem"], target_layer="body")
    assert result.maps["eigencam"].shape == (2, 1, 40, 40)
    assert result.classes.shape == (2, 0)
    assert result.probabilities.shape == (2, 0)
    assert "no class" in repr(result)


def test_explain_gradient_method_still_needs_class_scores(model: Headed) -> None:
    with pytest.raises((ValueError, TypeError), match="class scores"):
        camkit.explain(model, torch.rand(1, 3, 40, 40), method=["eigencam", "gradcam"], target_layer="body")


def test_explain_on_a_classifier_is_unchanged() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)).eval()
    result = camkit.explain(net, torch.rand(2, 3, 40, 40), method="eigencam", target_layer="1", topk=2)
    assert result.classes.shape == (2, 2)
    assert result.probabilities.shape == (2, 5)


def test_explain_class_idx_without_class_scores(model: Headed) -> None:
    with pytest.raises(ValueError, match="class_idx=1 was given, but the model output holds no class scores"):
        camkit.explain(model, torch.rand(1, 3, 40, 40), method="eigencam", target_layer="body", class_idx=1)


def test_compare_without_class_scores(model: Headed) -> None:
    maps = camkit.compare(model, torch.rand(2, 3, 16, 16), ["eigencam", "fem"], "body")
    assert maps["eigencam"][0].shape == (2, 16, 16)
    with pytest.raises(ValueError, match="pass targets="):
        camkit.compare(model, torch.rand(2, 3, 16, 16), ["eigencam", "gradcam"], "body")
