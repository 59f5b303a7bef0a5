"""Black-box methods (RISE, occlusion): float64 references, known-answer models, options, every front door.

The references are written from the papers with plain float64 loops (no camkit code besides the
method under test): RISE's masks are re-drawn from the same seeded generator in the documented
order and built one by one; occlusion's windows are enumerated by hand.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import camkit
from camkit.compat.gradcam import CAMMethod
from camkit.methods import RISE, Occlusion
from camkit.methods.perturbation import gaussian_blur, rise_grids, rise_masks, window_starts
from camkit.targets import ClassifierOutputTarget
from conftest import tiny_cnn

CLASSES = [1, 3]


def _model() -> nn.Module:
    torch.manual_seed(3)
    model = tiny_cnn().double().eval()
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.2, 0.2)
        model[1].running_var.uniform_(0.5, 1.5)
    return model


def _scores(model: nn.Module, x: Tensor, classes: list[int]) -> Tensor:
    with torch.no_grad():
        return model(x).gather(1, torch.tensor(classes).view(-1, 1)).squeeze(1)


# references ------------------------------------------------------------------------------------


def rise_reference(
    model: nn.Module,
    x: Tensor,
    classes: list[int],
    num_masks: int,
    cell_size: int,
    p: float,
    seed: int,
    centered: bool = True,
) -> Tensor:
    """RISE from the paper: draw the grids, then the shifts per dim; build, apply and weight each mask.

    ``centered``: each mask's score minus the mean score over the masks (camkit's default).
    """
    n, _, h, w = x.shape
    generator = torch.Generator().manual_seed(seed)
    grids = (torch.rand((num_masks, 1, cell_size, cell_size), generator=generator) < p).double()
    cell_h, cell_w = -(-h // cell_size), -(-w // cell_size)
    dy = torch.randint(0, cell_h, (num_masks,), generator=generator)
    dx = torch.randint(0, cell_w, (num_masks,), generator=generator)
    masks, scores = [], []
    for i in range(num_masks):
        big = F.interpolate(
            grids[i : i + 1], size=((cell_size + 1) * cell_h, (cell_size + 1) * cell_w), mode="bilinear"
        )[0, 0]
        masks.append(big[int(dy[i]) : int(dy[i]) + h, int(dx[i]) : int(dx[i]) + w])
        scores.append(_scores(model, x * masks[-1], [classes[k] for k in range(n)]))
    mean = torch.stack(scores).mean(0) if centered else torch.zeros(n, dtype=torch.float64)
    total = torch.zeros(n, h, w, dtype=torch.float64)
    for mask, score in zip(masks, scores, strict=True):
        total += (score - mean).view(n, 1, 1) * mask
    return total / (num_masks * p)


def occlusion_reference(
    model: nn.Module, x: Tensor, classes: list[int], window: int, stride: int, value: float = 0.0
) -> Tensor:
    """Zeiler & Fergus: the score drop of each window, averaged over the windows that cover each pixel."""
    n, _, h, w = x.shape
    clean = _scores(model, x, classes)
    total = torch.zeros(n, h, w, dtype=torch.float64)
    count = torch.zeros(h, w, dtype=torch.float64)
    wh, ww = min(window, h), min(window, w)
    rows = sorted(set(range(0, h - wh + 1, stride)) | {h - wh})
    cols = sorted(set(range(0, w - ww + 1, stride)) | {w - ww})
    for i, j in itertools.product(rows, cols):
        occluded = x.clone()
        occluded[:, :, i : i + wh, j : j + ww] = value
        drop = clean - _scores(model, occluded, classes)
        total[:, i : i + wh, j : j + ww] += drop.view(n, 1, 1)
        count[i : i + wh, j : j + ww] += 1
    return total / count


def blur_reference(x: Tensor, kernel_size: int, sigma: float) -> Tensor:
    """A 2-D Gaussian blur with numpy: the outer-product kernel over a reflect-padded image."""
    arr = x.numpy()
    n, c, h, w = arr.shape
    out = np.empty_like(arr)
    ry, rx = min(kernel_size // 2, h - 1), min(kernel_size // 2, w - 1)
    ky = np.exp(-(np.arange(-ry, ry + 1) ** 2) / (2 * sigma**2))
    kx = np.exp(-(np.arange(-rx, rx + 1) ** 2) / (2 * sigma**2))
    kernel = np.outer(ky / ky.sum(), kx / kx.sum())
    for b in range(n):
        for ch in range(c):
            padded = np.pad(arr[b, ch], ((ry, ry), (rx, rx)), mode="reflect")
            for i in range(h):
                for j in range(w):
                    out[b, ch, i, j] = (padded[i : i + 2 * ry + 1, j : j + 2 * rx + 1] * kernel).sum()
    return torch.from_numpy(out)


# float64 formulas ------------------------------------------------------------------------------


@pytest.mark.parametrize("centered", [True, False])
def test_rise_equals_its_float64_formula_with_seeded_masks(centered: bool) -> None:
    model, x = _model(), torch.rand(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    if not centered:  # the paper's sum with a positive score (its probabilities), so the ReLU changes nothing
        with torch.no_grad():
            model[-1].bias += 10.0
    options = {"num_masks": 40, "cell_size": 3, "p": 0.4, "centered": centered}
    expected = rise_reference(model, x, CLASSES, seed=7, **options)
    assert centered or bool((expected > 0).all())
    with RISE(model, None, 16, generator=torch.Generator().manual_seed(7), **options) as extractor:
        got = extractor(CLASSES, model(x), normalized=False)
    assert got[0].dtype == torch.float64
    assert got[0].shape == (2, 8, 8)
    torch.testing.assert_close(got[0], expected.clamp_min(0), rtol=1e-10, atol=1e-12)


def test_rise_masks_match_the_papers_construction() -> None:
    """Upsampled to (s+1) cells and cropped at a shift below one cell: checked mask by mask, any size."""
    grids, shifts = rise_grids(6, 2, 4, 0.5, (10, 13), torch.Generator().manual_seed(2))
    masks = rise_masks(grids.double(), shifts, (10, 13))
    for i in range(6):
        big = F.interpolate(grids[i : i + 1].double(), size=(5 * 3, 5 * 4), mode="bilinear")[0, 0]
        dy, dx = (int(s) for s in shifts[i])
        torch.testing.assert_close(masks[i], big[dy : dy + 10, dx : dx + 13])
    assert set(grids.unique().tolist()) <= {0.0, 1.0}


def test_rise_is_reproducible_and_batched_like_one_sample_at_a_time() -> None:
    model, x = _model(), torch.rand(3, 3, 8, 8, dtype=torch.float64)

    def run(batch: Tensor, classes: list[int], batch_size: int) -> Tensor:
        generator = torch.Generator().manual_seed(11)
        maps = camkit.compare(
            model, batch, ["rise"], class_idx=classes, num_masks=30, generator=generator, batch_size=batch_size
        )
        return maps["rise"][0]

    together = run(x, [0, 1, 2], 7)
    torch.testing.assert_close(together, run(x, [0, 1, 2], 64))
    for i in range(3):  # the masks are shared by the samples: each sample alone gets the same map
        torch.testing.assert_close(together[i : i + 1], run(x[i : i + 1], [i], 5))


def test_occlusion_equals_its_float64_formula() -> None:
    model, x = _model(), torch.rand(2, 3, 9, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    expected = occlusion_reference(model, x, CLASSES, window=3, stride=2, value=0.25).clamp_min(0)
    with Occlusion(model, batch_size=5, window=3, stride=2, baseline=0.25) as extractor:
        got = extractor(CLASSES, model(x), normalized=False)
    torch.testing.assert_close(got[0], expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("baseline", ["mean", "blur"])
def test_occlusion_baselines(baseline: str) -> None:
    model, x = _model(), torch.rand(1, 3, 8, 8, dtype=torch.float64)
    fill = x.mean(dim=(2, 3), keepdim=True).expand_as(x) if baseline == "mean" else blur_reference(x, 51, 50.0)
    n = x.shape[0]
    clean = _scores(model, x, [1])
    total, count = torch.zeros(n, 8, 8, dtype=torch.float64), torch.zeros(8, 8, dtype=torch.float64)
    for i, j in itertools.product([0, 3, 4], [0, 3, 4]):
        occluded = x.clone()
        occluded[:, :, i : i + 4, j : j + 4] = fill[:, :, i : i + 4, j : j + 4]
        total[:, i : i + 4, j : j + 4] += (clean - _scores(model, occluded, [1])).view(n, 1, 1)
        count[i : i + 4, j : j + 4] += 1
    got = camkit.compare(model, x, ["occlusion"], class_idx=1, normalized=False, window=4, stride=3, baseline=baseline)
    torch.testing.assert_close(got["occlusion"][0], (total / count).clamp_min(0), rtol=1e-10, atol=1e-12)


def test_gaussian_blur_equals_a_numpy_convolution() -> None:
    x = torch.rand(2, 3, 9, 12, dtype=torch.float64)
    for kernel, sigma in [(5, 1.0), (51, 50.0), (3, 0.5)]:
        torch.testing.assert_close(gaussian_blur(x, kernel, sigma), blur_reference(x, kernel, sigma))
    with pytest.raises(ValueError, match="odd"):
        gaussian_blur(x, 4, 1.0)


def test_window_starts_cover_every_pixel() -> None:
    assert window_starts(9, 3, 2) == [0, 2, 4, 6]
    assert window_starts(8, 3, 2) == [0, 2, 4, 5]
    assert window_starts(8, 32, 16) == [0]


# known answers ---------------------------------------------------------------------------------


class PatchNet(nn.Module):
    """Class 0's score is the mean red (channel 0) response over the patch rows/cols 4..7; class 1 is 0.

    ``features`` reads each input colour in two channels (6 channels: a layer for Group-CAM and Opti-CAM).
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 6, 1)
        with torch.no_grad():
            self.features.weight.zero_()
            self.features.bias.zero_()
            for k in range(6):
                self.features.weight[k, k % 3] = 1.0 + 0.5 * (k // 3)
        self.relu = nn.ReLU()
        region = torch.zeros(16, 16)
        region[4:8, 4:8] = 1
        self.register_buffer("region", region)

    def forward(self, x: Tensor) -> Tensor:
        f = self.relu(self.features(x))
        score = (f[:, 0] * self.region).sum(dim=(1, 2)) / self.region.sum()
        return torch.stack([score, torch.zeros_like(score)], dim=1)


def patch_image() -> Tensor:
    """A red square on the patch and a green square (a distractor) elsewhere, on a faint noisy background."""
    x = 0.05 * torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    x[0, 0, 4:8, 4:8] = 1.0
    x[0, 1, 10:14, 10:14] = 1.0
    return x


def patch_mass(cam: Tensor) -> float:
    """Share of the (normalized) map's mass on the patch (16 of 256 pixels)."""
    cam = cam.detach().double().clamp_min(0)
    return float(cam[..., 4:8, 4:8].sum() / cam.sum())


@pytest.mark.parametrize(
    ("name", "options", "share"),
    [
        # 2-pixel cells for a 4-pixel patch (the paper: 32-pixel cells for objects of ~100 pixels)
        ("rise", {"num_masks": 2000, "cell_size": 8, "generator": torch.Generator().manual_seed(0)}, 0.45),
        ("occlusion", {"window": 4, "stride": 2}, 0.5),
    ],
)
def test_the_map_lies_on_the_patch_the_score_reads(name: str, options: dict[str, object], share: float) -> None:
    model, x = PatchNet().eval(), patch_image()
    cam = camkit.compare(model, x, [name], class_idx=0, **options)[name][0]
    assert patch_mass(cam) >= share, patch_mass(cam)  # 16 of 256 pixels
    inside, outside = cam[0, 4:8, 4:8].mean(), (cam[0].sum() - cam[0, 4:8, 4:8].sum()) / 240
    assert inside > 10 * outside


def test_centered_rise_is_sharper_than_the_papers_sum() -> None:
    """Same masks: subtracting the mean score removes the noise the sum carries (measured: 0.51 vs 0.18)."""
    model, x = PatchNet().eval(), patch_image()
    shares = [
        patch_mass(
            camkit.compare(
                model, x, ["rise"], class_idx=0, num_masks=2000, cell_size=8, centered=centered,
                generator=torch.Generator().manual_seed(0),
            )["rise"][0]
        )
        for centered in (True, False)
    ]  # fmt: skip
    assert shares[0] > 2 * shares[1], shares


# options and doors -------------------------------------------------------------------------------


def test_unknown_options_name_the_closest() -> None:
    model = tiny_cnn().eval()
    with pytest.raises(TypeError, match="did you mean 'num_masks'"):
        RISE(model, num_mask=10)
    with pytest.raises(TypeError, match="did you mean 'stride'"):
        Occlusion(model, strides=2)
    with pytest.raises(TypeError, match="num_masks"):
        camkit.explain(model, torch.rand(1, 3, 32, 32), method="rise", num_mask=4)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("rise", {"p": 0.0}, "p must be in"),
        ("rise", {"num_masks": 0}, "num_masks must be a positive int"),
        ("rise", {"cell_size": 0}, "cell_size must be a positive int"),
        ("occlusion", {"window": 0}, "window must be a positive int"),
        ("occlusion", {"baseline": "zero"}, "baseline must be a number, 'mean' or 'blur'"),
    ],
)
def test_bad_option_values_say_what_is_accepted(name: str, options: dict[str, object], message: str) -> None:
    model = tiny_cnn().eval()
    with pytest.raises(ValueError, match=message):
        camkit.compare(model, torch.rand(1, 3, 8, 8), [name], class_idx=0, **options)


