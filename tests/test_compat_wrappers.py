"""pytorch-grad-cam's meta classes in camkit.compat.gradcam: FinerCAM, RefineCAM, SESS, DFF, guided backprop.

Differential tests against pytorch-grad-cam 1.5.7 (the peer gets its own deep copy of the model),
checks that each class is its camkit building block and nothing more, and lifecycle checks.
Known differences: Grad-CAM++'s 1e-6 epsilon in the peer (compared with the target scaled by 1e4,
as in test_compat_gradcam.py); NMF is not unique (the fit quality is compared); the default concept
colors of show_factorization_on_image (the peer is compared with explicit colors).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torchvision.models import resnet18

import camkit.compat.gradcam as front
from camkit import ops
from camkit.compat.gradcam.utils.image import (
    concept_colors,
    create_labels_legend,
    show_factorization_on_image,
)
from camkit.compat.gradcam.utils.model_targets import ClassifierOutputTarget
from camkit.methods.factorization import deep_feature_factorization
from camkit.methods.guided import guided_backprop
from camkit.methods.wrappers import FinerWeightedTarget
from conftest import all_hooks, calibrated, tiny_cnn

CLASSES = [3, 7]


def _peer() -> Any:
    return pytest.importorskip("pytorch_grad_cam")


def _peer_targets(classes: list[int]) -> list[Any]:
    return [pytest.importorskip("pytorch_grad_cam.utils.model_targets").ClassifierOutputTarget(c) for c in classes]


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return calibrated(resnet18(weights=None))


@pytest.fixture
def images() -> Tensor:
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def _layers(model: Any, n: int) -> list[nn.Module]:
    return [model.layer2[-1], model.layer3[-1], model.layer4[-1]][-n:]


def _small() -> tuple[nn.Module, Tensor]:
    torch.manual_seed(0)
    return tiny_cnn().eval(), torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))


def scaled(category: int, k: float) -> Any:
    """A user-written per-image target: k times one logit."""
    return lambda output: k * output[category]


def test_exports() -> None:
    assert set(front.META_CLASSES) <= set(front.__all__)
    assert set(front.available()) <= set(front.PEER_METHODS)
    assert not set(front.META_CLASSES) & set(front.PEER_METHODS)
    namespace: dict[str, Any] = {}
    exec(f"from camkit.compat.gradcam import {', '.join(front.META_CLASSES)}", namespace)
    assert namespace["FinerCAM"] is front.FinerCAM
    assert front.RefineCAM.__init__.__defaults__[-1] is front.GradCAMPlusPlus  # type: ignore[index]


# FinerCAM --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"alpha": 0.6}, {"comparison_categories": [1, 4, 900]}, {"target_idx": 5}, {"layers": 2}],
    ids=["default", "alpha", "categories", "target_idx", "two_layers"],
)
def test_finercam_against_peer(kwargs: dict[str, Any], resnet: nn.Module, images: Tensor) -> None:
    peer = _peer()
    kwargs = dict(kwargs)
    n = kwargs.pop("layers", 1)
    peer_model = copy.deepcopy(resnet)
    expected = peer.FinerCAM(peer_model, _layers(peer_model, n))(images, **kwargs)
    with front.FinerCAM(resnet, _layers(resnet, n)) as cam:
        got = cam(images, **kwargs)
        assert isinstance(cam.outputs, Tensor)
        assert not cam.outputs.requires_grad
    assert got.dtype == np.float32
    assert got.shape == expected.shape == (2, 64, 64)
    assert float(expected.std()) > 0.05
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_finercam_with_targets_is_the_base_method(resnet: nn.Module, images: Tensor) -> None:
    peer = _peer()
    peer_model = copy.deepcopy(resnet)
    expected = peer.FinerCAM(peer_model, [peer_model.layer4[-1]])(images, _peer_targets(CLASSES))
    targets = [ClassifierOutputTarget(c) for c in CLASSES]
    got = front.FinerCAM(resnet, [resnet.layer4[-1]]).forward(images, targets)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    np.testing.assert_array_equal(got, front.GradCAM(resnet, [resnet.layer4[-1]])(images, targets))
    eigen = front.FinerCAM(resnet, [resnet.layer4[-1]])(images, targets, eigen_smooth=True)
    np.testing.assert_array_equal(eigen, front.GradCAM(resnet, [resnet.layer4[-1]])(images, targets, eigen_smooth=True))


def test_finercam_target_is_the_native_target_per_image() -> None:
    """A perturbation base: FinerCAM equals ScoreCAM of per-image FinerWeightedTargets."""
    model, x = _small()
    target = front.FinerCAM.target(model(x), alpha=0.5, comparison_categories=[1, 2])
    assert target.main.tolist() == model(x).argmax(1).tolist()
    per_image = [
        FinerWeightedTarget(int(m), c.tolist(), alpha=0.5) for m, c in zip(target.main, target.comparisons, strict=True)
    ]
    expected = front.ScoreCAM(model, [model[3]])(x, per_image)
    cam = front.FinerCAM(model, [model[3]], base_method=front.ScoreCAM)
    got = cam.compute(x, alpha=0.5, comparison_categories=[1, 2])
    assert isinstance(got, Tensor)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)


def test_finercam_validates() -> None:
    peer = _peer()
    model, x = _small()
    with pytest.raises(ValueError, match="target score"):
        front.FinerCAM(model, [model[3]], base_method=front.EigenCAM)
    with pytest.raises(TypeError, match=r"camkit\.compat\.gradcam"):
        front.FinerCAM(model, [model[3]], base_method=peer.GradCAM)
    with pytest.raises(ValueError, match="no comparison category"):
        front.FinerCAM(model, [model[3]])(x, comparison_categories=[5, 6])
    with pytest.raises(ValueError, match="ranks"):
        front.FinerCAM(model, [model[3]])(x, comparison_categories=[0])
    with pytest.raises(ValueError, match="out of range"):
        front.FinerCAM(model, [model[3]])(x, target_idx=9)
    assert all_hooks(model) == 0


# RefineCAM -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("base", "scale"), [("GradCAM", 0), ("LayerCAM", 0), ("GradCAMPlusPlus", 1e4)])
def test_refinecam_against_peer(base: str, scale: float, resnet: nn.Module, images: Tensor) -> None:
    peer = _peer()
    peer_model = copy.deepcopy(resnet)
    targets: list[Any] | None = [scaled(c, scale) for c in CLASSES] if scale else None
    expected = peer.RefineCAM(peer_model, _layers(peer_model, 3), base_method=getattr(peer, base))(images, targets)
    with front.RefineCAM(resnet, _layers(resnet, 3), base_method=getattr(front, base)) as cam:
        got = cam(images, targets)
    assert got.shape == expected.shape == (2, 64, 64)
    assert float(expected.std()) > 0.05
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_refinecam_is_the_product_of_the_base_maps(resnet: nn.Module, images: Tensor) -> None:
    """Per layer the base class's own output; their product, min-max normalized."""
    layers = [resnet.layer3[-1], resnet.layer4[-1]]
    targets = [ClassifierOutputTarget(c) for c in CLASSES]
    per_layer = [torch.from_numpy(front.GradCAM(resnet, [layer])(images, targets)) for layer in layers]
    got = front.RefineCAM(resnet, layers, base_method=front.GradCAM).compute(images, targets)
    torch.testing.assert_close(got, ops.normalize(per_layer[0] * per_layer[1]), atol=1e-6, rtol=0)
    one = front.RefineCAM(resnet, layers[1:], base_method=front.GradCAM)(images, targets)
    np.testing.assert_allclose(one, per_layer[1].numpy(), atol=1e-6)


