"""The pytorch-grad-cam-style front door (camkit.compat.gradcam), its targets and utilities.

1. Front door on torchvision resnet18 / mobilenet_v2: output contract, top-class default, outputs,
   the model left exactly as it was, no hooks left.
2. Differential tests against pytorch-grad-cam 1.5.7 for every method present in both (decided
   from camkit's registry). The peer gets its own deep copy of the model (it calls model.eval()
   and backward()). Random-init BatchNorm nets are first given running statistics of random
   inputs (``conftest.calibrated``): with the default statistics, mobilenet_v2's activations shrink to
   ~1e-9 and pytorch-grad-cam's absolute epsilon (1e-7 in its min-max) dominates its output.
   Deliberate differences, each checked precisely:
   * Eigen-CAM family / KPCA-CAM / eigen_smooth: the principal component's sign. camkit fixes it
     (component towards more activation); the peer keeps LAPACK's. The peer's projection functions
     are wrapped to use camkit's sign rule, then both agree.
   * Grad-CAM++: the peer adds 1e-6 to the alpha denominator ``2g² + ΣA·g³``, which matters when
     g² is ~1e-4 (raw logits of these nets: max diff ~1e-2). With the target scaled by 1e4 the
     epsilon is negligible and both agree to 1e-5.
   * Score-CAM: the peer upsamples each channel with ``align_corners=True`` and min-max
     normalizes after upsampling; camkit normalizes, then upsamples with ``align_corners=False``.
     Its softmax of the raw scores equals camkit's ``softmax(Y(M⊙X) - Y(X))`` (the baseline is
     constant per sample). Checked exactly where no upsampling happens, and with the peer's
     upsampling switched to ``align_corners=False`` at an odd integer scale (where interpolation
     keeps each channel's min and max, so the normalization order does not matter).
   * Random-CAM is stochastic in both: contract only.
3. Targets on toy cases with hand-computed values, against the peer's targets, and on torchvision
   segmentation and detection models through the front door.
4. Utilities: overlay, JET vs OpenCV, pre/de-processing, scale_cam_image vs the peer.
"""

from __future__ import annotations

import copy
import math
import pathlib
import re
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models import mobilenet_v2, resnet18

import camkit
import camkit.compat.gradcam as front
from camkit.compat.gradcam import PEER_METHODS, CAMMethod, PerSampleTargets, batched_target
from camkit.compat.gradcam.utils import reshape_transforms
from camkit.compat.gradcam.utils.image import (
    deprocess_image,
    jet_table,
    preprocess_image,
    scale_cam_image,
    show_cam_on_image,
)
from camkit.compat.gradcam.utils.model_targets import (
    BinaryClassifierOutputTarget,
    ClassifierOutputReST,
    ClassifierOutputSoftmaxTarget,
    ClassifierOutputTarget,
    FasterRCNNBoxScoreTarget,
    SemanticSegmentationTarget,
    SimilarityToConceptTarget,
)
from camkit.targets import ClassProbabilityTarget, ClassTarget
from conftest import all_hooks, calibrated

CLASSES = [3, 7]


def _registered(class_name: str) -> bool:
    return class_name in front.available()


def _resnet() -> tuple[nn.Module, Callable[[nn.Module], list[nn.Module]]]:
    torch.manual_seed(0)
    return calibrated(resnet18(weights=None)), lambda m: [m.layer4[-1]]


def _mobilenet() -> tuple[nn.Module, Callable[[nn.Module], list[nn.Module]]]:
    torch.manual_seed(0)
    return calibrated(mobilenet_v2(weights=None)), lambda m: [m.features[-1]]


MODELS = {"resnet18": _resnet, "mobilenet_v2": _mobilenet}


@pytest.fixture(scope="module", params=list(MODELS))
def net(request: pytest.FixtureRequest) -> tuple[nn.Module, Callable[[nn.Module], list[nn.Module]]]:
    return MODELS[request.param]()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def tiny_cnn(stride: int = 1) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=stride, padding=0 if stride == 3 else 1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 5),
    ).eval()


# 1. the front door --------------------------------------------------------------------------