def test_wrong_option_types_are_refused() -> None:
    with pytest.raises(TypeError, match="num_masks"):
        RISE(tiny_cnn().eval(), num_masks=2.5)


def test_black_box_spec() -> None:
    for name in ("rise", "occlusion"):
        spec = camkit.get_method(name)
        assert spec.black_box
        assert spec.needs_input
        assert spec.output == "map"
        assert not spec.needs_gradients
        assert spec.layers is not None
        assert spec.layers(tiny_cnn()) == []
    assert camkit.get_method("rise").forwards(1280, 49) == 1001
    assert camkit.get_method("occlusion").forwards(1280, 49) == 13 * 13 + 2  # 224x224, window 32, stride 16
    with pytest.raises(ValueError, match="black-box method 'bad_bb'"):
        camkit.register("bad_bb", black_box=True, family="perturbation", needs_gradients=False, summary="s", paper="p")(
            lambda a, g, ctx: a
        )


def test_every_door_gives_the_same_black_box_map_and_ignores_layers() -> None:
    model, x = tiny_cnn().eval(), torch.rand(2, 3, 12, 12)
    opts = {"window": 4, "stride": 2}
    with Occlusion(model, "3", **opts) as extractor:  # a target layer is ignored
        assert extractor.target_names == []
        torchcam = extractor([0, 1], model(x))[0]
    explained = camkit.explain(model, x, method="occlusion", class_idx=[0, 1], target_layer="3", **opts)
    compared = camkit.compare(model, x, ["gradcam", "occlusion"], "3", class_idx=[0, 1], **opts)["occlusion"][0]
    with warnings.catch_warnings(), CAMMethod(model, None, method="occlusion", **opts) as cam:
        door = cam.compute(x, [ClassifierOutputTarget(0), ClassifierOutputTarget(1)])
    assert torchcam.shape == (2, 12, 12)
    assert explained.layers["occlusion"] == []
    for other in (explained.maps["occlusion"][:, 0], compared, door):
        torch.testing.assert_close(other, torchcam, rtol=1e-5, atol=1e-6)


