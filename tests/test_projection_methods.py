"""Element-wise, projection (Eigen-CAM family), FEM and random methods.

1. Against independent float64 re-derivations of each formula (numpy, one sample at a time; the
   principal component by ``numpy.linalg.svd``, kernel PCA from a kernel matrix built by explicit
   loops and ``numpy.linalg.eigh``), raw and normalized, relative error <= 1e-6.
2. Against pytorch-grad-cam 1.5.7 on torchvision's resnet18 (see the section's docstring).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import camkit
from camkit import ops
from camkit.engine import CAMExtractor
from camkit.methods import projection
from camkit.registry import MethodContext

RTOL = 1e-6
CLASSES = [0, 2]
Array = np.ndarray


def tiny_model(dims: int = 2) -> nn.Sequential:
    """Conv -> ReLU -> Conv -> ReLU -> 2-cell pool -> Linear -> Tanh -> Linear: gradients vary in space."""
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    pool = nn.AdaptiveAvgPool2d if dims == 2 else nn.AdaptiveAvgPool3d
    torch.manual_seed(11)
    layers = [conv(3, 4, 3), nn.ReLU(), conv(4, 5, 3), nn.ReLU(), pool(2), nn.Flatten()]
    head = [nn.Linear(5 * 2**dims, 6), nn.Tanh(), nn.Linear(6, 3)]
    return nn.Sequential(*layers, *head).double().eval()


def tiny_input(dims: int = 2) -> Tensor:
    shape = (2, 3, 10, 10) if dims == 2 else (2, 3, 9, 9, 9)
    return torch.rand(shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


def layer_data(model: nn.Sequential, layer: int, x: Tensor) -> list[tuple[Array, Array]]:
    """(A, G) of each sample, ``(C, *S)``: a fresh forward of the model split at the layer."""
    head, tail = model[: layer + 1], model[layer + 1 :]
    out = []
    for n, c in enumerate(CLASSES):
        a = head(x[n : n + 1]).detach().requires_grad_(True)
        (g,) = torch.autograd.grad(tail(a)[0, c], a)
        out.append((a[0].detach().numpy(), g[0].numpy()))
    return out


# --------------------------------------------------------------------------------------------------
# Reference formulas, one sample (arrays (C, *S)) at a time; each returns the map before ReLU
# --------------------------------------------------------------------------------------------------
def centred_rows(x: Array) -> Array:
    rows = x.reshape(x.shape[0], -1).T  # one row per position
    return rows - rows.mean(axis=0)


def pc_projection(x: Array) -> Array:
    """Projection on the first right singular vector, signed so that its entries sum to >= 0."""
    rows = centred_rows(x)
    v = np.linalg.svd(rows, full_matrices=False)[2][0]
    v = v if v.sum() >= 0 else -v
    return (rows @ v).reshape(x.shape[1:])


def kernel_value(p: Array, q: Array, kernel: str, gamma: float) -> float:
    dot = sum(float(pi) * float(qi) for pi, qi in zip(p, q, strict=True))
    if kernel == "linear":
        return dot
    if kernel == "poly":
        return (gamma * dot + 1.0) ** 3
    if kernel == "sigmoid":
        return math.tanh(gamma * dot + 1.0)
    if kernel == "rbf":
        return math.exp(-gamma * sum((float(pi) - float(qi)) ** 2 for pi, qi in zip(p, q, strict=True)))
    norms = math.sqrt(sum(float(v) ** 2 for v in p)) * math.sqrt(sum(float(v) ** 2 for v in q))
    return dot / norms if norms > 0 else 0.0  # cosine


def kpca_projection(x: Array, kernel: str = "sigmoid", gamma: float | None = None) -> Array:
    rows = centred_rows(x)
    gamma = 1.0 / x.shape[0] if gamma is None else gamma
    size = rows.shape[0]
    k = np.array([[kernel_value(rows[p], rows[q], kernel, gamma) for q in range(size)] for p in range(size)])
    centre = np.eye(size) - np.full((size, size), 1.0 / size)
    values, vectors = np.linalg.eigh(centre @ k @ centre)
    alpha = vectors[:, -1]
    if alpha @ rows.sum(axis=1) < 0:  # camkit's rule: the component points towards more activation
        alpha = -alpha
    return (math.sqrt(max(values[-1], 0.0)) * alpha).reshape(x.shape[1:])


def seg_eigen(x: Array) -> Array:
    p = pc_projection(x)
    return -p if abs(p.min()) > abs(p.max()) else p


def fem_map(a: Array, k: float = 2.0) -> Array:
    flat = a.reshape(a.shape[0], -1)
    threshold = flat.mean(axis=1) + k * flat.std(axis=1)  # numpy's std is the population std
    weights = (flat > threshold[:, None]).mean(axis=1)
    return np.tensordot(weights, a, axes=1)


REFERENCES: dict[str, Callable[[Array, Array, dict[str, Any]], Array]] = {
    "hirescam": lambda a, g, o: (g * a).sum(axis=0),
    "gradcamelementwise": lambda a, g, o: np.maximum(g * a, 0).sum(axis=0),
    "eigencam": lambda a, g, o: pc_projection(a),
    "eigengradcam": lambda a, g, o: pc_projection(g * a),
    "segeigencam": lambda a, g, o: seg_eigen(np.abs(g) * a),
    "kpcacam": lambda a, g, o: kpca_projection(a, **o),
    "fem": lambda a, g, o: fem_map(a, **o),
}

CASES = [
    ("hirescam", {}),
    ("gradcamelementwise", {}),
    ("eigencam", {}),
    ("eigengradcam", {}),
    ("segeigencam", {}),
    ("kpcacam", {}),
    ("kpcacam", {"kernel": "rbf"}),
    ("kpcacam", {"kernel": "poly", "gamma": 0.3}),
    ("kpcacam", {"kernel": "linear"}),
    ("kpcacam", {"kernel": "cosine"}),
    ("kpcacam", {"kernel": "sigmoid", "gamma": 0.05}),
    ("fem", {}),
    ("fem", {"k": 1.0}),
]


def minmax(m: Array) -> Array:
    span = m.max() - m.min()
    return (m - m.min()) / span if span > 0 else np.zeros_like(m)


def assert_close(got: Tensor, expected: list[Array]) -> None:
    ref = torch.from_numpy(np.stack(expected))
    assert got.dtype == torch.float64
    assert got.shape == ref.shape
    for n in range(ref.shape[0]):
        scale = ref[n].abs().amax()
        assert scale > 0, "a degenerate all-zero reference map would make the comparison vacuous"
        err = ((got[n] - ref[n]).abs().amax() / scale).item()
        assert err <= RTOL, f"sample {n}: relative error {err:.2e}"


def camkit_maps(name: str, model: nn.Module, layer: int, x: Tensor, normalized: bool, **options: Any) -> Tensor:
    with CAMExtractor(model, str(layer), method=name, **options) as extractor:
        scores = model(x)
        return extractor(CLASSES, scores, normalized=normalized)[0]


@pytest.mark.parametrize("layer", [2, 3], ids=["conv", "relu"])  # signed activations; activations with zeros
@pytest.mark.parametrize(("name", "options"), CASES, ids=[f"{n}-{'-'.join(map(str, o.values()))}" for n, o in CASES])
def test_against_float64_reference(name: str, options: dict[str, Any], layer: int) -> None:
    model, x = tiny_model(), tiny_input()
    data = layer_data(model, layer, x)
    raw = [np.maximum(REFERENCES[name](a, g, options), 0.0) for a, g in data]
    assert_close(camkit_maps(name, model, layer, x, normalized=False, **options), raw)
    assert_close(camkit_maps(name, model, layer, x, normalized=True, **options), [minmax(m) for m in raw])


@pytest.mark.parametrize("name", [*REFERENCES])
def test_against_float64_reference_3d(name: str) -> None:
    model, x = tiny_model(dims=3), tiny_input(dims=3)
    raw = [np.maximum(REFERENCES[name](a, g, {}), 0.0) for a, g in layer_data(model, 3, x)]
    assert_close(camkit_maps(name, model, 3, x, normalized=False), raw)


def _signed(name: str, a: Tensor, g: Tensor | None = None, **options: Any) -> Tensor:
    """A method's map before the ReLU (the combine step applied to weights)."""
    spec = camkit.get_method(name)
    ctx = MethodContext(model=None, layer=0, target=None, options={**spec.defaults(), **options})
    out = spec.weights(a, g, ctx)
    return out if spec.output == "map" else ops.combine(out, a)


