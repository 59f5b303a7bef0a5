"""camkit.compat.torchcam mirrors TorchCAM 0.5's public import paths, maps and overlay."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from functools import partial
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from tests.conftest import tiny_cnn
from torch import nn

torchcam = pytest.importorskip("torchcam", minversion="0.5")
tc_methods = pytest.importorskip("torchcam.methods")
tv_models = pytest.importorskip("torchvision.models")

import camkit.compat.torchcam as mirror  # noqa: E402
from camkit.compat.torchcam import methods as mm  # noqa: E402


def _public_names(module: Any) -> list[str]:
    """``__all__``, else the public names defined in the module itself (not its imports)."""
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
    ]


def _torchcam_surface() -> dict[str, list[str]]:
    modules = ["torchcam"] + [info.name for info in pkgutil.walk_packages(torchcam.__path__, prefix="torchcam.")]
    return {name: _public_names(importlib.import_module(name)) for name in modules}


def test_every_torchcam_public_name_is_mirrored() -> None:
    surface = _torchcam_surface()
    missing = []
    for name, public in surface.items():
        ours = importlib.import_module("camkit.compat.torchcam" + name[len("torchcam") :])
        missing += [f"{name}.{attr}" for attr in public if not hasattr(ours, attr)]
    total = sum(len(names) for names in surface.values())
    print(f"\ntorchcam surface: {len(surface)} modules, {total} names, {total - len(missing)} mirrored")
    assert not missing, f"not mirrored: {missing}"


def test_methods_are_camkit_classes() -> None:
    import camkit.methods

    for name in tc_methods.__all__ if hasattr(tc_methods, "__all__") else ["GradCAM", "CAM"]:
        if name != "OutputTarget":
            assert getattr(mm, name) is getattr(camkit.methods, name)


def test_locate_candidate_layer_matches_torchcam() -> None:
    from torchcam.methods._utils import locate_candidate_layer as theirs

    from camkit.compat.torchcam.methods._utils import locate_candidate_layer as ours

    for model in (tv_models.resnet18(), tiny_cnn()):
        assert ours(model, (3, 64, 64)) == theirs(model, (3, 64, 64))


# maps --------------------------------------------------------------------------------------------
def _assert_maps_close(actual: torch.Tensor, expected: torch.Tensor, tol: float = 1e-5) -> None:
    """As tests/test_torchcam_parity.py: equal within ``tol`` relative to each map's maximum."""
    assert actual.shape == expected.shape
    scale = expected.flatten(1).abs().amax(1).view(-1, *([1] * (expected.ndim - 1)))
    assert (scale > 0).all(), "an all-zero map: the comparison would be trivial"
    torch.testing.assert_close(actual / scale, expected / scale, rtol=tol, atol=tol)


def _maps(cls: type, model: nn.Module, layer: str, x: torch.Tensor, classes: Any, **ctor: Any) -> list[torch.Tensor]:
    with cls(model, layer, **ctor) as extractor:
        scores = model(x)
        maps = extractor(classes, scores, normalized=True)
    return [m.detach().clone() for m in maps]


def _models() -> list[tuple[str, nn.Module, str, int, list[int]]]:
    """(name, model, layer, input size, classes): random init, BatchNorm calibrated (conftest)."""
    torch.manual_seed(0)
    return [
        ("tiny_cnn", tiny_cnn().eval(), "3", 16, [1, 3]),
        ("resnet18", _parity_resnet18(), "layer4", 96, [3, 4]),
    ]


def _parity_resnet18() -> nn.Module:
    """tests/test_torchcam_parity.py's resnet18 (its classes 3, 4 give non-trivial maps)."""
    torch.manual_seed(0)
    model: nn.Module = tv_models.resnet18(weights=None)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.randn(16, 3, 64, 64, generator=torch.Generator().manual_seed(123)))
    return model.eval()


@pytest.mark.parametrize("method", ["GradCAM", "LayerCAM", "XGradCAM", "ScoreCAM"])
@pytest.mark.parametrize("index", [0, 1], ids=["tiny_cnn", "resnet18"])
def test_maps_match_torchcam(method: str, index: int) -> None:
    _, model, layer, size, classes = _models()[index]
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    ctor = {"batch_size": 64} if method == "ScoreCAM" else {}
    (theirs,) = _maps(getattr(tc_methods, method), model, layer, x, classes, **ctor)
    (ours,) = _maps(getattr(mm, method), model, layer, x, classes, **ctor)
    _assert_maps_close(ours, theirs)


