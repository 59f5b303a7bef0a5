"""Models with several inputs: maps equal those of the same network wrapped by hand into one input."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import camkit
from camkit.compat.gradcam import CAMMethod, FullGrad
from camkit.engine import ModelInput
from camkit.explanation import extractor_class
from camkit.registry import get_method
from conftest import FAST_OPTIONS as _FAST
from conftest import METHODS, method_options

# noise methods without noise, and few optimiser steps (Opti-CAM's Adam turns rounding-level gradient
# differences into lr-sized steps over its 100 default steps): batched and per-sample calls comparable
FAST_OPTIONS = {**_FAST, "std": 0.0, "steps": 5}
TOL = {"rtol": 1e-4, "atol": 1e-5}  # float32 sums in another order (batch of 3 vs 1)

# CAM reads the classification head's weights; here the head sits behind the side-vector gate
DETERMINISTIC = [m for m in METHODS if not get_method(m).stochastic and m != "cam"]


class TwoInput(nn.Module):
    """An image branch with a target layer, and a side vector joining after global pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1))
        self.pool = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.side = nn.Linear(4, 8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: Tensor, v: Tensor) -> Tensor:
        return self.fc(self.pool(self.features(x)) * torch.sigmoid(self.side(v)))  # type: ignore[no-any-return]


class DictInput(TwoInput):
    def forward(self, pixel_values: Tensor, side: Tensor) -> Tensor:  # type: ignore[override]
        return super().forward(pixel_values, side)


class Fixed(nn.Module):
    """The hand-written wrapper users write today: one sample's side vector, repeated along the batch."""

    def __init__(self, net: TwoInput, v: Tensor) -> None:
        super().__init__()
        self.net, self.v = net, v

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x, self.v.expand(x.shape[0], -1))  # type: ignore[no-any-return]


def _net(cls: type[TwoInput] = TwoInput) -> TwoInput:
    torch.manual_seed(0)
    net = cls().eval()
    net.fc.weight.data.abs_()  # positive class evidence, so maps are not all zero
    return net


def _by_hand(name: str, net: TwoInput, x: Tensor, v: Tensor, classes: list[int]) -> Tensor:
    """Per sample, the one-input wrapper through the TorchCAM-style extractor."""
    layer = "net.features.2" if get_method(name).layers is None else None
    rows = []
    for i in range(x.shape[0]):
        wrapped = Fixed(net, v[i : i + 1]).eval()
        build = extractor_class(name)
        extra = {"method": name} if build is camkit.CAMExtractor else {}
        with build(wrapped, target_layer=layer, **extra, **method_options(name, **FAST_OPTIONS)) as extractor:
            scores = wrapped(x[i : i + 1])
            rows.append(extractor.fuse_cams(extractor(classes[i], scores)))
    return torch.cat(rows)


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_torchcam_style_two_inputs_equal_the_hand_wrapper(name: str) -> None:
    net, x, v = _net(), torch.rand(3, 3, 8, 8), torch.rand(3, 4)
    layer = "features.2" if get_method(name).layers is None else None
    build = extractor_class(name)
    extra = {"method": name} if build is camkit.CAMExtractor else {}
    with build(net, target_layer=layer, **extra, **method_options(name, **FAST_OPTIONS)) as extractor:
        scores = net(x, v)
        maps = extractor.fuse_cams(extractor([1, 2, 3], scores))
    torch.testing.assert_close(maps, _by_hand(name, net, x, v, [1, 2, 3]), **TOL)


def _front_door(name: str, model: nn.Module, layer: nn.Module | None = None) -> CAMMethod:
    if name == "fullgrad":
        return FullGrad(model=model, target_layers=[])
    options = method_options(name, **FAST_OPTIONS)  # no noise, few optimiser steps (see FAST_OPTIONS)
    layer = layer if layer is not None else model.features[2]  # type: ignore[index]
    return CAMMethod(model, [layer], method=name, **options)


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_grad_cam_front_door_tuple_and_dict_inputs(name: str) -> None:
    x, v = torch.rand(2, 3, 8, 8), torch.rand(2, 4)
    results = []
    for cls, given in ((TwoInput, (x, v)), (DictInput, {"pixel_values": x, "side": v})):
        net = _net(cls)
        with _front_door(name, net) as cam:
            results.append(cam(input_tensor=given, targets=None))
    np.testing.assert_allclose(results[0], results[1], rtol=0, atol=0)
    assert results[0].shape == (2, 8, 8)
    # the same maps as the peer-style call on the hand wrapper, image by image
    net = _net()
    top = net(x, v).argmax(dim=1).tolist()
    for i in range(2):
        wrapped = Fixed(net, v[i : i + 1]).eval()
        with _front_door(name, wrapped, net.features[2]) as cam:
            alone = cam(input_tensor=x[i : i + 1], targets=None)
        assert wrapped(x[i : i + 1]).argmax().item() == top[i]
        np.testing.assert_allclose(results[0][i : i + 1], alone, **TOL)