def test_contract(net: Any, images: torch.Tensor) -> None:
    model, layers = net
    with front.GradCAM(model=model, target_layers=layers(model)) as cam:
        maps = cam(input_tensor=images, targets=[ClassifierOutputTarget(c) for c in CLASSES])
        outputs = cam.outputs
    assert isinstance(maps, np.ndarray)
    assert maps.dtype == np.float32
    assert maps.shape == (2, 64, 64)
    assert maps.min() >= 0
    assert maps.max() <= 1
    np.testing.assert_allclose(maps.reshape(2, -1).max(1), 1.0)
    with torch.no_grad():
        expected = model(images)
    assert not outputs.requires_grad
    torch.testing.assert_close(outputs, expected)


def test_targets_none_is_top_class(net: Any, images: torch.Tensor) -> None:
    model, layers = net
    with torch.no_grad():
        top = model(images).argmax(1).tolist()
    with front.GradCAM(model=model, target_layers=layers(model)) as cam:
        default = cam(input_tensor=images, targets=None)
        explicit = cam(input_tensor=images, targets=[ClassifierOutputTarget(c) for c in top])
    np.testing.assert_array_equal(default, explicit)


def test_one_target_for_all_images(images: torch.Tensor) -> None:
    model, layers = _resnet()
    cam = front.GradCAM(model=model, target_layers=layers(model))
    one = cam(input_tensor=images, targets=[ClassifierOutputTarget(5)])
    both = cam(input_tensor=images, targets=[ClassifierOutputTarget(5), ClassifierOutputTarget(5)])
    np.testing.assert_array_equal(one, both)
    with pytest.raises(ValueError, match="3 targets for 2 images"):
        cam(input_tensor=images, targets=[ClassifierOutputTarget(5)] * 3)
    with pytest.raises(TypeError, match="one target per image"):
        cam(input_tensor=images, targets=ClassifierOutputTarget(5))  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["GradCAM", "ScoreCAM", "EigenCAM"])
def test_model_untouched(name: str) -> None:
    if not _registered(name):
        pytest.skip(f"{name} is not in camkit's registry yet")
    model = tiny_cnn()
    model.add_module("bn", nn.BatchNorm1d(5))
    model.train()
    state = copy.deepcopy(model.state_dict())
    hooks = all_hooks(model)
    x = torch.rand(2, 3, 16, 16)
    with getattr(front, name)(model=model, target_layers=[model[2]]) as cam:
        maps = cam(input_tensor=x, targets=None)
        assert all_hooks(model) == hooks  # hooks live only during a call
    assert maps.shape == (2, 16, 16)
    assert all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)  # BatchNorm statistics too
    assert all_hooks(model) == hooks


def test_hooks_removed_after_error(images: torch.Tensor) -> None:
    model, layers = _resnet()
    with (
        pytest.raises(ValueError, match="out of range"),
        front.GradCAM(model=model, target_layers=layers(model)) as cam,
    ):
        cam(input_tensor=images, targets=[ClassifierOutputTarget(5000)])
    assert all_hooks(model) == 0


def test_inference_mode_and_no_grad_inputs() -> None:
    model = tiny_cnn()
    x = torch.rand(2, 3, 16, 16)
    cam = front.GradCAM(model=model, target_layers=[model[2]])
    expected = cam(input_tensor=x)
    with torch.inference_mode():
        frozen = x.clone()
        inside = cam(input_tensor=frozen)
    with torch.no_grad():
        no_grad = cam(input_tensor=x)
    np.testing.assert_array_equal(inside, expected)
    np.testing.assert_array_equal(no_grad, expected)


def test_compute_stays_a_tensor_and_layers_by_name() -> None:
    model = tiny_cnn()
    x = torch.rand(2, 3, 16, 16)
    by_module = front.LayerCAM(model=model, target_layers=[model[2]])(input_tensor=x)
    maps = front.LayerCAM(model=model, target_layers=["2"]).compute(x)
    assert isinstance(maps, torch.Tensor)
    assert maps.shape == (2, 16, 16)
    np.testing.assert_array_equal(maps.numpy(), by_module)
    automatic = front.LayerCAM(model=model, target_layers=None)(input_tensor=x)  # last spatial layer: "3"
    np.testing.assert_array_equal(automatic, front.LayerCAM(model=model, target_layers=[model[3]])(input_tensor=x))


def test_multilayer_mean_of_normalized_layers() -> None:
    model = tiny_cnn()  # both layers at the input size: each layer's map is already min-max normalized
    x = torch.rand(2, 3, 16, 16)
    first = front.GradCAM(model=model, target_layers=[model[1]]).compute(x)
    second = front.GradCAM(model=model, target_layers=[model[3]]).compute(x)
    both = front.GradCAM(model=model, target_layers=[model[1], model[3]]).compute(x)
    mean = (first + second) / 2
    flat = mean.flatten(1)
    low, high = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    torch.testing.assert_close(both, ((flat - low) / (high - low)).view_as(mean))


