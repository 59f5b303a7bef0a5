"""RefineCAM, Finer-CAM (and its target) and SESS: float64 re-derivations, lifecycle, peer differentials."""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import camkit.methods as ck
from camkit.engine import CAMExtractor
from camkit.methods.wrappers import SESS, FinerCAM, FinerWeightedTarget, RefineCAM, most_similar_classes
from camkit.targets import ClassTarget
from conftest import all_hooks, tiny_cnn


def two_scale_cnn() -> nn.Module:
    """Layers '1' (8x8 for an 8x8 input) and '3' (4x4), so RefineCAM resizes."""
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 5),
    )


def minmax(m: Tensor) -> Tensor:
    flat = m.flatten(1)
    low, high = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    return torch.where(high > low, (flat - low) / (high - low).clamp(min=1e-300), 0.0).view_as(m)


def gradcam_by_hand(model: nn.Sequential, x: Tensor, cut: int, score_fn) -> Tensor:
    """ReLU(sum_k mean(dS/dA_k) A_k) at the output of model[:cut], S = score_fn(logits).sum()."""
    a = model[:cut](x)
    g = torch.autograd.grad(score_fn(model[cut:](a)).sum(), a)[0]
    return torch.relu((g.mean((2, 3), keepdim=True) * a).sum(1)).detach()


# RefineCAM -------------------------------------------------------------------------------------
def test_refinecam_is_product_of_normalized_maps_float64() -> None:
    model = two_scale_cnn().double().eval()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    classes = torch.tensor([1, 3])
    maps = []
    for cut in (2, 4):
        cam = gradcam_by_hand(model, x, cut, lambda y: y.gather(1, classes[:, None]))
        maps.append(F.interpolate(minmax(cam)[:, None], size=(8, 8), mode="bilinear", align_corners=False)[:, 0])
    expected = minmax(maps[0] * maps[1])
    with RefineCAM(model, ["1", "3"], base_method=ck.GradCAM) as refine:
        out = refine([1, 3], model(x))
    assert len(out) == 1
    torch.testing.assert_close(out[0], expected, atol=1e-12, rtol=0)
    # an extractor already built can be wrapped, and un-normalized output is the raw product
    with RefineCAM(ck.GradCAM(model, ["1", "3"])) as refine:
        raw = refine.compute_cams([1, 3], model(x), normalized=False)[0]
    torch.testing.assert_close(raw, maps[0] * maps[1], atol=1e-12, rtol=0)
    assert all_hooks(model) == 0


def test_refinecam_validates() -> None:
    model = two_scale_cnn()
    with pytest.raises(ValueError, match="at least two"):
        RefineCAM(model, "1")
    assert all_hooks(model) == 0
    with pytest.raises(TypeError, match="base_method"):
        RefineCAM(model, ["1", "3"], base_method=nn.Linear)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="built extractor alone"):
        RefineCAM(ck.GradCAM(model, ["1", "3"]), "1")
    with pytest.raises(TypeError, match="cams"):
        RefineCAM.fuse_cams("no")  # type: ignore[arg-type]


@functools.cache
def _resnet() -> nn.Module:
    tv = pytest.importorskip("torchvision.models")
    torch.manual_seed(0)
    return tv.resnet18(weights=None).eval()


def _images() -> Tensor:
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def test_refinecam_matches_torchcam() -> None:
    tc = pytest.importorskip("torchcam.methods")
    model, x = _resnet(), _images()
    with tc.RefineCAM(model, ["layer3", "layer4"], input_shape=(3, 64, 64), base_method=tc.GradCAM) as peer:
        theirs = peer([3, 7], model(x))[0]
    with RefineCAM(model, ["layer3", "layer4"], base_method=ck.GradCAM) as ours:
        mine = ours([3, 7], model(x))[0]
    torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=0)


def test_refinecam_pytorch_grad_cam_normalization_is_a_no_op() -> None:
    """pytorch-grad-cam 1.5.7's RefineCAM: `for cam in cams: cam = ...` rebinds, so the product is of its raw outputs.

    Reproduced by hand from camkit's per-layer Grad-CAM maps, with the peer's processing of each layer
    (ReLU, min-max, bilinear resize to the input, min-max again) and no extra normalization.
    """
    pgc = pytest.importorskip("pytorch_grad_cam")
    targets_mod = pytest.importorskip("pytorch_grad_cam.utils.model_targets")
    model, x = _resnet(), _images()
    peer = pgc.RefineCAM(model, [model.layer3[-1], model.layer4[-1]], base_method=pgc.GradCAM)
    theirs = torch.from_numpy(peer(x, [targets_mod.ClassifierOutputTarget(3)] * 2))
    with ck.GradCAM(model, ["layer3.1", "layer4.1"]) as ex:
        cams = ex(3, model(x), normalized=False)
    layers = [minmax(F.interpolate(minmax(c)[:, None], size=(64, 64), mode="bilinear")[:, 0]) for c in cams]
    torch.testing.assert_close(theirs, minmax(layers[0] * layers[1]), atol=1e-4, rtol=0)