def test_refinecam_passes_options_to_the_base() -> None:
    model, x = _small()
    cam = front.RefineCAM(model, [model[0], model[3]], base_method=front.ScoreCAM, batch_size=3)
    assert cam.base_cam.batch_size == 3
    assert cam(x).shape == (2, 12, 12)
    with pytest.raises(TypeError, match="unexpected argument"):
        front.RefineCAM(model, [model[3]], base_method=front.GradCAM, k=2)
    assert front.RefineCAM(model, [model[3]], base_method=front.FEM, k=1).base_cam.options["k"] == 1


# SESS ------------------------------------------------------------------------------------------
SESS_OPTIONS = [
    {"scales": [12, 16], "window_size": 8, "step_size": 4},
    {"scales": [12, 16], "window_size": 8, "step_size": 4, "pre_filter_ratio": 0.25, "pool": "max", "smooth": False},
    {"window_size": 8, "num_scales": 3, "theta": 0.2, "use_softmax_scores": False, "batch_size": 5},
]


@pytest.mark.parametrize("options", SESS_OPTIONS, ids=["mean", "max_prefilter", "default_scales"])
@pytest.mark.parametrize("given", [False, True], ids=["top_class", "targets"])
def test_sess_against_peer(options: dict[str, Any], given: bool) -> None:
    peer = _peer()
    model, x = _small()
    peer_model = copy.deepcopy(model)
    peer_targets = _peer_targets([1, 4]) if given else None
    targets = [ClassifierOutputTarget(c) for c in (1, 4)] if given else None
    expected = peer.SESS(peer_model, [peer_model[3]], base_method=peer.GradCAM, **options)(x, peer_targets)
    with front.SESS(model, [model[3]], base_method=front.GradCAM, **options) as cam:
        got = cam(x, targets)
    assert got.dtype == np.float32
    assert got.shape == expected.shape == (2, 12, 12)
    assert float(expected.std()) > 0.05
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_sess_validates_and_forwards_base_options() -> None:
    model, x = _small()
    with pytest.raises(ValueError, match="fusion"):
        front.SESS(model, [model[3]], pool="median")
    with pytest.raises(ValueError, match="pre_filter_ratio"):
        front.SESS(model, [model[3]], pre_filter_ratio=1.0)
    with pytest.raises(TypeError, match="unexpected argument"):
        front.SESS(model, [model[3]], alpha=1.0)
    cam = front.SESS(model, [model[3]], base_method=front.FEM, k=1, scales=[12], window_size=8, step_size=4)
    assert cam._native(["3"], (3, 12, 12), False).method_options["k"] == 1
    assert cam(x).shape == (2, 12, 12)
    assert all_hooks(model) == 0