def test_aug_smooth_contract() -> None:
    model = tiny_cnn()
    x = torch.rand(2, 3, 16, 16)
    with front.GradCAM(model=model, target_layers=[model[2]]) as cam:
        smooth = cam(input_tensor=x, targets=[ClassifierOutputTarget(1)], aug_smooth=True, eigen_smooth=True)
        plain_outputs = model(x).detach()
        torch.testing.assert_close(cam.outputs, plain_outputs)  # the unaugmented rows
    assert smooth.shape == (2, 16, 16)
    assert smooth.dtype == np.float32
    assert smooth.min() >= 0
    assert smooth.max() <= 1


def test_constructor_arguments() -> None:
    model = tiny_cnn()
    cam = front.ScoreCAM(model=model, target_layers=[model[2]], batch_size=4)
    assert cam.batch_size == 4
    cam.batch_size = 7
    assert cam.batch_size == 7
    with pytest.raises(ValueError, match="batch_size"):
        cam.batch_size = 0
    with pytest.raises(TypeError, match="unexpected argument"):
        front.GradCAM(model=model, target_layers=[model[2]], use_cuda=True)
    with pytest.raises(ValueError, match="not a submodule name"):
        front.GradCAM(model=model, target_layers=["nope"])
    with pytest.raises(TypeError):
        front.GradCAM(model, [model[2]], None, 4)  # batch_size is keyword-only (FEM's 4th argument is k)
    if _registered("AblationCAM"):
        with pytest.warns(UserWarning, match="ratio_channels_to_ablate=0.5 is ignored"):
            ablation = front.AblationCAM(model=model, target_layers=[model[2]], ratio_channels_to_ablate=0.5)
        assert "ratio_channels_to_ablate" not in ablation.options
    generic = CAMMethod(model, [model[2]], method="sscam", num_samples=2)
    assert generic(torch.rand(1, 3, 16, 16)).shape == (1, 16, 16)
    if _registered("FEM"):
        assert front.FEM(model=model, target_layers=[model[2]], k=1).options["k"] == 1


def test_exports_follow_the_registry() -> None:
    available = front.available()
    assert set(available) <= set(PEER_METHODS)
    for name in available:
        cls = getattr(front, name)
        assert issubclass(cls, CAMMethod)
        assert name in front.__all__
        assert cls.method == camkit.get_method(PEER_METHODS[name][0]).name
    missing = [name for name in PEER_METHODS if name not in available]
    if not missing:
        pytest.skip("every pytorch-grad-cam method is registered")
    with pytest.raises(NotImplementedError, match=missing[0]):
        exec(f"from camkit.compat.gradcam import {missing[0]}", {})


def test_compat_is_a_leaf() -> None:
    root = pathlib.Path(camkit.__file__).parent
    importing = re.compile(r"^\s*(from|import)\s+camkit\.compat", re.MULTILINE)
    for path in root.rglob("*.py"):
        if "compat" not in path.relative_to(root).parts:
            assert not importing.search(path.read_text()), path


# 2. differential tests against pytorch-grad-cam 1.5.7 ------------------------------------


def _peer() -> Any:
    return pytest.importorskip("pytorch_grad_cam")


def _peer_targets(classes: list[int]) -> list[Any]:
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget as PeerTarget

    return [PeerTarget(c) for c in classes]


