"""pytorch-grad-cam's ``cam.py`` example through ``camkit.compat.gradcam``, side by side with the peer.

``cam.py`` builds ``methods[args.method](model=model, target_layers=[model.layer4])`` as a context
manager, sets ``cam.batch_size = 32`` and calls ``cam(input_tensor=..., targets=None,
aug_smooth=..., eigen_smooth=...)`` on one image, for every name of its method table (copied in
:data:`CAM_PY_METHODS`). Each case makes that call with both libraries on a random-init resnet18
(fixed seed, BatchNorm statistics calibrated as in ``conftest.calibrated``) and compares the maps.

Where camkit differs on purpose (docs/coming-from-peers.md) the comparison removes the difference
instead of loosening the tolerance:

* Eigen methods and ``eigen_smooth``: the peer's SVD sign is replaced by camkit's rule
  (``test_compat_gradcam._align_sign``).
* Grad-CAM++ (1e-6 in the peer's alpha denominator) and FullGrad (1e-7 in each of the peer's
  per-channel min-max): the model's head is scaled (1e4, 1e10) so that the epsilons are negligible;
  with ``targets=None`` the explained class is the same.
* Score-CAM: the peer upsamples its masks with ``align_corners=True`` and normalizes after; it is
  run with ``align_corners=False`` at an odd integer scale (34 px input, 2x2 layer4 map, scale 17),
  where the order of normalization and upsampling does not matter.
* FinerCAM: the peer's ``FinerCAM`` takes no ``aug_smooth``, so ``cam.py --method finercam``
  raises ``TypeError`` there; camkit's accepts it (checked separately).

The perturbation methods (Score-CAM, Ablation-CAM: 512 re-runs each) use the 34 px input, the
others 96 px (a 3x3 layer4 map).
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models import resnet18

import camkit.compat.gradcam as ours
from conftest import calibrated
from test_compat_gradcam import _align_sign

peer = pytest.importorskip("pytorch_grad_cam")

#: cam.py's ``methods`` table: its command-line name -> the class it builds
CAM_PY_METHODS = {
    "gradcam": "GradCAM",
    "hirescam": "HiResCAM",
    "scorecam": "ScoreCAM",
    "gradcam++": "GradCAMPlusPlus",
    "ablationcam": "AblationCAM",
    "xgradcam": "XGradCAM",
    "eigencam": "EigenCAM",
    "eigengradcam": "EigenGradCAM",
    "layercam": "LayerCAM",
    "fullgrad": "FullGrad",
    "fem": "FEM",
    "gradcamelementwise": "GradCAMElementWise",
    "kpcacam": "KPCA_CAM",
    "shapleycam": "ShapleyCAM",
    "finercam": "FinerCAM",
    "segeigencam": "SegEigenCAM",
}
PERTURBATION = {"scorecam", "ablationcam"}
#: the head's scale that makes the peer's epsilons negligible (see the module docstring)
HEAD_SCALE = {"gradcam++": 1e4, "fullgrad": 1e10}
#: (method, aug_smooth, eigen_smooth): cam.py's defaults for every method, and its two flags
CASES = [(key, False, False) for key in CAM_PY_METHODS] + [
    ("gradcam", True, False),
    ("gradcam", False, True),
    ("eigengradcam", False, True),
    ("layercam", True, True),
]


@pytest.fixture(scope="module")
def models() -> dict[int, nn.Module]:
    built = {}
    for size in (34, 96):
        torch.manual_seed(0)
        built[size] = calibrated(resnet18(weights=None), size)
    return built


@pytest.fixture
def peer_signs(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, module in list(sys.modules.items()):
        if name.startswith("pytorch_grad_cam"):
            for fn in ("get_2d_projection", "get_2d_projection_kernel"):
                if hasattr(module, fn):
                    monkeypatch.setattr(module, fn, _align_sign(getattr(module, fn)))


def _cam_py(library: Any, name: str, model: nn.Module, x: torch.Tensor, aug_smooth: bool, eigen_smooth: bool) -> Any:
    """What cam.py does with ``--method``, ``--aug-smooth`` and ``--eigen-smooth``."""
    flags: dict[str, Any] = {"eigen_smooth": eigen_smooth}
    if not (library is peer and name == "FinerCAM"):  # the peer's FinerCAM has no aug_smooth
        flags["aug_smooth"] = aug_smooth
    with getattr(library, name)(model=model, target_layers=[model.layer4]) as cam:
        cam.batch_size = 32
        return cam(input_tensor=x, targets=None, **flags)


@pytest.mark.parametrize(("key", "aug_smooth", "eigen_smooth"), CASES)
def test_cam_py_method_equals_peer(
    key: str,
    aug_smooth: bool,
    eigen_smooth: bool,
    models: dict[int, nn.Module],
    peer_signs: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = CAM_PY_METHODS[key]
    size = 34 if key in PERTURBATION else 96
    model = copy.deepcopy(models[size])
    if key in HEAD_SCALE:
        with torch.no_grad():
            model.fc.weight.mul_(HEAD_SCALE[key])
            model.fc.bias.mul_(HEAD_SCALE[key])
    if key == "scorecam":

        def upsample(size: Any) -> nn.Module:
            return nn.Upsample(size=size, mode="bilinear", align_corners=False)

        monkeypatch.setattr(torch.nn, "UpsamplingBilinear2d", upsample)
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    expected = _cam_py(peer, name, copy.deepcopy(model), x, aug_smooth, eigen_smooth)
    got = _cam_py(ours, name, model, x, aug_smooth, eigen_smooth)
    assert isinstance(got, np.ndarray)
    assert got.shape == expected.shape == (1, size, size)
    assert got.dtype == expected.dtype == np.float32
    assert float(expected.max() - expected.min()) > 0.5  # an informative map
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_cam_py_table_is_the_peers() -> None:
    """Every class of cam.py's table exists in both libraries, at the package top."""
    for name in CAM_PY_METHODS.values():
        assert hasattr(peer, name)
        assert hasattr(ours, name)


def test_finercam_takes_cam_py_aug_smooth(models: dict[int, nn.Module]) -> None:
    """cam.py passes aug_smooth to every method: the peer's FinerCAM refuses it, camkit's runs it.

    With ``aug_smooth`` the map is the mean of the 6 variants' maps (flips × 0.9, 1.0, 1.1), each
    with its own Finer-CAM target; at intensity 1.0 without flip it is the plain Finer-CAM map.
    """
    model = models[96]
    x = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with pytest.raises(TypeError, match="aug_smooth"):
        peer.FinerCAM(model=copy.deepcopy(model), target_layers=[model.layer4])(
            input_tensor=x, targets=None, aug_smooth=False, eigen_smooth=False
        )
    cam = ours.FinerCAM(model=model, target_layers=[model.layer4])
    smoothed = cam(input_tensor=x, targets=None, aug_smooth=True, eigen_smooth=False)
    variants = [
        cam(input_tensor=(x.flip(-1) if flip else x) * f, targets=None)[:, :, :: -1 if flip else 1]
        for flip in (False, True)
        for f in (0.9, 1.0, 1.1)
    ]
    np.testing.assert_allclose(smoothed, np.mean(variants, axis=0), atol=1e-5)