def test_explain_and_compare_with_dict_input() -> None:
    net, x, v = _net(DictInput), torch.rand(2, 3, 8, 8), torch.rand(2, 4)
    given = {"pixel_values": x, "side": v}
    methods = ["gradcam", "layercam", "scorecam", "ablationcam"]
    result = camkit.explain(net, given, method=methods, target_layer="features.2", topk=2, batch_size=64)
    assert result.maps["gradcam"].shape == (2, 2, 8, 8)
    together = camkit.compare(net, given, methods, "features.2", class_idx=result.classes[:, 0].tolist())
    for name in methods:
        hand = _by_hand(name, _net(), x, v, result.classes[:, 0].tolist())
        torch.testing.assert_close(together[name][0], hand, **TOL)
        from camkit import ops

        torch.testing.assert_close(
            result.maps[name][:, 0], ops.normalize(ops.upsample(hand, (8, 8))), rtol=1e-5, atol=1e-6
        )


class RGBDepth(nn.Module):
    """Two images: only the depth branch carries the target layer."""

    def __init__(self) -> None:
        super().__init__()
        self.rgb = nn.Conv2d(3, 4, 3, padding=1)
        self.depth = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1))
        self.head = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6 + 4, 3))

    def forward(self, rgb: Tensor, depth: Tensor) -> Tensor:
        a = torch.relu(self.rgb(rgb)).mean(dim=(2, 3))
        d = self.head[:3](self.depth(depth))
        return self.head[3](torch.cat([d, a], dim=1))  # type: ignore[no-any-return]


def test_image_arg_chooses_what_perturbation_methods_modify() -> None:
    torch.manual_seed(0)
    net = RGBDepth().eval()
    rgb, depth = torch.rand(2, 3, 8, 8), torch.rand(2, 1, 8, 8)
    with CAMMethod(net, [net.depth[2]], method="scorecam", image_arg=1) as cam:
        maps = cam(input_tensor=(rgb, depth), targets=None)
    top = net(rgb, depth).argmax(dim=1).tolist()
    for i in range(2):

        class DepthOnly(nn.Module):
            def __init__(self, inner: RGBDepth, fixed: Tensor) -> None:
                super().__init__()
                self.inner, self.fixed = inner, fixed

            def forward(self, d: Tensor) -> Tensor:
                return self.inner(self.fixed.expand(d.shape[0], -1, -1, -1), d)  # type: ignore[no-any-return]

        wrapped = DepthOnly(net, rgb[i : i + 1]).eval()
        with CAMMethod(wrapped, [net.depth[2]], method="scorecam") as cam:
            alone = cam(input_tensor=depth[i : i + 1], targets=None)
        assert wrapped(depth[i : i + 1]).argmax().item() == top[i]
        np.testing.assert_allclose(maps[i : i + 1], alone, **TOL)


def test_model_input_rules_and_errors() -> None:
    x, v = torch.rand(2, 3, 8, 8), torch.rand(2, 4)
    assert ModelInput.of((v, x)).image_key == 1  # the first tensor with spatial dims
    assert (
        ModelInput.of({"input_ids": torch.ones(2, 5, dtype=torch.long), "pixel_values": x}).image_key == "pixel_values"
    )
    assert ModelInput.of({"a": x, "b": x}, image_arg="b").image_key == "b"
    with pytest.raises(ValueError, match="image_arg='c' names no argument"):
        ModelInput.of({"a": x}, image_arg="c")
    with pytest.raises(ValueError, match="name it with image_arg"):
        ModelInput.of((v, v))
    with pytest.raises(TypeError, match="tuple of positional arguments or a dict"):
        ModelInput.of("image.png")
    net = _net()
    with (
        pytest.raises(ValueError, match="names no argument"),
        CAMMethod(net, [net.features[2]], method="gradcam", image_arg=5) as cam,
    ):
        cam(input_tensor=(x, v))
    with CAMMethod(net, [net.features[2]], method="gradcam") as cam, pytest.raises(TypeError, match="unsqueeze"):
        cam(input_tensor=torch.rand(3, 8))