def _align_sign(projection_fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """Wrap a peer projection so each map uses camkit's sign: sum_p proj_p * sum_k Xc_pk >= 0."""

    def wrapped(batch: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
        projections = projection_fn(batch, *args, **kwargs)
        for i, acts in enumerate(np.nan_to_num(batch)):
            rows = acts.reshape(acts.shape[0], -1).T
            rows = rows - rows.mean(axis=0)
            if float((projections[i].reshape(-1) * rows.sum(axis=1)).sum()) < 0:
                projections[i] = -projections[i]
        return projections

    return wrapped


@pytest.fixture
def peer_signs(monkeypatch: pytest.MonkeyPatch) -> None:
    _peer()
    for name, module in list(sys.modules.items()):
        if name.startswith("pytorch_grad_cam"):
            for fn in ("get_2d_projection", "get_2d_projection_kernel"):
                if hasattr(module, fn):
                    monkeypatch.setattr(module, fn, _align_sign(getattr(module, fn)))


class Scaled:
    """A user-written per-image target: k times one logit."""

    def __init__(self, category: int, k: float) -> None:
        self.category, self.k = category, k

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return self.k * output[self.category]


# Methods whose comparison needs more than the default call (see the module docstring).
# ScoreCAM's masks are upsampled differently (pytorch-grad-cam: align_corners=True, normalized after
# upsampling; camkit: normalized, then align_corners=False), which moves maps by ~1e-3 at layer4's
# 32x upsampling; both are compared exactly where that cannot matter, on tiny_cnn below.
# AblationCAM is compared here on both nets (camkit re-runs only what follows the layer).
UPSAMPLES_DIFFERENTLY = {"ScoreCAM"}
STOCHASTIC = {"RandomCAM"}
# Scale of the target for methods where the peer's epsilons (1e-6 in the Grad-CAM++ alpha, 1e-7 in
# every per-channel min-max of FullGrad) are not small against this random net's values; camkit's
# maps do not depend on the scale, so a scaled target makes the comparison exact on both sides.
SCALED_TARGET = {"GradCAMPlusPlus": 1e4, "FullGrad": 1e10}


@pytest.mark.parametrize("name", list(PEER_METHODS))
def test_against_peer(name: str, net: Any, images: torch.Tensor, peer_signs: None) -> None:
    peer = _peer()
    if not _registered(name):
        pytest.skip(f"{name}: camkit's registry has no {PEER_METHODS[name][0]!r} yet")
    if not hasattr(peer, name):
        pytest.skip(f"pytorch-grad-cam 1.5.7 has no {name}")
    if name in UPSAMPLES_DIFFERENTLY:
        pytest.skip(f"{name}: mask upsampling differs on purpose; compared in test_perturbation_against_peer")
    model, layers = net
    peer_model = copy.deepcopy(model)
    if name in SCALED_TARGET:
        peer_targets: list[Any] = [Scaled(c, SCALED_TARGET[name]) for c in CLASSES]
        targets: list[Any] = peer_targets
    else:
        peer_targets, targets = _peer_targets(CLASSES), [ClassifierOutputTarget(c) for c in CLASSES]
    with getattr(peer, name)(model=peer_model, target_layers=layers(peer_model)) as cam:
        expected = cam(input_tensor=images, targets=peer_targets)
    with getattr(front, name)(model=model, target_layers=layers(model)) as cam:
        got = cam(input_tensor=images, targets=targets)
    assert got.shape == expected.shape == (2, 64, 64)
    if name in STOCHASTIC:
        assert got.min() >= 0
        assert got.max() <= 1
        return
    np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize(
    ("name", "aug_smooth", "eigen_smooth"),
    [("GradCAM", True, False), ("GradCAM", False, True), ("LayerCAM", True, True), ("GradCAM", None, False)],
)
def test_smoothing_and_top_class_against_peer(
    name: str, aug_smooth: bool | None, eigen_smooth: bool, images: torch.Tensor, peer_signs: None
) -> None:
    peer = _peer()
    model = calibrated(resnet18(weights=None))
    layers = [model.layer3[-1], model.layer4[-1]]  # two layers: the mean of normalized maps
    peer_model = copy.deepcopy(model)
    peer_layers = [peer_model.layer3[-1], peer_model.layer4[-1]]
    targets = None if aug_smooth is None else [ClassifierOutputTarget(c) for c in CLASSES]
    peer_targets = None if aug_smooth is None else _peer_targets(CLASSES)
    expected = getattr(peer, name)(peer_model, peer_layers)(images, peer_targets, bool(aug_smooth), eigen_smooth)
    got = getattr(front, name)(model, layers)(images, targets, bool(aug_smooth), eigen_smooth)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_gradcampp_epsilon_is_the_only_difference(images: torch.Tensor) -> None:
    peer = _peer()
    model, layers = _resnet()
    for k, tolerance in ((1.0, 1e-1), (1e4, 1e-5)):
        peer_model = copy.deepcopy(model)
        targets = [Scaled(c, k) for c in CLASSES]
        expected = peer.GradCAMPlusPlus(peer_model, layers(peer_model))(images, targets)
        got = front.GradCAMPlusPlus(model, layers(model))(images, targets)
        np.testing.assert_allclose(got, expected, atol=tolerance)


@pytest.mark.parametrize("name", ["ScoreCAM", "AblationCAM"])
@pytest.mark.parametrize("stride", [1, 3])
def test_perturbation_against_peer(name: str, stride: int, monkeypatch: pytest.MonkeyPatch) -> None:
    peer = _peer()
    if not _registered(name):
        pytest.skip(f"{name} is not in camkit's registry yet")
    model = tiny_cnn(stride)
    x = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    if name == "ScoreCAM" and stride > 1:
        # Upsampled masks: the peer's align_corners=True is the one difference (see the docstring).
        def upsample(size: Any) -> nn.Module:
            return nn.Upsample(size=size, mode="bilinear", align_corners=False)

        monkeypatch.setattr(torch.nn, "UpsamplingBilinear2d", upsample)
    peer_model = copy.deepcopy(model)
    expected = getattr(peer, name)(peer_model, [peer_model[3]])(x, _peer_targets([1, 4]))
    got = getattr(front, name)(model, [model[3]], batch_size=5)(x, [ClassifierOutputTarget(c) for c in (1, 4)])
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_peer_targets_agree() -> None:
    _peer()
    from pytorch_grad_cam.utils import model_targets as peer

    logits = torch.randn(3, 5)
    for mine, theirs in [
        (ClassifierOutputTarget(2), peer.ClassifierOutputTarget(2)),
        (ClassifierOutputSoftmaxTarget(2), peer.ClassifierOutputSoftmaxTarget(2)),
        (ClassifierOutputReST(2), peer.ClassifierOutputReST(2)),
    ]:
        torch.testing.assert_close(mine(logits), theirs(logits))
        for row in logits:
            torch.testing.assert_close(mine(row), theirs(row).reshape(()))
    binary = torch.randn(3, 1)
    for category in (0, 1):
        for row in binary:
            torch.testing.assert_close(
                BinaryClassifierOutputTarget(category)(row), peer.BinaryClassifierOutputTarget(category)(row)
            )
    seg = torch.randn(2, 3, 4, 5)
    mask = (np.random.default_rng(0).random((4, 5)) > 0.5).astype(np.float32)
    for row in seg:
        torch.testing.assert_close(
            SemanticSegmentationTarget(1, mask)(row), peer.SemanticSegmentationTarget(1, mask)(row)
        )
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 20.0, 25.0], [1.0, 1.0, 9.0, 11.0]])
    detection = {"boxes": boxes, "labels": torch.tensor([1, 2, 1]), "scores": torch.tensor([0.9, 0.8, 0.7])}
    reference = (np.array([1, 2, 3]), np.array([[0.0, 0.0, 9.0, 10.0], [5.0, 6.0, 20.0, 25.0], [0.0, 0.0, 50.0, 50.0]]))
    torch.testing.assert_close(
        FasterRCNNBoxScoreTarget(*reference)(detection), peer.FasterRCNNBoxScoreTarget(*reference)(detection)[0]
    )