# Finer-CAM target ------------------------------------------------------------------------------
def test_finer_weighted_target_by_hand() -> None:
    y = torch.randn(3, 6, dtype=torch.float64)
    main, comps, alpha = [0, 2, 4], [[1, 3], [5, 0], [2, 1]], 0.7
    expected = []
    for i in range(3):
        p = torch.softmax(y[i], 0)
        num = sum(p[d] * (y[i, main[i]] - alpha * y[i, d]) for d in comps[i])
        expected.append(num / sum(p[d] for d in comps[i]))
    target = FinerWeightedTarget(main, comps, alpha)
    torch.testing.assert_close(target(y), torch.stack(expected), atol=1e-12, rtol=0)
    uniform = FinerWeightedTarget(main, comps, alpha, weighting="uniform")(y)
    torch.testing.assert_close(uniform, torch.stack([y[i, main[i]] - alpha * y[i, comps[i]].mean() for i in range(3)]))
    # rows: output row b belongs to sample rows[b]
    rows = torch.tensor([2, 2, 0])
    torch.testing.assert_close(target(y[rows], rows=rows), target(y)[rows])
    # shared categories work on one sample's 1-D scores (pytorch-grad-cam's calling convention)
    shared = FinerWeightedTarget(1, [0, 2], alpha)
    assert shared(y[0]).ndim == 0
    torch.testing.assert_close(shared(y[0]), shared(y)[0])


def test_finer_weighted_target_matches_pytorch_grad_cam() -> None:
    targets_mod = pytest.importorskip("pytorch_grad_cam.utils.model_targets")
    y = torch.randn(4, 10, dtype=torch.float64)
    for i in range(4):
        theirs = targets_mod.FinerWeightedTarget(i, [5, 6, 7], 0.8)(y[i])
        # the peer adds 1e-9 to the sum of probabilities: a relative difference of ~1e-9 / sum(p)
        torch.testing.assert_close(FinerWeightedTarget(i, [5, 6, 7], 0.8)(y[i]), theirs, atol=0, rtol=1e-6)


def test_finer_weighted_target_validates() -> None:
    with pytest.raises(ValueError, match="target class"):
        FinerWeightedTarget(1, [1, 2])
    with pytest.raises(ValueError, match="alpha"):
        FinerWeightedTarget(0, [1], alpha=math.nan)
    with pytest.raises(ValueError, match="weighting"):
        FinerWeightedTarget(0, [1], weighting="max")
    with pytest.raises(ValueError, match="out of range"):
        FinerWeightedTarget(0, [9])(torch.zeros(1, 3))


def test_most_similar_classes_by_hand() -> None:
    y = torch.tensor([[0.0, 5.0, 4.0, 7.0, 5.5], [1.0, 0.0, 3.0, 0.9, 2.0]])
    assert most_similar_classes(y, [1, 0], ranks=[1, 2, 3]).tolist() == [[4, 2, 3], [3, 1, 4]]
    assert most_similar_classes(y, None, ranks=[2]).tolist() == [[1], [0]]  # top classes 3 and 2


# Finer-CAM -------------------------------------------------------------------------------------
def test_finercam_is_gradcam_of_the_target_float64() -> None:
    model = tiny_cnn().double().eval()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    scores = model(x).detach()
    refs = most_similar_classes(scores, [1, 4], ranks=[1, 2])
    target = FinerWeightedTarget([1, 4], refs, alpha=0.5)
    expected = minmax(gradcam_by_hand(model, x, 4, target))
    with FinerCAM(model, "3", gamma=0.5, num_references=2) as finer:
        assert finer.target(scores, [1, 4]).comparisons.tolist() == refs.tolist()
        out = finer([1, 4], model(x))[0]
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)
    with ck.GradCAM(model, "3") as ex:
        torch.testing.assert_close(ex(scores=model(x), targets=target)[0], out, atol=1e-12, rtol=0)