def test_torchscript_models_work_through_the_doors_given_the_input() -> None:
    model, x = tiny_cnn().eval(), torch.rand(2, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated
        scripted = torch.jit.script(model)
    plain = camkit.compare(model, x, ["occlusion"], class_idx=1, window=3, stride=2)["occlusion"][0]
    scripted_map = camkit.compare(scripted, x, ["occlusion"], class_idx=1, window=3, stride=2)["occlusion"][0]
    torch.testing.assert_close(scripted_map, plain, rtol=1e-5, atol=1e-6)
    result = camkit.explain(scripted, x, method="rise", num_masks=20, generator=torch.Generator().manual_seed(0))
    assert result.maps["rise"].shape == (2, 1, 8, 8)
    with CAMMethod(scripted, None, method="rise", num_masks=20) as cam:
        assert cam(input_tensor=x).shape == (2, 8, 8)
    with RISE(scripted, num_masks=4) as extractor:  # no hooks on TorchScript: the TorchCAM door says what to use
        scores = scripted(x)
        with pytest.raises(ValueError, match=r"TorchScript module takes no hooks; use camkit\.explain"):
            extractor(0, scores)


def test_black_box_methods_leave_the_model_as_it_was() -> None:
    model = tiny_cnn().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    camkit.compare(model, torch.rand(2, 3, 8, 8), ["rise", "occlusion"], class_idx=0, num_masks=8, window=4)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