# 3. targets ------------------------------------------------------------------------------


def test_classifier_targets_by_hand() -> None:
    logits = torch.tensor([[0.0, math.log(3.0)], [1.0, 1.0]])
    assert ClassifierOutputTarget(1)(logits).tolist() == pytest.approx([math.log(3.0), 1.0])
    assert float(ClassifierOutputTarget(0)(logits[1])) == 1.0
    assert ClassifierOutputSoftmaxTarget(1)(logits).tolist() == pytest.approx([0.75, 0.5])
    assert float(ClassifierOutputSoftmaxTarget(1)(logits[0])) == pytest.approx(0.75)
    rest = ClassifierOutputReST(2)(torch.tensor([1.0, 2.0, 3.0]))
    assert float(rest) == pytest.approx(3.0 - (math.log(math.exp(1) + math.exp(2) + math.exp(3)) - 3.0))
    assert BinaryClassifierOutputTarget(1)(torch.tensor([[2.0], [-3.0]])).tolist() == [2.0, -3.0]
    assert BinaryClassifierOutputTarget(0)(torch.tensor([2.0])).tolist() == [-2.0]
    with pytest.raises(ValueError, match="one logit per sample"):
        BinaryClassifierOutputTarget(1)(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="out of range"):
        ClassifierOutputTarget(4)(torch.zeros(3))
    with pytest.raises(TypeError, match="must be an int"):
        ClassifierOutputTarget(1.5)  # type: ignore[arg-type]
    assert ClassifierOutputTarget(np.int64(2)).category == 2