def test_finercam_with_a_perturbation_base_is_per_sample() -> None:
    model = tiny_cnn().eval()
    x = torch.rand(2, 3, 8, 8)
    with FinerCAM(model, "3", base_method=ck.ScoreCAM, batch_size=64) as finer:
        both = finer([1, 2], model(x), comparison_idx=[[0], [3]])[0]
        first = finer(1, model(x[:1]), comparison_idx=0)[0]
        second = finer(2, model(x[1:]), comparison_idx=[3])[0]
    torch.testing.assert_close(both, torch.cat([first, second]), atol=1e-5, rtol=0)


def test_finercam_matches_pytorch_grad_cam() -> None:
    pgc = pytest.importorskip("pytorch_grad_cam")
    model, x = _resnet(), _images()
    with pgc.FinerCAM(model, [model.layer4[-1]], base_method=pgc.GradCAM) as peer:
        theirs = torch.from_numpy(peer(x))  # alpha=1, 3 closest classes, top class
    with FinerCAM(model, "layer4.1", gamma=1.0, num_references=3) as finer:
        mine = finer(None, model(x), normalized=False)[0]
    mine = minmax(F.interpolate(minmax(torch.relu(mine))[:, None], size=(64, 64), mode="bilinear")[:, 0])
    torch.testing.assert_close(mine, theirs, atol=1e-4, rtol=0)


def test_finercam_uniform_matches_torchcam() -> None:
    tc = pytest.importorskip("torchcam.methods")
    model, x = _resnet(), _images()
    with tc.FinerCAM(model, "layer4", input_shape=(3, 64, 64), base_method=tc.GradCAM) as peer:
        theirs = peer([3, 7], model(x))[0]
    with FinerCAM(model, "layer4", weighting="uniform") as finer:
        mine = finer([3, 7], model(x))[0]
    torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=0)


def test_finercam_validates() -> None:
    model = tiny_cnn()
    with pytest.raises(ValueError, match="target score"):
        FinerCAM(model, "3", base_method=ck.CAM)
    assert all_hooks(model) == 0
    with pytest.raises(ValueError, match="gamma"):
        FinerCAM(model, "3", gamma=-1)
    with FinerCAM(model, "3") as finer:
        model.eval()(torch.rand(1, 3, 8, 8))
        with pytest.raises(ValueError, match="scores"):
            finer(1)


# SESS ------------------------------------------------------------------------------------------
def _starts(length: int, step: int, window: int) -> list[int]:
    out = []
    for s in range(0, length, step):
        if s + window >= length:
            out.append(max(length - window, 0))
            break
        out.append(s)
    return out


def sess_by_hand(model, x, classes, scales, window, step, ratio, theta, fusion, smooth):  # type: ignore[no-untyped-def]
    """One patch at a time: scores, pre-filter, Grad-CAM at model[:4], paste, resize, fuse, blur."""
    tvf = pytest.importorskip("torchvision.transforms.functional")
    h, w = x.shape[-2:]
    out = []
    for n in range(x.shape[0]):
        patches, where = [], []
        for s in scales:
            img = tvf.resize(x[n : n + 1], [s], antialias=True)
            for y1 in _starts(img.shape[-2], step, window):
                for x1 in _starts(img.shape[-1], step, window):
                    patches.append(img[..., y1 : y1 + window, x1 : x1 + window])
                    where.append((x1, y1, img.shape[-2], img.shape[-1]))
        scores = [float(torch.softmax(model(p).detach(), -1)[0, classes[n]].clamp(min=0)) for p in patches]
        keep = sorted(range(len(patches)), key=lambda i: scores[i])[int(len(patches) * ratio) :]
        best = max(scores[i] for i in keep)
        total, count = torch.zeros(h, w, dtype=x.dtype), torch.zeros(h, w, dtype=x.dtype)
        for i in keep:
            cam = minmax(gradcam_by_hand(model, patches[i], 4, lambda y, c=classes[n]: y[:, c]))
            cam = F.interpolate(cam[:, None], size=(window, window), mode="bilinear")[0, 0] * scores[i] / best
            x1, y1, hs, ws = where[i]
            canvas = torch.zeros(hs, ws, dtype=x.dtype)
            canvas[y1 : y1 + window, x1 : x1 + window] = cam
            pasted = F.interpolate(canvas[None, None], size=(h, w), mode="bilinear")[0, 0]
            if fusion == "max":
                total = torch.maximum(total, pasted)
            else:
                total += pasted * (pasted > theta)
                count += pasted > theta
        fused = total if fusion == "max" else torch.where(count > 0, total / count.clamp(min=1), 0.0)
        if smooth:
            fused = tvf.gaussian_blur(fused[None, None], [11, 11], [5.0, 5.0])[0, 0]
        out.append(fused)
    return minmax(torch.stack(out))