def test_cam_is_relu_of_torchcam() -> None:
    """Deliberate difference (test_torchcam_parity.py): camkit's CAM applies the paper's ReLU."""
    _, model, layer, size, classes = _models()[1]
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with tc_methods.CAM(model, layer, fc_layer="fc") as extractor:
        (raw,) = extractor(classes, model(x), normalized=False)
    with mm.CAM(model, layer, fc_layer="fc") as extractor:
        (ours,) = extractor(classes, model(x), normalized=False)
    _assert_maps_close(ours, torch.relu(raw.detach()))


@pytest.mark.skip(reason="deliberate: Grad-CAM++ alpha and IS-CAM strengths follow the papers (test_torchcam_parity)")
def test_gradcampp_and_iscam_differ_on_purpose() -> None:
    """Placeholder naming the deliberate differences; tests/test_torchcam_parity.py pins them."""


# metrics -----------------------------------------------------------------------------------------
def test_deletion_insertion_matches_torchcam() -> None:
    from torchcam.metrics import DeletionInsertionMetric as Theirs

    from camkit.compat.torchcam.metrics import DeletionInsertionMetric as Ours

    _, model, layer, size, _classes = _models()[0]
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(2))
    results = []
    for extractor_cls, metric_cls in ((tc_methods.GradCAM, Theirs), (mm.GradCAM, Ours)):
        with extractor_cls(model, layer) as extractor:
            metric = metric_cls(extractor, partial(torch.softmax, dim=-1), steps=16)  # 256 positions: divisible
            metric.update(x)
            results.append(metric.summary())
    assert results[0].keys() == results[1].keys()
    for key in results[0]:
        assert results[1][key] == pytest.approx(results[0][key], abs=1e-5)


def test_classification_metric_is_camkits() -> None:
    """camkit's metric, with TorchCAM's per-sample targets and summary() error on top."""
    import camkit.metrics
    from camkit.compat.torchcam.metrics import ClassificationMetric, NoSamplesError

    assert issubclass(ClassificationMetric, camkit.metrics.ClassificationMetric)
    metric = ClassificationMetric(mm.GradCAM(tiny_cnn().eval(), "3"))
    for error in (AssertionError, ValueError):  # TorchCAM's type, and camkit's
        with pytest.raises(error, match="update"):
            metric.summary()
    assert issubclass(NoSamplesError, AssertionError)
    assert issubclass(NoSamplesError, ValueError)
    metric.cam_extractor.remove_hooks()


@pytest.mark.parametrize("metric_name", ["ClassificationMetric", "DeletionInsertionMetric"])
def test_metrics_output_targets_match_class_idx(metric_name: str) -> None:
    """A per-sample OutputTarget gives the metric of the class it reads, in both packages."""
    from operator import itemgetter

    import torchcam.metrics as theirs

    from camkit.compat.torchcam import metrics as ours

    _, model, layer, size, _classes = _models()[0]
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(4))
    kwargs: dict[str, Any] = {"steps": 16} if metric_name == "DeletionInsertionMetric" else {}
    results = []
    for extractor_cls, module in ((tc_methods.GradCAM, theirs), (mm.GradCAM, ours)):
        for how in ("targets", "class_idx"):
            with extractor_cls(model, layer) as extractor:
                metric = getattr(module, metric_name)(extractor, partial(torch.softmax, dim=-1), **kwargs)
                if how == "targets":
                    metric.update(x, targets=[itemgetter(1), itemgetter(3)])
                else:
                    metric.update(x, class_idx=[1, 3])
                results.append(metric.summary())
    assert results[2] == pytest.approx(results[3], abs=1e-6)  # camkit: targets == class_idx
    if metric_name == "DeletionInsertionMetric":  # camkit's ClassificationMetric divides by Y exactly
        assert results[2] == pytest.approx(results[0], abs=1e-5)  # and == TorchCAM's


def test_deletion_insertion_calls_baseline_once_per_batch() -> None:
    from camkit.compat.torchcam.metrics import DeletionInsertionMetric

    _, model, layer, size, _classes = _models()[0]
    calls = []

    def baseline(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape)
        return torch.zeros_like(x)

    with mm.GradCAM(model, layer) as extractor:
        metric = DeletionInsertionMetric(extractor, steps=4, baseline=baseline)
        metric.update(torch.randn(2, 3, size, size))
        with pytest.raises(TypeError, match="return a tensor"):
            DeletionInsertionMetric(extractor, baseline=lambda x: 0).update(torch.randn(1, 3, size, size))
    assert calls == [(2, 3, size, size)]