def test_segmentation_target_by_hand() -> None:
    scores = torch.arange(16.0).view(2, 2, 2, 2)  # sample 1, class 1 = [[12, 13], [14, 15]]
    mask = np.array([[1, 0], [0, 1]], dtype=np.uint8)
    target = SemanticSegmentationTarget(1, mask)
    assert target(scores).tolist() == [4.0 + 7.0, 12.0 + 15.0]
    assert float(target(scores[1])) == 27.0
    assert target({"out": scores}).tolist() == [11.0, 27.0]
    assert SemanticSegmentationTarget(1, torch.from_numpy(mask))(scores).tolist() == [11.0, 27.0]
    with pytest.raises(ValueError, match="mask has shape"):
        target(torch.zeros(1, 2, 3, 3))


def test_box_target_by_hand() -> None:
    reference_boxes = [[0.0, 0.0, 2.0, 2.0], [10.0, 10.0, 12.0, 12.0]]
    target = FasterRCNNBoxScoreTarget([1, 2], reference_boxes, iou_threshold=0.5)
    detection = {
        # IoU with box 0: 3/4 (label 1: match); IoU 1/2 with box 1 is not > 0.5
        "boxes": torch.tensor([[0.0, 0.0, 2.0, 1.5], [10.0, 10.0, 12.0, 11.0]], requires_grad=True),
        "labels": torch.tensor([1, 2]),
        "scores": torch.tensor([0.25, 0.9], requires_grad=True),
    }
    value = target(detection)
    assert float(value.detach()) == pytest.approx(0.75 + 0.25)
    wrong_label = dict(detection, labels=torch.tensor([2, 2]))
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long), "scores": torch.zeros(0)}
    assert target([detection, wrong_label, empty]).tolist() == pytest.approx([1.0, 0.0, 0.0])
    (grad,) = torch.autograd.grad(value, detection["scores"])
    assert grad.tolist() == [1.0, 0.0]


def test_similarity_target_by_hand() -> None:
    target = SimilarityToConceptTarget(np.array([3.0, 4.0]))
    assert target(torch.tensor([[3.0, 4.0], [4.0, -3.0], [1.0, 0.0]])).tolist() == pytest.approx([1.0, 0.0, 0.6])
    assert float(target(torch.tensor([0.0, 2.0]))) == pytest.approx(0.8)


def test_adapter() -> None:
    fast = batched_target([ClassifierOutputTarget(3), ClassifierOutputTarget(1)], None, 2)
    assert isinstance(fast, ClassTarget)
    assert fast.indices == [3, 1]
    soft = batched_target([ClassifierOutputSoftmaxTarget(0)], None, 2)
    assert isinstance(soft, ClassProbabilityTarget)
    assert soft.indices == [0, 0]
    scores = torch.tensor([[1.0, 5.0], [7.0, 2.0]])
    assert batched_target(None, scores, 2).indices == [1, 0]  # type: ignore[attr-defined]
    # one class for every image: one column of the scores, the same values as one class per image
    same = batched_target([ClassifierOutputTarget(1)] * 2, None, 2)
    assert isinstance(same, ClassTarget)
    assert not same.per_sample
    assert same.indices == [1]
    torch.testing.assert_close(same(scores), ClassTarget([1, 1])(scores))
    rows = torch.tensor([1, 0])  # perturbation rows of images 1 and 0
    torch.testing.assert_close(same(scores, rows), ClassTarget([1, 1])(scores, rows))
    assert not batched_target(None, torch.tensor([[1.0, 5.0], [0.0, 2.0]]), 2).per_sample  # type: ignore[attr-defined]
    calls: list[int] = []

    def first(row: torch.Tensor) -> torch.Tensor:
        calls.append(row.ndim)
        return row[0]

    mixed = batched_target([first, ClassifierOutputReST(1)], None, 2)
    assert isinstance(mixed, PerSampleTargets)
    # perturbation methods send several rows per image, in any order
    rows_out = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    got = mixed(rows_out, torch.tensor([1, 0, 1]))
    rest = ClassifierOutputReST(1)
    expected = torch.stack([rest(rows_out[0]), rows_out[1, 0], rest(rows_out[2])])
    torch.testing.assert_close(got, expected)
    assert calls == [1]  # the user's target saw one row of one image
    detections = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0), "scores": torch.zeros(0)}] * 2
    boxes = PerSampleTargets([FasterRCNNBoxScoreTarget([1], [[0, 0, 1, 1]])] * 2)
    assert boxes(detections).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="one scalar"):
        PerSampleTargets([lambda row: row])(rows_out[:1])