@pytest.mark.parametrize(("ratio", "theta", "fusion", "smooth"), [(0.25, 0.0, "mean", True), (0.0, 0.3, "max", False)])
def test_sess_matches_patch_loop_float64(ratio: float, theta: float, fusion: str, smooth: bool) -> None:
    model = tiny_cnn().double().eval()
    x = torch.rand(2, 3, 12, 14, dtype=torch.float64)
    opts = {"scales": [12, 15], "window_size": 8, "step": 4, "pre_filter_ratio": ratio, "theta": theta}
    expected = sess_by_hand(model, x, [1, 4], [12, 15], 8, 4, ratio, theta, fusion, smooth)
    assert all(float(e.std()) > 0.1 for e in expected)
    with SESS(model, "3", fusion=fusion, smooth=smooth, batch_size=7, **opts) as sess:  # type: ignore[arg-type]
        out = sess(x, [1, 4])
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=0)


def test_sess_batches_patches_and_leaves_the_model_alone() -> None:
    model = tiny_cnn().train()
    model[3].weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls: list[int] = []
    handle = model.register_forward_pre_hook(lambda _m, args: calls.append(args[0].shape[0]))
    try:
        with SESS(model, "3", scales=[12, 16], window_size=8, step=4, pre_filter_ratio=0.5, batch_size=16) as sess:
            out = sess(torch.rand(2, 3, 12, 12), class_idx=None)
    finally:
        handle.remove()
    # 4 + 9 patches per image: argmax forward, scoring forwards (26 in 16s), one CAM forward of the 2*7 kept
    assert calls == [2, 16, 10, 14]
    assert out.shape == (2, 12, 12)
    assert float(out.min()) == 0.0
    assert float(out.max()) == 1.0
    assert model.training
    assert all(m.training for m in model.modules())
    assert not model[3].weight.requires_grad
    assert model[0].weight.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all_hooks(model) == 0


def test_sess_matches_pytorch_grad_cam() -> None:
    pgc = pytest.importorskip("pytorch_grad_cam")
    targets_mod = pytest.importorskip("pytorch_grad_cam.utils.model_targets")
    model = tiny_cnn().eval()
    x = torch.rand(2, 3, 12, 12)
    opts = {"scales": [12, 16], "window_size": 8, "pre_filter_ratio": 0.25}
    peer = pgc.SESS(model, [model[3]], base_method=pgc.GradCAM, step_size=4, **opts)
    theirs = torch.from_numpy(peer(x, [targets_mod.ClassifierOutputTarget(c) for c in (1, 4)]))
    assert all(float(t.std()) > 0.1 for t in theirs)
    with SESS(model, "3", step=4, **opts) as sess:  # type: ignore[arg-type]
        mine = sess(x, [1, 4])
    torch.testing.assert_close(mine, theirs, atol=1e-4, rtol=0)


def test_sess_validates() -> None:
    model = tiny_cnn().eval()
    with pytest.raises(ValueError, match="fusion"):
        SESS(model, "3", fusion="median")
    with pytest.raises(ValueError, match="pre_filter_ratio"):
        SESS(model, "3", pre_filter_ratio=1.0)
    with pytest.raises(ValueError, match="window_size"):
        SESS(model, "3", scales=[6], window_size=8)(torch.rand(1, 3, 12, 12), 1)
    with pytest.raises(ValueError, match="N, C, H, W"):
        SESS(model, "3")(torch.rand(3, 12, 12), 1)
    assert all_hooks(model) == 0


def test_wrappers_leave_no_hooks_and_state() -> None:
    model = two_scale_cnn().train()
    for make in (lambda: RefineCAM(model, ["1", "3"]), lambda: FinerCAM(model, "3")):
        with make() as w:
            assert isinstance(w.base_cam, CAMExtractor)
            assert all_hooks(model) > 0
            w(1, model(torch.rand(2, 3, 8, 8)))
        assert all_hooks(model) == 0
    assert model.training
    assert all(p.grad is None for p in model.parameters())


def test_sess_accepts_camkit_targets() -> None:
    model = tiny_cnn().eval()
    x = torch.rand(2, 3, 12, 12)
    with SESS(model, "3", scales=[12, 16], window_size=8, step=4, pre_filter_ratio=0.25, batch_size=5) as sess:
        by_class = sess(x, [1, 4])
        by_target = sess(x, targets=ClassTarget([1, 4]))
        with pytest.raises(ValueError, match="not both"):
            sess(x, [1, 4], targets=ClassTarget([1, 4]))
    torch.testing.assert_close(by_target, by_class)