# Deep Feature Factorization --------------------------------------------------------------------
def _fit_error(v: Tensor, concepts: Tensor) -> float:
    """Relative least-squares residual of V on the span of the concepts."""
    coefficients = torch.linalg.lstsq(concepts, v).solution
    return float(torch.linalg.norm(v - concepts @ coefficients) / torch.linalg.norm(v))


@pytest.mark.filterwarnings("ignore::UserWarning")  # scikit-learn: "maximum number of iterations reached"
def test_dff_against_peer(resnet: nn.Module, images: Tensor) -> None:
    peer = _peer()
    peer_model = copy.deepcopy(resnet)
    dff = peer.DeepFeatureFactorization(peer_model, peer_model.layer4, computation_on_concepts=peer_model.fc)
    their_concepts, their_maps, their_scores = dff(images, n_components=4)
    concepts, maps, scores = front.DeepFeatureFactorization(resnet, resnet.layer4, computation_on_concepts=resnet.fc)(
        images, n_components=4
    )
    assert (concepts.shape, concepts.dtype) == (their_concepts.shape, their_concepts.dtype) == ((512, 4), np.float32)
    assert isinstance(maps, list)
    assert len(maps) == len(their_maps) == 2
    for mine, theirs in zip(maps, their_maps, strict=True):
        assert (mine.shape, mine.dtype) == (theirs.shape, theirs.dtype) == ((4, 64, 64), np.float32)
        assert 0 <= mine.min() <= mine.max() <= 1
    assert scores.shape == their_scores.shape == (4, 1000)
    np.testing.assert_allclose(scores, resnet.fc(torch.from_numpy(concepts).T).detach().numpy(), atol=1e-4)
    with torch.no_grad():
        a = nn.Sequential(*list(resnet.children())[:-2])(images)
    v = a.transpose(0, 1).reshape(512, -1)
    offset = v.amin(1, keepdim=True)
    mine_fit = _fit_error(v - offset, torch.from_numpy(concepts) - offset)
    their_fit = _fit_error(v - offset, torch.from_numpy(their_concepts).float() - offset)
    assert mine_fit <= 1.05 * their_fit + 1e-3


def test_dff_is_the_native_function_in_shift_mode() -> None:
    model, x = _small()
    concepts, maps = front.DeepFeatureFactorization(model, "3")(x, n_components=3)  # no head: two results
    native_concepts, native_maps = deep_feature_factorization(model, x, "3", 3, nonnegative="shift")
    np.testing.assert_array_equal(concepts, native_concepts.numpy())
    np.testing.assert_array_equal(np.stack(maps), native_maps.numpy())
    with pytest.raises(ValueError, match="one target_layer"):
        front.DeepFeatureFactorization(model, [model[0], model[3]])
    with front.DeepFeatureFactorization(model, None) as dff:
        assert dff(x, 2)[0].shape == (8, 2)
    assert all_hooks(model) == 0


# Guided backpropagation ------------------------------------------------------------------------
@pytest.mark.parametrize("category", [None, 7])
def test_guided_backprop_against_peer(category: int | None, resnet: nn.Module) -> None:
    peer = _peer()
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    peer_model = copy.deepcopy(resnet)
    expected = peer.GuidedBackpropReLUModel(peer_model, "cpu")(x.clone(), category)
    got = front.GuidedBackpropReLUModel(resnet, device="cpu")(x, category)
    assert got.shape == expected.shape == (64, 64, 3)
    assert got.dtype == expected.dtype
    scale = float(np.abs(expected).max())
    assert scale > 0
    np.testing.assert_allclose(got, expected, atol=1e-5 * scale, rtol=0)
    assert not x.requires_grad
    assert x.grad is None