def test_custom_target_equals_builtin(images: torch.Tensor) -> None:
    model, layers = _resnet()
    cam = front.GradCAM(model=model, target_layers=layers(model))
    builtin = cam(input_tensor=images, targets=[ClassifierOutputTarget(c) for c in CLASSES])
    custom = cam(input_tensor=images, targets=[Scaled(c, 1.0) for c in CLASSES])
    np.testing.assert_allclose(custom, builtin, atol=1e-6)


def _toy_head(outputs: int) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, outputs)
    ).eval()


@pytest.mark.parametrize(
    ("outputs", "targets"),
    [
        (5, [ClassifierOutputSoftmaxTarget(1), ClassifierOutputSoftmaxTarget(3)]),
        (5, [ClassifierOutputReST(1), ClassifierOutputReST(3)]),
        (1, [BinaryClassifierOutputTarget(1), BinaryClassifierOutputTarget(0)]),
        (4, [SimilarityToConceptTarget(torch.tensor([1.0, -1.0, 0.5, 0.0]))]),
    ],
)
def test_targets_through_front_door(outputs: int, targets: list[Any]) -> None:
    model = _toy_head(outputs)
    x = torch.rand(2, 3, 12, 12)
    maps = front.GradCAM(model=model, target_layers=[model[0]])(input_tensor=x, targets=targets)
    assert maps.shape == (2, 12, 12)
    assert np.isfinite(maps).all()
    assert maps.min() >= 0
    assert maps.max() <= 1


def test_semantic_segmentation_model() -> None:
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    torch.manual_seed(0)
    model = deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        labels = model(x)["out"].argmax(1)
    category = int(labels[0].flatten().mode().values)
    targets = [SemanticSegmentationTarget(category, (labels[b] == category).numpy()) for b in range(2)]
    with front.GradCAM(model=model, target_layers=[model.backbone["16"]]) as cam:
        maps = cam(input_tensor=x, targets=targets)
        assert set(cam.outputs) == {"out"}
    assert maps.shape == (2, 64, 64)
    assert np.isfinite(maps).all()


def test_detection_model() -> None:
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    torch.manual_seed(0)
    model = fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, box_score_thresh=0.0, num_classes=5, box_detections_per_img=10
    ).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        detections = model(x)
    assert all(len(d["boxes"]) > 0 for d in detections)  # score threshold 0: a random detector has boxes
    targets = [FasterRCNNBoxScoreTarget(d["labels"][:3], d["boxes"][:3]) for d in detections]
    with front.GradCAM(model=model, target_layers=[model.backbone.body["16"]]) as cam:
        maps = cam(input_tensor=x, targets=targets)
        scores = [float(target(output)) for target, output in zip(targets, cam.outputs, strict=True)]
    assert maps.shape == (2, 64, 64)
    assert np.isfinite(maps).all()
    assert (maps.reshape(2, -1).max(1) > 0).all()
    assert min(scores) > 3.0  # the same forward: each of the 3 reference boxes matches itself (IoU 1 + score)


# 4. utilities -----------------------------------------------------------------------------