# explain -----------------------------------------------------------------------------------------
def test_explain_matches_torchcam_maps() -> None:
    from torchcam.explain import explain as theirs

    from camkit.compat.torchcam.explain import explain as ours

    _, model, layer, size, _classes = _models()[0]
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(3))
    a = theirs(model, x, expected_class_idx=0, target_layer=layer)
    b = ours(model, x, expected_class_idx=0, target_layer=layer)
    assert b.predicted_class_idx == a.predicted_class_idx
    assert b.cams.keys() == a.cams.keys()
    for key in a.cams:
        for mine, ref in zip(b.cams[key], a.cams[key], strict=True):
            torch.testing.assert_close(mine, ref, atol=1e-4, rtol=1e-4)  # TorchCAM: eps=1e-8 in normalization


def test_explain_save_writes_torchcams_bundle(tmp_path: Any) -> None:
    """The same files, the same manifest keys, and pixel-equal overlays as TorchCAM's bundle."""
    import json

    from torchcam.explain import explain as theirs

    from camkit.compat.torchcam.explain import explain as ours

    _, model, layer, size, _classes = _models()[0]
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(3))
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (21, 17, 3), dtype=np.uint8))
    a = theirs(model, x, expected_class_idx=0, class_names=[str(i) for i in range(5)], target_layer=layer)
    b = ours(model, x, expected_class_idx=0, class_names=[str(i) for i in range(5)], target_layer=layer)
    pa, pb = a.save(tmp_path / "theirs", image), b.save(tmp_path / "ours", image)
    assert sorted(p.name for p in pa.iterdir()) == sorted(p.name for p in pb.iterdir())
    ma = json.loads((pa / "manifest.json").read_text(encoding="utf-8"))
    mb = json.loads((pb / "manifest.json").read_text(encoding="utf-8"))
    assert ma.keys() == mb.keys()
    assert mb["schema_version"] == 1
    for key in ("prediction", "expected", "method", "target_layers", "input_shape", "image_size", "alpha"):
        assert mb[key] == ma[key]
    assert mb["classes"].keys() == ma["classes"].keys()
    for cls, entry in ma["classes"].items():
        assert mb["classes"][cls]["artifacts"] == entry["artifacts"]
        assert mb["classes"][cls]["probability"] == pytest.approx(entry["probability"], abs=1e-6)
    assert mb["versions"]["camkit"]
    # the overlays of the same map are pixel-equal (TorchCAM's own maps drawn by both)
    from torchcam.utils import overlay_mask as their_overlay

    from camkit.compat.torchcam.utils import overlay_mask as our_overlay

    cam = a.cams[a.predicted_class_idx][0].numpy()
    same = [np.asarray(f(image, Image.fromarray(cam, mode="F"), alpha=0.5)) for f in (their_overlay, our_overlay)]
    np.testing.assert_array_equal(same[0], same[1])
    with pytest.raises(FileExistsError):
        b.save(pb, image)


# overlay -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [0.5, 0.7])
@pytest.mark.parametrize("colormap", ["jet", "viridis"])
def test_overlay_mask_matches_torchcam(colormap: str, alpha: float) -> None:
    pytest.importorskip("matplotlib")
    from torchcam.utils import overlay_mask as theirs

    from camkit.compat.torchcam.utils import overlay_mask as ours

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    mask = Image.fromarray(rng.random((7, 9)).astype(np.float32), mode="F")
    a = np.asarray(theirs(img, mask, colormap, alpha), dtype=np.int16)
    b = np.asarray(ours(img, mask, colormap, alpha), dtype=np.int16)
    diff = int(np.abs(a - b).max())
    print(f"\noverlay_mask {colormap} alpha={alpha}: max pixel difference {diff}")
    assert a.shape == b.shape
    assert diff == 0


def test_overlay_mask_accepts_matplotlib_colormap() -> None:
    matplotlib = pytest.importorskip("matplotlib")
    from torchcam.utils import overlay_mask as theirs

    from camkit.compat.torchcam.utils import overlay_mask as ours

    img = Image.new("RGB", (8, 8), (10, 200, 30))
    mask = Image.fromarray(np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4), mode="F")
    cmap = matplotlib.colormaps["magma"]
    a, b = np.asarray(theirs(img, mask, cmap)), np.asarray(ours(img, mask, cmap))
    assert int(np.abs(a.astype(int) - b.astype(int)).max()) <= 1


def test_overlay_mask_rejects_what_torchcam_rejects() -> None:
    from camkit.compat.torchcam.utils import overlay_mask

    img = Image.new("RGB", (4, 4))
    with pytest.raises(TypeError, match="PIL"):
        overlay_mask(img, torch.zeros(2, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="alpha"):
        overlay_mask(img, Image.new("F", (2, 2)), alpha=1)  # type: ignore[arg-type]


def test_top_level_modules_load_lazily() -> None:
    assert inspect.ismodule(mirror.methods)
    assert inspect.ismodule(mirror.utils)
    assert mirror.version("torch")
    with pytest.raises(AttributeError):
        _ = mirror.nothing_here