def test_linear_kernel_pca_is_eigencam() -> None:
    a = torch.randn(3, 6, 5, 4, dtype=torch.float64)
    torch.testing.assert_close(_signed("kpcacam", a, kernel="linear"), _signed("eigencam", a), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kernel", projection.KERNELS)
def test_kpca_matches_scikit_learn_up_to_sign(kernel: str) -> None:
    decomposition = pytest.importorskip("sklearn.decomposition")
    a = torch.randn(2, 6, 5, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = _signed("kpcacam", a, kernel=kernel)
    for n in range(2):
        rows = centred_rows(a[n].numpy())
        expected = decomposition.KernelPCA(n_components=1, kernel=kernel).fit_transform(rows)[:, 0]
        mine = got[n].flatten().numpy()
        assert np.abs(mine - expected).max() <= 1e-9 or np.abs(mine + expected).max() <= 1e-9


def test_sign_rules_are_deterministic() -> None:
    a = torch.randn(1, 6, 5, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for name in ("eigencam", "kpcacam"):  # flipping the input's spatial order cannot flip the map's sign rule
        flipped = _signed(name, a.flip(-1))
        torch.testing.assert_close(flipped.flip(-1), _signed(name, a), rtol=1e-9, atol=1e-9)
    seg = _signed("segeigencam", a, torch.ones_like(a))
    assert seg.amax() >= seg.amin().abs()  # Seg-Eigen-CAM: the larger side is positive


def test_bad_kpca_options() -> None:
    a = torch.rand(1, 3, 4, 4)
    with pytest.raises(ValueError, match="kernel must be one of"):
        _signed("kpcacam", a, kernel="laplacian")
    with pytest.raises(ValueError, match="gamma"):
        _signed("kpcacam", a, gamma=-1.0)


def test_random_cam_uses_the_generator_and_no_gradient() -> None:
    model, x = tiny_model(), tiny_input()
    with CAMExtractor(model, "2", method="randomcam", generator=torch.Generator().manual_seed(7)) as extractor:
        with torch.inference_mode():  # no gradient is needed, so no graph either
            model(x)
        first = extractor(CLASSES, normalized=False)[0]
        second = extractor(CLASSES, normalized=False)[0]  # the generator moved on
    weights = 2 * torch.rand((2, 5), generator=torch.Generator().manual_seed(7), dtype=torch.float64) - 1
    expected = [
        np.maximum(np.tensordot(w.numpy(), a, axes=1), 0.0)
        for w, (a, _) in zip(weights, layer_data(model, 2, x), strict=True)
    ]
    assert_close(first, expected)
    assert not torch.equal(first, second)


@pytest.mark.parametrize("name", ["eigencam", "kpcacam", "fem"])
def test_gradient_free_methods_need_no_scores(name: str) -> None:
    model, x = tiny_model(), tiny_input()
    with CAMExtractor(model, "2", method=name) as extractor:
        with torch.inference_mode():
            model(x)
        cams = extractor(CLASSES)
    assert cams[0].shape == (2, 6, 6)


# --------------------------------------------------------------------------------------------------
# pytorch-grad-cam 1.5.7
# --------------------------------------------------------------------------------------------------
# The peer explains resnet18 (random weights, eval, float32) at ``layer4[-1]`` for two 128x128
# images (128, not 64: at 64 px layer4 is 2x2, and FEM's 2-sigma threshold cannot be exceeded by any
# of 4 values, so its map would be trivially 0 in both libraries). The peer returns, per image,
# ``scale(resize(scale(ReLU(map))))`` with ``scale(m) = (m - min) / (1e-7 + max(m - min))`` and cv2's
# bilinear resize; camkit's raw map is passed through the same steps (torch bilinear upsampling,
# ``align_corners=False``, is cv2's ``INTER_LINEAR`` when enlarging). Measured differences are
# < 2e-6 (float32 rounding); the tolerance is 1e-4.
#
# Signs: the peer's EigenCAM/EigenGradCAM take ``numpy.linalg.svd``'s sign, which LAPACK leaves
# arbitrary, so camkit (sign rule: the component's entries sum to >= 0) may give the flipped
# projection: the test accepts ``ReLU(P)`` or ``ReLU(-P)`` for camkit's signed projection ``P`` and says
# which one matched. KPCA_CAM's sign is scikit-learn's ``svd_flip`` rule (the entry of largest
# magnitude is positive), a different deterministic rule from camkit's: the test predicts the peer's
# sign exactly from it. Seg-Eigen-CAM corrects the sign itself, so both must agree without a flip.
#

PEER_SIZE = 128
PEER_CLASSES = [3, 7]
PEER_CASES = [
    ("hirescam", "HiResCAM", {}),
    ("gradcamelementwise", "GradCAMElementWise", {}),
    ("eigencam", "EigenCAM", {}),
    ("eigengradcam", "EigenGradCAM", {}),
    ("segeigencam", "SegEigenCAM", {}),
    ("kpcacam", "KPCA_CAM", {}),
    ("kpcacam", "KPCA_CAM", {"kernel": "rbf"}),
    ("fem", "FEM", {}),
]


@pytest.fixture(scope="module")
def resnet() -> tuple[nn.Module, Tensor]:
    models = pytest.importorskip("torchvision.models")
    torch.manual_seed(0)
    model = models.resnet18(weights=None).eval()
    return model, torch.rand(2, 3, PEER_SIZE, PEER_SIZE, generator=torch.Generator().manual_seed(0))


def peer_scale(cam: Tensor) -> Tensor:
    flat = cam.flatten(1) - cam.flatten(1).amin(dim=1, keepdim=True)
    return (flat / (1e-7 + flat.amax(dim=1, keepdim=True))).view_as(cam)


def peer_view(cam: Tensor) -> Tensor:
    return peer_scale(ops.upsample(peer_scale(cam), (PEER_SIZE, PEER_SIZE)))


@pytest.mark.parametrize(("name", "peer_name", "options"), PEER_CASES, ids=[c[1] + str(c[2]) for c in PEER_CASES])
def test_against_pytorch_grad_cam(
    name: str, peer_name: str, options: dict[str, Any], resnet: tuple[nn.Module, Tensor]
) -> None:
    pgc = pytest.importorskip("pytorch_grad_cam")
    targets_mod = pytest.importorskip("pytorch_grad_cam.utils.model_targets")
    model, x = resnet
    store: dict[str, Tensor] = {}
    handle = model.layer4[-1].register_forward_hook(lambda _m, _i, out: store.__setitem__("a", out))
    with CAMExtractor(model, model.layer4[-1], method=name, **options) as extractor:
        scores = model(x)
        raw = extractor(PEER_CLASSES, scores, normalized=False, retain_graph=True)[0]
    handle.remove()
    (g,) = torch.autograd.grad(scores[[0, 1], PEER_CLASSES].sum(), store["a"])
    signed = _signed(name, store["a"].detach(), g, **options)  # the map before ReLU
    peer_model = copy.deepcopy(model)  # the peer calls .backward(), filling .grad
    with getattr(pgc, peer_name)(model=peer_model, target_layers=[peer_model.layer4[-1]], **options) as cam:
        targets = [targets_mod.ClassifierOutputTarget(c) for c in PEER_CLASSES]
        peer = torch.from_numpy(cam(input_tensor=x, targets=targets))
    for n in range(2):
        p = signed[n : n + 1]
        if name == "kpcacam":  # scikit-learn's svd_flip: the largest-magnitude entry is positive
            signs = [torch.sign(p.flatten()[p.abs().argmax()]).item()]
        elif name in ("eigencam", "eigengradcam"):  # LAPACK's arbitrary sign: either
            signs = [1.0, -1.0]
        else:
            signs = [1.0]
        diff, sign = min(((peer_view(torch.relu(s * p)) - peer[n]).abs().amax().item(), s) for s in signs)
        assert diff <= 1e-4, f"image {n}: max abs difference {diff:.2e}"
        print(f"{peer_name}{options} image {n}: max abs diff {diff:.1e}, peer sign vs camkit {sign:+.0f}")
    torch.testing.assert_close(raw, torch.relu(signed))  # the extractor's raw map is ReLU(P)
    assert raw.flatten(1).amax(dim=1).min() > 0