def test_show_cam_on_image_by_hand() -> None:
    img = np.full((1, 2, 3), 0.5, dtype=np.float32)
    mask = np.array([[0.0, 1.0]], dtype=np.float32)
    out = show_cam_on_image(img, mask, use_rgb=True, image_weight=0.5)
    # JET(0) = RGB (0, 0, 128), JET(255) = RGB (128, 0, 0); blend 0.5 * heat + 0.25, divided by its max
    heat = np.array([[[0, 0, 128], [128, 0, 0]]], dtype=np.float32) / 255
    blend = 0.5 * heat + 0.25
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.uint8(255 * (blend / blend.max())))
    bgr = show_cam_on_image(img, mask, use_rgb=False)
    np.testing.assert_array_equal(bgr, out[..., ::-1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        show_cam_on_image(img * 255, mask)
    with pytest.raises(ValueError, match="image_weight"):
        show_cam_on_image(img, mask, image_weight=1.5)
    with pytest.raises(ValueError, match="only OpenCV's COLORMAP_JET"):
        show_cam_on_image(img, mask, colormap=4)


def test_jet_matches_opencv() -> None:
    cv2 = pytest.importorskip("cv2")
    levels = np.arange(256, dtype=np.uint8).reshape(-1, 1)
    reference = cv2.applyColorMap(levels, cv2.COLORMAP_JET)[:, 0, :].astype(int)
    assert np.abs(jet_table().astype(int) - reference).max() <= 1


def test_overlay_matches_peer() -> None:
    _peer()
    from pytorch_grad_cam.utils.image import show_cam_on_image as peer_show

    rng = np.random.default_rng(0)
    img = rng.random((16, 16, 3)).astype(np.float32)
    mask = rng.random((16, 16)).astype(np.float32)
    for use_rgb in (False, True):
        diff = show_cam_on_image(img, mask, use_rgb).astype(int) - peer_show(img, mask, use_rgb).astype(int)
        assert np.abs(diff).max() <= 1


def test_preprocess_deprocess() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    tensor = preprocess_image(image, mean, std)
    assert tensor.shape == (1, 3, 5, 4)
    assert tensor.dtype == torch.float32
    back = tensor[0].permute(1, 2, 0).numpy() * np.array(std) + np.array(mean)
    np.testing.assert_allclose(back * 255, image, atol=1e-3)
    floats = preprocess_image(image.astype(np.float32) / 255)
    np.testing.assert_allclose(floats[0].permute(1, 2, 0).numpy() * 0.5 + 0.5, image / 255, atol=1e-6)
    gradient = rng.normal(size=(5, 4, 3))
    out = deprocess_image(gradient)
    assert out.dtype == np.uint8
    assert out.shape == gradient.shape
    centred = (gradient - gradient.mean()) / (gradient.std() + 1e-5) * 0.1 + 0.5
    np.testing.assert_array_equal(out, np.uint8(np.clip(centred, 0, 1) * 255))


def test_preprocess_deprocess_match_peer() -> None:
    _peer()
    from pytorch_grad_cam.utils import image as peer_image

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    torch.testing.assert_close(preprocess_image(image, mean, std), peer_image.preprocess_image(image, mean, std))
    gradient = rng.normal(size=(5, 4, 3))
    np.testing.assert_array_equal(deprocess_image(gradient), peer_image.deprocess_image(gradient))


@pytest.mark.parametrize(("size", "target"), [((7, 7), (64, 64)), ((4, 6), (30, 20)), ((16, 16), (8, 8))])
def test_scale_cam_image(size: tuple[int, int], target: tuple[int, int]) -> None:
    cams = np.random.default_rng(0).random((2, *size)).astype(np.float32) * 5 - 1
    scaled = scale_cam_image(cams, target)  # target in OpenCV order: (width, height)
    assert scaled.shape == (2, target[1], target[0])
    assert scaled.dtype == np.float32
    same = scale_cam_image(cams)
    flat = cams.reshape(2, -1)
    expected = (flat - flat.min(1, keepdims=True)) / (1e-7 + np.ptp(flat, axis=1, keepdims=True))
    np.testing.assert_allclose(same.reshape(2, -1), expected, atol=1e-6)
    _peer()
    from pytorch_grad_cam.utils.image import scale_cam_image as peer_scale

    # cv2 INTER_LINEAR and torch bilinear (align_corners=False) sample at the same half-pixel centres
    np.testing.assert_allclose(scaled, peer_scale(cams, target), atol=1e-5)


def test_reshape_transforms() -> None:
    tokens = torch.randn(2, 1 + 6, 8)
    grid = reshape_transforms.vit_reshape_transform(tokens, 2, 3)
    assert grid.shape == (2, 8, 2, 3)
    torch.testing.assert_close(grid[:, :, 1, 2], tokens[:, 1 + 5])
    swin = reshape_transforms.swinT_reshape_transform(torch.randn(2, 4, 8), 2, 2)
    assert swin.shape == (2, 8, 2, 2)
    with pytest.raises(ValueError, match="height= and width="):
        reshape_transforms.vit_reshape_transform(tokens)
    _peer()
    from pytorch_grad_cam.utils import reshape_transforms as peer

    torch.testing.assert_close(grid, peer.vit_reshape_transform(tokens, 2, 3))