def test_guided_backprop_explains_the_first_image(resnet: nn.Module, images: Tensor) -> None:
    guided = front.GuidedBackpropReLUModel(resnet)
    assert guided.device == torch.device("cpu")
    expected = guided_backprop(resnet, images[:1], np.int64(5))  # type: ignore[arg-type]
    np.testing.assert_array_equal(guided(images, np.int64(5)), expected[0].permute(1, 2, 0).numpy())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        guided(images, 2.5)  # type: ignore[arg-type]
    assert all(m.inplace for m in resnet.modules() if isinstance(m, nn.ReLU))  # the peer's swap loses inplace


# show_factorization_on_image / create_labels_legend --------------------------------------------
@pytest.mark.parametrize("kind", ["pure", "random"])
def test_show_factorization_against_peer(kind: str) -> None:
    peer_image = pytest.importorskip("pytorch_grad_cam.utils.image")
    rng = np.random.default_rng(0)
    for _ in range(10):
        k = int(rng.integers(1, 6))
        img = rng.random((12, 10, 3)).astype(np.float32)
        maps = rng.random((k, 12, 10)).astype(np.float32)
        pure = [np.array(c, np.float64) for c in [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (0, 1, 1)]]
        colors = pure[:k] if kind == "pure" else [rng.random(4) for _ in range(k)]
        weight = float(rng.random())
        expected = peer_image.show_factorization_on_image(img, maps.copy(), colors=colors, image_weight=weight)
        before = maps.copy()
        got = show_factorization_on_image(img, maps, colors=colors, image_weight=weight)
        np.testing.assert_array_equal(maps, before)
        assert got.dtype == expected.dtype == np.uint8
        assert got.shape == expected.shape
        tolerance = 0 if kind == "pure" else 1  # OpenCV's own 8-bit HSV paths differ by 1
        assert int(np.abs(got.astype(int) - expected).max()) <= tolerance


def test_show_factorization_default_colors_and_legend() -> None:
    rng = np.random.default_rng(1)
    img = rng.random((32, 24, 3)).astype(np.float32)
    maps = rng.random((3, 32, 24)).astype(np.float32)
    plain = show_factorization_on_image(img, maps, image_weight=0.0)
    np.testing.assert_array_equal(plain, show_factorization_on_image(img, maps, list(concept_colors(3)), 0.0))
    winner = maps.argmax(0)
    red = (winner == 0) & (maps.max(0) > 0.5)
    assert (plain[red][:, 1:] == 0).all()  # concept 0 is pure red
    labels = create_labels_legend(
        np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3]]), {0: "a", 1: "b", 2: "c"}
    )
    assert labels[0] == "a:0.70\nb:0.20"
    with_legend = show_factorization_on_image(img, maps, image_weight=0.0, concept_labels=labels)
    assert with_legend.shape == (32, 48, 3)
    np.testing.assert_array_equal(with_legend[:, :24], plain)
    assert (with_legend[:, 24:] != 255).any()
    with pytest.raises(ValueError, match="one label per concept"):
        show_factorization_on_image(img, maps, concept_labels=["a"])
    with pytest.raises(ValueError, match="one RGB color"):
        show_factorization_on_image(img, maps, colors=[(1, 0, 0)])


def test_create_labels_legend_against_peer() -> None:
    peer_image = pytest.importorskip("pytorch_grad_cam.utils.image")
    scores = np.random.default_rng(0).random((4, 6))
    labels = {i: f"class {i}, alias, third, fourth" for i in range(6)}
    for top_k in (1, 3):
        assert create_labels_legend(scores, labels, top_k) == peer_image.create_labels_legend(scores, labels, top_k)


# lifecycle ---------------------------------------------------------------------------------------
def _meta_calls(model: nn.Module) -> list[Any]:
    layers = [model[0], model[3]]
    sess = {"scales": [12], "window_size": 8, "step_size": 4}
    return [
        lambda x: front.FinerCAM(model, layers[1:])(x),
        lambda x: front.FinerCAM(model, layers[1:], base_method=front.ScoreCAM)(x),
        lambda x: front.RefineCAM(model, layers)(x, [ClassifierOutputTarget(1)]),
        lambda x: front.SESS(model, layers[1:], **sess)(x),
        lambda x: front.DeepFeatureFactorization(model, layers[1], computation_on_concepts=model[8])(x, 2),
        lambda x: front.GuidedBackpropReLUModel(model)(x),
    ]


@pytest.mark.parametrize("index", range(6), ids=["finer", "finer_score", "refine", "sess", "dff", "guided"])
def test_meta_classes_leave_the_model_alone(index: int) -> None:
    model, x = _small()
    model.train()
    model[3].weight.requires_grad_(False)
    calls: list[int] = []
    model[3].register_forward_hook(lambda *_: calls.append(1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = all_hooks(model)
    _meta_calls(model)[index](x)
    assert calls
    assert all_hooks(model) == hooks
    assert all(m.training for m in model.modules())
    assert not model[3].weight.requires_grad
    assert model[0].weight.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