def test_aug_smooth_repeats_the_other_inputs() -> None:
    net, x, v = _net(), torch.rand(2, 3, 8, 8), torch.rand(2, 4)
    with CAMMethod(net, [net.features[2]], method="gradcam") as cam:
        maps = cam(input_tensor=(x, v), targets=None, aug_smooth=True)
    for i in range(2):
        wrapped = Fixed(net, v[i : i + 1]).eval()
        with CAMMethod(wrapped, [net.features[2]], method="gradcam") as cam:
            alone = cam(input_tensor=x[i : i + 1], targets=None, aug_smooth=True)
        np.testing.assert_allclose(maps[i : i + 1], alone, **TOL)


def test_any_options_pass(monkeypatch: pytest.MonkeyPatch) -> Any:
    # inference-mode inputs in a tuple are cloned for the graph, like a single tensor
    net = _net()
    with torch.inference_mode():
        x, v = torch.rand(2, 3, 8, 8), torch.rand(2, 4)
    with CAMMethod(net, [net.features[2]], method="gradcam") as cam:
        assert cam(input_tensor=(x, v), targets=None).shape == (2, 8, 8)


@pytest.mark.parametrize("metric", ["confidence_change", "deletion", "insertion", "road", "road_combined"])
def test_metrics_perturb_only_the_image(metric: str) -> None:
    from camkit import metrics

    net, x, v = _net(), torch.rand(3, 3, 8, 8), torch.rand(3, 4)
    maps = torch.rand(3, 8, 8)
    fn = getattr(metrics, metric)
    extra: dict[str, Any] = {"steps": 4} if metric in ("deletion", "insertion") else {}
    if metric.startswith("road"):
        extra = {"percentiles": [20, 50], "generator": torch.Generator().manual_seed(0), "noise": 0.0}
    both = fn(net, (x, v), maps, **extra)
    for i in range(3):
        if metric.startswith("road"):
            extra["generator"] = torch.Generator().manual_seed(0)
        alone = fn(Fixed(net, v[i : i + 1]).eval(), x[i : i + 1], maps[i : i + 1], **extra)
        values = both.change.per_sample[i] if metric == "confidence_change" else both.per_sample[i]
        expected = alone.change.per_sample[0] if metric == "confidence_change" else alone.per_sample[0]
        torch.testing.assert_close(values, expected, **TOL)


@pytest.mark.parametrize("name", ["gradcam", "layercam", "scorecam", "ablationcam"])
def test_hugging_face_vit_with_processor_style_dict_and_no_wrapper(name: str) -> None:
    from test_vit_models import hf_vit

    model, x = hf_vit(), torch.rand(2, 3, 32, 32)
    layer = "vit.layers.1.layernorm_before"
    # grad-cam front door: the processor's dict, a ModelOutput with logits, tokens read as a grid
    with CAMMethod(model, [layer], method=name, batch_size=64) as cam:
        from_dict = cam(input_tensor={"pixel_values": x}, targets=None)
        from_tensor = cam(input_tensor=x, targets=None)
    np.testing.assert_allclose(from_dict, from_tensor, rtol=1e-5, atol=1e-6)
    assert from_dict.shape == (2, 32, 32)
    # TorchCAM style: the user's own call with keywords
    build = extractor_class(name)
    extra = {"method": name} if build is camkit.CAMExtractor else {}
    with build(model, target_layer=layer, batch_size=64, **extra) as extractor:
        out = model(pixel_values=x)
        keyword = extractor([1, 2], out)[0]
        out = model(x)
        positional = extractor([1, 2], out)[0]
    torch.testing.assert_close(keyword, positional, **TOL)
    assert keyword.shape == (2, 4, 4)
