"""Group-CAM and Opti-CAM: float64 references, a hand-run of Opti-CAM's Adam steps, known answers, options.

References are plain float64 loops written from the papers; activations and gradients are captured
by a hook and ``backward`` on a copy of the model (no camkit code).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import camkit
from camkit.compat.gradcam import CAMMethod
from camkit.methods import GroupCAM, OptiCAM
from camkit.targets import ClassifierOutputTarget
from conftest import tiny_cnn
from test_methods_perturbation import PatchNet, _model, _scores, blur_reference, patch_image, patch_mass

CLASSES = [1, 3]
LAYER = "3"


def capture(model: nn.Module, layer: str, x: Tensor, classes: list[int]) -> tuple[Tensor, Tensor]:
    """The layer's activation and the gradient of the summed class scores, by a plain hook on a copy."""
    net = copy.deepcopy(model)
    kept: dict[str, Tensor] = {}

    def hook(_m: nn.Module, _i: Any, out: Tensor) -> None:
        out.retain_grad()
        kept["a"] = out

    net.get_submodule(layer).register_forward_hook(hook)
    net(x).gather(1, torch.tensor(classes).view(-1, 1)).sum().backward()
    return kept["a"].detach(), kept["a"].grad.detach()


def groupcam_reference(
    model: nn.Module,
    x: Tensor,
    a: Tensor,
    g: Tensor,
    classes: list[int],
    groups: int = 32,
    threshold: float = 70.0,
    kernel_size: int = 51,
    sigma: float = 50.0,
) -> Tensor:
    """Group-CAM (Zhang et al. 2021), before its final ReLU, one sample and one group at a time."""
    n, c = a.shape[:2]
    h, w = x.shape[2:]
    blurred = blur_reference(x, kernel_size, sigma)
    base = _scores(model, blurred, classes)
    width = -(-c // min(groups, c))  # consecutive groups of ceil(C / G) channels
    out = torch.zeros(n, h, w, dtype=torch.float64)
    for i in range(n):
        alpha = g[i].mean(dim=(1, 2))
        for start in range(0, c, width):
            m = torch.relu(sum(alpha[k] * a[i, k] for k in range(start, min(start + width, c))))
            cut = np.percentile(m.numpy(), threshold)
            m = torch.where(m > cut, m, torch.zeros_like(m))
            up = F.interpolate(m[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
            if up.max() == up.min():
                continue
            norm = (up - up.min()) / (up.max() - up.min())
            kept = x[i : i + 1] * norm + blurred[i : i + 1] * (1 - norm)
            out[i] += (_scores(model, kept, [classes[i]])[0] - base[i]) * norm
    return out


def opticam_reference(
    model: nn.Module, x: Tensor, a: Tensor, classes: list[int], steps: int = 100, lr: float = 0.1
) -> Tensor:
    """Opti-CAM (Zhang et al. 2024) with Adam run by hand: u = 0, then ``steps`` steps on -score."""
    n, c = a.shape[:2]
    size = x.shape[2:]
    u = torch.zeros(n, c, dtype=torch.float64)
    m, v = torch.zeros_like(u), torch.zeros_like(u)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for t in range(1, steps + 1):
        leaf = u.clone().requires_grad_(True)
        s = (torch.softmax(leaf, dim=1)[:, :, None, None] * a).sum(1, keepdim=True)
        s = F.interpolate(s, size=size, mode="bilinear", align_corners=False)[:, 0]
        lo = s.flatten(1).amin(1).view(n, 1, 1)
        hi = s.flatten(1).amax(1).view(n, 1, 1)
        mask = (s - lo) / (hi - lo)
        score = model(x * mask[:, None]).gather(1, torch.tensor(classes).view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(-score, leaf)
        m = beta1 * m + (1 - beta1) * grad
        v = beta2 * v + (1 - beta2) * grad**2
        m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)
        u = u - lr * m_hat / (v_hat.sqrt() + eps)
    return (torch.softmax(u, dim=1)[:, :, None, None] * a).sum(1)


# float64 formulas ------------------------------------------------------------------------------


def test_groupcam_equals_its_float64_formula() -> None:
    model, x = _model(), torch.rand(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    a, g = capture(model, LAYER, x, CLASSES)
    options = {"groups": 3, "threshold": 40.0, "kernel_size": 5, "sigma": 1.5}
    expected = groupcam_reference(model, x, a, g, CLASSES, **options).clamp_min(0)
    with GroupCAM(model, LAYER, 4, **options) as extractor:
        got = extractor(CLASSES, model(x), normalized=False)
    assert got[0].shape == (2, 8, 8)
    assert got[0].dtype == torch.float64
    torch.testing.assert_close(got[0], expected, rtol=1e-9, atol=1e-12)


def test_groupcam_default_groups_and_upsampling() -> None:
    """One group per channel (G = 32 > C = 8), a layer at half the input's size, the paper's blur."""
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    ).double().eval()  # fmt: skip
    x = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    a, g = capture(model, "3", x, [0, 2])
    expected = groupcam_reference(model, x, a, g, [0, 2]).clamp_min(0)
    got = camkit.compare(model, x, ["groupcam"], "3", class_idx=[0, 2], normalized=False)["groupcam"][0]
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


def test_opticam_equals_a_hand_run_of_its_adam_steps() -> None:
    model, x = _model(), torch.rand(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    a, _ = capture(model, LAYER, x, CLASSES)
    expected = opticam_reference(model, x, a, CLASSES, steps=4, lr=0.1).clamp_min(0)
    with OptiCAM(model, LAYER, 1, steps=4) as extractor:  # batch_size 1: one sample per optimisation
        got = extractor(CLASSES, model(x), normalized=False)
    torch.testing.assert_close(got[0], expected, rtol=1e-9, atol=1e-12)


def test_opticam_at_zero_steps_is_the_uniform_combination() -> None:
    model, x = _model(), torch.rand(1, 3, 8, 8, dtype=torch.float64)
    a, _ = capture(model, LAYER, x, [0])
    got = camkit.compare(model, x, ["opticam"], LAYER, class_idx=0, normalized=False, steps=0)["opticam"][0]
    torch.testing.assert_close(got, a.mean(1).clamp_min(0))


def test_opticam_raises_the_masked_score_and_is_deterministic() -> None:
    model, x = _model(), torch.rand(2, 3, 8, 8, dtype=torch.float64)
    a, _ = capture(model, LAYER, x, CLASSES)

    def masked_score(cam: Tensor) -> Tensor:
        up = cam  # layer "3" has the input's size
        lo, hi = up.flatten(1).amin(1).view(-1, 1, 1), up.flatten(1).amax(1).view(-1, 1, 1)
        return _scores(model, x * ((up - lo) / (hi - lo))[:, None], CLASSES)

    start = masked_score(a.mean(1))
    first = camkit.compare(model, x, ["opticam"], LAYER, class_idx=CLASSES, normalized=False, steps=20)["opticam"][0]
    again = camkit.compare(model, x, ["opticam"], LAYER, class_idx=CLASSES, normalized=False, steps=20)["opticam"][0]
    assert torch.equal(first, again)
    # before ReLU the map is sum_k w_k A_k; the layer's output is signed, so compare on the optimised weights' map
    weights_map = opticam_reference(model, x, a, CLASSES, steps=20)
    assert bool((masked_score(weights_map) > start).all())


# known answers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "options"), [("groupcam", {}), ("opticam", {"steps": 50})])
def test_the_map_lies_on_the_patch_the_score_reads(name: str, options: dict[str, Any]) -> None:
    model, x = PatchNet().eval(), patch_image()
    cam = camkit.compare(model, x, [name], "relu", class_idx=0, **options)[name][0]
    assert cam.shape == (1, 16, 16)
    assert patch_mass(cam) >= 0.6, patch_mass(cam)


def test_opticam_moves_the_weight_to_the_channels_the_score_reads() -> None:
    model, x = PatchNet().eval(), patch_image()
    with OptiCAM(model, "relu", steps=50) as extractor:
        model(x)
        probe_weights: list[Tensor] = []
        spec = camkit.get_method("opticam")
        original = spec.weights

        def spy(a: Tensor, g: None, ctx: Any) -> Tensor:
            out = original(a, g, ctx)
            probe_weights.append(out)
            return out

        object.__setattr__(spec, "weights", spy)
        try:
            extractor(0, None)
        finally:
            object.__setattr__(spec, "weights", original)
    w = probe_weights[0][0]
    assert float(w[0] + w[3]) > 0.8  # the two channels that read red, the colour the score reads


# options and doors -------------------------------------------------------------------------------


def test_unknown_options_name_the_closest() -> None:
    model = tiny_cnn().eval()
    with pytest.raises(TypeError, match="did you mean 'groups'"):
        GroupCAM(model, LAYER, group=4)
    with pytest.raises(TypeError, match="did you mean 'steps'"):
        OptiCAM(model, LAYER, nsteps=4)
    with pytest.raises(TypeError, match="lr"):
        camkit.compare(model, torch.rand(1, 3, 8, 8), ["opticam"], LAYER, Lr=0.1)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("groupcam", {"groups": 0}, "groups must be a positive int"),
        ("groupcam", {"threshold": 120}, "threshold must be a percentile"),
        ("groupcam", {"kernel_size": 4}, "kernel_size must be a positive odd int"),
        ("opticam", {"steps": -1}, "steps must be an int >= 0"),
        ("opticam", {"lr": 0.0}, "lr must be > 0"),
    ],
)
def test_bad_option_values_say_what_is_accepted(name: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        camkit.compare(tiny_cnn().eval(), torch.rand(1, 3, 8, 8), [name], LAYER, class_idx=0, **options)


def test_groupcam_needs_scores_in_the_torchcam_door() -> None:
    model = tiny_cnn().eval()
    with GroupCAM(model, LAYER) as extractor:
        model(torch.rand(1, 3, 8, 8))
        with pytest.raises(ValueError, match="needs the model output"):
            extractor(0)


@pytest.mark.parametrize(("name", "options"), [("groupcam", {"groups": 4}), ("opticam", {"steps": 3})])
def test_every_door_gives_the_same_map(name: str, options: dict[str, Any]) -> None:
    model, x = tiny_cnn().eval(), torch.rand(2, 3, 8, 8)
    with camkit.methods.extractor_class(name)(model, LAYER, **options) as extractor:
        torchcam = extractor([0, 1], model(x))[0]
    explained = camkit.explain(model, x, method=name, target_layer=LAYER, class_idx=[0, 1], **options).maps[name]
    compared = camkit.compare(model, x, ["gradcam", name], LAYER, class_idx=[0, 1], **options)[name][0]
    with CAMMethod(model, [model[3]], method=name, **options) as cam:
        door = cam.compute(x, [ClassifierOutputTarget(0), ClassifierOutputTarget(1)])
    assert torchcam.shape == (2, 8, 8)
    for other in (explained[:, 0], compared, door):
        torch.testing.assert_close(other, torchcam, rtol=1e-5, atol=1e-5)


def test_opticam_touches_no_parameter_gradient_nor_flag() -> None:
    model = tiny_cnn().train()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    camkit.compare(model, torch.rand(2, 3, 8, 8), ["opticam", "groupcam"], LAYER, class_idx=0, steps=3)
    assert model.training
    assert all(bool((p.grad == 0).all()) for p in model.parameters())


def test_opticam_after_and_inside_inference_mode() -> None:
    """Opti-CAM differentiates its own mask: it works on an input captured in inference mode, and called in it."""
    model, x = tiny_cnn().eval(), torch.rand(2, 3, 8, 8)
    expected = camkit.compare(model, x, ["opticam"], LAYER, class_idx=0, steps=2)["opticam"][0]
    with OptiCAM(model, LAYER, steps=2) as extractor:
        with torch.inference_mode():
            scores = model(x)
        torch.testing.assert_close(extractor(0, scores)[0], expected)
        scores = model(x)
        with torch.inference_mode():
            torch.testing.assert_close(extractor(0, scores)[0], expected)
